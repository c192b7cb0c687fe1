"""The README's code blocks: each one is run by a test, or checked against what it shows.

* A block after `<!-- tutorial:<name> -->` is run by `tests/test_tutorials.py`, one after
  `<!-- install:<target> -->` by `tests/test_host_project.py`: the marker must be used there.
* Any other Python block is an excerpt of the demo app: each function in it must be the
  demo's function (`project/demo/workflows.py`), statement for statement.
* Any other shell block holds only commands that work in a fresh shell of the checkout:
  `make` targets that exist, and `pip install` of this package.
* Commands in the text name the virtualenv's programs (`.venv/bin/python`, `.venv/bin/temporal`),
  except in the sections about your own project, and the `temporal` CLI gets its
  `--workflow-id`.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass

from tests import harness

README = (harness.REPO_ROOT / "README.md").read_text()
DEMO = (harness.REPO_ROOT / "project" / "demo" / "workflows.py").read_text()
TESTS = {path.name: path.read_text() for path in (harness.REPO_ROOT / "tests").glob("test_*.py")}
# Sections about the reader's own project, where `python` is their virtualenv's.
OWN_PROJECT_SECTIONS = ("Install into your Django project", "Production deployment")


@dataclass
class Block:
    language: str
    code: str
    marker: str  # "tutorial:<name>", "install:<target>" or ""
    section: str
    line: int


def blocks() -> list[Block]:
    found = []
    section = ""
    lines = README.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"```(\w*)$", line)
        if fence:
            end = lines.index("```", index + 1)
            before = lines[index - 1] if index else ""
            marked = re.match(r"<!-- ((?:tutorial|install):\S+) -->$", before)
            found.append(
                Block(
                    fence.group(1),
                    "\n".join(lines[index + 1 : end]) + "\n",
                    marked.group(1) if marked else "",
                    section,
                    index + 1,
                )
            )
            index = end
        index += 1
    return found


def test_the_readme_has_its_blocks() -> None:
    found = blocks()
    assert len(found) >= 15
    assert {b.marker for b in found} >= {
        "tutorial:research-python",
        "tutorial:fan-out",
        "tutorial:cli",
        "tutorial:rest",
        "install:mysite/settings.py",
        "install:commands",
    }


def test_every_marked_block_is_run_by_a_test() -> None:
    tests = TESTS["test_tutorials.py"]
    for block in blocks():
        kind, _, name = block.marker.partition(":")
        if kind == "tutorial":
            assert f'block("{name}")' in tests, f"README line {block.line}: nothing runs {name}"
        elif kind == "install":
            # test_host_project.py applies every install block by its target.
            assert "install_blocks()" in TESTS["test_host_project.py"]


def normalized(function: ast.FunctionDef) -> str:
    """A function's statements, without annotations and docstring (the README drops them)."""
    function = ast.parse(ast.unparse(function)).body[0]  # a copy
    assert isinstance(function, ast.FunctionDef)
    for arg in function.args.args:
        arg.annotation = None
    function.returns = None
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        function.body = body[1:]
    return ast.dump(function)


def functions(code: str) -> dict[str, str]:
    tree = ast.parse(code)
    return {n.name: normalized(n) for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_python_excerpts_are_the_demo_code() -> None:
    demo = functions(DEMO)
    excerpts = [b for b in blocks() if b.language == "python" and not b.marker]
    assert excerpts
    for block in excerpts:
        shown = functions(block.code)
        assert shown, f"README line {block.line}: a Python block with no test and no function"
        for name, body in shown.items():
            assert name in demo, f"README line {block.line}: {name} is not in the demo app"
            assert body == demo[name], f"README line {block.line}: {name} differs from the demo"


def test_every_python_block_is_valid_python() -> None:
    for block in blocks():
        if block.language == "python":
            ast.parse(block.code)  # raises with the line of the error


def makefile_targets() -> set[str]:
    makefile = (harness.REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))


def commands(block: Block) -> list[list[str]]:
    lines = block.code.replace("\\\n", " ").splitlines()
    return [shlex.split(line.split("  # ")[0]) for line in lines if line.strip()]


def test_other_shell_blocks_hold_commands_that_exist() -> None:
    targets = makefile_targets()
    for block in blocks():
        if block.language != "bash" or block.marker:
            continue
        for argv in commands(block):
            program = next(word for word in argv if "=" not in word)  # past VAR=value
            if program == "make":
                target = argv[argv.index("make") + 1]
                assert target in targets, f"README line {block.line}: no make target {target}"
            elif argv[:2] == ["pip", "install"]:
                assert block.section == "Install into your Django project", block.line
            elif program == ".venv/bin/python":
                assert (harness.REPO_ROOT / argv[1]).exists(), f"README line {block.line}"
            else:
                raise AssertionError(f"README line {block.line}: untested command {argv}")


def test_commands_name_the_virtualenv_and_temporal_gets_its_workflow_id() -> None:
    section = ""
    for number, line in enumerate(README.splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        if section not in OWN_PROJECT_SECTIONS:
            # `python manage.py …` outside the venv fails with "No module named 'django'".
            bare = re.search(r"(^|`|\$\()python3? (manage\.py|-m)", line)
            assert not bare, f"README line {number} uses bare python: {line.strip()}"
            assert not re.search(r"(^|`)temporal workflow", line), f"README line {number}"
        for call in re.findall(r"temporal workflow (\w+)[^`\n]*", line):
            if call in {"signal", "describe", "show", "result", "cancel", "terminate"}:
                assert "--workflow-id" in line, f"README line {number}: {line.strip()}"
