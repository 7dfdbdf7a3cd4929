"""Save-hook benchmark: what the server extension adds to a notebook save.

Two real jupyter_servers on 127.0.0.1 serve the same kind of notebook (N code cells with
outputs), each with a session on the NSLS-II latest kernel of a fake deployed build: one
with the nsls2 extension, one without. Saves through the contents API (PUT) alternate
between them; the script prints the median save time of each and the ratio, plus the cost
of the hook alone (`BuildRecorder.record_for` is what runs per save: a session lookup and two
/proc reads), timed in-process against the running kernel.

    .venv/bin/python benchmarks/bench_save_hook.py [--saves 60] [--cells 200]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.agent import commit_fake, write_site  # noqa: E402
from support.jupyter import (  # noqa: E402
    jupyter_server,
    notebook_json,
    save_notebook,
    start_session,
    wait_until,
)

from nsls2_artifacts.agent.log import setup_logging  # noqa: E402
from nsls2_artifacts.agent.reconcile import run_pass  # noqa: E402
from nsls2_artifacts.jupyter.deployed import build_of_process, kernel_dirs_in  # noqa: E402
from nsls2_artifacts.store import FilesystemStore  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def notebook(cells: int) -> dict:
    nb = notebook_json("nsls2-demo-latest", "NSLS-II demo (latest)")
    cell = nb["cells"][0]
    output = {"output_type": "stream", "name": "stdout", "text": "x" * 400 + "\n"}
    nb["cells"] = [
        {**cell, "id": f"c{i}", "source": f"print({i})\n" * 5, "outputs": [output]}
        for i in range(cells)
    ]
    return nb


def timed_save(server, path: str, content: dict) -> float:
    start = time.perf_counter()
    save_notebook(server, path, content)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=60)
    parser.add_argument("--cells", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, cfg = write_site(root / "site")
        commit_fake(cfg, tag="one", hours=1)
        log = setup_logging(logging.WARNING, io.StringIO())
        assert run_pass(cfg, FilesystemStore(cfg.store), log).ok
        jupyter_path = cfg.deploy_root / "share" / "jupyter"
        content = notebook(args.cells)
        size = len(str(content))
        for name in ("with", "without"):
            (root / name).mkdir()
        with (
            jupyter_server(root / "h1", root / "with", jupyter_path) as with_ext,
            jupyter_server(
                root / "h2",
                root / "without",
                jupyter_path,
                "--ServerApp.jpserver_extensions=nsls2_artifacts.jupyter=False",
            ) as without_ext,
        ):
            kernels = {}
            for server in (with_ext, without_ext):
                save_notebook(server, "nb.ipynb", content)
                kernels[server] = start_session(server, "nb.ipynb", "nsls2-demo-latest")
            # the extension answers once the kernel's /bin/sh has exec'd python
            wait_until(
                lambda: with_ext.ok("GET", "/nsls2/api/kernels")["running"][kernels[with_ext]][
                    "build_id"
                ],
                60,
                "kernel build",
            )
            assert without_ext.api("GET", "/nsls2/api/kernels").status_code == 404
            times: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(3):  # warm up both
                timed_save(with_ext, "nb.ipynb", content)
                timed_save(without_ext, "nb.ipynb", content)
            for _ in range(args.saves):
                times["with"].append(timed_save(with_ext, "nb.ipynb", content))
                times["without"].append(timed_save(without_ext, "nb.ipynb", content))
            # the /proc part of the hook, in this process, against the real kernel pid
            pid = _kernel_pid(with_ext, kernels[with_ext])
            roots = [cfg.deploy_root]
            start = time.perf_counter()
            rounds = 2000
            for _ in range(rounds):
                assert build_of_process(pid, roots)
            proc_us = (time.perf_counter() - start) / rounds * 1e6
            assert kernel_dirs_in(cfg.deploy_root)
    med_with, med_without = (statistics.median(times[k]) * 1000 for k in ("with", "without"))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"notebook: {args.cells} cells, ~{size // 1024} KiB; {args.saves} saves each, interleaved"
    )
    print(f"save with extension:    median {med_with:.2f} ms")
    print(f"save without extension: median {med_without:.2f} ms")
    print(f"ratio: {med_with / med_without:.2f}x ({med_with - med_without:+.2f} ms per save)")
    print(f"build_of_process (/proc exe + environ): {proc_us:.1f} us per call")


def _kernel_pid(server, kernel_id: str) -> int:
    """The kernel's pid: the ipykernel process whose connection file names the kernel id."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ipykernel_launcher" in cmdline and kernel_id.encode() in cmdline:
            return int(entry)
    raise SystemExit(f"kernel {kernel_id} not found in /proc")


if __name__ == "__main__":
    main()
