"""The test helpers are one copy each (issue #21 item 6): a test waits with
`support.processes.wait_for` and ends a process with `kill9` or `stop`, never with a loop
or a kill of its own; no two helper modules define the same helper, no test module defines
a helper under a support/ helper's name (a second copy, or a different helper whose name does
not say the difference, as three `tree`s, three `promote`s and two `run_cell`s did until the
review), and no test module takes a helper or fixture from another test module (shared ones
live in support/ and conftest.py). Read with `ast` from the test sources, so a new copy fails
here, and the checker is shown to see one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ONE_COPY = TESTS / "support" / "processes.py"  # the wait loop, kill9 and stop live here
# signals that are the fault a test makes, not the end of a process: the S3 server frozen
# and thawed (SIGSTOP/SIGCONT), and `just demo-s3`'s server stopped through its pid file
# (started by another process: there is no Popen to hand to `stop`)
FAULTS = {("s3server.py", "freeze"), ("s3server.py", "thaw"), ("s3server.py", "_demo")}
# `.kill()` of the helpers' own server objects (HookServer, S3Server): both call `kill9`
HELPER_OBJECTS = {"hook", "server", "own_server"}
ENDERS = {"terminate", "send_signal", "killpg"}


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Every node -> the name of the top-level function or method it is in ("" outside)."""
    owner: dict[ast.AST, str] = {}
    for top in ast.walk(tree):
        if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(top):
                owner.setdefault(node, top.name)
    return owner


def problems(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / ONE_COPY.relative_to(TESTS) or path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(), str(path))
        owner = _functions(tree)
        where = str(path.relative_to(root))
        for loop in ast.walk(tree):
            if not isinstance(loop, ast.While | ast.For | ast.AsyncFor):
                continue
            sleeps = [
                n
                for n in ast.walk(loop)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr == "sleep"
            ]
            if sleeps:
                found.append(f"{where}:{loop.lineno}: a polling loop (use wait_for)")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name, attr = ast.unparse(node.func), node.func.attr
            if (path.name, owner.get(node, "")) in FAULTS:
                continue
            receiver = ast.unparse(node.func.value)
            if (
                attr in ENDERS
                or name == "os.kill"
                or (attr == "kill" and receiver not in HELPER_OBJECTS)
            ):
                found.append(f"{where}:{node.lineno}: {name}() (use kill9 or stop)")
        for node in ast.walk(tree):  # a helper or fixture shared through a test module
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test_"):
                found.append(f"{where}:{node.lineno}: imports {node.module} (use support/)")
            elif isinstance(node, ast.Import) and any(
                a.name.startswith("test_") for a in node.names
            ):
                found.append(f"{where}:{node.lineno}: imports a test module (use support/)")
    helpers: dict[str, list[str]] = defaultdict(list)
    for path in sorted((root / "support").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                helpers[node.name].append(path.name)
    found += [
        f"support: {name} defined in {where}" for name, where in helpers.items() if len(where) > 1
    ]
    for path in sorted(root.glob("*.py")):  # test modules, conftest.py, s3server.py
        if path.name == Path(__file__).name:
            continue
        for node in ast.parse(path.read_text()).body:
            if _helper(node) and node.name in helpers:
                found.append(
                    f"{path.name}:{node.lineno}: defines {node.name}, as support/"
                    f"{helpers[node.name][0]} does (use it, or name the difference)"
                )
    return found


def _helper(node: ast.stmt) -> bool:
    """A top-level function or class that is not a fixture (a fixture is found by its name,
    so its name is free to match a helper's)."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return False
    return not any("fixture" in ast.unparse(d) for d in node.decorator_list)


def test_one_wait_loop_one_process_ender_one_copy_of_each_helper() -> None:
    assert problems(TESTS) == []


def test_the_checker_sees_copies(tmp_path: Path) -> None:
    (tmp_path / "support").mkdir()
    (tmp_path / "support" / "a.py").write_text("def write_site():\n    pass\n")
    (tmp_path / "support" / "b.py").write_text("def write_site():\n    pass\n")
    (tmp_path / "support" / "c.py").write_text("def promote():\n    pass\n")
    (tmp_path / "test_x.py").write_text(
        "import os, time\nfrom test_y import helper\n"
        "def test_x(proc, deadline):\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.1)\n"
        "    proc.terminate()\n"
        "    proc.kill()\n"
        "    os.kill(proc.pid, 9)\n"
        "    server.kill()\n"
        "def promote():\n"
        "    pass\n"
        "@pytest.fixture\n"
        "def write_site():\n"
        "    pass\n"
    )
    assert problems(tmp_path) == [
        "test_x.py:4: a polling loop (use wait_for)",
        "test_x.py:6: proc.terminate() (use kill9 or stop)",
        "test_x.py:7: proc.kill() (use kill9 or stop)",
        "test_x.py:8: os.kill() (use kill9 or stop)",
        "test_x.py:2: imports test_y (use support/)",
        "support: write_site defined in ['a.py', 'b.py']",
        "test_x.py:10: defines promote, as support/c.py does (use it, or name the difference)",
    ]
