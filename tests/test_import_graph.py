"""Imports only point down: each module imports project modules of its own layer or lower ones.

Layers, lowest first:
0. `applications.core`: backend (legacy Keras), registries, atomic files; imports no project
   module outside itself.
1. `evaluation` and `datasets`: they take from `applications` only its core.
2. `callbacks`.
3. The rest of `applications` (models, training, evaluation wiring, the experiment).
4. The entry points: `solution.py` and `benchmarks/`.
The graph is read from the source with `ast` (imports inside functions count too), so nothing
is imported to check it.
"""

import ast
import os

import pytest

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_PACKAGES = ("applications", "datasets", "evaluation", "callbacks", "benchmarks")
PROJECT_TOP_LEVEL_NAMES = (*PROJECT_PACKAGES, "solution")
# Module-name prefixes and their layers; the longest matching prefix decides.
LAYERS = {
    "applications.core": 0,
    "evaluation": 1,
    "datasets": 1,
    "callbacks": 2,
    "applications": 3,
    "solution": 4,
    "benchmarks": 4,
}


def layer_of(module_name):
    """The layer of a project module (int); None for a module outside the project."""
    matches = [
        prefix for prefix in LAYERS if module_name == prefix or module_name.startswith(prefix + ".")
    ]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name_of(file_path, root_folder_path=REPOSITORY_FOLDER_PATH):
    """'applications/core/backend.py' -> 'applications.core.backend' (a package: its name)."""
    relative = os.path.relpath(file_path, root_folder_path)[: -len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_module_files(root_folder_path=REPOSITORY_FOLDER_PATH):
    """Every .py file of the project's packages and solution.py (sorted)."""
    file_paths = [os.path.join(root_folder_path, "solution.py")]
    for package in PROJECT_PACKAGES:
        for folder_path, folder_names, file_names in os.walk(
            os.path.join(root_folder_path, package)
        ):
            folder_names[:] = [name for name in folder_names if not name.startswith((".", "_"))]
            file_paths += [
                os.path.join(folder_path, name) for name in file_names if name.endswith(".py")
            ]
    return sorted(path for path in file_paths if os.path.isfile(path))


def imported_module_names(source, module_name, is_package=False):
    """The absolute names of the modules a source imports (relative imports resolved).

    `from package import name` counts as an import of `package.name`, which is a module or a
    name defined in the package: both sit in the package's layer.

    Returns:
        list of (line number, imported module name).
    """
    package = module_name if is_package else module_name.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def upward_imports(file_paths, root_folder_path=REPOSITORY_FOLDER_PATH):
    """Each import of a module from a higher layer, as 'file:line: a (layer i) -> b (layer j)'."""
    problems = []
    for file_path in file_paths:
        module_name = module_name_of(file_path, root_folder_path)
        own_layer = layer_of(module_name)
        with open(file_path, encoding="utf-8") as file:
            source = file.read()
        is_package = os.path.basename(file_path) == "__init__.py"
        for line_number, imported in imported_module_names(source, module_name, is_package):
            imported_layer = layer_of(imported)
            if imported_layer is not None and imported_layer > own_layer:
                problems.append(
                    f"{os.path.relpath(file_path, root_folder_path)}:{line_number}: "
                    f"{module_name} (layer {own_layer}) imports {imported} "
                    f"(layer {imported_layer})"
                )
    return problems


def test_every_import_of_the_project_points_down():
    file_paths = project_module_files()
    # The walk found the project (a wrong root would pass vacuously).
    names = {module_name_of(path) for path in file_paths}
    assert {"applications.core.backend", "evaluation.metrics", "callbacks", "solution"} <= names
    assert upward_imports(file_paths) == []


def test_the_core_imports_nothing_of_the_project_outside_itself():
    core_files = [
        path
        for path in project_module_files()
        if module_name_of(path).startswith("applications.core")
    ]
    assert len(core_files) >= 3
    for path in core_files:
        with open(path, encoding="utf-8") as file:
            imported = imported_module_names(file.read(), module_name_of(path))
        outside = [
            name
            for _, name in imported
            if name.split(".")[0] in PROJECT_TOP_LEVEL_NAMES
            and not name.startswith("applications.core")
        ]
        assert outside == [], path


@pytest.mark.parametrize(
    "module_path, planted_line, expected",
    [
        # A lazy import inside a function is an arrow too.
        (
            "evaluation/metrics.py",
            "    from applications.model import build_flipreid_models",
            "evaluation.metrics (layer 1) imports applications.model.build_flipreid_models "
            "(layer 3)",
        ),
        ("datasets/pipeline.py", "    import callbacks.history", "imports callbacks.history"),
        (
            "applications/core/files.py",
            "    from .. import experiment",
            "applications.core.files (layer 0) imports applications.experiment (layer 3)",
        ),
        ("callbacks/history.py", "    import solution", "imports solution (layer 4)"),
    ],
)
def test_a_planted_upward_import_is_found(tmp_path, module_path, planted_line, expected):
    for package in ("applications", "applications/core", "evaluation", "datasets", "callbacks"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    file_path = tmp_path / module_path
    clean_source = "import numpy as np\nfrom applications.core.backend import tf\n"
    file_path.write_text(clean_source)
    assert upward_imports([str(file_path)], root_folder_path=str(tmp_path)) == []

    file_path.write_text(clean_source + "\n\ndef build():\n" + planted_line + "\n")
    problems = upward_imports([str(file_path)], root_folder_path=str(tmp_path))

    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{module_path}:6: ") and expected in problems[0], problems
