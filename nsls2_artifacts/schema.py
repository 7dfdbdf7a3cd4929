"""Typed records by a library: msgspec Structs checked on the way in, with errors that name
the record, the field and (through `RecordError.at`) the file.

`records.py`, `rollout.py` and the kernel metadata (`kernelmeta.py`) declare their shapes as
`Record` subclasses; `decode` turns a parsed JSON value into one and translates msgspec's
"Expected `int`, got `str` - at `$.artifact.size`" into the project's RecordError
("manifest.json artifact: field 'size': expected int, got str"). No I/O here.

Unknown fields are ignored for records other versions of this tool write (a newer build
host may add a field an older agent has never heard of; `schema` marks the breaking
changes); a record only one version writes and reads (`NodeCheck`: one node's agent) and
the site config declare `forbid_unknown_fields=True`. docs/design.md lists which is which.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypeVar

import msgspec
import msgspec.inspect

from .errors import RecordError

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_TOKEN = re.compile(r"\.([^.\[]+)|(\[[^\]]*\])")
# msgspec's wordings (and `field_problem`'s), matched by both readers of its errors:
# `record_error` here and the site config's (config.py)
MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
FIELD = re.compile(r"^field `(?P<name>[^`]+)`: (?P<detail>.*)$", re.S)
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rest>.*)$")
_JSON_NAMES = {"null": "NoneType", "array": "list", "object": "dict"}


class Record(msgspec.Struct, frozen=True):
    """A record that crosses a module or file boundary. `RECORD` names it in messages;
    `MESSAGES` replaces the generic type message of a field with a clearer one."""

    RECORD: ClassVar[str] = "record"
    MESSAGES: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        return decode(data, cls, cls.RECORD, cls.MESSAGES)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return to_builtins(self)


def field_problem(name: str, detail: str) -> ValueError:
    """What a record's `__post_init__` raises for a value of the right type that is still
    wrong (a time that does not parse); `decode` names `name` as the field."""
    return ValueError(f"field `{name}`: {detail}")


def decode(data: Any, cls: type[T], record: str, messages: dict[str, str] | None = None) -> T:
    """`data` (parsed JSON) as a `cls`, or RecordError naming `record` and the field."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise record_error(str(exc), record, messages or {}, cls) from None


def to_builtins(value: Any) -> Any:
    """A record as plain JSON types (tuples become lists, as they come back from JSON)."""
    return _lists(msgspec.to_builtins(value))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def record_error(text: str, record: str, messages: dict[str, str], kind: Any = None) -> RecordError:
    """msgspec's message and path as RecordError(record + where, field, detail); `kind`
    (the type decoded) lets a literal's error list the values it allows."""
    message, tokens = split_error(text)
    if kind is not None:
        message = literal_message(message, type_at(kind, tokens))
    for pattern in (MISSING, UNKNOWN, FIELD):
        found = pattern.match(message)
        if found:
            detail = {MISSING: "missing", UNKNOWN: "unknown field"}.get(pattern)
            return RecordError(_where(record, tokens), found["name"], detail or found["detail"])
    names = [i for i, t in enumerate(tokens) if not t.startswith("[")]
    if not names:
        expected = _EXPECTED.match(message)
        if expected and expected["want"] == "object":
            return RecordError(record, None, "record is not a JSON object")
        return RecordError(_where(record, tokens), None, plain(message))
    last = names[-1]
    field, inside = tokens[last], "".join(tokens[last + 1 :])
    detail = messages.get(field) or plain(message) + (f" (at {field}{inside})" if inside else "")
    return RecordError(_where(record, tokens[:last]), field, detail)


def _where(record: str, tokens: list[str]) -> str:
    suffix = ""
    for token in tokens:
        suffix += token if token.startswith("[") else (f".{token}" if suffix else token)
    if not suffix:
        return record
    return f"{record}{suffix}" if suffix.startswith("[") else f"{record} {suffix}"


def split_error(text: str) -> tuple[str, list[str]]:
    """msgspec's error text as (message, path tokens): "... - at `$.a[0].b`" gives
    ["a", "[0]", "b"]."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    path = match["path"] or ""
    return match["message"], [name or index for name, index in _TOKEN.findall(path)]


def plain(message: str) -> str:
    """ "Expected `int`, got `str`" -> "expected int, got str" (Python's type names)."""
    expected = _EXPECTED.match(message)
    if not expected:
        return message[:1].lower() + message[1:]
    want = " | ".join(_JSON_NAMES.get(w, w) for w in expected["want"].split(" | "))
    got = expected["got"]
    text = f"expected {want}"
    if got:
        text += f", got {_JSON_NAMES.get(got, got)}"
    return text + expected["rest"]


_ENUM = re.compile(r"^Invalid enum value (?P<got>.*)$", re.S)


def literal_message(message: str, info: Any) -> str:
    """msgspec's "Invalid enum value 'x'" as "expected one of 'a', 'b', got 'x'" when the
    field is a Literal (what the reader can fix); any other message unchanged."""
    found = _ENUM.match(message)
    if not found or not isinstance(info, msgspec.inspect.LiteralType):
        return message
    return f"expected one of {', '.join(map(repr, info.values))}, got {found['got']}"


def type_at(kind: Any, tokens: list[str]) -> msgspec.inspect.Type | None:
    """The type msgspec saw at `tokens` (from `split_error`) inside `kind`, None where the
    path leaves what the type declares. In a union, a field name steps into its Struct."""
    info: Any = msgspec.inspect.type_info(kind)
    for token in tokens:
        if isinstance(info, msgspec.inspect.UnionType):
            structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
            info = structs[0] if structs and not token.startswith("[") else info
        if token.startswith("["):
            if isinstance(info, msgspec.inspect.UnionType):
                return None
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        else:
            fields = {f.encode_name: f.type for f in getattr(info, "fields", ())}
            info = fields.get(token)
        if info is None:
            return None
    return info
