"""The evaluation package stays pure NumPy/SciPy: importing all of it never loads TensorFlow."""

import os
import pkgutil
import subprocess
import sys

import evaluation

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_evaluation_module_imports_tensorflow():
    module_names = [
        f"evaluation.{module.name}" for module in pkgutil.iter_modules(evaluation.__path__)
    ]
    assert "evaluation.metrics" in module_names and "evaluation.report" in module_names
    # A fresh interpreter: this test process has TensorFlow loaded already (tests/conftest.py).
    script = (
        "import importlib, sys\n"
        f"for name in {module_names + ['applications.core.registry']!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'keras') or (name.startswith('applications.') and "
        "name not in ('applications.core', 'applications.core.registry'))))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPOSITORY_FOLDER_PATH,
        check=True,
    )
    assert completed.stdout.strip() == "[]", completed.stdout
