"""Trains and evaluates a FlipReID person re-identification model.

With no flags it runs a short demonstration on the built-in Synthetic dataset with a small
backbone; `python solution.py --helpfull` lists every flag by group. This file only defines the
flags, generated from the typed configuration in `applications/config.py`, reads them once into
an `ExperimentConfig` and hands it to `applications.experiment.run_experiment`.
"""

import sys

try:
    from absl import app, flags, logging

    from applications.config import (
        CROSS_FIELD_RULES,
        build_experiment_config,
        field_value_type,
        flag_fields,
        value_error,
        with_recipe_defaults,
    )

    # Project modules import TensorFlow only through applications.core.backend, which selects legacy
    # Keras first; nothing above imports TensorFlow.
    from applications.core.backend import quiet_library_info_logs
    from applications.experiment import run_experiment
    from applications.flag_effects import flags_without_effect
    from applications.interruption import RunInterrupted, resume_command
except KeyboardInterrupt:
    # Ctrl-C in the seconds TensorFlow takes to load: no flag has been read and nothing written,
    # so one line instead of a traceback through the import machinery.
    print(
        "Stopped by SIGINT while TensorFlow was loading, before any flag was read; nothing was "
        "written. Run the same command to start.",
        file=sys.stderr,
    )
    sys.exit(130)

FLAGS = flags.FLAGS


def _checker(name, metadata):
    """A flag validator that applies the field's rule and names the flag when it fails."""

    def check(value):
        message = value_error(name, value, metadata)
        if message:
            raise flags.ValidationError(message)
        return True

    return check


def _cross_field_checker(rule, flag_values):
    """A validator of a cross-field rule on the values the run will use.

    Those are the flags given, else the recipe's defaults (e.g. --recipe flipreid's learning
    rates), else the fields' own: the flags' defaults alone would refuse a combination that the
    recipe makes valid, and pass one it makes invalid.
    """
    field_defaults = {field.name: field.default for _, field, _ in flag_fields()}

    def check(_):
        given = {name: flag_values[name].value for name in given_flag_names(flag_values)}
        try:
            values = {**field_defaults, **with_recipe_defaults(given)}
        except ValueError:
            # An unknown recipe: the --recipe flag's own validator names it.
            return True
        if rule.check(values):
            return True
        # absl's message shows the flags' values; name those the recipe replaced.
        from_recipe = [name for name in rule.names if values[name] != flag_values[name].value]
        if not from_recipe:
            return False
        raise flags.ValidationError(
            f"{rule.message} (The recipe's defaults in use: "
            + ", ".join(f"--{name}={values[name]!r}" for name in from_recipe)
            + ".)"
        )

    return check


def define_flags(flag_values=FLAGS):
    """Defines one flag per config field, in groups, with the field's help and rule.

    Args:
        flag_values: absl FlagValues to define them in (tests pass a fresh one).
    """
    for group_name, field, annotation in flag_fields():
        name, default, metadata = field.name, field.default, field.metadata
        value_type, _ = field_value_type(annotation)
        bounds = dict(lower_bound=metadata["lower_bound"], upper_bound=metadata["upper_bound"])
        arguments = dict(help=metadata["help"], module_name=group_name, flag_values=flag_values)
        if value_type is str and metadata["choices"]:
            flags.DEFINE_enum(name, default, list(metadata["choices"]), **arguments)
        elif value_type is bool:
            flags.DEFINE_bool(name, default, **arguments)
        elif value_type is int:
            flags.DEFINE_integer(name, default, **bounds, **arguments)
        elif value_type is float:
            flags.DEFINE_float(name, default, **bounds, **arguments)
        elif value_type is tuple:
            flags.DEFINE_list(name, list(default), **arguments)
        else:
            flags.DEFINE_string(name, default, **arguments)
        # Choices of ints and any other rule: the same check the config runs.
        flags.register_validator(name, _checker(name, metadata), flag_values=flag_values)
        # --help lists the key flags of the main module: all of them (--helpfull groups them).
        flags.declare_key_flag(name, flag_values=flag_values)
    for rule in CROSS_FIELD_RULES:
        flags.register_multi_flags_validator(
            list(rule.names),
            _cross_field_checker(rule, flag_values),
            message=rule.message,
            flag_values=flag_values,
        )


def given_flag_names(flag_values=FLAGS):
    """The names of the flags given on the command line, in flag order."""
    return [field.name for _, field, _ in flag_fields() if flag_values[field.name].present]


def config_from_flags(flag_values=FLAGS):
    """Reads the parsed flags once into the typed configuration.

    Args:
        flag_values: parsed absl FlagValues defined by `define_flags`.

    Returns:
        applications.config.ExperimentConfig.
    """
    # Only the flags given on the command line: the others take the recipe's defaults.
    return build_experiment_config(
        **{name: flag_values[name].value for name in given_flag_names(flag_values)}
    )


def main(argv):
    if len(argv) > 1:
        sys.exit(f"Error: unexpected arguments {argv[1:]}; every option is a --flag.")
    if not FLAGS["verbosity"].present:
        quiet_library_info_logs()
    try:
        config = config_from_flags()
        for warning in flags_without_effect(config.to_flat(), given_flag_names()):
            print(f"Warning: {warning}", file=sys.stderr)
        run_experiment(config)
    except RunInterrupted as stop:
        # Ctrl-C or SIGTERM: one line with the command that continues the run, no traceback.
        print(stop.describe(resume_command(sys.argv, stop.run_folder_path)), file=sys.stderr)
        sys.exit(stop.exit_status)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # Bad data, weights or flag combinations found past flag parsing: the message names the
        # file or flag and the fix; the traceback stays available with --verbosity=1.
        logging.debug("Stopped by an error.", exc_info=True)
        sys.exit(f"Error: {error}")


define_flags()

if __name__ == "__main__":
    app.run(main)
