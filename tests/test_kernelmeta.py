"""`metadata.nsls2` of a kernelspec: one typed record (kernelmeta.py) that the agent writes
and every reader parses the same way; the lab extension's metadata.ts mirrors its fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from nsls2_artifacts.agent import kernels
from nsls2_artifacts.errors import RecordError
from nsls2_artifacts.kernelmeta import KernelMetadata, kernel_metadata, kernel_metadata_or_none

BUILD = "2026.11.25T020000Z-1a2b3c4d"
METADATA_TS = (
    Path(__file__).resolve().parents[1] / "nsls2_artifacts/jupyter/labextension_src/src/metadata.ts"
)


def plan(channel: str, label: str) -> kernels.KernelPlan:
    return kernels.KernelPlan(
        name=f"nsls2-demo-{label}",
        env="demo",
        build_id=BUILD,
        channel=channel,
        label=label,
        base_name="NSLS-II demo",
        created="2026-11-25T02:00:00Z",
        python="3.11.7",
        listed=True,
        labels=(label,) if channel == "lts" else (),
        beamlines=("csx",),
        memory_limit=1 << 30,
    )


@pytest.mark.parametrize(("channel", "label"), [("latest", "latest"), ("lts", "2026-1")])
def test_what_the_agent_writes_reads_back(channel: str, label: str) -> None:
    metadata = json.loads(json.dumps(kernels._metadata(plan(channel, label))))
    meta = kernel_metadata(metadata)
    assert meta is not None and meta.env == "demo" and meta.build_id == BUILD
    assert meta.track == label and meta.is_latest == (channel == "latest")
    assert meta.lts_label == (None if channel == "latest" else label)
    assert meta.memory_limit == 1 << 30 and meta.beamlines == ("csx",)
    assert KernelMetadata.from_dict(meta.to_dict()) == meta


def test_a_missing_channel_is_no_guess() -> None:
    """Python read a missing channel as LTS and the lab extension as latest: now a spec
    without one is not an NSLS-II spec at all, for every reader."""
    block = {"env": "demo", "build_id": BUILD, "label": "latest"}
    with pytest.raises(RecordError, match="field 'channel': missing"):
        kernel_metadata({"nsls2": block})
    assert kernel_metadata_or_none({"nsls2": block}) is None
    with pytest.raises(RecordError, match="field 'channel'"):
        kernel_metadata({"nsls2": {**block, "channel": "nightly"}})
    assert kernel_metadata({"language": "python"}) is None  # a stock kernel


def test_the_lab_extension_mirrors_every_field() -> None:
    """metadata.ts declares the same fields, and the same required ones."""
    text = METADATA_TS.read_text()
    body = text[text.index("export interface INsls2Meta") :]
    body = body[: body.index("}")]
    declared = dict(re.findall(r"^\s+(\w+)(\??):", body, re.M))
    fields = msgspec.structs.fields(KernelMetadata)
    assert set(declared) == {f.name for f in fields}
    required = {f.name for f in fields if f.required}
    assert {name for name, optional in declared.items() if not optional} == required


# the same cases as logic.test.ts "kernel metadata: a field of the wrong type ..."
WRONG = [
    {"listed": "yes"},
    {"labels": "x"},
    {"memory_limit": -1},
    {"memory_limit": 1.5},
    {"python": 3},
    {"created": None},
    {"beamlines": [1]},
]


@pytest.mark.parametrize("wrong", WRONG, ids=lambda w: next(iter(w)))
def test_a_field_of_the_wrong_type_is_no_record_on_either_side(wrong: dict) -> None:
    """Python refuses the record (naming the field) where the lab extension's parser
    returns null: both read the spec as a stock kernel, none keeps it minus the field."""
    block = {"env": "demo", "build_id": BUILD, "channel": "lts", "label": "2026-1"}
    assert kernel_metadata({"nsls2": block}) is not None
    with pytest.raises(RecordError, match=f"field '{next(iter(wrong))}'"):
        kernel_metadata({"nsls2": {**block, **wrong}})
    assert kernel_metadata_or_none({"nsls2": {**block, **wrong}}) is None
    ts = (METADATA_TS.parent / "logic.test.ts").read_text()
    assert f"{{ {next(iter(wrong))}: " in ts  # the lab extension tests the same case


def test_retired_json_is_typed_and_one_bad_entry_costs_only_itself(tmp_path: Path) -> None:
    """retired.json is a RetiredFile of RetiredKernelRecords, read the same way by the
    agent and the server extension: an entry that does not parse is skipped by readers
    (logged, naming it) and written back as it was by the agent."""
    from datetime import UTC, datetime

    from nsls2_artifacts import layout
    from nsls2_artifacts.jupyter.deployed import read_retired

    path = layout.retired_kernels_path(tmp_path)
    path.parent.mkdir(parents=True)
    good = {"env": "demo", "label": "2025-1", "build_id": BUILD, "retired": "2026-01-01"}
    bad = {"env": "demo", "label": 2025}
    path.write_text(json.dumps({"kernels": {"nsls2-demo-2025-1": good, "nsls2-demo-x": bad}}))
    (retired,) = read_retired(tmp_path).values()
    assert (retired.name, retired.build_id, retired.display_name) == (
        "nsls2-demo-2025-1",
        BUILD,
        "nsls2-demo-2025-1",
    )
    assert list(kernels.read_retired(tmp_path)) == ["nsls2-demo-2025-1"]
    spec = {
        "display_name": "NSLS-II demo 2026-1",
        "metadata": kernels._metadata(plan("lts", "2026-1")),
    }
    kernels._record_retired(tmp_path, "nsls2-demo-2026-1", spec, datetime(2026, 12, 6, tzinfo=UTC))
    written = json.loads(path.read_text())["kernels"]
    assert written["nsls2-demo-x"] == bad  # kept as it was
    assert written["nsls2-demo-2026-1"]["display_name"] == "NSLS-II demo 2026-1"
    assert set(kernels.read_retired(tmp_path)) == {"nsls2-demo-2025-1", "nsls2-demo-2026-1"}
    path.write_text(json.dumps({"kernels": []}))
    assert read_retired(tmp_path) == {} and kernels.read_retired(tmp_path) == {}


def test_the_kernel_checks_answer_is_found_and_typed() -> None:
    """`status --check-kernels` reads the check cell's JSON line as a typed Answer: the last
    line that is one (an import may print before it, a stderr warning arrive after it); a
    kernel that printed none is that kernel's failure, not a crash of every check."""
    from nsls2_artifacts.kernelcheck import Answer, answer

    line = json.dumps(
        {"mechanism": "rlimit", "detail": "d", "limit": 1 << 30, "rlimit_data": 1, "threads": "2"}
    )
    assert answer(f"banner\n{line}\nUserWarning: late\n") == Answer("rlimit", "d", 1 << 30, "2")
    assert answer('{"mechanism": 3}\nTraceback\n') is None
    assert answer("") is None


def test_a_notebooks_record_is_typed(tmp_path: Path) -> None:
    """A notebook's metadata.nsls2 is a NotebookMeta: `notebook info` names the field."""
    from nsls2_artifacts.errors import NotebookError
    from nsls2_artifacts.jupyter.notebook import read_record

    good = {"env": "demo", "build_id": BUILD, "track": "2026-1", "beamline": "csx"}
    assert read_record("n.ipynb", {"metadata": {"nsls2": good}}).track == "2026-1"
    for wrong, field in (
        ({"env": ""}, "env"),
        ({"track": 3}, "track"),
        ({"build_id": 1}, "build_id"),
    ):
        with pytest.raises(NotebookError, match=f"metadata.nsls2.{field}: "):
            read_record("n.ipynb", {"metadata": {"nsls2": {**good, **wrong}}})


def _ts_type(info: msgspec.inspect.Type) -> set[str]:
    """The TypeScript union members a msgspec type stands for (metadata.ts's spelling)."""
    if isinstance(info, msgspec.inspect.UnionType):
        return set().union(*(_ts_type(t) for t in info.types))
    if isinstance(info, msgspec.inspect.LiteralType):
        return {f"'{v}'" for v in info.values}
    if isinstance(info, msgspec.inspect.TupleType | msgspec.inspect.VarTupleType):
        (item,) = _ts_type(info.item_type)
        return {f"{item}[]"}
    names = {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.BoolType: "boolean",
        msgspec.inspect.IntType: "number",
        msgspec.inspect.NoneType: "null",
    }
    return {names[type(info)]}


def test_the_lab_extension_declares_every_field_with_the_same_type() -> None:
    """Field for field, metadata.ts's INsls2Meta has the Python record's types (an alias
    such as Channel resolved), so neither side accepts what the other refuses."""
    text = METADATA_TS.read_text()
    aliases = {
        name: {v.strip() for v in value.split("|")}
        for name, value in re.findall(r"^export type (\w+) = ([^;]+);", text, re.M)
    }
    body = text[text.index("export interface INsls2Meta") :]
    body = body[: body.index("}")]
    declared = {}
    for name, ts in re.findall(r"^\s+(\w+)\??: ([^;]+);", body, re.M):
        members = {m.strip() for m in ts.split("|")}
        declared[name] = set().union(*(aliases.get(m, {m}) for m in members))
    info = msgspec.inspect.type_info(KernelMetadata)
    assert isinstance(info, msgspec.inspect.StructType)
    assert {f.name: _ts_type(f.type) for f in info.fields} == declared
