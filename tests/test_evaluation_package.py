"""The evaluation package stays pure NumPy/SciPy: importing all of it never loads TensorFlow."""

import pkgutil

import evaluation
from tests.fresh_interpreter import modules_loaded_by


def test_no_evaluation_module_imports_tensorflow():
    module_names = [
        f"evaluation.{module.name}" for module in pkgutil.iter_modules(evaluation.__path__)
    ]
    assert "evaluation.metrics" in module_names and "evaluation.report" in module_names
    script = "import importlib\n" + "".join(
        f"importlib.import_module({name!r})\n"
        for name in [*module_names, "applications.core.registry"]
    )
    loaded = modules_loaded_by(
        script,
        top_level_names=("tensorflow", "tf_keras", "keras", "applications"),
        allowed_names=("applications", "applications.core", "applications.core.registry"),
    )
    assert loaded == [], loaded
