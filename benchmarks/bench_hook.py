"""Load on the staff build hook: page and API latency with 50 concurrent clients, and
click-flood coalescing (N clicks on "Build" make one build).

Starts a real `nsls2-artifacts hook serve` on 127.0.0.1 (a free port) over a synthetic
store (envs x builds with realistic package lists) and a history of finished builds, with
the build queue paused so no publish runs. Loopback only, bounded (a few thousand
requests). Prints p50/p95 per endpoint and its ratio to /healthz (the server's floor).

    .venv/bin/python benchmarks/bench_hook.py [--clients 50] [--requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.hook import HookServer, hook_site, write_env  # noqa: E402

from nsls2_artifacts.config import load_config  # noqa: E402
from nsls2_artifacts.hook.queue import BuildQueue  # noqa: E402
from nsls2_artifacts.records import (  # noqa: E402
    ArtifactInfo,
    BuildManifest,
    LockInfo,
    PackageRef,
    isoformat,
    make_build_id,
    utcnow,
)
from nsls2_artifacts.store import FilesystemStore  # noqa: E402

ENVS = ("base", "demo", "csx", "chx")
BUILDS_PER_ENV = 12
PACKAGES = 250  # the size of a real "NSLS-II base" env's package list
HISTORY = 300
ARTIFACT_SHA = hashlib.sha256(b"x").hexdigest()


def seed_store(site_store: Path) -> None:
    """Commit synthetic builds (tiny artifacts, real manifest.json) through the store API."""
    store = FilesystemStore(site_store)
    for env in ENVS:
        for n in range(BUILDS_PER_ENV):
            created = utcnow().replace(microsecond=0, second=n)
            lock_sha = hashlib.sha256(f"{env}{n}".encode()).hexdigest()
            build_id = make_build_id(created, lock_sha)
            staging = store.staging_dir(env, build_id)
            (staging / "env.tar.zst").write_bytes(b"x")
            (staging / "pixi.lock").write_text("version: 6\n")
            packages = tuple(
                PackageRef(f"pkg{i:03d}", f"1.{i}.{n if i % 10 == 0 else 0}", "0", "conda-forge")
                for i in range(PACKAGES)
            )
            manifest = BuildManifest(
                name=env,
                build_id=build_id,
                created=isoformat(created),
                platform="linux-64",
                display_name=env,
                smoke=(),
                artifact=ArtifactInfo("env.tar.zst", ARTIFACT_SHA, 1, "tar.zst"),
                lock=LockInfo("pixi.lock", lock_sha),
                packages=packages,
            )
            store.commit_build(staging, manifest)


def seed_history(queue: BuildQueue) -> int:
    """Finished builds in the hook's history; returns the id of one published build."""
    last = 0
    for n in range(HISTORY):
        record, _ = queue.request(ENVS[n % len(ENVS)], source="api", requested_by="bench")
        queue.claim(100)
        queue.finish(record.id, "published" if n % 3 else "unchanged", seconds=60.0)
        last = record.id
    return last


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load(
    url: str, method: str, path: str, clients: int, per_client: int, **kw: object
) -> list[float]:
    """`clients` concurrent clients, each sending `per_client` requests back to back."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one_client() -> None:
            for _ in range(per_client):
                start = time.perf_counter()
                response = await client.request(method, path, **kw)
                latencies.append(time.perf_counter() - start)
                if response.status_code >= 400:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", latency:percentile(50),
    latency:percentile(95), summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_load(
    url: str, method: str, path: str, clients: int, seconds: float, headers: dict, body: str
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, req/s) from wrk: a C load generator, so the client is not the limit."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        lua = WRK_SCRIPT + f'wrk.method = "{method}"\n'
        if body:
            lua += f"wrk.body = '{body}'\n"
        script.write(lua)
    argv = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--timeout", "30s"]
    argv += ["-s", script.name]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    out = subprocess.run([*argv, url + path], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    p50, p95, count, duration_us, errors = (int(x) for x in fields)
    if errors:
        raise RuntimeError(f"{method} {path}: {errors} errors under load:\n{out}")
    return p50 / 1000, p95 / 1000, count / (duration_us / 1e6)


def httpx_load(
    url: str, method: str, path: str, clients: int, per_client: int, **kw: object
) -> tuple[float, float, float]:
    start = time.perf_counter()
    lat = asyncio.run(load(url, method, path, clients, per_client, **kw))
    wall = time.perf_counter() - start
    return percentile(lat, 0.5) * 1000, percentile(lat, 0.95) * 1000, len(lat) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client per endpoint")
    parser.add_argument("--clicks", type=int, default=1000, help="click-flood size")
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per endpoint")
    parser.add_argument("--no-wrk", action="store_true", help="use httpx even if wrk exists")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-hook-") as tmp:
        root = Path(tmp)
        config = hook_site(root)
        for env in ENVS:
            write_env(root / "manifests", env, {"python": "3.11.*"})
        site = load_config(config)
        seed_store(site.store)
        queue = BuildQueue(Path(site.hook_state_dir) / "hook.sqlite")
        some_build = seed_history(queue)
        queue.set_paused(True)  # nothing runs: we measure the hook, not publish
        token = __import__("support.hook", fromlist=["_"]).TOKEN
        auth = {"Authorization": f"Bearer {token}"}
        env_build = FilesystemStore(site.store).builds("demo")[-1].build_id

        with HookServer(config) as hook:
            print(f"# hook load benchmark: {platform.processor() or platform.machine()}, "
                  f"{args.clients} concurrent clients per endpoint; "
                  f"{len(ENVS)} envs x {BUILDS_PER_ENV} builds x {PACKAGES} packages, "
                  f"{HISTORY} history rows")  # fmt: skip
            cases = [
                ("GET /healthz (floor)", "GET", "/healthz", {}),
                ("GET / (front page)", "GET", "/", {}),
                ("GET /builds/ID (build page)", "GET", f"/builds/{some_build}", {}),
                ("GET /envs/demo/builds/ID (diff)", "GET", f"/envs/demo/builds/{env_build}", {}),
                ("GET /api/envs", "GET", "/api/envs", {"headers": auth}),
                ("GET /api/builds/ID", "GET", f"/api/builds/{some_build}", {"headers": auth}),
                ("POST /api/builds (joins)", "POST", "/api/builds",
                 {"headers": auth, "json": {"env": "demo"}}),
            ]  # fmt: skip
            use_wrk = shutil.which("wrk") is not None and not args.no_wrk
            tool = "wrk (C load generator)" if use_wrk else "httpx.AsyncClient"
            print(f"# load generator: {tool}; server: uvicorn, one process\n")
            floor = None
            rows = []
            for name, method, path, kw in cases:
                asyncio.run(load(hook.url, method, path, 2, 2, **kw))  # warm up
                if use_wrk:
                    headers = dict(kw.get("headers", {}))
                    body = json.dumps(kw["json"]) if "json" in kw else ""
                    if body:
                        headers["Content-Type"] = "application/json"
                    p50, p95, rate = wrk_load(
                        hook.url, method, path, args.clients, args.seconds, headers, body
                    )
                else:
                    p50, p95, rate = httpx_load(
                        hook.url, method, path, args.clients, args.requests, **kw
                    )
                floor = floor or p50
                rows.append((name, p50, p95, p50 / floor, rate))
            print(f"| {'endpoint':34} | p50 ms | p95 ms | p50 / healthz | req/s |")
            print(f"|{'-' * 36}|-------:|-------:|--------------:|------:|")
            for name, p50, p95, ratio, rate in rows:
                print(f"| {name:34} | {p50:6.1f} | {p95:6.1f} | {ratio:13.1f} | {rate:5.0f} |")

            # Click flood: N concurrent "Build" requests for one env → how many builds?
            with hook.client() as client:
                before = {r["id"] for r in client.get("/api/builds", params={"env": "csx"}).json()}
            start = time.perf_counter()
            per = max(1, args.clicks // args.clients)
            asyncio.run(
                load(hook.url, "POST", "/api/builds", args.clients, per,
                     headers=auth, json={"env": "csx"})
            )  # fmt: skip
            wall = time.perf_counter() - start
            with hook.client() as client:
                after = client.get("/api/builds", params={"env": "csx"}).json()
            new = [r for r in after if r["id"] not in before]
            clicks = per * args.clients
            print(
                f"\nclick flood: {clicks} concurrent build requests for one env in {wall:.2f} s "
                f"-> {len(new)} queued build(s), {new[0]['requests'] if new else 0} requests "
                f"share it (coalescing ratio {clicks}:{len(new)})"
            )


if __name__ == "__main__":
    main()
