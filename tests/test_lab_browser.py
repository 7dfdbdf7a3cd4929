"""What a scientist sees in JupyterLab, in Debian's chromium against a real `jupyter lab`
with the prebuilt extension and real deployed builds: two envs published from the offline
channel (demo: three builds promoted as LTS 2025-1, 2025-2, 2026-1, two of them listed; hxn:
one build) and one withdrawn label, deployed by the agent. Screenshots go to
test-artifacts/lab/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers_agent import run_cli, write_site
from helpers_jupyter import wait_until
from helpers_lab import (
    chromium,
    idle_kernel,
    jupyter_lab,
    open_lab,
    run_all_and_read,
    screenshot,
    session_for,
    tiled_server,
)
from support.ports import free_port
from support.publish import publish_build

from nsls2_artifacts.agent import layout

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

TREE = """
from tiled.adapters.mapping import MapAdapter

tree = MapAdapter(
    {
        "csx": MapAdapter({"scan1": MapAdapter({}, metadata={"sample": "LaB6"})}),
        "hxn": MapAdapter({"map7": MapAdapter({}, metadata={"sample": "Au"})}),
    }
)
"""


def publish(config: Path, env: str) -> str:
    return publish_build(config, env)


def promote(config: Path, env: str, build_id: str, label: str) -> None:
    out = run_cli(config, "promote", env, build_id, "--lts", label)
    assert out.returncode == 0, out.stderr


def agent_once(config: Path) -> None:
    out = run_cli(config, "agent", "--once", timeout=900)
    assert out.returncode == 0, out.stderr


def add_dependency(manifest: Path, line: str) -> None:
    """A new dependency changes the lock, so the next publish is a new build."""
    with open(manifest / "pixi.toml", "a") as handle:
        handle.write(f"{line}\n")


def set_nsls2(manifest: Path, **values: object) -> None:
    path = manifest / "nsls2.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def site(offline_channel: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Real builds for every test of this module (publishing is the slow part)."""
    root = tmp_path_factory.mktemp("lab")
    manifests = root / "manifests"
    shutil.copytree(REPO / "manifests" / "demo", manifests / "demo")
    shutil.copytree(REPO / "manifests" / "demo", manifests / "hxn")
    set_nsls2(manifests / "demo", beamlines=["csx"])
    set_nsls2(manifests / "hxn", display_name="NSLS-II HXN", beamlines=["hxn"], logo=None)
    tiled_port = free_port()
    config, cfg = write_site(
        root,
        manifests="./manifests",
        channel_mirrors={"conda-forge": str(offline_channel)},
        beamlines={
            name: {"uri": f"http://127.0.0.1:{tiled_port}/api", "path": [name]}
            for name in ("csx", "hxn")
        },
        kernels={"listed_lts": 2},
        agent={"smoke_timeout_seconds": 300},
    )
    oldest = publish(config, "demo")
    promote(config, "demo", oldest, "2023-1")
    promote(config, "demo", oldest, "2025-1")
    add_dependency(manifests / "demo", 'six = "*"')
    middle = publish(config, "demo")
    promote(config, "demo", middle, "2025-2")
    add_dependency(manifests / "demo", 'numpy = "*"')
    newest = publish(config, "demo")
    promote(config, "demo", newest, "2026-1")
    hxn = publish(config, "hxn")
    agent_once(config)
    # staff withdraw the 2023-1 label: its kernel is removed and recorded as retired
    (cfg.store / "demo" / "lts" / "2023-1.json").unlink()
    agent_once(config)
    share = cfg.deploy_root / "share" / "jupyter"
    specs = {
        path.parent.name: json.loads(path.read_text())
        for path in (share / "kernels").glob("*/kernel.json")
    }
    notebooks = root / "notebooks"
    notebooks.mkdir()
    return SimpleNamespace(
        root=root,
        config=config,
        cfg=cfg,
        share=share,
        specs=specs,
        notebooks=notebooks,
        tiled_port=tiled_port,
        builds={"oldest": oldest, "middle": middle, "newest": newest, "hxn": hxn},
    )


@pytest.fixture(scope="module")
def lab(site: SimpleNamespace):
    with jupyter_lab(site.root / "lab-home", site.notebooks, site.share) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def display(site: SimpleNamespace, name: str) -> str:
    return site.specs[name]["display_name"]


def section(page, title: str):
    """The launcher section titled exactly `title` (of the visible launcher)."""
    heading = page.get_by_role("heading", name=title, exact=True)
    return page.locator(".jp-Launcher:visible .jp-Launcher-section").filter(has=heading).first


def section_cards(page, title: str) -> list[str]:
    return section(page, title).locator(".jp-LauncherCard-label").all_inner_texts()


def write_notebook(site: SimpleNamespace, name: str, kernel: str, **metadata: object) -> str:
    content = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel, "display_name": kernel, "language": "python"},
            **metadata,
        },
        "cells": [
            {
                "cell_type": "code",
                "id": "c1",
                "source": "import sys; print(sys.prefix)",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
        ],
    }
    (site.notebooks / name).write_text(json.dumps(content))
    return name


def test_deployed_kernels_are_what_the_tests_expect(site: SimpleNamespace) -> None:
    """The fixture's premises, from the agent's own specs and retired record."""
    listed = {name for name, spec in site.specs.items() if spec["metadata"]["nsls2"]["listed"]}
    assert listed == {"nsls2-demo-latest", "nsls2-demo-2026-1", "nsls2-demo-2025-2"} | {
        "nsls2-hxn-latest"
    }
    assert "nsls2-demo-2025-1" in site.specs and "nsls2-demo-2023-1" not in site.specs
    retired = json.loads((site.share / "nsls2" / "retired.json").read_text())["kernels"]
    assert retired["nsls2-demo-2023-1"]["build_id"] == site.builds["oldest"]


def test_launcher_shows_a_short_nsls2_section_first(site, lab, browser) -> None:
    page = open_lab(browser, lab)
    page.locator(".jp-Launcher-sectionTitle", has_text="NSLS-II").first.wait_for()
    titles = page.locator(".jp-Launcher:visible .jp-Launcher-sectionTitle").all_inner_texts()
    assert titles[:2] == ["NSLS-II", "NSLS-II beamlines"], titles
    expected = [
        display(site, "nsls2-demo-latest"),
        display(site, "nsls2-demo-2026-1"),
        display(site, "nsls2-demo-2025-2"),
        display(site, "nsls2-hxn-latest"),
    ]
    assert section_cards(page, "NSLS-II") == expected
    # NSLS-II kernels are not repeated under Notebook; Console has one card per env
    notebook_cards = section_cards(page, "Notebook")
    assert notebook_cards == ["Python 3 (ipykernel)"]
    console_cards = section_cards(page, "Console")
    per_env = [display(site, "nsls2-demo-latest"), display(site, "nsls2-hxn-latest")]
    assert sorted(console_cards) == sorted(["Python 3 (ipykernel)", *per_env])
    assert section_cards(page, "NSLS-II beamlines") == ["CSX", "HXN"]
    # an LTS card's tooltip: build date, python, end of support
    lts_card = section(page, "NSLS-II").locator(
        ".jp-LauncherCard", has_text=display(site, "nsls2-demo-2025-2")
    )
    title = lts_card.first.get_attribute("title")
    meta = site.specs["nsls2-demo-2025-2"]["metadata"]["nsls2"]
    assert "built " + meta["created"][:10] in title
    assert "Python " + meta["python"] in title
    assert "supported until " + meta["expires"][:10] in title
    # the env logo is the card's icon
    icon = lts_card.first.locator(".jp-nsls2-logo")
    assert "kernelspecs/nsls2-demo-2025-2" in icon.evaluate(
        "el => getComputedStyle(el).backgroundImage"
    )
    screenshot(page, "launcher")
    page.close()


def test_old_notebook_on_unlisted_lts_starts_it_without_dialog(site, lab, browser) -> None:
    path = write_notebook(site, "old-2025-1.ipynb", "nsls2-demo-2025-1")
    page = open_lab(browser, lab, path)
    session = idle_kernel(lab, path)
    assert session["kernel"]["name"] == "nsls2-demo-2025-1"
    assert page.locator(".jp-Dialog").count() == 0
    prefix = layout.build_dir(site.cfg.deploy_root, "demo", site.builds["oldest"])
    assert run_all_and_read(page) == str(prefix)
    screenshot(page, "old-notebook-unlisted-lts")
    page.close()


def test_retired_kernel_dialog_preselects_nearest_lts_of_its_env(site, lab, browser) -> None:
    path = write_notebook(
        site,
        "retired-2023-1.ipynb",
        "nsls2-demo-2023-1",
        nsls2={"env": "demo", "build_id": site.builds["oldest"], "track": "2023-1"},
    )
    page = open_lab(browser, lab, path)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=60_000)
    assert "Kernel retired" in dialog.locator(".jp-Dialog-header").inner_text()
    retired_on = json.loads((site.share / "nsls2" / "retired.json").read_text())["kernels"][
        "nsls2-demo-2023-1"
    ]["retired"][:10]
    message = dialog.locator(".jp-nsls2-retired-message").inner_text()
    assert message == f"This notebook used NSLS-II demo 2023-1, retired {retired_on}."
    select = dialog.locator("select.jp-nsls2-retired-choice")
    # the kept LTS of the same build is the nearest; no other env's kernel is offered
    assert select.input_value() == "nsls2-demo-2025-1"
    options = select.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert set(options) == {
        "nsls2-demo-2026-1",
        "nsls2-demo-2025-2",
        "nsls2-demo-2025-1",
        "nsls2-demo-latest",
    }
    screenshot(page, "retired-kernel-dialog")
    dialog.locator("button", has_text="Start").click()
    session = idle_kernel(lab, path)
    assert session["kernel"]["name"] == "nsls2-demo-2025-1"
    page.close()


def test_beamline_cards_make_notebooks_that_read_their_catalogs(site, lab, browser) -> None:
    with tiled_server(site.root / "tiled", site.tiled_port, TREE):
        page = open_lab(browser, lab)
        outputs = {}
        for beamline, entry in (("csx", "scan1"), ("hxn", "map7")):
            cards = section(page, "NSLS-II beamlines").locator(".jp-LauncherCard")
            cards.filter(has_text=beamline.upper()).click()
            path = f"{beamline}.ipynb"
            session = idle_kernel(lab, path)
            env = "demo" if beamline == "csx" else "hxn"
            assert session["kernel"]["name"] == f"nsls2-{env}-latest"
            outputs[beamline] = run_all_and_read(page)
            assert entry in outputs[beamline], outputs[beamline]
            if beamline == "csx":
                screenshot(page, "beamline-notebook")
                page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
        # both notebooks run side by side, each on its own env
        assert session_for(lab, "csx.ipynb") and session_for(lab, "hxn.ipynb")
        # saved with the server extension: it records the build and keeps the beamline
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        saved_hxn = wait_until(
            lambda: (
                json.loads((site.notebooks / "hxn.ipynb").read_text())["metadata"]["nsls2"]
                if (site.notebooks / "hxn.ipynb").read_text().count('"build_id"')
                else None
            ),
            60,
            "hxn.ipynb saved",
        )
        assert saved_hxn["beamline"] == "hxn" and saved_hxn["build_id"] == site.builds["hxn"]
        saved = json.loads((site.notebooks / "csx.ipynb").read_text())
        assert saved["metadata"]["nsls2"]["beamline"] == "csx"
        assert 'from_profile("csx")' in "".join(saved["cells"][0]["source"])
        page.close()


def test_build_indicator_shows_the_running_build(site, lab, browser) -> None:
    path = write_notebook(site, "indicator.ipynb", "nsls2-demo-2025-2")
    page = open_lab(browser, lab, path)
    idle_kernel(lab, path)
    item = page.locator(".jp-nsls2-build")
    wait_until(lambda: "2025-2" in item.inner_text(), 60, "the build indicator")
    middle = site.builds["middle"]
    day = f"{middle[0:4]}-{middle[5:7]}-{middle[8:10]}"
    assert item.inner_text().startswith(f"demo 2025-2 · {day}")
    assert "newer" not in item.inner_text()
    screenshot(page, "build-indicator")
    page.close()


def test_stock_jupyterlab_without_the_extension_lists_and_starts_every_kernel(
    site, browser
) -> None:
    with jupyter_lab(site.root / "stock-home", site.notebooks, site.share, False) as stock:
        page = open_lab(browser, stock)
        page.locator(".jp-Launcher-sectionTitle", has_text="Notebook").first.wait_for()
        titles = page.locator(".jp-Launcher:visible .jp-Launcher-sectionTitle").all_inner_texts()
        assert "NSLS-II" not in titles
        every = sorted(spec["display_name"] for spec in site.specs.values())
        assert sorted(section_cards(page, "Notebook")) == sorted(["Python 3 (ipykernel)", *every])
        page.close()
        path = write_notebook(site, "stock-2025-1.ipynb", "nsls2-demo-2025-1")
        page = open_lab(browser, stock, path)
        assert idle_kernel(stock, path)["kernel"]["name"] == "nsls2-demo-2025-1"
        prefix = layout.build_dir(site.cfg.deploy_root, "demo", site.builds["oldest"])
        assert run_all_and_read(page) == str(prefix)
        page.close()


def test_build_indicator_marks_a_kernel_behind_a_newer_latest(site, lab, browser) -> None:
    """Last in this module: publishes a new hxn build, so its `latest` moves on."""
    path = write_notebook(site, "rolling.ipynb", "nsls2-hxn-latest")
    page = open_lab(browser, lab, path)
    idle_kernel(lab, path)
    item = page.locator(".jp-nsls2-build")
    wait_until(lambda: "hxn latest" in item.inner_text(), 60, "the build indicator")
    assert "newer" not in item.inner_text()
    add_dependency(site.root / "manifests" / "hxn", 'six = "*"')
    assert publish(site.config, "hxn") != site.builds["hxn"]
    agent_once(site.config)
    # JupyterLab re-reads the kernelspecs by itself every minute; ask now instead
    page.evaluate("() => window.jupyterapp.serviceManager.kernelspecs.refreshSpecs()")
    try:
        wait_until(lambda: "newer" in item.inner_text(), 60, "the newer-build mark")
    except AssertionError:
        running = lab.ok("GET", "/nsls2/api/kernels")["running"]
        spec = page.evaluate(
            "() => window.jupyterapp.serviceManager.kernelspecs.specs"
            ".kernelspecs['nsls2-hxn-latest'].metadata.nsls2.build_id"
        )
        raise AssertionError(
            f"indicator {item.inner_text()!r}, running {running}, spec {spec}"
        ) from None
    assert "jp-nsls2-build-newer" in (item.get_attribute("class") or "")
    screenshot(page, "build-indicator-newer")
    page.close()
