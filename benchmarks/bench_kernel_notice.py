"""Benchmark: what the restart notice (agent/kernel_startup.py) costs a latest kernel per cell.

Sets up a deploy-root-like tree (envs/bench/BUILD with a 400-package .nsls2/manifest.json,
`latest` pointing at it), the agent's startup file, and a kernelspec that runs it the
way the latest kernel does (`--IPKernelApp.exec_files`). Then, in one real kernel
started through jupyter_client, measures:
  - the hook alone, inside the kernel (one `readlink` + a set lookup), per call;
  - the one-time cost when `latest` has moved (read two manifests, diff 400 packages);
  - round trips of a trivial cell with the hook registered vs unregistered, in blocks of
    20 cells in ABBA order so drift hits both alike; prints the medians and their ratio.
Usage: python benchmarks/bench_kernel_notice.py [--cells N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

from nsls2_artifacts.agent import kernels

BUILDS = ("2026.01.01T000000Z-00000001", "2026.01.02T000000Z-00000002")


def make_root(root: Path) -> Path:
    """envs/bench/{two builds}, latest -> the first; returns the first build's prefix."""
    for index, build in enumerate(BUILDS):
        meta = root / "envs" / "bench" / build / ".nsls2"
        meta.mkdir(parents=True)
        packages = [
            {"name": f"pkg{n:03d}", "version": f"1.{n}.{index if n % 7 == 0 else 0}"}
            for n in range(400)
        ]
        manifest = {
            "display_name": "NSLS-II bench",
            "created": f"2026-01-0{index + 1}T00:00:00Z",
        }
        (meta / "manifest.json").write_text(json.dumps({**manifest, "packages": packages}))
    os.symlink(BUILDS[0], root / "envs" / "bench" / "latest")
    kernels.write_startup(root)
    spec = root / "share" / "jupyter" / "kernels" / "bench" / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv.append(f"--IPKernelApp.exec_files={kernels.startup_path(root)}")
    spec.write_text(json.dumps({"argv": argv, "display_name": "bench", "language": "python"}))
    return root / "envs" / "bench" / BUILDS[0]


def execute(client, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = client.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", out
    return "".join(out)


def cell_times(client, cells: int) -> list[float]:
    times = []
    for _ in range(cells):
        start = time.perf_counter()
        client.execute_interactive("pass", timeout=60)
        times.append(time.perf_counter() - start)
    return times


IN_KERNEL = """\
import timeit
_h = [f for f in get_ipython().events.callbacks["pre_run_cell"]
      if f.__name__ == "nsls2_restart_notice"][0]
print(min(timeit.repeat(_h, number=20000, repeat=5)) / 20000 * 1e6)
"""
ON_FLIP = """\
import os, sys, time, io
_link = os.path.join(os.path.dirname(os.environ["CONDA_PREFIX"]), "latest")
os.symlink("{new}", _link + ".new"); os.replace(_link + ".new", _link)
_err, sys.stderr = sys.stderr, io.StringIO()
_t = time.perf_counter(); _h(); _dt = time.perf_counter() - _t
_msg, sys.stderr = sys.stderr.getvalue(), _err
print(_dt * 1e3, len(_msg))
"""
BLOCK = 20  # cells per block; blocks alternate with and without the hook
TOGGLE = 'get_ipython().events.{action}("pre_run_cell", _h)'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = make_root(Path(tmp))
        os.environ["JUPYTER_PATH"] = str(Path(tmp) / "share" / "jupyter")
        manager = KernelManager(kernel_name="bench")
        manager.start_kernel(env={**os.environ, "CONDA_PREFIX": str(prefix)})
        try:
            client = manager.blocking_client()
            client.start_channels()
            client.wait_for_ready(timeout=60)
            hook_us = float(execute(client, IN_KERNEL))
            cell_times(client, 50)  # warm up
            with_hook: list[float] = []
            without: list[float] = []
            registered = True
            for block in range(args.rounds * args.cells // BLOCK * 2):
                want = block % 4 in (0, 3)  # ABBA order: neither side always goes first
                if want != registered:
                    execute(client, TOGGLE.format(action="register" if want else "unregister"))
                    registered = want
                (with_hook if want else without).extend(cell_times(client, BLOCK))
            if not registered:
                execute(client, TOGGLE.format(action="register"))
            flip_ms, length = execute(client, ON_FLIP.format(new=BUILDS[1])).split()
            client.stop_channels()
        finally:
            manager.shutdown_kernel(now=True)
    a, b = statistics.median(with_hook) * 1e3, statistics.median(without) * 1e3
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(f"hook per cell, in the kernel (latest unchanged): {hook_us:.2f} us")
    print(f"hook when latest moved (once): {float(flip_ms):.2f} ms, notice {length} chars")
    print(
        f"trivial cell round trip: with hook {a:.3f} ms, without {b:.3f} ms "
        f"(median of {len(with_hook)} each)"
    )
    print(f"ratio with/without: {a / b:.3f}x; hook share of a cell: {hook_us / 1e3 / b:.2%}")


if __name__ == "__main__":
    main()
