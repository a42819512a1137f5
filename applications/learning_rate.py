"""Learning-rate rules of FlipReID as pure functions of the (global, 0-based) epoch index.

Every rule's result is finally raised to at least `learning_rate_lower_bound`, as in FlipReID.
The epoch index counts across the frozen-backbone and unfrozen stages, so one rule covers a
whole run; with `restart_epoch` (FlipReID's procedure, --restart_schedule_after_freezing) the
rule starts again at its epoch 0 when the backbone is unfrozen.
"""

import functools
import math

from applications.core.registry import Registry


def constant_learning_rate(epoch_index, *, learning_rate_start, **_):
    """learning_rate_start at every epoch (learning_rate_end must equal it)."""
    del epoch_index
    return learning_rate_start


def linear_learning_rate(epoch_index, *, epoch_num, learning_rate_start, learning_rate_end, **_):
    """Straight line from learning_rate_start at epoch 0 to learning_rate_end at epoch_num - 1."""
    slope = (learning_rate_end - learning_rate_start) / (epoch_num - 1)
    return learning_rate_start + slope * epoch_index


def cosine_learning_rate(epoch_index, *, epoch_num, learning_rate_start, learning_rate_end, **_):
    """Half cosine from learning_rate_start at epoch 0 down to learning_rate_end at epoch_num-1.

    A one-epoch run stays at learning_rate_start.
    """
    if epoch_num == 1:
        return learning_rate_start
    amplitude = (learning_rate_start - learning_rate_end) / 2
    middle = (learning_rate_start + learning_rate_end) / 2
    return amplitude * math.cos(math.pi * epoch_index / (epoch_num - 1)) + middle


def _warmup_fraction(epoch_index, learning_rate_warmup_epochs):
    # The ramp reaches its top at epoch warmup_epochs - 1; a ramp of one epoch or less is flat.
    if learning_rate_warmup_epochs <= 1:
        return 1.0
    return epoch_index / (learning_rate_warmup_epochs - 1)


def warmup_learning_rate(
    epoch_index, *, learning_rate_start, learning_rate_end, learning_rate_warmup_epochs, **_
):
    """Linear ramp from learning_rate_start (epoch 0) to learning_rate_end, reached at epoch
    learning_rate_warmup_epochs - 1 and kept afterwards."""
    fraction = _warmup_fraction(epoch_index, learning_rate_warmup_epochs)
    learning_rate = learning_rate_start + (learning_rate_end - learning_rate_start) * fraction
    return min(learning_rate, learning_rate_end)


def default_learning_rate(
    epoch_index,
    *,
    epoch_num,
    learning_rate_base,
    learning_rate_warmup_epochs,
    learning_rate_steady_epochs,
    learning_rate_drop_factor,
    learning_rate_lower_bound,
    **_,
):
    """FlipReID's default rule: warm-up, then step decay.

    Epochs [0, warmup): linear ramp from learning_rate_lower_bound to learning_rate_base
    (reached at epoch warmup - 1). Afterwards learning_rate_base divided by
    learning_rate_drop_factor once per learning_rate_steady_epochs epochs. A drop factor of 0
    picks the factor that reaches the lower bound after epoch_num - warmup epochs:
    exp(steady / (epoch_num - 2 * warmup) * log(base / lower_bound)).
    """
    if epoch_index < learning_rate_warmup_epochs:
        fraction = _warmup_fraction(epoch_index, learning_rate_warmup_epochs)
        return (
            learning_rate_lower_bound + (learning_rate_base - learning_rate_lower_bound) * fraction
        )
    drop_factor = learning_rate_drop_factor
    if drop_factor == 0:
        drop_factor = math.exp(
            learning_rate_steady_epochs
            / (epoch_num - learning_rate_warmup_epochs * 2)
            * math.log(learning_rate_base / learning_rate_lower_bound)
        )
    drop_count = int((epoch_index - learning_rate_warmup_epochs) / learning_rate_steady_epochs)
    return learning_rate_base / drop_factor**drop_count


def exponential_learning_rate(
    epoch_index, *, epoch_num, learning_rate_base, exponential_decay_start_epoch, **_
):
    """AlignedReID's exponential decay ("exp"), with its 1-based epoch count e = index + 1.

    learning_rate_base until epoch s - 1, then base * 0.001 ** ((e + 1 - s) / (T + 1 - s)) from
    epoch e = s on, with s = exponential_decay_start_epoch and T = epoch_num; at e = T the rate
    is base * 0.001 ** 1 = base / 1000.
    """
    epoch = epoch_index + 1
    if epoch < exponential_decay_start_epoch:
        return learning_rate_base
    exponent = (epoch + 1 - exponential_decay_start_epoch) / (
        epoch_num + 1 - exponential_decay_start_epoch
    )
    return learning_rate_base * 0.001**exponent


def staircase_learning_rate(
    epoch_index, *, learning_rate_base, staircase_decay_epochs, staircase_decay_factor, **_
):
    """AlignedReID's staircase decay, with its 1-based epoch count e = index + 1.

    learning_rate_base * staircase_decay_factor ** k, k the number of entries of
    staircase_decay_epochs at most e: the rate is multiplied by the factor at the beginning of
    each listed epoch (AlignedReID: epochs 101 and 201, factor 0.1).
    """
    epoch = epoch_index + 1
    drop_count = sum(1 for decay_epoch in staircase_decay_epochs if decay_epoch <= epoch)
    return learning_rate_base * staircase_decay_factor**drop_count


LEARNING_RATE_FUNCTIONS = Registry(
    "learning_rate_mode",
    {
        "constant": constant_learning_rate,
        "linear": linear_learning_rate,
        "cosine": cosine_learning_rate,
        "warmup": warmup_learning_rate,
        "default": default_learning_rate,
        "exponential": exponential_learning_rate,
        "staircase": staircase_learning_rate,
    },
)


def _require_epoch_num(mode, epoch_num, minimum):
    if epoch_num is None or epoch_num < minimum:
        raise ValueError(
            f"learning_rate_mode {mode!r} needs epoch_num >= {minimum}, got {epoch_num}."
        )


def _validate_exponential(_, settings):
    epoch_num = settings["epoch_num"]
    start = settings["exponential_decay_start_epoch"]
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ValueError(
            f"exponential_decay_start_epoch must be an int >= 1 (1-based, as in AlignedReID), "
            f"got {start!r}."
        )
    if epoch_num is None or epoch_num < start:
        raise ValueError(
            "learning_rate_mode 'exponential' needs epoch_num >= "
            f"exponential_decay_start_epoch, got epoch_num={epoch_num} and "
            f"exponential_decay_start_epoch={start}."
        )


def _validate_staircase(_, settings):
    decay_epochs = list(settings["staircase_decay_epochs"])
    if any(isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1
           for epoch in decay_epochs) or decay_epochs != sorted(set(decay_epochs)):  # fmt: skip
        raise ValueError(
            "staircase_decay_epochs must be increasing ints >= 1 (1-based epochs, as in "
            f"AlignedReID), got {settings['staircase_decay_epochs']!r}."
        )
    if not 0.0 < settings["staircase_decay_factor"] <= 1.0:
        raise ValueError(
            f"staircase_decay_factor must be in (0, 1], got {settings['staircase_decay_factor']!r}."
        )


def _validate_cosine(_, settings):
    _require_epoch_num("cosine", settings["epoch_num"], 1)
    if not settings["learning_rate_start"] > settings["learning_rate_end"]:
        raise ValueError(
            "learning_rate_mode 'cosine' needs learning_rate_start > learning_rate_end, "
            "got {} and {}.".format(settings["learning_rate_start"], settings["learning_rate_end"])
        )


def _validate_linear(mode, settings):
    _require_epoch_num(mode, settings["epoch_num"], 2)


def _validate_default(mode, settings):
    epoch_num = settings["epoch_num"]
    if settings["learning_rate_drop_factor"] == 0:
        _require_epoch_num(mode, epoch_num, 2)
        if epoch_num <= 2 * settings["learning_rate_warmup_epochs"]:
            raise ValueError(
                "learning_rate_drop_factor=0 needs epoch_num > 2 * learning_rate_warmup_epochs, "
                "got epoch_num={} and learning_rate_warmup_epochs={}.".format(
                    epoch_num, settings["learning_rate_warmup_epochs"]
                )
            )
    if settings["learning_rate_steady_epochs"] <= 0:
        raise ValueError(
            "learning_rate_steady_epochs must be positive, got {}.".format(
                settings["learning_rate_steady_epochs"]
            )
        )


def _validate_constant(_, settings):
    if settings["learning_rate_start"] != settings["learning_rate_end"]:
        raise ValueError(
            "learning_rate_mode 'constant' needs learning_rate_start == learning_rate_end, "
            "got {} and {}.".format(settings["learning_rate_start"], settings["learning_rate_end"])
        )


# mode -> callable (mode, settings) raising ValueError on the settings the mode cannot use
# (modes not listed take any).
_VALIDATORS = {
    "exponential": _validate_exponential,
    "staircase": _validate_staircase,
    "cosine": _validate_cosine,
    "linear": _validate_linear,
    "default": _validate_default,
    "constant": _validate_constant,
}


def _validate(mode, settings):
    validator = _VALIDATORS.get(mode)
    if validator is not None:
        validator(mode, settings)


def schedule_epoch_index(epoch_index, restart_epoch=0):
    """The epoch a schedule is at during run epoch `epoch_index` (both 0-based).

    FlipReID fits its frozen stage for N epochs and then fits again for --epoch_num epochs, so
    its scheduler sees 0..N-1, then 0, 1, ... again (two warm-ups).

    Args:
        epoch_index: int >= 0, the epoch of the run.
        restart_epoch: int >= 0, the run epoch at which the schedule restarts (the number of
            frozen epochs); 0 means it never does.

    Returns:
        int: epoch_index before restart_epoch, epoch_index - restart_epoch from it on.
    """
    if restart_epoch > 0 and epoch_index >= restart_epoch:
        return epoch_index - restart_epoch
    return epoch_index


def _bounded(epoch_index, *, rule, learning_rate_lower_bound, restart_epoch, **settings):
    learning_rate = rule(
        schedule_epoch_index(epoch_index, restart_epoch),
        learning_rate_lower_bound=learning_rate_lower_bound,
        **settings,
    )
    return float(max(learning_rate, learning_rate_lower_bound))


def build_learning_rate_function(
    learning_rate_mode,
    *,
    epoch_num=None,
    learning_rate_start=2e-4,
    learning_rate_end=2e-4,
    learning_rate_base=2e-4,
    learning_rate_warmup_epochs=10,
    learning_rate_steady_epochs=30,
    learning_rate_drop_factor=10.0,
    learning_rate_lower_bound=2e-6,
    exponential_decay_start_epoch=76,
    staircase_decay_epochs=(101, 201),
    staircase_decay_factor=0.1,
    restart_epoch=0,
):
    """Returns f(epoch_index) -> learning rate (float) for a learning-rate mode.

    Defaults are FlipReID's flag defaults. epoch_num (total epochs of the run, both stages) is
    needed by "linear", "cosine", "exponential", and by "default" when learning_rate_drop_factor
    is 0. "exponential" and "staircase" are AlignedReID's "exp" and "staircase" decays (its
    defaults: start epoch 76 of 150; epochs 101 and 201, factor 0.1); they count epochs from 1
    as AlignedReID does. AlignedReID has no floor: pass learning_rate_lower_bound=0 to follow
    its exponential decay down to base / 1000.

    Args:
        learning_rate_mode: "constant", "linear", "cosine", "warmup", "default", "exponential"
            or "staircase".
        epoch_num: total number of epochs.
        learning_rate_start: first learning rate ("constant", "linear", "cosine", "warmup").
        learning_rate_end: last learning rate ("constant", "linear", "cosine", "warmup").
        learning_rate_base: peak learning rate ("default").
        learning_rate_warmup_epochs: warm-up length in epochs ("warmup", "default").
        learning_rate_steady_epochs: epochs between two drops ("default").
        learning_rate_drop_factor: divisor per drop; 0 derives it from epoch_num ("default").
        learning_rate_lower_bound: floor of every mode.
        exponential_decay_start_epoch: 1-based epoch s at which "exponential" starts decaying.
        staircase_decay_epochs: increasing 1-based epochs at whose start "staircase" multiplies
            the rate by staircase_decay_factor.
        staircase_decay_factor: multiplier in (0, 1] per listed epoch ("staircase").
        restart_epoch: int >= 0: from this epoch of the run on, the rule restarts at its epoch
            0 (`schedule_epoch_index`; FlipReID after its frozen epochs, with epoch_num the
            epochs after unfreezing); 0: one schedule over the whole run.

    Raises:
        ValueError: unknown mode or inconsistent settings.
    """
    rule = LEARNING_RATE_FUNCTIONS[learning_rate_mode]  # an unknown mode lists the valid ones
    settings = dict(
        epoch_num=epoch_num,
        learning_rate_start=learning_rate_start,
        learning_rate_end=learning_rate_end,
        learning_rate_base=learning_rate_base,
        learning_rate_warmup_epochs=learning_rate_warmup_epochs,
        learning_rate_steady_epochs=learning_rate_steady_epochs,
        learning_rate_drop_factor=learning_rate_drop_factor,
        exponential_decay_start_epoch=exponential_decay_start_epoch,
        staircase_decay_epochs=tuple(staircase_decay_epochs),
        staircase_decay_factor=staircase_decay_factor,
    )
    _validate(learning_rate_mode, settings)
    if isinstance(restart_epoch, bool) or not isinstance(restart_epoch, int) or restart_epoch < 0:
        raise ValueError(f"restart_epoch must be an int >= 0, got {restart_epoch!r}.")
    return functools.partial(
        _bounded,
        rule=rule,
        learning_rate_lower_bound=learning_rate_lower_bound,
        restart_epoch=restart_epoch,
        **settings,
    )
