"""The repository keeps its promises: two README commands, CI runs the test one exactly, tests stay
self-contained (no ../shared, no internet)."""
from __future__ import annotations

import ast
import os
import re

from tests.support.proc import ROOT


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_readme_gives_the_run_and_test_commands_and_ci_runs_the_test_one_exactly():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [b.strip() for b in bash_blocks(readme)]
    run_cmd = next(c for c in commands if c.endswith("python run.py --demo"))
    test_cmd = next(c for c in commands if "pytest" in c)
    assert run_cmd.startswith("python3 -m venv .venv") and "pip install -r requirements.txt" in run_cmd
    assert "tests/requirements.txt" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci.splitlines()
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
    first_pytest_line = next(line for line in readme.splitlines() if "pytest" in line)
    assert first_pytest_line.strip() == test_cmd
    zh = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    assert run_cmd in zh and test_cmd in zh


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants used as values (docstrings, which only cite the references, excluded)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_test_reads_the_shared_reference_folder():
    needle = "/".join(["", "shared", ""])  # built, so this file does not match itself
    for path in (ROOT / "tests").rglob("*.py"):
        if "node_modules" in path.parts:  # the npm clients' own files
            continue
        for s in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            assert needle not in s, f"{path} refers to the shared folder: {s!r}"


def test_requirements_are_pinned():
    for name in ("requirements.txt", "tests/requirements.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"{name}: {line} is not pinned"
