"""On-disk records of the deploy root: each `from_dict` refuses bad input naming the field,
each round-trips through `to_dict`, and `layout.read_record` names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nsls2_artifacts.agent import layout
from nsls2_artifacts.records import (
    DeletedMarker,
    Hold,
    NodeCheck,
    NodeHeartbeat,
    PassRecord,
    ProcessUse,
    Quarantine,
    RecordError,
    Tombstone,
)

BUILD = "2026.11.25T020000Z-1a2b3c4d"

GOOD = {
    Quarantine: Quarantine("demo", BUILD, "smoke", "boom", "ab" * 32, 10, 123, "t", "n1"),
    Hold: Hold("demo", BUILD, BUILD, "2026-11-25T02:00:00Z", "t"),
    Tombstone: Tombstone("demo", BUILD, "n1", "t"),
    DeletedMarker: DeletedMarker("demo", BUILD, "n1", "t"),
    PassRecord: PassRecord("n1", "t", 1.5, True, [], [{"env": "demo"}], True),
    NodeCheck: NodeCheck(("ipykernel", "cupy"), "", "t"),
    NodeHeartbeat: NodeHeartbeat(
        "n1",
        "t",
        "0.1",
        {f"demo/{BUILD}": [{"pid": 1, "user": "u", "via": "exe", "path": "/"}]},
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
    assert GOOD[NodeHeartbeat].uses() == {f"demo/{BUILD}": [ProcessUse(1, "u", "exe", "/")]}


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
    assert str(path) in str(info.value) and info.value.field == "newest_at_hold_created"
    path.write_text(json.dumps(GOOD[Hold].to_dict()))
    assert layout.read_record(path, Hold.from_dict) == GOOD[Hold]
