"""No function on the path from flags to metrics is longer than about a screen of code.

Issue 18: a newcomer reads the run as named steps. Lines of code are the function's own lines
(its signature included) that are neither blank, nor comments, nor its docstring.
"""

import ast
import pathlib

import pytest

REPOSITORY_DIR = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("applications", "callbacks", "datasets", "evaluation")
MAX_CODE_LINES = 60


def code_line_count(source_lines, function):
    """Lines of a function that hold code: not blank, not a comment, not the docstring."""
    docstring_lines = set()
    first = function.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        docstring_lines = set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number in range(function.lineno, function.end_lineno + 1)
        if number not in docstring_lines
        and source_lines[number - 1].strip()
        and not source_lines[number - 1].strip().startswith("#")
    )


def long_functions(file_path, max_code_lines=MAX_CODE_LINES):
    """(name, first line, code lines) of every function in the file above the limit."""
    source = file_path.read_text()
    source_lines = source.splitlines()
    return [
        (node.name, node.lineno, count)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (count := code_line_count(source_lines, node)) > max_code_lines
    ]


def _project_files():
    files = [REPOSITORY_DIR / "solution.py"]
    for package in PACKAGES:
        files.extend(sorted((REPOSITORY_DIR / package).rglob("*.py")))
    return files


def test_the_count_skips_the_docstring_comments_and_blank_lines(tmp_path):
    body = "\n".join(f"    x{index} = {index}" for index in range(61))
    file_path = tmp_path / "example.py"
    file_path.write_text(
        'def short():\n    """Doc\n\n    string."""\n    # a comment\n\n    return 1\n\n\n'
        f"def long():\n{body}\n"
    )
    source_lines = file_path.read_text().splitlines()
    functions = {
        node.name: node
        for node in ast.walk(ast.parse(file_path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    assert code_line_count(source_lines, functions["short"]) == 2
    assert code_line_count(source_lines, functions["long"]) == 62
    assert long_functions(file_path) == [("long", 10, 62)]


@pytest.mark.parametrize(
    "file_path", _project_files(), ids=lambda path: str(path.relative_to(REPOSITORY_DIR))
)
def test_no_project_function_is_over_the_limit(file_path):
    assert long_functions(file_path) == [], (
        f"{file_path.relative_to(REPOSITORY_DIR)}: functions over {MAX_CODE_LINES} lines of "
        "code; split them into named steps"
    )
