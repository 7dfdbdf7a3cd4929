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
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec
import msgspec.inspect

from .errors import RecordError

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S)
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
        raise record_error(str(exc), record, messages or {}, cls, data) from None


def to_builtins(value: Any) -> Any:
    """A record as plain JSON types (tuples become lists, as they come back from JSON)."""
    return _lists(msgspec.to_builtins(value))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def record_error(
    text: str, record: str, messages: dict[str, str], kind: Any = None, data: Any = None
) -> RecordError:
    """msgspec's message and path as RecordError(record + where, field, detail); `kind`
    (the type decoded) lets a literal's error list the values it allows, and with `data`
    (what was decoded) a mapping's wrong entry is named by its key."""
    message, tokens = split_error(text)
    if kind is not None:
        tokens = name_keys(data, tokens, lambda trial: fails(trial, kind))
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
    if tokens[-1] == KEY_TOKEN:  # a key of the mapping `field`, not a value
        return RecordError(_where(record, tokens[:last]), tokens[last], f"key: {plain(message)}")
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
    ["a", "[0]", "b"]; a mapping's key of the wrong type ("at `key` in `$.a`") ends in
    KEY_TOKEN, a mapping's value whose key msgspec does not say in "[...]"."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    path = match["path"] or ""
    tokens = [name or index for name, index in _TOKEN.findall(path)]
    return match["message"], tokens + [KEY_TOKEN] * bool(match["key"])


KEY_TOKEN = "[key]"  # the last token when a mapping's key (not its value) is wrong


class Key(str):
    """A path token that is a mapping's key (found by `name_keys`), not a field name."""


def fails(data: Any, kind: Any, dec_hook: Callable[[type, Any], Any] | None = None) -> bool:
    """Whether `data` does not convert to `kind`."""
    try:
        msgspec.convert(data, kind, dec_hook=dec_hook)
    except msgspec.ValidationError:
        return True
    return False


def name_keys(data: Any, tokens: list[str], failing: Callable[[Any], bool]) -> list[str]:
    """`tokens` with each "[...]" (a mapping's value; msgspec does not say which key) as the
    `Key` of the first entry that fails alone: the mapping is cut down to that one entry
    and `failing` tries the whole value again. A "[...]" not found stays."""
    out = list(tokens)
    for i, token in enumerate(out):
        if token != "[...]":
            continue
        mapping = value_at(data, out[:i])
        found = None
        if isinstance(mapping, dict):
            for key, value in mapping.items():
                trial = _replaced(data, out[:i], {key: value})
                if failing(trial):
                    found, data = key, trial
                    break
        if found is None:
            break
        out[i] = Key(found)
    return out


def value_at(data: Any, tokens: list[str]) -> Any:
    """The value at `tokens` inside parsed JSON/YAML `data`, None where there is none."""
    for token in tokens:
        try:
            data = data[_index(token)] if _is_index(token) else data[token]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return data


def _is_index(token: str) -> bool:
    return token.startswith("[") and not isinstance(token, Key)


def _index(token: str) -> int:
    return int(token[1:-1])


def _replaced(data: Any, tokens: list[str], new: Any) -> Any:
    """A copy of `data` with the value at `tokens` replaced by `new` (copies only the path)."""
    if not tokens:
        return new
    token, rest = tokens[0], tokens[1:]
    if _is_index(token):
        items = list(data)
        items[_index(token)] = _replaced(items[_index(token)], rest, new)
        return items
    return {**data, token: _replaced(data[token], rest, new)}


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
        if token == KEY_TOKEN:
            info = getattr(info, "key_type", None)
        elif token.startswith("[") or isinstance(token, Key):
            if isinstance(info, msgspec.inspect.UnionType):
                return None
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        else:
            fields = {f.encode_name: f.type for f in getattr(info, "fields", ())}
            info = fields.get(token)
        if info is None:
            return None
    return info
