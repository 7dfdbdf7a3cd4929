"""Benchmark: kernel start to ready through the NSLS-II launchers vs a direct python argv.

Uses a deploy root the agent has written (default ./var/deploy, as `just demo` leaves it):
the env's latest kernelspec (`/bin/sh`: hygiene, memory ceiling, `readlink` of latest,
the restart-notice startup file) and, when the env has one, an LTS kernelspec (`/bin/sh`:
hygiene, ceiling), against a kernelspec written here that runs the same build's python
directly (`python -m ipykernel_launcher -f ...`, nothing else). Also times each
launcher's shell work alone (its `exec` replaced by /bin/true), which start-to-ready
noise on a shared machine hides. Starts are interleaved
(one of each per round, the order rotating) so drift and position hit all alike;
prints medians and ratios.
Usage: python benchmarks/bench_kernel_start.py [--deploy-root DIR] [--env demo] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from nsls2_artifacts import layout
from nsls2_artifacts.agent import kernels


def start_to_ready(name: str) -> float:
    start = time.perf_counter()
    manager, client = start_new_kernel(kernel_name=name, startup_timeout=120)
    seconds = time.perf_counter() - start
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return seconds


def shell_extra(script: str, runs: int = 300) -> float:
    """Median extra seconds of a launcher's shell work (its final `exec` made /bin/true)
    over `/bin/sh -c 'exec /bin/true'`, the two run alternately."""
    launcher = ["/bin/sh", "-c", script.rsplit(" exec ", 1)[0] + " exec /bin/true", "c.json"]
    bare = ["/bin/sh", "-c", "exec /bin/true", "c.json"]
    extra = []
    for _ in range(runs):
        pair = []
        for argv in (launcher, bare):
            start = time.perf_counter()
            subprocess.run(argv, check=True)
            pair.append(time.perf_counter() - start)
        extra.append(pair[0] - pair[1])
    return statistics.median(extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy-root", type=Path, default=Path("var/deploy"))
    parser.add_argument("--env", default="demo")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = args.deploy_root.resolve()
    specs = kernels.installed(root)
    latest_name = kernels.kernel_name(args.env)
    if latest_name not in specs:
        print(f"bench_kernel_start: skipped, no {latest_name} under {root} (run `just demo`)")
        return
    build = kernels.spec_target(specs[latest_name])["build_id"]
    lts = sorted(n for n, d in specs.items() if kernels.spec_target(d).get("channel") == "lts")
    prefix = layout.build_dir(root, args.env, build)
    with tempfile.TemporaryDirectory() as tmp:
        direct = Path(tmp) / "kernels" / "bench-direct" / "kernel.json"
        direct.parent.mkdir(parents=True)
        argv = [str(prefix / "bin" / "python"), "-m", "ipykernel_launcher", "-f"]
        spec = {
            "argv": [*argv, "{connection_file}"],
            "display_name": "direct",
            "language": "python",
        }
        direct.write_text(json.dumps(spec))
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp, str(root / "share" / "jupyter")])
        names = {"latest launcher": latest_name, "direct python": "bench-direct"}
        if lts:
            names["LTS launcher"] = lts[0]
        times: dict[str, list[float]] = {label: [] for label in names}
        start_to_ready("bench-direct")  # warm the page cache for everyone
        order = list(names)
        for round_index in range(args.rounds):
            shift = round_index % len(order)  # each kind takes every position in turn
            for label in order[shift:] + order[:shift]:
                times[label].append(start_to_ready(names[label]))
    print(f"machine: {platform.node()} {os.cpu_count()} cpus; build {args.env}/{build}")
    for label, name in (("latest", latest_name), *((("LTS", lts[0]),) if lts else ())):
        extra = shell_extra(specs[name]["argv"][2])
        print(f"{label} launcher's shell work alone: {extra * 1e3:.2f} ms over exec'ing directly")
    base = statistics.median(times["direct python"])
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:16} median {median:.3f}s (of {len(values)}) -> {median / base:.2f}x direct")


if __name__ == "__main__":
    main()
