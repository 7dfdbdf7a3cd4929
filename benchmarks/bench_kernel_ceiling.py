"""Benchmark: kernel start to ready with the memory ceiling vs without (issue #18: <= +50 ms).

Uses a deploy root the agent has written (default ./var/deploy, as `just demo` leaves it)
and the env's latest kernelspec. Three variants of that very spec are written to a temp
Jupyter path and started through jupyter_client, interleaved (one of each per round, the
order rotating):
- `without`: the launcher as it was before the ceiling (hygiene, readlink, exec python:
  no kernel_ceiling.py, no MemoryError hook);
- `ceiling`: the agent's launcher with a 16 GiB ceiling, mechanism chosen as in production
  (a cgroup where this machine lets the user make one, else RLIMIT_DATA);
- `rlimit`: the same with `NSLS2_MEMORY_CEILING=rlimit`.
Also times kernel_ceiling.py alone (its final exec made /bin/true) against exec'ing
/bin/true directly, which start-to-ready noise on a shared machine hides.
Usage: python benchmarks/bench_kernel_ceiling.py [--deploy-root DIR] [--env demo] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from nsls2_artifacts import layout
from nsls2_artifacts.agent import kernel_ceiling, kernels

LIMIT = 16 * 1024**3
# `exec "$p/bin/python" -I -S .../kernel_ceiling.py LIMIT "$0" -- ` in front of the kernel
_CEILING_EXEC = re.compile(r'exec (\S+) -I -S \S+kernel_ceiling\.py \S+ "\$0" -- ')
_HOOK = re.compile(r" '?--IPKernelApp\.exec_files=\S+kernel_memory\.py'?")


def variants(root: Path, script: str) -> dict[str, tuple[str, dict[str, str]]]:
    """label -> (launcher script, extra kernel env)."""
    with_limit = re.sub(r'(kernel_ceiling\.py) \S+ "\$0"', rf'\1 {LIMIT} "$0"', script)
    if "kernel_memory.py" not in with_limit:  # the env has no ceiling of its own
        with_limit += f" --IPKernelApp.exec_files={layout.kernel_memory_path(root)}"
    without = _HOOK.sub("", _CEILING_EXEC.sub("exec ", with_limit))
    return {
        "without": (without, {}),
        "ceiling": (with_limit, {}),
        "rlimit": (with_limit, {kernel_ceiling.MECHANISM_ENV: "rlimit"}),
    }


def start_to_ready(name: str) -> float:
    start = time.perf_counter()
    manager, client = start_new_kernel(kernel_name=name, startup_timeout=120)
    seconds = time.perf_counter() - start
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return seconds


def helper_alone(python: str, runs: int = 100) -> float:
    """Median extra seconds of `python -I -S kernel_ceiling.py` before exec'ing /bin/true."""
    helper = [python, "-I", "-S", kernel_ceiling.__file__, str(LIMIT), "k.json", "--", "/bin/true"]
    env = {**os.environ, kernel_ceiling.MECHANISM_ENV: "rlimit"}
    extra = []
    for _ in range(runs):
        pair = []
        for argv in (helper, ["/bin/true"]):
            start = time.perf_counter()
            subprocess.run(argv, check=True, env=env)
            pair.append(time.perf_counter() - start)
        extra.append(pair[0] - pair[1])
    return statistics.median(extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy-root", type=Path, default=Path("var/deploy"))
    parser.add_argument("--env", default="demo")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = args.deploy_root.resolve()
    name = kernels.kernel_name(args.env)
    spec = kernels.installed(root).get(name)
    if spec is None:
        print(f"bench_kernel_ceiling: skipped, no {name} under {root} (run `just demo`)")
        return
    build = kernels.spec_target(spec)["build_id"]
    with tempfile.TemporaryDirectory() as tmp:
        names = {}
        for label, (script, env) in variants(root, spec["argv"][2]).items():
            directory = Path(tmp) / "kernels" / f"bench-{label}"
            directory.mkdir(parents=True)
            data = {**spec, "argv": [*spec["argv"][:2], script, *spec["argv"][3:]]}
            data["env"] = {**spec.get("env", {}), **env}
            (directory / "kernel.json").write_text(json.dumps(data))
            names[label] = f"bench-{label}"
        os.environ["JUPYTER_PATH"] = tmp
        times: dict[str, list[float]] = {label: [] for label in names}
        start_to_ready(names["without"])  # warm the page cache for everyone
        order = list(names)
        for round_index in range(args.rounds):
            shift = round_index % len(order)
            for label in order[shift:] + order[:shift]:
                times[label].append(start_to_ready(names[label]))
    python = str(layout.build_dir(root, args.env, build) / "bin" / "python")
    print(f"machine: {platform.node()} {os.cpu_count()} cpus; build {args.env}/{build}")
    print(f"python {sys.version.split()[0]}; mechanism here: {kernel_ceiling.probe().mechanism}")
    print(f"kernel_ceiling.py alone: {helper_alone(python) * 1e3:.1f} ms over exec'ing directly")
    base = statistics.median(times["without"])
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:8} median {median:.3f}s (of {len(values)}) -> "
            f"{(median - base) * 1e3:+.0f} ms, {median / base:.2f}x without"
        )


if __name__ == "__main__":
    main()
