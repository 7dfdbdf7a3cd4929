"""The S3 store with a real server (SeaweedFS on 127.0.0.1): agents deploying from it,
idle passes costing one request, the faults (server down, killed upload, overwritten
object, bad settings) and the hook's pages.

Builds here are the agent tests' small fake envs, committed through `Store.commit_build`
(the path publish takes); `test_publish_agent_kernel_on_s3` runs the real publish.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from s3server import S3Server
from support.agent import agent_pass, fake_env_members, sizes_and_modes, tar_bytes, write_site
from support.cli import run_cli
from support.store import commit_to, s3_site

from nsls2_artifacts import layout
from nsls2_artifacts.records import BuildManifest
from nsls2_artifacts.store import open_store
from nsls2_artifacts.store.s3 import S3Store


def test_agent_deploys_from_s3_and_an_idle_pass_costs_one_request(
    tmp_path: Path, s3_server: S3Server
) -> None:
    _config, site = s3_site(tmp_path / "site", s3_server)
    store = open_store(site)
    assert isinstance(store, S3Store)
    first = commit_to(store, tmp_path / "scratch", "a")
    result = agent_pass(site, store)
    assert [o.result for o in result.outcomes] == ["deployed"], result.outcomes
    assert layout.read_ready(site.deploy_root, "demo", first.build_id) is not None

    idle = open_store(site)  # another node: lists once, then only asks the index
    agent_pass(site, idle)
    before = idle.requests
    idle._checked = 0.0  # the next pass comes after the check interval, as in the daemon
    again = agent_pass(site, idle)
    assert again.ok and again.outcomes == []
    assert idle.requests - before == 1  # one conditional GET of index.json, answered 304

    second = commit_to(store, tmp_path / "scratch", "b", hours=1)
    idle._checked = 0.0
    noticed = agent_pass(site, idle)
    assert [(o.build_id, o.result) for o in noticed.outcomes] == [(second.build_id, "deployed")]


def test_overwritten_artifact_is_refused_and_quarantined_with_reason(
    tmp_path: Path, s3_server: S3Server
) -> None:
    config, site = s3_site(tmp_path / "site", s3_server)
    store = open_store(site)
    assert isinstance(store, S3Store)
    build = commit_to(store, tmp_path / "scratch", "a")
    other = tar_bytes(fake_env_members("evil"))  # a different, valid archive, same key
    key = f"{store.prefix}demo/{build.build_id}/{build.artifact.file}"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=other)

    out = run_cli(config, "agent", "--once", check=False)
    assert out.returncode != 0
    assert layout.read_ready(site.deploy_root, "demo", build.build_id) is None
    assert not (site.deploy_root / "envs" / "demo" / build.build_id).exists()
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    (quarantined,) = status["quarantined"]
    assert quarantined["build_id"] == build.build_id and quarantined["stage"] == "verify"
    assert "size" in quarantined["reason"] or "sha256 mismatch" in quarantined["reason"]
    verify = run_cli(config, "store", "verify", "--json", check=False)
    assert verify.returncode == 1 and not json.loads(verify.stdout)["ok"]


def same_size_zstd(archive: bytes, size: int) -> bytes:
    """`archive` padded to exactly `size` bytes with a zstd skippable frame (decoders
    skip it): a hostile object the size check cannot tell from the committed one."""
    pad = size - len(archive) - 8
    assert pad >= 0
    return archive + struct.pack("<II", 0x184D2A50, pad) + bytes(pad)


def test_same_size_overwrite_never_reaches_the_extractor(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Issue 17 item 3: a same-size object overwritten after commit was streamed into the
    tar reader and extracted, the hash checked only at the end. Now the agent spools and
    verifies first: the extractor never reads a member of it (the test pause point after
    three members is never reached), the build is quarantined once at verify, and the
    good env beside it keeps its build and kernel over two more passes."""
    from support.agent import events, member, start_agent
    from support.processes import kill9, wait_for

    from nsls2_artifacts.agent.kernels import kernel_name

    config, site = s3_site(tmp_path / "site", s3_server)
    store = open_store(site)
    assert isinstance(store, S3Store)
    good = commit_to(store, tmp_path / "scratch", "g", env="good")
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    spec = layout.kernels_dir(site.deploy_root) / kernel_name("good") / "kernel.json"
    assert spec.exists()

    blob = member("lib/blob.bin", os.urandom(8192))  # room for the hostile archive
    build = commit_to(store, tmp_path / "scratch", "a", hours=1, extra=(blob,))
    hostile = same_size_zstd(tar_bytes(fake_env_members("evil")), build.artifact.size)
    key = f"{store.prefix}demo/{build.build_id}/{build.artifact.file}"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=hostile)

    marker, log = tmp_path / "paused", tmp_path / "agent.log"
    pause = {"NSLS2_TEST_PAUSE_AT": "extract", "NSLS2_TEST_PAUSE_FILE": str(marker)}
    agent = start_agent(config, "--once", env=pause, log=log)
    try:
        wait_for(lambda: agent.poll() is not None or marker.exists(), timeout=120)
        assert not marker.exists(), "the extractor read members of unverified bytes"
    finally:
        if agent.poll() is None:
            kill9(agent)
    for _ in range(2):  # later passes: nothing retried
        again = run_cli(config, "agent", "--once", check=False)
        assert events(again.stderr, "extract") == [] and events(again.stderr, "quarantine") == []
    [q] = events(log.read_text(), "quarantine")
    assert q["build"] == build.build_id and q["stage"] == "verify" and "sha256" in q["reason"]
    assert events(log.read_text(), "extract") == []
    assert not layout.build_dir(site.deploy_root, "demo", build.build_id).exists()
    assert list(layout.env_dir(site.deploy_root, "demo").glob(".spool-*")) == []
    assert layout.read_ready(site.deploy_root, "good", good.build_id) is not None
    assert json.loads(spec.read_text())["metadata"]["nsls2"]["build_id"] == good.build_id


def test_bad_settings_give_one_clear_error_naming_the_setting(
    tmp_path: Path, s3_server: S3Server
) -> None:
    bucket_url = s3_server.new_store_url()
    config, _ = s3_site(tmp_path / "ok", s3_server, url=bucket_url)
    wrong = run_cli(
        config, "store", "list", env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, check=False
    )
    assert wrong.returncode == 1 and "credentials" in wrong.stderr
    assert "AWS_ACCESS_KEY_ID" in wrong.stderr and "Traceback" not in wrong.stderr

    missing, _ = s3_site(tmp_path / "missing", s3_server, url="s3://no-such-bucket-here/x")
    out = run_cli(missing, "store", "list", check=False)
    assert out.returncode == 1 and "bucket 'no-such-bucket-here' does not exist" in out.stderr

    closed = S3Server(tmp_path / "closed").port  # a free port nobody listens on
    nowhere, _ = write_site(
        tmp_path / "nowhere",
        store=bucket_url,
        store_options={"endpoint_url": f"http://127.0.0.1:{closed}", "addressing_style": "path"},
    )
    out = run_cli(nowhere, "store", "list", check=False)
    assert out.returncode == 1 and "store_options.endpoint_url" in out.stderr

    (tmp_path / "creds.yaml").write_text(
        f"store: {bucket_url}\nstore_options: {{aws_secret_access_key: x}}\n"
    )
    out = run_cli(tmp_path / "creds.yaml", "store", "list", check=False)
    assert out.returncode == 1 and "credentials do not belong in the site config" in out.stderr


@pytest.fixture
def own_server(tmp_path: Path, s3_server: S3Server) -> Any:
    """A server of the test's own, to kill and restart (the session's stays up)."""
    server = S3Server(tmp_path / "own-s3")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_server_down_during_agent_passes_changes_nothing_then_recovers(
    tmp_path: Path, own_server: S3Server
) -> None:
    config, site = s3_site(tmp_path / "site", own_server)
    store = open_store(site)
    first = commit_to(store, tmp_path / "scratch", "a")
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    before = sizes_and_modes(site.deploy_root / "envs")

    own_server.kill()
    out = run_cli(config, "agent", "--once", check=False)
    assert out.returncode != 0 and "store-unavailable" in out.stderr
    assert sizes_and_modes(site.deploy_root / "envs") == before  # nothing deleted or un-flipped
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    assert status["quarantined"] == [] and status["store_error"]
    assert "endpoint_url" in status["store_error"]
    (node,) = status["nodes"].values()
    assert not node["ok"] and any("store" in f for f in node["failures"])
    latest = os.readlink(site.deploy_root / "envs" / "demo" / "latest")
    assert latest.endswith(first.build_id)

    own_server.start()  # back: the next pass is clean
    assert run_cli(config, "agent", "--once", check=False).returncode == 0


def test_server_killed_during_multipart_upload_leaves_no_manifest_and_is_cleaned(
    tmp_path: Path, own_server: S3Server
) -> None:
    config, site = s3_site(tmp_path / "site", own_server)
    store = open_store(site)
    assert isinstance(store, S3Store)
    good = commit_to(store, tmp_path / "scratch", "a")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))  # three parts

    def kill_after_first_part(done: int, total: int) -> None:
        if own_server.proc is not None:
            own_server.kill()

    made = commit_to(open_store(site), tmp_path / "scratch2", "b", hours=1)  # a real build...
    staging = store.staging_dir("demo", "2026.12.01T000000Z-deadbeef")
    shutil.copy(big, staging / "env.tar.zst")
    (staging / "pixi.lock").write_text("lock")
    doomed = BuildManifest.from_dict(
        {
            **made.to_dict(),
            "build_id": "2026.12.01T000000Z-deadbeef",
            "artifact": {**made.to_dict()["artifact"], "size": big.stat().st_size},
        }
    )
    with pytest.raises(Exception, match="store"):
        store.commit_build(staging, doomed, progress=kill_after_first_part)
    own_server.start()

    after = open_store(site)
    assert {m.build_id for m in after.builds("demo")} == {good.build_id, made.build_id}
    leftovers = after.uncommitted("demo")
    assert leftovers, "the killed upload should have left parts behind"
    dry = run_cli(config, "store", "prune", "--dry-run", check=False)
    assert "would remove" in dry.stderr
    assert run_cli(config, "store", "prune", check=False).returncode == 0
    assert open_store(site).uncommitted("demo") == []
    assert after.client.list_multipart_uploads(Bucket=after.bucket).get("Uploads", []) == []


def test_hook_pages_and_diffs_read_the_s3_store(tmp_path: Path, s3_server: S3Server) -> None:
    from starlette.testclient import TestClient

    from nsls2_artifacts.hook.app import create_app

    (tmp_path / "site" / "manifests" / "demo").mkdir(parents=True)
    (tmp_path / "site" / "manifests" / "demo" / "pixi.toml").write_text("[workspace]\n")
    _config, site = s3_site(tmp_path / "site", s3_server, manifests="./manifests")
    store = open_store(site)
    old = commit_to(store, tmp_path / "scratch", "a")
    new = commit_to(store, tmp_path / "scratch", "b", hours=1)
    with TestClient(create_app(site)) as client:
        front = client.get("/")
        assert front.status_code == 200 and new.build_id in front.text
        page = client.get(f"/envs/demo/builds/{new.build_id}")
        assert page.status_code == 200 and old.build_id in page.text  # diffed against `old`
        gone = client.get("/envs/demo/builds/2020.01.01T000000Z-00000000")
        assert gone.status_code == 404


@pytest.mark.slow
def test_publish_agent_kernel_on_s3(make_s3_site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pipeline with the store on S3: publish (multipart upload, manifest last),
    promote, list/verify, agent deploy (streamed), then a kernel started by name imports
    databroker from the deployed build."""
    from jupyter_client.manager import KernelManager
    from support.jupyter import PREFIX_CELL, execute
    from support.publish import publish_build

    config, site = make_s3_site()
    build_id = publish_build(config, "demo")
    assert (
        run_cli(config, "promote", "demo", build_id, "--lts", "2026-1", check=False).returncode == 0
    )
    listed = json.loads(run_cli(config, "store", "list", "--json", check=False).stdout)
    assert [(r["build_id"], r["lts"]) for r in listed] == [(build_id, ["2026-1"])]
    assert run_cli(config, "store", "verify", check=False).returncode == 0
    assert publish_build(config, "demo") == build_id  # the same lock: nothing new

    deployed = run_cli(config, "agent", "--once", timeout=900, check=False)
    assert deployed.returncode == 0, deployed.stderr
    monkeypatch.setenv("JUPYTER_PATH", str(site.deploy_root / "share" / "jupyter"))
    for name in ("nsls2-demo-latest", "nsls2-demo-2026-1"):
        kernel = KernelManager(kernel_name=name)
        kernel.start_kernel()
        try:
            prefix = execute(kernel, PREFIX_CELL)
        finally:
            kernel.shutdown_kernel(now=True)
        assert prefix == str(layout.build_dir(site.deploy_root, "demo", build_id))


@pytest.mark.slow
def test_hung_server_during_daemon_passes_is_retried_with_backoff(
    tmp_path: Path, own_server: S3Server
) -> None:
    """A server that accepts connections and answers nothing (SIGSTOP): the daemon's passes
    time out (store_options.timeout_seconds), change nothing, retry after 2 s, then 4 s,
    and recover by themselves when the server answers again."""
    from support.agent import events, start_agent
    from support.processes import kill9, wait_for

    config, site = s3_site(
        tmp_path / "site",
        own_server,
        store_options={"timeout_seconds": 1, "attempts": 1},
        agent={"poll_seconds": 8},
    )
    commit_to(open_store(site), tmp_path / "scratch", "a")
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    before = sizes_and_modes(site.deploy_root / "envs")
    log = tmp_path / "daemon.log"
    daemon = start_agent(config, "--no-events", log=log)
    try:
        wait_for(lambda: events(log.read_text(), "pass"), timeout=60, what="the first pass")
        own_server.freeze()
        wait_for(
            lambda: len(events(log.read_text(), "store-retry")) >= 2,
            timeout=120,
            what="two retries",
        )
        retries = [float(e["seconds"]) for e in events(log.read_text(), "store-retry")]
        assert retries[:2] == [2.0, 4.0]
        assert sizes_and_modes(site.deploy_root / "envs") == before
        assert (
            json.loads(run_cli(config, "status", "--json", check=False).stdout)["quarantined"] == []
        )
        own_server.thaw()
        seen = len(events(log.read_text(), "pass"))
        wait_for(
            lambda: any(e.get("failed") == "0" for e in events(log.read_text(), "pass")[seen:]),
            timeout=120,
            what="a clean pass after the server came back",
        )
    finally:
        own_server.thaw()
        kill9(daemon)
    assert sizes_and_modes(site.deploy_root / "envs") == before


def test_an_unreadable_store_index_restarts_its_generation(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """index.json is a StoreIndex record: one that does not parse (a string generation,
    garbage) is replaced by generation 1 on the next change, never a crash of the commit."""
    from nsls2_artifacts.store.s3 import INDEX, StoreIndex

    _config, site = s3_site(tmp_path / "site", s3_server)
    store = open_store(site)
    assert isinstance(store, S3Store)

    def index() -> StoreIndex:
        response, _ = store._raw("get_object", Key=store.prefix + INDEX)
        return StoreIndex.from_dict(json.loads(response["Body"].read()))

    commit_to(store, tmp_path / "scratch", "a")
    assert index().generation >= 1
    store._raw("put_object", Key=store.prefix + INDEX, Body=b'{"generation": "7"}')
    commit_to(store, tmp_path / "scratch", "b", hours=1)
    assert index().generation == 1
