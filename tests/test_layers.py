"""Imports only point down (docs/design.md, "Layers"): every `nsls2_artifacts` import in the
package is read with `ast` and checked against the layer table below, which is the diagram
in docs/design.md written as data. A module moved up or down without the diagram, a new
sideways import (the store importing the agent), or an alias that keeps an old import path
alive (`nsls2_artifacts.agent.layout`) fails here.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nsls2_artifacts"

# unit (a top-level module or subpackage) -> layer; a unit may import its own layer or below
LAYERS: dict[str, int] = {
    **dict.fromkeys(["records", "schema", "names", "schedule", "fsutil", "errors", "__init__"], 0),
    **dict.fromkeys(["layout", "kernelmeta"], 1),
    **dict.fromkeys(["manifest", "config", "contentindex", "tarstream", "procscan"], 2),
    **dict.fromkeys(["store", "rollout"], 3),
    **dict.fromkeys(["publish", "solve", "install", "pack", "devchannel"], 4),
    **dict.fromkeys(["agent", "jupyter"], 5),
    **dict.fromkeys(["hook", "status", "storeprune", "demo", "kernelcheck"], 6),
    "cli": 7,
}
# jupyter/ sits beside the agent but must not need it (a user's server installs neither the
# solver nor the agent's engines); the one exception is the stdlib-only script kernels run
SIDEWAYS_ALLOWED = {("jupyter", "agent.kernel_ceiling")}


def _module_name(path: Path) -> tuple[str, str]:
    """(dotted module, its package) for a file under the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path) -> set[str]:
    """Every `nsls2_artifacts...` module or name `path` imports (relative ones resolved)."""
    module, package = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nsls2_artifacts")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("nsls2_artifacts"):
                target = node.module or ""
            else:
                continue
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def _unit(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _sub(dotted: str) -> str:
    """`nsls2_artifacts.agent.kernel_ceiling.x` -> `agent.kernel_ceiling`."""
    return ".".join(dotted.split(".")[1:3])


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "labextension" in path.parts:
            continue
        module, _ = _module_name(path)
        unit = _unit(module)
        for target in sorted(_imports(path)):
            other = _unit(target)
            if other == unit or other == "__version__":
                continue
            if unit not in LAYERS or other not in LAYERS:
                problems.append(f"{module}: {other if unit in LAYERS else unit} has no layer")
            elif LAYERS[other] > LAYERS[unit]:
                problems.append(f"{module} imports {target} (a layer above)")
            elif {unit, other} == {"agent", "jupyter"} and (
                unit,
                _sub(target),
            ) not in SIDEWAYS_ALLOWED:
                problems.append(f"{module} imports {target} (agent and jupyter/ are apart)")
    return problems


def test_imports_only_point_down() -> None:
    assert _violations() == []


def test_the_checker_sees_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """The check can fail: a store module importing the agent is reported."""
    fake = tmp_path / "nsls2_artifacts"
    (fake / "store").mkdir(parents=True)
    (fake / "store" / "bad.py").write_text("from ..agent import latest\n")
    (fake / "jupyter").mkdir()
    (fake / "jupyter" / "bad.py").write_text("from ..agent import deploy\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations() == [
        "nsls2_artifacts.jupyter.bad imports nsls2_artifacts.agent.deploy "
        "(agent and jupyter/ are apart)",
        "nsls2_artifacts.store.bad imports nsls2_artifacts.agent.latest (a layer above)",
    ]


def test_layout_is_imported_from_where_it_lives() -> None:
    """The deploy layout left the agent package; no alias keeps the old path alive."""
    importlib.import_module("nsls2_artifacts.agent")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("nsls2_artifacts.agent.layout")
    users = [p for p in PACKAGE.rglob("*.py") if "nsls2_artifacts.agent.layout" in _imports(p)]
    assert users == []


# what a user's Jupyter server imports of ours (docs/design.md): paths, schemas, the bottom
JUPYTER_MAY_IMPORT = {"layout", "kernelmeta", "records", "schema", "names", "fsutil", "errors"}


def test_jupyter_depends_only_on_paths_and_schemas() -> None:
    """Narrower than the layers: jupyter/ may not reach config, the store or publish
    either, so its install stays small and its behaviour cannot depend on them."""
    found = set()
    for path in (PACKAGE / "jupyter").rglob("*.py"):
        for target in _imports(path):
            unit = _unit(target)
            if unit in ("jupyter", "__version__"):
                continue
            if unit not in JUPYTER_MAY_IMPORT and _sub(target) != "agent.kernel_ceiling":
                found.add(f"{path.relative_to(PACKAGE)}: {target}")
    assert found == set()


AUDIENCES = {"pages", "api", "webhook"}  # staff in a browser, scripts, CI


def test_hook_audiences_are_apart_and_wired_only_by_app() -> None:
    """hook/ is split by audience (docs/design.md): the pages, the JSON API and the
    webhook import none of each other, and only app.py mounts them."""
    found = set()
    for path in (PACKAGE / "hook").glob("*.py"):
        module, _ = _module_name(path)
        for target in _imports(path):
            parts = target.split(".")
            audience = parts[2] if len(parts) > 2 and parts[1] == "hook" else None
            if audience in AUDIENCES and path.stem not in ("app", audience):
                found.add(f"{module} imports {target}")
    assert found == set()


def test_every_api_endpoint_goes_through_the_one_auth_dependency() -> None:
    """One bearer-token check for the whole JSON API (`api.staff_api`), not a copy per
    endpoint: every route is the dependency's wrapper, and only it reads the token."""
    from nsls2_artifacts.hook import api

    async def endpoint(*args: object) -> None: ...

    guarded = api.staff_api(endpoint).__code__  # the wrapper every endpoint must be
    for route in api.routes():
        assert route.endpoint.__code__ is guarded, route.path
    readers = [p.name for p in (PACKAGE / "hook").glob("*.py") if ".auth.bearer(" in p.read_text()]
    assert readers == ["api.py"]


def test_readme_module_table_follows_the_layers() -> None:
    """README's module table lists every unit of the layer table, bottom to top."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("| module | job |") :].split("\n\n", 1)[0]
    order = []
    for line in table.splitlines()[2:]:
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            order.append(name.split("/")[0].removesuffix(".py"))
    assert set(order) == set(LAYERS) - {"__init__"}
    layers = [LAYERS[unit] for unit in order]
    assert layers == sorted(layers), list(zip(order, layers, strict=True))
