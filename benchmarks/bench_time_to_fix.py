"""Time to fix: the staff click to a user's kernel running the new build, stage by stage.

    click (POST /api/builds) -> published (real publish from the offline channel)
      -> rollout complete (a real agent daemon, store events as the hint, reports the new
         build through the store; the hook's API says "users can restart")
      -> a running kernel restarted on the new build (jupyter_client restart; its
         sys.prefix is the new BUILD_ID directory)

Baseline, in the same run and on the same machine: the same kind of change published
with `nsls2-artifacts publish` and deployed with `agent --once`, back to back (publish +
deploy alone). Prints each stage, the total, the overhead over the baseline and the
ratio (target: total <= publish + deploy + 5 s).

    .venv/bin/python benchmarks/bench_time_to_fix.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.hook import HookServer, hook_site, write_env  # noqa: E402
from support.processes import wait_for  # noqa: E402

from nsls2_artifacts.config import load_config  # noqa: E402
from nsls2_artifacts.devchannel import build_channel, default_cache_dir  # noqa: E402

CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]
ENV = "base"
# each round flips six between two versions, so every publish has a new lock
VERSIONS = ("1.16.0", "1.17.0")
POLL = 0.1  # how often the "staff" re-reads the API (the page polls every 1.5 s)


def deps(round_no: int) -> dict[str, str]:
    return {"python": "3.11.*", "ipykernel": "*", "six": VERSIONS[round_no % 2]}


def cli(config: Path, *args: str) -> float:
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    subprocess.run(
        [*CLI, args[0], "--config", str(config), *args[1:]],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    return time.perf_counter() - start


def wait(predicate: Any, what: str, timeout: float = 900) -> Any:
    return wait_for(predicate, timeout, what, interval=POLL)


class Kernel:
    """A user's running `nsls2-base-latest` kernel (jupyter_client, by kernelspec name)."""

    def __init__(self, jupyter_path: Path) -> None:
        from jupyter_client.manager import KernelManager

        os.environ["JUPYTER_PATH"] = str(jupyter_path)
        self.manager = KernelManager(kernel_name=f"nsls2-{ENV}-latest")
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def prefix(self) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        self.client.execute_interactive("import sys; print(sys.prefix)", output_hook=hook)
        return "".join(out).strip()

    def restart(self) -> None:
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=120)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def measure_round(hook: HookServer, kernel: Kernel, manifests: Path, n: int) -> dict[str, float]:
    write_env(manifests, ENV, deps(n), display_name="NSLS-II base", smoke=["six"])
    with hook.client() as client:
        start = time.perf_counter()
        build = client.post("/api/builds", json={"env": ENV}).json()["id"]

        def published() -> dict | None:
            record = client.get(f"/api/builds/{build}").json()
            if record["state"] in ("failed", "cancelled", "unchanged"):
                raise RuntimeError(f"build #{build}: {record['state']}: {record.get('reason')}")
            return record if record["state"] == "published" else None

        record = wait(published, "publish")
        t_published = time.perf_counter()

        def complete() -> bool:
            rollout = client.get(f"/api/builds/{build}").json()["rollout"]
            return bool(rollout and rollout["complete"])

        wait(complete, "rollout complete")
        t_rollout = time.perf_counter()
    kernel.restart()
    prefix = kernel.prefix()
    t_restarted = time.perf_counter()
    if not prefix.endswith(record["build_id"]):
        raise RuntimeError(f"restarted kernel runs {prefix}, not {record['build_id']}")
    return {
        "publish": t_published - start,
        "deploy+report": t_rollout - t_published,
        "restart": t_restarted - t_rollout,
        "total": t_restarted - start,
    }


def baseline_round(config: Path, manifests: Path, n: int) -> dict[str, float]:
    write_env(manifests, ENV, deps(n), display_name="NSLS-II base", smoke=["six"])
    publish = cli(config, "publish", ENV)
    deploy = cli(config, "agent", "--once")
    return {"publish": publish, "deploy": deploy, "total": publish + deploy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    channel = build_channel(default_cache_dir() / "test-channel")
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
        root = Path(tmp)
        config = hook_site(root, channel=channel)
        data = yaml.safe_load(config.read_text())
        # the agent polls rarely: store events must carry the news, as on a real node
        data["agent"] = {"node": "bench-node", "poll_seconds": 30}
        config.write_text(yaml.safe_dump(data))
        site = load_config(config)
        manifests = root / "manifests"
        # a build deployed and a user's kernel on it before the clock starts
        write_env(manifests, ENV, deps(1), display_name="NSLS-II base", smoke=["six"])
        cli(config, "publish", ENV)
        cli(config, "agent", "--once")
        kernel = Kernel(site.deploy_root / "share" / "jupyter")
        base: list[dict[str, float]] = []
        fixes: list[dict[str, float]] = []
        try:
            for n in range(args.rounds):
                base.append(baseline_round(config, manifests, 2 * n))
                env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
                agent = subprocess.Popen(
                    [*CLI, "agent", "--config", str(config)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                )  # fmt: skip
                try:
                    with HookServer(config) as hook:
                        time.sleep(2)  # the agent's first pass and its watch are up
                        fixes.append(measure_round(hook, kernel, manifests, 2 * n + 1))
                finally:
                    agent.terminate()
                    agent.wait(timeout=120)
        finally:
            kernel.close()
    print(f"# time to fix: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"env {ENV} (python, ipykernel, six; ~30 packages), {args.rounds} rounds")  # fmt: skip
    for i, (b, f) in enumerate(zip(base, fixes, strict=True), 1):
        print(f"round {i}: click->published {f['publish']:.2f} s, ->rollout complete "
              f"{f['deploy+report']:.2f} s, ->kernel restarted {f['restart']:.2f} s; "
              f"total {f['total']:.2f} s | publish {b['publish']:.2f} s + deploy "
              f"{b['deploy']:.2f} s = {b['total']:.2f} s")  # fmt: skip
    total = statistics.median(f["total"] for f in fixes)
    alone = statistics.median(b["total"] for b in base)
    print(f"median total {total:.2f} s vs publish+deploy alone {alone:.2f} s: "
          f"+{total - alone:.2f} s, ratio {total / alone:.2f}x (target: <= +5 s)")  # fmt: skip


if __name__ == "__main__":
    main()
