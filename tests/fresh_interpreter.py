"""Which modules a piece of code loads, seen from a fresh interpreter.

Test processes have TensorFlow loaded already (tests/conftest.py), so checks that something
never loads it run the code in a new Python process started in the repository folder.
"""

import json
import os
import subprocess
import sys

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_loaded_by(script, *, top_level_names, allowed_names=()):
    """Runs `script` in a fresh interpreter; the modules it loaded under `top_level_names`.

    Args:
        script: str, Python source to run.
        top_level_names: tuple of str, e.g. ("tensorflow", "tf_keras"): modules under them
            are reported.
        allowed_names: tuple of str, module names not reported even when under those names.

    Returns:
        sorted list of str, the loaded modules reported.
    """
    report = (
        "\nimport json, sys\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
        f"{tuple(top_level_names)!r} and name not in {tuple(allowed_names)!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script + report],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPOSITORY_FOLDER_PATH,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])
