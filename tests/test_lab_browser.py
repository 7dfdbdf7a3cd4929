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
from support.agent import agent_once, write_site
from support.bigsite import BigSite, generate_site
from support.cli import run_cli
from support.jupyter import wait_until
from support.lab import (
    chromium,
    idle_kernel,
    jupyter_lab,
    menu,
    open_lab,
    run_all_and_read,
    screenshot,
    session_for,
    tiled_server,
)
from support.ports import free_port
from support.publish import publish_build

from nsls2_artifacts import layout

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


def promote_by_cli(config: Path, env: str, build_id: str, label: str) -> None:
    """`nsls2-artifacts promote ENV BUILD_ID --lts LABEL`, what staff run; it must succeed."""
    out = run_cli(config, "promote", env, build_id, "--lts", label, check=False)
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
    oldest = publish_build(config, "demo")
    promote_by_cli(config, "demo", oldest, "2023-1")
    promote_by_cli(config, "demo", oldest, "2025-1")
    add_dependency(manifests / "demo", 'six = "*"')
    middle = publish_build(config, "demo")
    promote_by_cli(config, "demo", middle, "2025-2")
    add_dependency(manifests / "demo", 'numpy = "*"')
    newest = publish_build(config, "demo")
    promote_by_cli(config, "demo", newest, "2026-1")
    hxn = publish_build(config, "hxn")
    agent_once(config, timeout=900)
    # staff withdraw the 2023-1 label: its kernel is removed and recorded as retired
    (cfg.store / "demo" / "lts" / "2023-1.json").unlink()
    agent_once(config, timeout=900)
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


def env_name(site: SimpleNamespace, name: str) -> str:
    return site.specs[name]["metadata"]["nsls2"]["env_display_name"]


def test_launcher_shows_a_short_nsls2_section_first(site, lab, browser) -> None:
    page = open_lab(browser, lab)
    page.locator(".jp-Launcher-sectionTitle", has_text="NSLS-II").first.wait_for()
    titles = page.locator(".jp-Launcher:visible .jp-Launcher-sectionTitle").all_inner_texts()
    assert titles[:2] == ["NSLS-II", "NSLS-II beamlines"], titles
    # one card per env, its latest; the listed LTS kernels ride on the card
    demo, hxn = env_name(site, "nsls2-demo-latest"), env_name(site, "nsls2-hxn-latest")
    assert section_cards(page, "NSLS-II") == [demo, hxn]
    demo_card = section(page, "NSLS-II").locator(".jp-LauncherCard", has_text=demo).first
    demo_card.locator(".jp-nsls2-card-tracks").wait_for()
    assert demo_card.locator(".jp-nsls2-badge-latest").inner_text() == "latest"
    lts = demo_card.locator("button.jp-nsls2-card-lts")
    assert lts.all_inner_texts() == ["LTS 2026-1", "LTS 2025-2"]
    # few envs: no filter box
    assert section(page, "NSLS-II").locator("input.jp-nsls2-launcher-filter").count() == 0
    # NSLS-II kernels are not repeated under Notebook; Console has one card that asks
    assert section_cards(page, "Notebook") == ["Python 3 (ipykernel)"]
    assert sorted(section_cards(page, "Console")) == ["NSLS-II console…", "Python 3 (ipykernel)"]
    assert section_cards(page, "NSLS-II beamlines") == ["CSX", "HXN"]
    # an LTS button's tooltip: build date, python, end of support
    title = lts.nth(1).get_attribute("title")
    meta = site.specs["nsls2-demo-2025-2"]["metadata"]["nsls2"]
    assert "built " + meta["created"][:10] in title
    assert "Python " + meta["python"] in title
    assert "supported until " + meta["expires"][:10] in title
    # the env logo is the card's icon; the section header has the NSLS-II mark instead
    icon = demo_card.locator(".jp-LauncherCard-icon .jp-nsls2-logo")
    assert "kernelspecs/nsls2-demo-latest" in icon.evaluate(
        "el => getComputedStyle(el).backgroundImage"
    )
    header = section(page, "NSLS-II").locator(".jp-Launcher-sectionHeader .jp-nsls2-logo")
    assert "kernelspecs" not in header.evaluate("el => getComputedStyle(el).backgroundImage")
    screenshot(page, "launcher")
    # an LTS button starts that LTS kernel, not the card's latest
    lts.nth(1).click()
    wait_until(
        lambda: any(
            s.get("kernel", {}).get("name") == "nsls2-demo-2025-2"
            for s in lab.ok("GET", "/api/sessions")
        ),
        120,
        "a notebook on nsls2-demo-2025-2",
    )
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
            card = cards.filter(has_text=beamline.upper()).first
            # the card says which env it starts (csx: the env listing it; hxn: its own)
            env = "demo" if beamline == "csx" else "hxn"
            env_line = card.locator(".jp-nsls2-card-env")
            env_line.wait_for()
            assert env_line.inner_text() == f"on {env_name(site, f'nsls2-{env}-latest')}"
            card.click()
            path = f"{beamline}.ipynb"
            session = idle_kernel(lab, path)
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


# --- a facility-sized site: 30 envs x 5 LTS labels (180 kernelspecs) -----------------------
# Written by the real kernels.py around one real deployed build (support/bigsite.py), so it
# costs seconds. Goal (issue 19): at most one launcher card per env plus beamlines, and no
# dialog lists more than ~10 entries unless the user asks for more.

MOST_ROWS = 10


@pytest.fixture(scope="module")
def facility(site: SimpleNamespace) -> BigSite:
    real = layout.build_dir(site.cfg.deploy_root, "demo", site.builds["newest"])
    return generate_site(site.root / "facility", real)


@pytest.fixture(scope="module")
def facility_lab(site: SimpleNamespace, facility: BigSite):
    notebooks = site.root / "facility-notebooks"
    notebooks.mkdir()
    with jupyter_lab(site.root / "facility-home", notebooks, facility.share) as server:
        server.notebooks = notebooks
        yield server


def picker_rows(page) -> list[str]:
    """The kernel names of the dialog's rows (and "more" for a show-more row)."""
    rows = page.locator(".jp-Dialog .jp-nsls2-picker-entry")
    return rows.evaluate_all("rs => rs.map(r => r.dataset.kernel || 'more')")


def selected_row(page) -> str:
    return page.locator(".jp-Dialog .jp-nsls2-picker-entry.jp-mod-selected").get_attribute(
        "data-kernel"
    )


def test_facility_site_has_180_kernelspecs(facility: BigSite) -> None:
    assert len(facility.kernel_names) == 30 * 6 == 180
    specs = list((facility.share / "kernels").glob("nsls2-*/kernel.json"))
    assert len(specs) == 180


def test_facility_launcher_one_card_per_env(facility, facility_lab, browser) -> None:
    page = open_lab(browser, facility_lab)
    section(page, "NSLS-II").locator(".jp-nsls2-card-tracks").first.wait_for(timeout=60_000)
    cards = section_cards(page, "NSLS-II")
    assert len(cards) == len(facility.envs) == 30
    # the site's recommended env first (no NSLS-II server default here: base)
    assert cards[0] == "NSLS-II base"
    # labels are the env only: nothing to wrap mid-date
    assert all("(" not in label and "\n" not in label for label in cards), cards
    # the section header carries the NSLS-II mark, not the first env's logo
    header = section(page, "NSLS-II").locator(".jp-Launcher-sectionHeader .jp-nsls2-logo")
    assert "kernelspecs" not in header.evaluate("el => getComputedStyle(el).backgroundImage")
    nsls2 = section(page, "NSLS-II")
    lts = nsls2.locator("button.jp-nsls2-card-lts")
    assert lts.count() == 30 * facility.listed_lts
    assert nsls2.locator(".jp-nsls2-badge-latest").count() == 30
    # beamline cards: one per profile; Console: one NSLS-II card, not one per env
    assert section_cards(page, "NSLS-II beamlines") == ["AMX", "CHX", "CSX", "HEX", "HXN", "TST"]
    console = [c for c in section_cards(page, "Console") if c.startswith("NSLS-II")]
    assert console == ["NSLS-II console…"]
    notebook = [c for c in section_cards(page, "Notebook") if c.startswith("NSLS-II")]
    assert notebook == []
    # 30 envs are several screens at 1280 x 860: the beamline cards come first, in view
    # without scrolling, then the env section with its filter box
    titles = page.locator(".jp-Launcher:visible .jp-Launcher-sectionTitle").all_inner_texts()
    assert titles[:2] == ["NSLS-II beamlines", "NSLS-II"], titles
    beamline = section(page, "NSLS-II beamlines").locator(".jp-LauncherCard").first
    box = beamline.bounding_box()
    assert box and box["y"] + box["height"] <= page.viewport_size["height"], box
    filter_box = section(page, "NSLS-II").locator("input.jp-nsls2-launcher-filter")
    top = filter_box.bounding_box()
    assert top and top["y"] + top["height"] <= page.viewport_size["height"], top
    screenshot(page, "facility-launcher")
    # more than a screenful of envs: a filter box
    box = nsls2.locator("input.jp-nsls2-launcher-filter")
    box.fill("hxn")
    visible = nsls2.locator(".jp-LauncherCard:visible .jp-LauncherCard-label")
    wait_until(lambda: visible.count() == 2, 30, "the filtered cards")
    assert sorted(visible.all_inner_texts()) == ["NSLS-II HXN", "NSLS-II base"]
    screenshot(page, "facility-launcher-filtered")
    box.fill("")
    wait_until(lambda: visible.count() == 30, 30, "every card again")
    page.close()


EMPTY_BASE_NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {
        "kernelspec": {"name": "nsls2-base-latest", "display_name": "x", "language": "python"}
    },
    "cells": [],
}


def test_facility_new_notebook_dialog_is_short(facility, facility_lab, browser) -> None:
    page = open_lab(browser, facility_lab)
    # File -> New -> Notebook
    menu(page, "File", "New", "Notebook")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=60_000)
    rows = picker_rows(page)
    assert len(rows) <= MOST_ROWS, rows
    assert rows[0] == "nsls2-base-latest" and rows[-1] == "more"
    assert selected_row(page) == "nsls2-base-latest"
    assert "recommended" in dialog.locator(".jp-mod-selected").inner_text()
    screenshot(page, "facility-select-kernel")
    # older builds: the env's listed LTS, one step away
    dialog.locator(".jp-nsls2-picker-toggle").first.click()
    listed = [f"nsls2-base-{label}" for label in reversed(facility.listed_labels())]
    assert picker_rows(page)[1:3] == listed
    # show all: every env once, still no LTS flood
    dialog.locator(".jp-nsls2-picker-more").click()
    assert len(picker_rows(page)) == 30 + 2 + 1  # envs, base's 2 LTS, Python 3
    # unlisted kernels through search only
    unlisted = "nsls2-csx-2023-1"
    assert unlisted not in picker_rows(page)
    dialog.locator("input.jp-nsls2-picker-search").fill("csx 2023")
    wait_until(lambda: unlisted in picker_rows(page), 30, "the search result")
    assert len(picker_rows(page)) <= MOST_ROWS
    screenshot(page, "facility-select-kernel-search")
    dialog.locator(f".jp-nsls2-picker-entry[data-kernel='{unlisted}']").click()
    dialog.locator("button", has_text="Select").click()
    session = idle_kernel(facility_lab, "Untitled.ipynb")
    assert session["kernel"]["name"] == unlisted
    # the toolbar names it compactly, so a split view keeps it readable
    name = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) button.jp-nsls2-kernel-name")
    wait_until(lambda: name.inner_text() == "CSX · 2023-1", 60, "the toolbar kernel name")
    # a second notebook split to the right: each half still shows its kernel name in the
    # toolbar itself, not folded into the toolbar's "⋯" menu
    (facility_lab.notebooks / "split.ipynb").write_text(json.dumps(EMPTY_BASE_NOTEBOOK))
    page.evaluate(
        "() => { window.jupyterapp.commands.execute('docmanager:open',"
        " {path: 'split.ipynb', options: {mode: 'split-right'}}); }"
    )
    names = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) button.jp-nsls2-kernel-name")
    wait_until(lambda: names.count() == 2, 60, "two notebooks side by side")
    wait_until(
        lambda: any(t.endswith("· latest") for t in names.all_inner_texts()),
        120,
        "the second notebook's kernel name",
    )
    assert all(names.nth(i).is_visible() for i in range(2)), names.all_inner_texts()
    assert "CSX · 2023-1" in names.all_inner_texts()
    screenshot(page, "facility-split-view")
    page.close()


def test_facility_change_kernel_keeps_the_notebooks_own(facility, facility_lab, browser) -> None:
    """A notebook on an unlisted LTS kernel: Change Kernel offers it first, marked current."""
    name = "nsls2-chx-2024-1"
    content = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": name, "display_name": name, "language": "python"}},
        "cells": [],
    }
    (facility_lab.notebooks / "old-chx.ipynb").write_text(json.dumps(content))
    page = open_lab(browser, facility_lab, "old-chx.ipynb")
    assert idle_kernel(facility_lab, "old-chx.ipynb")["kernel"]["name"] == name
    # not awaited: the command resolves only when the dialog closes
    page.evaluate("() => { window.jupyterapp.commands.execute('kernelmenu:change'); }")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=60_000)
    assert "Change Kernel" in dialog.locator(".jp-Dialog-header").inner_text()
    rows = picker_rows(page)
    assert rows[0] == name and len(rows) <= MOST_ROWS, rows
    assert selected_row(page) == name
    assert "current" in dialog.locator(".jp-mod-selected").inner_text()
    screenshot(page, "facility-change-kernel")
    dialog.locator("button", has_text="Cancel").click()
    page.close()


def test_facility_never_had_kernel_is_not_called_retired(facility, facility_lab, browser) -> None:
    content = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {
                "name": "nsls2-nowhere-latest",
                "display_name": "NSLS-II nowhere",
                "language": "python",
            }
        },
        "cells": [],
    }
    (facility_lab.notebooks / "elsewhere.ipynb").write_text(json.dumps(content))
    page = open_lab(browser, facility_lab, "elsewhere.ipynb")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=60_000)
    assert dialog.locator(".jp-Dialog-header").inner_text().strip() == "Select Kernel"
    message = dialog.locator(".jp-nsls2-picker-message").inner_text()
    assert '"nsls2-nowhere-latest", which this site does not have' in message
    assert "retired" not in dialog.inner_text().lower()
    assert len(picker_rows(page)) <= MOST_ROWS
    screenshot(page, "facility-never-had-kernel")
    dialog.locator("button", has_text="Cancel").click()
    page.close()


def test_facility_beamline_cards_use_the_beamlines_env(facility, facility_lab, browser) -> None:
    page = open_lab(browser, facility_lab)
    cards = section(page, "NSLS-II beamlines").locator(".jp-LauncherCard")
    cards.first.locator(".jp-nsls2-card-env").wait_for(timeout=60_000)
    served = {
        card.locator(".jp-LauncherCard-label").inner_text(): card.locator(
            ".jp-nsls2-card-env"
        ).inner_text()
        for card in cards.all()
    }
    # its own env when there is one (not "base", first by name); hex has none: the env the
    # site config names (beamlines.hex.env: fmx), though base lists hex; tst has neither:
    # the most specific env listing it
    assert served == {
        "AMX": "on NSLS-II AMX",
        "CHX": "on NSLS-II CHX",
        "CSX": "on NSLS-II CSX",
        "HXN": "on NSLS-II HXN",
        "TST": "on NSLS-II HXN",
        "HEX": "on NSLS-II FMX",
    }
    cards.filter(has_text="CSX").first.click()
    assert idle_kernel(facility_lab, "csx.ipynb")["kernel"]["name"] == "nsls2-csx-latest"
    page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
    cards = section(page, "NSLS-II beamlines").locator(".jp-LauncherCard")
    cards.filter(has_text="HEX").first.click()
    assert idle_kernel(facility_lab, "hex.ipynb")["kernel"]["name"] == "nsls2-fmx-latest"
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
    assert publish_build(site.config, "hxn") != site.builds["hxn"]
    agent_once(site.config, timeout=900)
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
    # the next cell shows the restart notice as a plain output (not a red stderr box) and a
    # notification whose button restarts the kernel on the new build
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    toast = page.locator(".jp-toast-message", has_text="latest changed to a newer build")
    toast.wait_for(timeout=60_000)
    outputs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
    wait_until(lambda: "[NSLS-II]" in " ".join(outputs.all_inner_texts()), 60, "the notice")
    stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    assert stderr.count() == 0
    screenshot(page, "restart-notification")
    old_kernel = session_for(lab, path)["kernel"]["id"]
    page.locator(".jp-toast-button", has_text="Restart kernel").click()
    wait_until(lambda: "newer" not in item.inner_text(), 120, "the restarted kernel's build")
    assert session_for(lab, path)["kernel"]["id"] == old_kernel  # restarted, not replaced
    # saved: the notice is a display output, never a stream or an error
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    saved = wait_until(
        lambda: (
            json.loads((site.notebooks / path).read_text())
            if "[NSLS-II]" in (site.notebooks / path).read_text()
            else None
        ),
        60,
        "the saved notebook",
    )
    kinds = {out["output_type"] for out in saved["cells"][0]["outputs"]}
    assert kinds <= {"display_data", "stream"} and "error" not in kinds
    assert not any(out.get("name") == "stderr" for out in saved["cells"][0]["outputs"]), saved[
        "cells"
    ][0]["outputs"]
    page.close()
