"""Structured agent logging: one line per event, `key=value` pairs, to stderr.

The agent, the CLI and tests call `event(log, "deploy", env=..., build=...)`; every agent
log line goes through it. The formatter renders the fields after a timestamp and level so
lines stay grep-able (`grep 'event=extract'`) and parse back with `parse_line`; an
unexpected error's traceback rides along as one quoted `traceback=` field.
"""

from __future__ import annotations

import logging
import shlex
import sys
from typing import Any

from ..records import isoformat, utcnow

LOGGER_NAME = "nsls2_artifacts.agent"


def _render(value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    # quote only when needed, so the common case stays readable
    if text == "" or any(c.isspace() or c in "\"'=" for c in text):
        return shlex.quote(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """`time=... level=info event=deploy env=demo build=... seconds=12.300`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        parts = [f"time={isoformat(utcnow())}", f"level={record.levelname.lower()}"]
        if fields is None:
            parts.append(f"event=message msg={_render(record.getMessage())}")
        else:
            parts.extend(f"{key}={_render(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            # one line per event, still: the traceback's newlines become literal "\n"
            trace = self.formatException(record.exc_info).replace("\n", "\\n")
            line += " traceback=" + _render(trace)
        return line


def setup_logging(
    level: int = logging.INFO, stream: Any = None, name: str = LOGGER_NAME
) -> logging.Logger:
    """The agent logger (or `name`'s: the hook's) with one stderr handler using
    `KeyValueFormatter` (idempotent)."""
    log = logging.getLogger(name)
    log.setLevel(level)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    log.addHandler(handler)
    return log


def event(
    log: logging.Logger,
    event_name: str,
    level: int = logging.INFO,
    *,
    exc: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one event; `fields` become `key=value` pairs in order. Pass `exc` for an error
    nobody expected (a bug, an unknown fault): its traceback goes in the line too."""
    log.log(
        level,
        event_name,
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        extra={"fields": {"event": event_name, **fields}},
    )


def parse_line(line: str) -> dict[str, str]:
    """Split a log line back into its fields (tests and tools count events with it)."""
    out = {}
    for token in shlex.split(line):
        key, sep, value = token.partition("=")
        if sep:
            out[key] = value
    return out
