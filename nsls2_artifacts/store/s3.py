"""The store in an object store with the S3 API (Ceph RadosGW, AWS, SeaweedFS): `store:
s3://BUCKET/PREFIX`. Built by `open_store`; nothing outside this package knows it is S3.

Keys (under PREFIX):
    ENV/BUILD_ID/env.tar.zst, ENV/BUILD_ID/pixi.lock   uploaded first
    ENV/BUILD_ID/index.json.zst                        the build's content index (if any)
    ENV/BUILD_ID/manifest.json                         uploaded LAST: it commits the build
    ENV/lts/LABEL.json                                 an LTS record
    ENV/.publish.lock                                  one publish per env at a time
    .nodes/NODE.json                                   each agent's rollout report
    index.json                                         {"generation": N, ...}: bumped by
                                                       every commit, label and delete

Every object is written once, with `If-None-Match: *`, so a committed key is never
overwritten; `index.json` (and re-pointing an LTS label) is a compare-and-swap with
`If-Match: ETAG`. Readers list the prefix once and then, while `index.json` answers a
conditional GET with 304, reuse that listing: an idle agent pass costs one request. A
full listing is still made every `store_options.relist_seconds` (an index write lost to
a crash, an object changed behind our back). An agent downloads an artifact to an
unlinked spool file, hashing it on the way, and extracts only after its size and sha256
matched: the hash vouches for every byte before any is interpreted (a same-size object
overwritten after commit never reaches the tar reader). A deduplicated deploy fetches only
the frames it does not link (`open_frames`: one ranged GET per run of adjacent frames,
spooled the same way) and checks each against the content index before it is read.
`store verify` only streams and hashes (`CheckedReader`).

Credentials come only from boto3's standard chain (environment, shared credentials
file, instance role). Errors name the setting to fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar

from msgspec import Meta

from ..config import StoreOptions
from ..contentindex import MAX_COMPRESSED, ContentIndex, FrameRecord
from ..errors import BuildLockedError, StoreError
from ..fsutil import MANIFEST_LIMIT, RECORD_LIMIT, parse_json, pid_alive, too_large
from ..records import BuildManifest, LtsRecord, RecordError, is_build_id, isoformat, utcnow
from ..schema import Record
from .interface import (
    MANIFEST,
    MISSING,
    NODE_REPORT_LIMIT,
    ArtifactMismatchError,
    ArtifactReader,
    ArtifactStamp,
    CheckedReader,
    FrameReader,
    InvalidBuild,
    Progress,
    StoredNodeReport,
    VerifiedReader,
    check_node_name,
    check_stream,
    parse_index,
    stored_report,
)

INDEX = "index.json"


class StoreIndex(Record, frozen=True):
    """`index.json` of an S3 store: its generation, bumped by every change (compare-and-swap),
    so an agent's cheap check (one conditional GET) tells whether to list again."""

    RECORD: ClassVar[str] = "store index.json"

    generation: Annotated[int, Meta(ge=0, le=2**62)]
    updated: str = ""
    by: str = ""


LOCK = ".publish.lock"
NODES = ".nodes"  # rollout reports, one object per node
PART_SIZE = 8 << 20  # multipart above this; parts this big (boto3's default; 10,000 max)
UPLOAD_THREADS = 10  # boto3's default concurrency
CHECK_SECONDS = 5.0  # calls within this reuse one index check (one agent pass)
STALE_LOCK_SECONDS = 6 * 3600  # a publish lock older than any publish: its holder died
READ_CHUNK = 1 << 20
_REPORT_CLOCK = ("time", "pass_seconds")  # fields of a node report that change every pass


class StoreUnavailableError(StoreError):
    """The object store could not be reached or answered with a server error: a fault of
    the network or the server, never of a build (retried, nothing is quarantined)."""


@dataclass
class _Object:
    key: str
    etag: str
    size: int
    modified: datetime


@dataclass
class _Listing:
    """One full listing of the prefix, grouped by env."""

    objects: dict[str, _Object] = field(default_factory=dict)  # key below PREFIX -> object
    envs: list[str] = field(default_factory=list)
    at: float = 0.0


def parse_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` -> (bucket, "PREFIX/" or "")."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store:
    """The store in an S3 bucket under a prefix (see the module doc)."""

    def __init__(
        self,
        url: str,
        options: StoreOptions | None = None,
        *,
        local_dir: Path | None = None,
        client: Any = None,
        report_refresh_seconds: float = 200.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_url(self.url)
        self.options = options or StoreOptions()
        self._local = (local_dir or Path(tempfile.gettempdir())) / "s3-staging"
        self._client = client
        self._lock = threading.Lock()
        self._listing: _Listing | None = None
        self._index_etag: str | None = None  # "" = no index object yet
        self._checked = 0.0
        self._manifests: dict[str, tuple[str, BuildManifest | StoreError]] = {}
        self._lts: dict[str, tuple[str, LtsRecord | StoreError]] = {}
        self.requests = 0  # S3 requests made (for the benchmarks and tests)
        self.range_bytes = 0  # bytes fetched by ranged GETs of frames (likewise)
        self.report_refresh_seconds = report_refresh_seconds
        self._reports: dict[str, tuple[str, float]] = {}

    @property
    def location(self) -> str:
        return self.url

    def watch_path(self) -> Path | None:
        return None

    def is_change_hint(self, path: str) -> bool:
        return False  # nothing to watch: the agent polls

    # -- the client and its errors -----------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                s3={"addressing_style": self.options.addressing_style},
                retries={"max_attempts": self.options.attempts, "mode": "standard"},  # backoff
                connect_timeout=self.options.timeout_seconds,
                read_timeout=self.options.timeout_seconds,
                max_pool_connections=UPLOAD_THREADS + 2,
            )
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.options.endpoint_url,
                region_name=self.options.region,
                config=config,
            )
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One S3 request; every failure becomes a StoreError that names what to fix."""
        self.requests += 1
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._error(exc, kwargs.get("Key") or kwargs.get("Prefix") or "") from None

    def _error(self, exc: Exception, key: str) -> StoreError:
        from botocore import exceptions as bx

        where = f"{self.url} ({key})" if key else self.url
        if isinstance(exc, bx.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return StoreError(f"store: bucket {self.bucket!r} does not exist ({self.url})")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                return StoreError(
                    f"store: {self.url} refused our S3 credentials ({code}): set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (shared "
                    "credentials file) for this bucket"
                )
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
                return StoreUnavailableError(f"store {where}: server error {code} ({status})")
            return StoreError(f"store {where}: {code}: {exc}")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StoreError(
                f"store: no S3 credentials for {self.url}: set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE (shared credentials file) or use an "
                "instance role (never the site config)"
            )
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
            return StoreUnavailableError(
                f"store_options.endpoint_url: cannot reach "
                f"{self.options.endpoint_url or 'the default AWS endpoint'} for {self.url}: {exc}"
            )
        if isinstance(exc, bx.BotoCoreError | OSError):
            return StoreUnavailableError(f"store {where}: {type(exc).__name__}: {exc}")
        raise exc

    def _raw(self, operation: str, **kwargs: Any) -> tuple[Any, str]:
        """One request returning (response, error code or "") for expected refusals
        (412 on a conditional write, 404, 304), StoreError for everything else."""
        from botocore import exceptions as bx

        self.requests += 1
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs), ""
        except bx.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            refusal = {304: "304", 404: "404", 412: "412"}.get(status, "")
            if code in ("PreconditionFailed", "NoSuchKey", "NotFound"):
                refusal = refusal or code
            if refusal and code != "NoSuchBucket":  # a missing bucket is never "no object"
                return None, refusal
            raise self._error(exc, kwargs.get("Key", "")) from None
        except Exception as exc:
            raise self._error(exc, kwargs.get("Key", "")) from None

    def _small(self, response: dict[str, Any], key: str, limit: int) -> bytes:
        """The body of a GET of a small object (manifest, record, report, lock, index),
        refused unread when it says it is larger than `limit` and cut off past `limit`
        otherwise: a huge object costs neither memory nor transfer (StoreError naming it)."""
        with contextlib.closing(response["Body"]) as body:
            length = response.get("ContentLength")
            if isinstance(length, int) and length > limit:
                raise StoreError(f"{self.url}/{key}: {too_large(length, limit)}")
            data = _Body(body, self, key).read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"{self.url}/{key}: {too_large(len(data), limit)}")
        return data

    # -- listing and the index ----------------------------------------------------------------

    def changes_token(self) -> str | None:
        with self._lock:
            self._check_index(force=True)
            return self._index_etag or None

    def _check_index(self, force: bool = False) -> bool:
        """Conditional GET of index.json; True when it changed (or was never read)."""
        if not force and time.monotonic() - self._checked < CHECK_SECONDS:
            return False
        extra = {"IfNoneMatch": self._index_etag} if self._index_etag else {}
        response, code = self._raw("get_object", Key=self.prefix + INDEX, **extra)
        self._checked = time.monotonic()
        if code == "304":
            return False
        etag = "" if response is None else response["ETag"]
        if response is not None:
            response["Body"].close()
        changed = etag != self._index_etag
        self._index_etag = etag
        return changed

    def _fresh(self) -> _Listing:
        """The listing, re-made when the index moved or `relist_seconds` passed."""
        with self._lock:
            changed = self._check_index()
            stale = (
                self._listing is None
                or time.monotonic() - self._listing.at > self.options.relist_seconds
            )
            if changed or stale:
                self._listing = self._list()
            assert self._listing is not None
            return self._listing

    def _list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under `prefix`, page after page (1,000 keys a request)."""
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=prefix, **token)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _list(self) -> _Listing:
        listing = _Listing(at=time.monotonic())
        for item in self._list_keys(self.prefix):
            key = item["Key"][len(self.prefix) :]
            listing.objects[key] = _Object(key, item["ETag"], item["Size"], item["LastModified"])
        listing.envs = sorted(
            {k.split("/", 1)[0] for k in listing.objects if "/" in k and not k.startswith(".")}
        )
        return listing

    def _bump_index(self) -> None:
        """Compare-and-swap index.json's generation so every reader's next check sees 200."""
        for attempt in range(20):
            response, code = self._raw("get_object", Key=self.prefix + INDEX)
            if response is None:
                current, condition = 0, {"IfNoneMatch": "*"}
            else:
                try:  # an unreadable index restarts at 0: readers only compare ETags
                    data = parse_json(self._small(response, INDEX, RECORD_LIMIT))
                    current = StoreIndex.from_dict(data).generation
                except StoreUnavailableError:
                    raise
                except (StoreError, ValueError):  # RecordError is a ValueError
                    current = 0
                condition = {"IfMatch": response["ETag"]}
            data = StoreIndex(current + 1, isoformat(utcnow()), _who()).to_dict()
            _, code = self._raw(
                "put_object",
                Key=self.prefix + INDEX,
                Body=json.dumps(data).encode(),
                ContentType="application/json",
                **condition,
            )
            if not code:
                with self._lock:
                    self._checked = 0.0  # our own readers notice at once
                return
            time.sleep(min(0.05 * 2**attempt, 1.0))  # another writer won: read again
        raise StoreError(f"store {self.url}: could not update {INDEX} (too much contention)")

    # -- reading ----------------------------------------------------------------------------

    def envs(self) -> list[str]:
        return list(self._fresh().envs)

    def _committed(self, env: str) -> list[_Object]:
        objects = self._fresh().objects
        found = []
        for key, obj in objects.items():
            parts = key.split("/")
            committed = len(parts) == 3 and parts[0] == env and parts[2] == MANIFEST
            if committed and is_build_id(parts[1]):
                found.append(obj)
        return sorted(found, key=lambda o: o.key)

    def _manifest_at(self, obj: _Object) -> BuildManifest:
        cached = self._manifests.get(obj.key)
        if cached is None or cached[0] != obj.etag:
            env, build_id, _ = obj.key.split("/")
            try:
                cached = (obj.etag, self._load(env, build_id))
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                cached = (obj.etag, exc)
            self._manifests[obj.key] = cached
        if isinstance(cached[1], StoreError):
            raise cached[1]
        return cached[1]

    def _load(self, env: str, build_id: str) -> BuildManifest:
        key = f"{env}/{build_id}/{MANIFEST}"
        response, code = self._raw("get_object", Key=self.prefix + key)
        if response is None:
            raise StoreError(f"{env}/{build_id}: no such committed build in {self.url}")
        data = self._small(response, key, MANIFEST_LIMIT)
        where = f"{self.url}/{key}"
        try:
            manifest = BuildManifest.from_dict(parse_json(data))
        except ValueError as exc:
            raise StoreError(f"{where}: invalid JSON: {exc}") from None
        except RecordError as exc:
            raise StoreError(f"{where}: {exc}") from None
        if manifest.name != env or manifest.build_id != build_id:
            raise StoreError(
                f"{where}: names {manifest.name}/{manifest.build_id}, but lives at {env}/{build_id}"
            )
        return manifest

    def builds(self, env: str) -> list[BuildManifest]:
        found = []
        for obj in self._committed(env):
            with contextlib.suppress(StoreError):
                found.append(self._manifest_at(obj))
        return sorted(found, key=lambda m: (m.created_at, m.build_id))

    def invalid_builds(self, env: str) -> list[InvalidBuild]:
        bad = []
        for obj in self._committed(env):
            try:
                self._manifest_at(obj)
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                bad.append(InvalidBuild(env, obj.key.split("/")[1], str(exc)))
        return bad

    def manifest(self, env: str, build_id: str) -> BuildManifest:
        return self._load(env, build_id)

    def _lts_objects(self, env: str) -> list[_Object]:
        return [
            obj
            for key, obj in sorted(self._fresh().objects.items())
            if key.startswith(f"{env}/lts/") and key.endswith(".json") and key.count("/") == 2
        ]

    def _read_lts(self, env: str, obj: _Object) -> LtsRecord:
        cached = self._lts.get(obj.key)
        if cached is None or cached[0] != obj.etag:
            label = obj.key.rsplit("/", 1)[1][: -len(".json")]
            response, _ = self._raw("get_object", Key=self.prefix + obj.key)
            try:
                if response is None:
                    raise StoreError(f"LTS record {self.url}/{obj.key} vanished")
                data = parse_json(self._small(response, obj.key, RECORD_LIMIT))
                cached = (obj.etag, LtsRecord.from_dict(env, label, data))
            except (ValueError, RecordError, AttributeError) as exc:
                reason = f"unreadable LTS record {self.url}/{obj.key}: {exc}"
                cached = (obj.etag, StoreError(reason))
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                cached = (obj.etag, exc)
            self._lts[obj.key] = cached
        if isinstance(cached[1], StoreError):
            raise cached[1]
        return cached[1]

    def lts(self, env: str) -> list[LtsRecord]:
        records = []
        for obj in self._lts_objects(env):
            with contextlib.suppress(StoreError):
                records.append(self._read_lts(env, obj))
        return sorted(records, key=lambda r: r.label)

    def invalid_lts(self, env: str) -> list[InvalidBuild]:
        bad = []
        for obj in self._lts_objects(env):
            try:
                self._read_lts(env, obj)
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                label = obj.key.rsplit("/", 1)[1][: -len(".json")]
                bad.append(InvalidBuild(env, f"lts/{label}", str(exc)))
        return bad

    def strays(self) -> list[InvalidBuild]:
        """Keys the layout does not know (dot names and index.json are ours)."""
        found = []
        for key in sorted(self._fresh().objects):
            if key == INDEX or key.startswith("."):
                continue
            parts = key.split("/")
            if len(parts) == 1:
                found.append(InvalidBuild("", key, "an object at the top of the store prefix"))
                continue
            env, name = parts[0], parts[1]
            if name.startswith("."):
                continue
            if name == "lts":
                if len(parts) != 3 or not parts[2].endswith(".json"):
                    found.append(InvalidBuild(env, "/".join(parts[1:]), "not an LTS record"))
            elif not is_build_id(name):
                found.append(InvalidBuild(env, name, "a key whose name is not a build id"))
            elif len(parts) == 2:
                found.append(InvalidBuild(env, name, "named like a build, but an object"))
        return list(dict.fromkeys(found))  # one row per name, not per key below it

    # -- artifacts ----------------------------------------------------------------------------

    def _key(self, manifest: BuildManifest, name: str) -> str:
        return f"{self.prefix}{manifest.name}/{manifest.build_id}/{name}"

    @contextlib.contextmanager
    def open_artifact(
        self, manifest: BuildManifest, *, scratch: Path | None = None
    ) -> Iterator[ArtifactReader]:
        """The artifact, verified before the first byte is handed out: downloaded to an
        unlinked spool file in `scratch` (the deploy root's env dir: room for the env
        anyway; a crash leaves nothing) while hashed, size and sha256 checked, then read
        back from the spool. Streaming into the extractor instead let a same-size object
        overwritten after commit reach the tar reader before its hash was known."""
        with tempfile.TemporaryFile(dir=scratch, prefix=".spool-") as spool:
            with self._stream_artifact(manifest) as checked:
                while chunk := checked.read(READ_CHUNK):
                    spool.write(chunk)
                checked.finish()
            spool.seek(0)
            yield VerifiedReader(spool)

    @contextlib.contextmanager
    def _stream_artifact(self, manifest: BuildManifest) -> Iterator[CheckedReader]:
        """The artifact streamed from the object store, hashed on the way (`finish()`)."""
        key = self._key(manifest, manifest.artifact.file)
        response, code = self._raw("get_object", Key=key)
        if response is None:
            raise ArtifactMismatchError(f"artifact {self.url}/{key}: missing ({code})")
        body = _Body(response["Body"], self, key)
        try:
            yield CheckedReader(
                body,
                f"artifact {manifest.artifact.file}",
                manifest.artifact.size,
                manifest.artifact.sha256,
                int(response["ContentLength"]),
            )
        finally:
            body.close()

    @contextlib.contextmanager
    def open_frames(
        self,
        manifest: BuildManifest,
        frames: Sequence[tuple[int, FrameRecord]],
        *,
        scratch: Path | None = None,
    ) -> Iterator[FrameReader]:
        """The frames' compressed bytes fetched with one ranged GET per run of adjacent
        frames (the rest of the object is never transferred) into an unlinked spool file
        in `scratch`, then each frame checked against its record before its first byte is
        handed out. Each response must be the range asked for, of an object of the
        manifest's size."""
        key = self._key(manifest, manifest.artifact.file)
        what = f"artifact {manifest.artifact.file}"
        with tempfile.TemporaryFile(dir=scratch, prefix=".spool-") as spool:
            spans = []
            for run in _runs(frames):
                start, end = run[0][1].offset, run[-1][1].offset + run[-1][1].length
                at = spool.tell()
                self._get_range(key, (start, end), manifest.artifact.size, spool, what)
                spans += [(number, frame, at + frame.offset - start) for number, frame in run]
            spool.flush()
            yield FrameReader(spool, spans, what, spool.tell())

    def _get_range(
        self, key: str, span: tuple[int, int], size: int, out: IO[bytes], what: str
    ) -> None:
        """Bytes [start, end) = `span` of the object `key` (of `size` bytes, else the
        artifact differs from its manifest) appended to `out`: one GET with a Range header,
        read in READ_CHUNK pieces, never past the range (a server that answers with more
        is refused before its body is read)."""
        start, end = span
        if end <= start:
            return
        response, code = self._raw("get_object", Key=key, Range=f"bytes={start}-{end - 1}")
        if response is None:
            raise ArtifactMismatchError(f"{what} {self.url}/{key}: missing ({code})")
        body = _Body(response["Body"], self, key)
        with contextlib.closing(body):
            total = str(response.get("ContentRange", "")).rpartition("/")[2]
            if total.isdigit() and int(total) != size:
                raise ArtifactMismatchError(f"{what}: size {total}, manifest says {size}")
            if int(response.get("ContentLength", -1)) != end - start or not total.isdigit():
                raise StoreError(
                    f"store {self.url} ({key}): asked for bytes {start}-{end - 1}, the server "
                    f"answered {response.get('ContentRange') or 'the whole object'}"
                )
            left = end - start
            while left > 0:
                data = body.read(min(READ_CHUNK, left))
                if not data:
                    raise StoreUnavailableError(
                        f"store {self.url}: reading {key} ended {left} bytes early"
                    )
                out.write(data)
                left -= len(data)
                self.range_bytes += len(data)

    def local_artifact(self, manifest: BuildManifest) -> Path | None:
        return None  # an object: open_artifact spools and checks it in one pass

    def artifact_stamp(self, manifest: BuildManifest) -> ArtifactStamp:
        key = self._key(manifest, manifest.artifact.file)[len(self.prefix) :]
        obj = self._fresh().objects.get(key)  # from the listing: no request per build
        if obj is None:
            return MISSING
        return ArtifactStamp(obj.size, int(obj.modified.timestamp() * 1e9))

    def verify_build(self, manifest: BuildManifest, *, lock: bool = True) -> None:
        with self._stream_artifact(manifest) as reader:
            reader.finish()
        files = [("lock", manifest.lock.file, None, manifest.lock.sha256)] if lock else []
        if manifest.index is not None:
            index = manifest.index
            files.append(("index", index.file, index.size, index.sha256))
        for label, name, size, sha256 in files:
            key = self._key(manifest, name)
            response, code = self._raw("get_object", Key=key)
            if response is None:
                raise ArtifactMismatchError(f"{label} {self.url}/{key}: missing ({code})")
            body = _Body(response["Body"], self, key)
            with contextlib.closing(body):
                check_stream(
                    iter(lambda body=body: body.read(READ_CHUNK), b""),
                    f"{label} {name}",
                    size,
                    sha256,
                )

    def read_index(self, manifest: BuildManifest) -> ContentIndex | None:
        if manifest.index is None:
            return None
        key = self._key(manifest, manifest.index.file)
        response, code = self._raw("get_object", Key=key)
        if response is None:
            raise ArtifactMismatchError(f"index {self.url}/{key}: missing ({code})")
        body = _Body(response["Body"], self, key)
        with contextlib.closing(body):
            if int(response["ContentLength"]) > MAX_COMPRESSED:
                raise ArtifactMismatchError(
                    f"index {self.url}/{key}: {response['ContentLength']} bytes "
                    f"(limit {MAX_COMPRESSED})"
                )
            blob = body.read()
        return parse_index(blob, manifest)

    # -- writing (build host only) ------------------------------------------------------------

    def _put_once(self, key: str, body: bytes, what: str) -> None:
        """Create `key` unless it exists (If-None-Match: *)."""
        _, code = self._raw("put_object", Key=self.prefix + key, Body=body, IfNoneMatch="*")
        if code:
            raise StoreError(f"{what} {self.url}/{key} already exists in the store ({code})")

    def set_lts(self, record: LtsRecord) -> None:
        self._load(record.env, record.build_id)  # only committed builds can be promoted
        key = f"{self.prefix}{record.env}/lts/{record.label}.json"
        body = json.dumps(record.to_dict(), indent=2, sort_keys=True).encode()
        _, code = self._raw("put_object", Key=key, Body=body, IfNoneMatch="*")
        if code:  # the label exists: re-point it with a compare-and-swap on what we read
            response, _ = self._raw("get_object", Key=key)
            if response is None:
                raise StoreError(f"LTS record {self.url}/{key} changed while promoting: retry")
            response["Body"].close()  # only its ETag counts
            _, code = self._raw("put_object", Key=key, Body=body, IfMatch=response["ETag"])
            if code:
                raise StoreError(f"LTS record {self.url}/{key} changed while promoting: retry")
        self._bump_index()

    @contextlib.contextmanager
    def publish_lock(self, env: str, *, wait: bool = False) -> Iterator[None]:
        """An object created with If-None-Match: * (the holder deletes it); a lock left by
        a dead publish on this host, or older than any publish, is taken over."""
        key = f"{env}/{LOCK}"
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
        while True:
            _, code = self._raw(
                "put_object", Key=self.prefix + key, Body=body.encode(), IfNoneMatch="*"
            )
            if not code:
                break
            if self._lock_is_stale(key):
                self._raw("delete_object", Key=self.prefix + key)
                continue
            if not wait:
                raise BuildLockedError(
                    f"another publish of {env!r} is running (lock {self.url}/{key})"
                )
            time.sleep(1.0)
        try:
            yield
        finally:
            with contextlib.suppress(StoreError):
                self._raw("delete_object", Key=self.prefix + key)

    def _lock_is_stale(self, key: str) -> bool:
        response, _ = self._raw("get_object", Key=self.prefix + key)
        if response is None:
            return False  # released meanwhile: try again
        try:
            holder = parse_json(self._small(response, key, RECORD_LIMIT))
        except StoreUnavailableError:
            raise
        except (StoreError, ValueError):
            return True  # not a lock this code wrote
        if time.time() - float(holder.get("time", 0)) > STALE_LOCK_SECONDS:
            return True
        return holder.get("host") == socket.gethostname() and not pid_alive(
            int(holder.get("pid", 0))
        )

    def uncommitted(self, env: str) -> list[str]:
        with self._lock:
            self._listing = self._list()
        builds, uploads = self._uncommitted_builds(env), self._uploads(env)
        return sorted(builds) + [f"{key} (unfinished upload)" for key, _ in uploads]

    def _uncommitted_builds(self, env: str) -> dict[str, list[str]]:
        assert self._listing is not None
        found: dict[str, list[str]] = {}
        committed = set()
        for key in self._listing.objects:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == env and is_build_id(parts[1]):
                found.setdefault(parts[1], []).append(key)
                if parts[2] == MANIFEST:
                    committed.add(parts[1])
        return {b: keys for b, keys in found.items() if b not in committed}

    def _uploads(self, env: str) -> list[tuple[str, str]]:
        page = self._call("list_multipart_uploads", Prefix=f"{self.prefix}{env}/")
        return [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]

    def clean_uncommitted(self, env: str) -> list[str]:
        """Abort unfinished multipart uploads, delete objects of builds that have no
        manifest.json, and remove this host's local staging dirs of dead publishes."""
        removed = []
        for key, upload_id in self._uploads(env):
            self._raw("abort_multipart_upload", Key=key, UploadId=upload_id)
            removed.append(f"{key} (unfinished upload)")
        with self._lock:
            self._listing = self._list()
        for build_id, keys in self._uncommitted_builds(env).items():
            self._delete_keys(keys)
            removed.append(build_id)
        for path in self._local.glob(f"{env}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
        return removed

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})

    def staging_dir(self, env: str, build_id: str) -> Path:
        """A local directory (the files are uploaded from it by `commit_build`)."""
        path = self._local / f"{env}-{build_id}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def commit_build(
        self, staging: Path, manifest: BuildManifest, progress: Progress | None = None
    ) -> None:
        """Upload the artifact (multipart, parallel), the lock, the index, then manifest.json last,
        each with If-None-Match: *; then bump the index."""
        base = f"{manifest.name}/{manifest.build_id}"
        if f"{base}/{MANIFEST}" in self._fresh().objects:
            raise StoreError(f"{manifest.name}/{manifest.build_id} already exists in the store")
        try:
            self.upload(
                staging / manifest.artifact.file, f"{base}/{manifest.artifact.file}", progress
            )
            self._put_once(
                f"{base}/{manifest.lock.file}", (staging / manifest.lock.file).read_bytes(), "lock"
            )
            if manifest.index is not None:  # before the manifest, like every file of the build
                self.upload(staging / manifest.index.file, f"{base}/{manifest.index.file}")
        except OSError as exc:  # a staged file unreadable: as the filesystem store says it
            raise StoreError(f"cannot read the staged build {staging}: {exc}") from None
        body = (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode()
        self._put_once(f"{base}/{MANIFEST}", body, "manifest")
        shutil.rmtree(staging, ignore_errors=True)
        self._bump_index()

    def upload(self, path: Path, key: str, progress: Progress | None = None) -> None:
        """One file to `key` (under the prefix), never overwriting: a plain conditional PUT
        when small, else a multipart upload whose completion is conditional."""
        size = path.stat().st_size
        report = _Progress(size, progress)
        if size <= PART_SIZE:
            self._put_once(key, path.read_bytes(), "artifact")
            report.add(size)
            return
        upload_id = self._call("create_multipart_upload", Key=self.prefix + key)["UploadId"]
        try:
            parts = self._upload_parts(path, key, upload_id, size, report)
            _, code = self._raw(
                "complete_multipart_upload",
                Key=self.prefix + key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
            if code:
                raise StoreError(f"artifact {self.url}/{key} already exists in the store")
        except BaseException:
            with contextlib.suppress(Exception):  # else the next publish or prune aborts it
                self._raw("abort_multipart_upload", Key=self.prefix + key, UploadId=upload_id)
            raise

    def _upload_parts(
        self, path: Path, key: str, upload_id: str, size: int, report: _Progress
    ) -> list[dict[str, Any]]:
        # 10,000 parts at most: a very large artifact gets larger parts
        part_size = max(PART_SIZE, -(-size // 10_000))
        count = (size + part_size - 1) // part_size

        def part(number: int) -> dict[str, Any]:
            with open(path, "rb") as handle:
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
            response = self._call(
                "upload_part",
                Key=self.prefix + key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
            report.add(len(data))
            return {"ETag": response["ETag"], "PartNumber": number}

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            return list(pool.map(part, range(1, count + 1)))

    def delete_build(self, env: str, build_id: str) -> None:
        """manifest.json first (the build is un-committed), then the rest, then the index."""
        base = f"{env}/{build_id}/"
        self._call("delete_object", Key=f"{self.prefix}{base}{MANIFEST}")
        with self._lock:
            self._listing = self._list()
            keys = [k for k in self._listing.objects if k.startswith(base)]
        self._delete_keys(keys)
        self._bump_index()

    # -- rollout reports ------------------------------------------------------------------------

    def put_node_report(self, node: str, data: dict[str, Any]) -> None:
        """One PUT (atomic in S3: readers see the old object or the new one). A report that
        says what the last one said (its time aside) is written again only after
        `report_refresh_seconds`, well inside the nodes' TTL: an idle pass stays at one
        request (the index check)."""
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        if len(text) > NODE_REPORT_LIMIT:
            raise StoreError(f"rollout report of {node} is {len(text)} bytes (limit 1 MiB)")
        same = json.dumps({k: v for k, v in data.items() if k not in _REPORT_CLOCK}, sort_keys=True)
        last = self._reports.get(node)
        if last and last[0] == same and time.monotonic() - last[1] < self.report_refresh_seconds:
            return
        key = f"{self.prefix}{NODES}/{check_node_name(node)}.json"
        self._call("put_object", Key=key, Body=text.encode(), ContentType="application/json")
        self._reports[node] = (same, time.monotonic())

    def node_reports(self) -> list[StoredNodeReport]:
        reports = []
        for item in self._list_keys(f"{self.prefix}{NODES}/"):
            name = item["Key"].rsplit("/", 1)[1]
            if not name.endswith(".json") or name.startswith("."):
                continue
            node, where = name[: -len(".json")], f"{self.url}/{NODES}/{name}"
            response, _ = self._raw("get_object", Key=item["Key"])
            if response is None:
                continue  # removed between listing and reading
            written = response["LastModified"]
            try:
                raw = self._small(response, f"{NODES}/{name}", NODE_REPORT_LIMIT)
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                reports.append(StoredNodeReport(node, None, written, str(exc)))
                continue
            reports.append(stored_report(node, raw, where, written))
        return reports


def _runs(
    frames: Sequence[tuple[int, FrameRecord]],
) -> list[list[tuple[int, FrameRecord]]]:
    """(number, frame)s in archive order, grouped into runs of adjacent frames (each run
    one ranged GET)."""
    runs: list[list[tuple[int, FrameRecord]]] = []
    for number, frame in frames:
        last = runs[-1][-1][1] if runs else None
        if last is not None and last.offset + last.length == frame.offset:
            runs[-1].append((number, frame))
        else:
            runs.append([(number, frame)])
    return runs


class _Body:
    """A response body whose network failures are StoreUnavailableError (retry the pass,
    never quarantine the build)."""

    def __init__(self, raw: Any, store: S3Store, key: str) -> None:
        self._raw, self._store, self._key = raw, store, key

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size if size >= 0 else None)
        except Exception as exc:
            raise StoreUnavailableError(
                f"store {self._store.url}: reading {self._key} failed: {type(exc).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.close()


class _Progress:
    """Thread-safe byte counter forwarding to a publish progress callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            if self.callback:
                self.callback(self.done, self.total)


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


__all__ = ["S3Store", "StoreUnavailableError", "parse_url"]
