"""The agent's /proc scan as the shipped systemd unit runs it: an unprivileged user with the
unit's ambient capabilities (applied with util-linux `setpriv`, as systemd would).

As shipped before, the unit ran the agent with no capability: every other user's process
read as "unknown", nothing was ever deleted, and nothing said so. Needs root (to switch
to `nobody` and grant capabilities); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.retention import child, make_build, run_as_nobody, write_retention_site

from nsls2_artifacts import procscan
from nsls2_artifacts.agent import heartbeat as hb
from nsls2_artifacts.fsutil import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "nsls2-agent.service"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and util-linux setpriv to run as another user with capabilities",
)


def unit_capabilities() -> list[str]:
    match = re.search(r"^AmbientCapabilities=(.+)$", UNIT.read_text(), re.M)
    assert match, f"{UNIT} grants the agent no capabilities"
    return match.group(1).split()


def as_agent_user(argv: list[str], caps: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` as nobody with `caps` in its ambient set, like systemd's
    `User=` + `AmbientCapabilities=`."""
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if caps:
        names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
        setpriv += [f"--inh-caps={names}", f"--ambient-caps={names}"]
    return subprocess.run([*setpriv, "--", *argv], capture_output=True, text=True, timeout=120)


def test_unit_and_docs_grant_what_the_scan_needs() -> None:
    assert sorted(unit_capabilities()) == sorted(procscan.SCAN_CAPABILITIES)
    doc = (REPO / "docs" / "retention.md").read_text()
    assert "AmbientCapabilities=" + " ".join(unit_capabilities()) in doc
    assert re.search(r"^User=(?!root)\w+", UNIT.read_text(), re.M)  # not root


def test_scan_with_the_unit_capabilities_reads_other_users_processes(tmp_path: Path) -> None:
    _, site = write_retention_site(tmp_path / "s")
    build = make_build(site, 30, "a")
    scan = [sys.executable, "-m", "nsls2_artifacts.procscan", "--json", str(build)]
    with child("cwd", build) as proc:  # a root process: another user's, seen from nobody
        without = as_agent_user(scan, [])
        granted = as_agent_user(scan, unit_capabilities())
    assert without.returncode == 2, without.stderr  # incomplete: blocks deletion
    assert json.loads(without.stdout)["complete"] is False
    assert granted.returncode == 1, granted.stderr  # in use, and the scan is complete
    result = json.loads(granted.stdout)
    assert result["complete"] is True
    assert [u["pid"] for u in result["uses"][str(build)]] == [proc.pid]


def test_programs_the_agent_starts_do_not_inherit_the_capabilities() -> None:
    """conda-unpack and the smoke test run code from the store: they must not get
    CAP_SYS_PTRACE (read any user's memory) from the agent."""
    script = (
        "import subprocess\n"
        "from nsls2_artifacts.procscan import keep_capabilities_to_self, missing_capabilities\n"
        "keep_capabilities_to_self()\n"
        "print(missing_capabilities())\n"
        "print(subprocess.run(['grep', '-E', '^Cap(Eff|Amb)', '/proc/self/status'],\n"
        "      capture_output=True, text=True).stdout, end='')\n"
    )
    result = as_agent_user([sys.executable, "-c", script], unit_capabilities())
    assert result.returncode == 0, result.stderr
    own, *child_caps = result.stdout.splitlines()
    assert own == "[]"  # the agent itself keeps what the scan needs
    assert child_caps == ["CapEff:\t0000000000000000", "CapAmb:\t0000000000000000"]


def test_agent_without_capabilities_says_so() -> None:
    with tempfile.TemporaryDirectory(prefix="nsls2-caps-") as work:  # readable by nobody
        os.chmod(work, 0o755)
        config = Path(work) / "site.yaml"
        config.write_text(f"store: {work}/store\ndeploy_root: {work}/deploy\n")
        argv = [sys.executable, "-m", "nsls2_artifacts.cli", "agent", "--dry-run",
                "--config", str(config)]  # fmt: skip
        unprivileged = as_agent_user(argv, [])
        privileged = as_agent_user(argv, unit_capabilities())
    assert "scan-unprivileged" in unprivileged.stderr, unprivileged.stderr
    assert "CAP_SYS_PTRACE" in unprivileged.stderr
    assert "scan-unprivileged" not in privileged.stderr, privileged.stderr


def test_status_says_loudly_when_a_node_cannot_read_other_users(tmp_path: Path) -> None:
    """A heartbeat from a real scan run without the capabilities: status names the node,
    says that nothing is deleted, and how to fix it."""
    config, site = write_retention_site(tmp_path / "s")
    build = make_build(site, 30, "a")
    with child("cwd", build):

        def scan() -> str:
            result = procscan.scan([build])
            return json.dumps(hb.scan_heartbeat("sdcc-11", result, {}).to_dict())

        beat = json.loads(run_as_nobody(scan))
    assert beat["complete"] is False
    atomic_write_json(hb.layout.heartbeat_path(site.deploy_root, "sdcc-11"), beat)
    status = subprocess.run(
        [sys.executable, "-m", "nsls2_artifacts.cli", "status", "--config", str(config)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in status.stdout.splitlines() if x.startswith("SCAN INCOMPLETE"))
    assert "node sdcc-11" in line and "NOTHING" in line and "CAP_SYS_PTRACE" in line
