"""On-disk records of the deploy root: each `from_dict` refuses bad input naming the field,
each round-trips through `to_dict`, and `layout.read_record` names the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nsls2_artifacts import layout
from nsls2_artifacts.agent.dedup import DedupRecord
from nsls2_artifacts.records import (
    ArtifactInfo,
    BuildManifest,
    DeletedMarker,
    Hold,
    KernelExtras,
    LockInfo,
    MemoryProbe,
    NodeCheck,
    NodeHeartbeat,
    PackageRef,
    PassRecord,
    ProcessUse,
    Quarantine,
    RecordError,
    RetryRecord,
    Tombstone,
    build_id_time,
    make_build_id,
)
from nsls2_artifacts.rollout import EnvRollout, NodeRollout

BUILD = "2026.11.25T020000Z-1a2b3c4d"

GOOD = {
    Quarantine: Quarantine("demo", BUILD, "smoke", "boom", "ab" * 32, 10, 123, "t", "n1"),
    Hold: Hold("demo", BUILD, BUILD, "2026-11-25T02:00:00Z", "t"),
    Tombstone: Tombstone("demo", BUILD, "n1", "t"),
    DeletedMarker: DeletedMarker("demo", BUILD, "n1", "t"),
    PassRecord: PassRecord("n1", "t", 1.5, True, [], [{"env": "demo"}], True),
    NodeCheck: NodeCheck(("ipykernel", "cupy"), "", "t"),
    MemoryProbe: MemoryProbe("n1", "rlimit", "RLIMIT_DATA (no cgroup: x)", "2026-11-25T02:00:00Z"),
    DedupRecord: DedupRecord("ab" * 32, 10, 1000, 6, 600, 0, 4, 2, (f"demo/{BUILD}",)),
    NodeHeartbeat: NodeHeartbeat(
        "n1",
        "t",
        "0.1",
        {f"demo/{BUILD}": [ProcessUse(1, "u", "exe", "/")]},
        True,
    ),
}


@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
def test_round_trip(cls):
    record = GOOD[cls]
    assert cls.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    ("cls", "field", "value", "expect"),
    [
        (Quarantine, "artifact_size", "10", "expected int, got str"),
        (Quarantine, "artifact_mtime_ns", True, "expected int, got bool"),
        (Quarantine, "stage", None, "expected str, got NoneType"),
        (Hold, "newest_at_hold_created", "yesterday", "not a time"),
        (Hold, "build_id", 3, "expected str, got int"),
        (Tombstone, "node", [], "expected str, got list"),
        (DeletedMarker, "env", 1, "expected str, got int"),
        (PassRecord, "ok", "yes", "expected bool, got str"),
        (PassRecord, "failures", "x", "expected list, got str"),
        (NodeHeartbeat, "complete", 1, "expected bool, got int"),
        (NodeCheck, "imports", [1], "expected a list of module names"),
        (NodeCheck, "reason", None, "expected str, got NoneType"),
        (MemoryProbe, "mechanism", "x", "expected one of 'cgroup1', 'cgroup2', 'rlimit', got 'x'"),
        (MemoryProbe, "checked", "yesterday", "not an ISO 8601 time"),
        (MemoryProbe, "cgroup", 1, "expected str | NoneType, got int"),
        (DedupRecord, "linked_bytes", -1, "expected int >= 0"),
        (DedupRecord, "files", 1.5, "expected int, got float"),
        (DedupRecord, "index_sha256", "XY", "expected str matching regex"),
        (DedupRecord, "donors", "demo/b", "expected list, got str"),
    ],
)
def test_wrong_field_is_named(cls, field, value, expect):
    data = GOOD[cls].to_dict() | {field: value}
    with pytest.raises(RecordError) as info:
        cls.from_dict(data)
    assert info.value.field == field
    assert f"field {field!r}: {expect}" in str(info.value)


@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
def test_missing_field_is_named(cls):
    data = GOOD[cls].to_dict()
    name = next(iter(data))
    del data[name]
    with pytest.raises(RecordError, match=f"field {name!r}: missing"):
        cls.from_dict(data)


def test_deleted_marker_without_time_is_a_finished_delete():
    marker = DeletedMarker.from_dict({"env": "demo", "build_id": BUILD, "node": "n1"})
    assert marker.time == ""


def test_heartbeat_use_entries_are_checked():
    data = GOOD[NodeHeartbeat].to_dict()
    data["unknown"] = [{"pid": 1, "user": "u", "via": "unreadable"}]
    with pytest.raises(RecordError, match=r"unknown\[0\]: field 'path': missing"):
        NodeHeartbeat.from_dict(data)
    assert GOOD[NodeHeartbeat].in_use == {f"demo/{BUILD}": [ProcessUse(1, "u", "exe", "/")]}


def test_read_record_names_the_file(tmp_path: Path):
    path = tmp_path / "holds" / "demo.json"
    assert layout.read_record(path, Hold.from_dict) is None  # absent: no record
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(RecordError, match=f"{path}: not JSON"):
        layout.read_record(path, Hold.from_dict)
    path.write_text(json.dumps({"env": "demo"}))
    with pytest.raises(RecordError) as info:
        layout.read_record(path, Hold.from_dict)
    assert str(path) in str(info.value) and info.value.field == "build_id"  # the first missing
    path.write_text(json.dumps(GOOD[Hold].to_dict()))
    assert layout.read_record(path, Hold.from_dict) == GOOD[Hold]


def test_nested_manifest_fields_are_named_with_their_record() -> None:
    data = _manifest_dict()
    data["artifact"]["size"] = "10"
    with pytest.raises(RecordError) as info:
        BuildManifest.from_dict(data)
    assert str(info.value) == "manifest.json artifact: field 'size': expected int, got str"
    data = _manifest_dict()
    data["packages"][0] = {"name": "python"}
    with pytest.raises(RecordError, match=r"manifest.json packages\[0\]: field 'version': missing"):
        BuildManifest.from_dict(data)


@pytest.mark.parametrize(
    ("mutate", "field", "detail"),
    [
        (lambda d: d["artifact"].update(size=-1), "size", "expected int >= 0"),
        (lambda d: d.update(schema=99), "schema", "newer than this tool"),
        (lambda d: d.update(created="soon"), "created", "not an ISO 8601 time"),
        (lambda d: d["lock"].update(file="../x"), "file", "not a plain file name"),
        (lambda d: d.update(kernel={"beamlines": [1]}), "beamlines", "a list of beamline names"),
        (lambda d: d.update(kernel={"beamlines": ["../x"]}), "beamlines", "beamline names"),
        (
            lambda d: d.update(kernel={"beamlines": [], "logo": {"format": "gif", "base64": ""}}),
            "format",
            "expected one of 'png', 'svg', got 'gif'",
        ),
    ],
)
def test_manifest_values_are_checked(mutate, field, detail) -> None:
    data = _manifest_dict()
    mutate(data)
    with pytest.raises(RecordError) as info:
        BuildManifest.from_dict(data)
    assert info.value.field == field and detail in str(info.value)


def test_manifests_of_older_and_newer_builds_still_load() -> None:
    data = _manifest_dict()
    del data["kernel"]  # older builds: no kernel record
    assert BuildManifest.from_dict(data).kernel == KernelExtras()
    data["added_by_a_newer_tool"] = {"x": 1}  # unknown fields are ignored (rolling upgrades)
    assert BuildManifest.from_dict(data).name == "demo"


# Records other versions of the tool write and this one reads (a newer build host, another
# node's newer agent, a newer CLI's rollback, the server extension reading the agent's
# kernelspecs) ignore fields they do not know: refusing them would stop an older agent
# mid-upgrade. docs/design.md, "Which records refuse unknown fields".
LENIENT = [c for c in GOOD if c is not NodeCheck]


@pytest.mark.parametrize("cls", LENIENT, ids=lambda c: c.__name__)
def test_shared_records_ignore_unknown_fields(cls) -> None:
    data = GOOD[cls].to_dict() | {"added_by_a_newer_version": {"x": 1}}
    assert cls.from_dict(data) == GOOD[cls]


def test_shared_manifest_rollout_and_kernel_metadata_ignore_unknown_fields() -> None:
    from nsls2_artifacts.kernelmeta import KernelMetadata

    manifest = _manifest_dict() | {"new": 1}
    manifest["artifact"] = manifest["artifact"] | {"new": 1}
    assert BuildManifest.from_dict(manifest).artifact.sha256 == "ab" * 32
    report = NodeRollout("n1", "t", "0.1", 1.5, {"base": EnvRollout("b", ("a",))}).to_dict()
    report["envs"]["base"]["new"] = 1
    assert NodeRollout.from_dict(report | {"new": 1}).envs["base"].latest == "b"
    meta = {"env": "base", "build_id": BUILD, "channel": "latest", "label": "latest", "new": 1}
    assert KernelMetadata.from_dict(meta).env == "base"


def test_local_records_refuse_unknown_fields_by_name(tmp_path: Path) -> None:
    """NodeCheck is written and read by one node's agent only: an unknown field is refused,
    named, and the node simply checks the build again."""
    from nsls2_artifacts.agent import nodecheck

    data = GOOD[NodeCheck].to_dict() | {"gpu": "a100"}
    with pytest.raises(RecordError) as info:
        NodeCheck.from_dict(data)
    assert info.value.field == "gpu" and "field 'gpu': unknown field" in str(info.value)
    path = tmp_path / "check.json"
    path.write_text(json.dumps(data))
    assert nodecheck._previous(path, ("ipykernel", "cupy")) is False  # check again
    path.write_text(json.dumps(GOOD[NodeCheck].to_dict()))
    assert nodecheck._previous(path, ("ipykernel", "cupy")) is None  # passed before


def test_rollout_reports_are_typed() -> None:
    report = NodeRollout("n1", "t", "0.1", 1.5, {"base": EnvRollout("b", ("a", "b"))})
    assert NodeRollout.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    data = report.to_dict()
    data["envs"]["base"]["ready"] = "b"
    with pytest.raises(RecordError) as info:
        NodeRollout.from_dict(data)
    assert info.value.field == "ready" and "expected a list of build ids" in str(info.value)
    data = report.to_dict() | {"store_ok": "yes"}
    with pytest.raises(RecordError, match="field 'store_ok': expected bool, got str"):
        NodeRollout.from_dict(data)


def test_retry_attempts_cannot_be_negative() -> None:
    data = {
        "env": "demo",
        "build_id": BUILD,
        "stage": "extract",
        "reason": "disk full",
        "attempts": -1,
        "time": "t",
        "next_try": "2026-11-25T02:00:00Z",
        "node": "n1",
    }
    with pytest.raises(RecordError, match="field 'attempts': expected int >= 0"):
        RetryRecord.from_dict(data)


def _manifest_dict() -> dict:
    return BuildManifest(
        name="demo",
        build_id=BUILD,
        created="2026-11-25T02:00:00Z",
        platform="linux-64",
        display_name="Demo",
        smoke=("json",),
        artifact=ArtifactInfo("env.tar.zst", "ab" * 32, 10, "tar.zst"),
        lock=LockInfo("pixi.lock", "cd" * 32),
        packages=(PackageRef("python", "3.11", "h0", "conda-forge"),),
        builder={"host": "b"},
        source={"manifest_sha256": "x"},
        kernel=KernelExtras(beamlines=("csx",)),
    ).to_dict()


def test_build_id_time_is_the_inverse_of_make_build_id() -> None:
    when = datetime(2026, 11, 25, 2, 0, 7, tzinfo=UTC)
    assert build_id_time(make_build_id(when, "1a2b3c4d" + "0" * 56)) == when
    assert build_id_time("latest") is None and build_id_time("2026.13.45T990000Z-1a2b3c4d") is None


def test_an_unreadable_dedup_record_names_file_and_field(tmp_path: Path) -> None:
    """`.nsls2/dedup.json` is a Struct: a bad field is an error naming the file and the
    field (status shows it), and the build is simply no donor for a later deploy."""
    from nsls2_artifacts import status
    from nsls2_artifacts.agent import dedup

    build = layout.build_dir(tmp_path, "demo", BUILD)
    assert dedup.read_record(build) is None  # deployed in full: no record
    (build / layout.AGENT_DIR).mkdir(parents=True)
    data = GOOD[DedupRecord].to_dict() | {"linked_files": "6"}
    (build / dedup.RECORD).write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        dedup.read_record(build)
    assert info.value.field == "linked_files"
    assert str(build / dedup.RECORD) in str(info.value)
    assert dedup.INDEXES.get(build) is None
    disk = status._disk(tmp_path, "demo", BUILD)
    assert disk is not None and "field 'linked_files'" in disk["error"]
    assert "linked_files" in status._disk_text(disk)
    (build / dedup.RECORD).write_text(json.dumps(GOOD[DedupRecord].to_dict()))
    assert dedup.read_record(build) == GOOD[DedupRecord]


def test_memory_probe_record_names_file_and_field_and_is_written_afresh(tmp_path: Path) -> None:
    """`state/memory/NODE.json` is a Struct: status shows an unreadable one naming the file
    and the field; the node's agent writes it afresh (only it writes it; the probe is the
    truth) and keeps `checked` while what the probe says is the same."""
    import logging

    from nsls2_artifacts.agent import ceiling

    log = logging.getLogger("test")
    path = layout.memory_probe_path(tmp_path, "n1")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(GOOD[MemoryProbe].to_dict() | {"mechanism": 2}))
    (shown,) = ceiling.read_probes(tmp_path).values()
    assert shown["mechanism"] == "unknown"
    assert str(path) in shown["detail"] and "field 'mechanism'" in shown["detail"]
    probe = ceiling.record_probe(tmp_path, "n1", log)
    assert MemoryProbe.from_dict(json.loads(path.read_text())) == probe
    assert ceiling.read_probes(tmp_path) == {
        "n1": {"mechanism": probe.mechanism, "detail": probe.detail, "checked": probe.checked}
    }
    path.write_text(json.dumps(probe.to_dict() | {"checked": "2026-01-01T00:00:00Z"}))
    assert ceiling.record_probe(tmp_path, "n1", log).checked == "2026-01-01T00:00:00Z"


def test_a_mapping_entry_is_named_by_its_key() -> None:
    """msgspec says `[...]` for a mapping's value: the error names the key instead."""
    report = NodeRollout(
        "n1", "t", "0.1", 1.5, {"a": EnvRollout("b", ()), "x": EnvRollout("b", ())}
    )
    data = report.to_dict()
    data["envs"]["x"]["latest"] = 3
    with pytest.raises(RecordError) as info:
        NodeRollout.from_dict(data)
    assert str(info.value).startswith("rollout report envs.x: field 'latest':")
    data = GOOD[NodeHeartbeat].to_dict()
    data["in_use"]["other/b"] = 3
    with pytest.raises(RecordError) as info:
        NodeHeartbeat.from_dict(data)
    assert info.value.field == "other/b" and "expected list, got int" in str(info.value)
    data["in_use"] = {1: []}
    with pytest.raises(RecordError, match="field 'in_use': key: expected str, got int"):
        NodeHeartbeat.from_dict(data)
