"""`status --check-kernels`: start every NSLS-II kernel of the deploy root the way Jupyter
does (jupyter_client, from the kernelspecs the agent wrote, so under its real memory
ceiling and thread counts), import its build's smoke modules in it, and say which ceiling
it got. A kernel that cannot start under its ceiling shows here before users meet it.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from . import layout
from .agent import kernel_ceiling, kernels

# the launcher's first argument is the kernel's ceiling in bytes (or "none")
_LIMIT_RE = re.compile(r"kernel_ceiling\.py'?\s+(\d+)\s")

CELL = """\
import json as _j, os as _o, resource as _r
{imports}
print(_j.dumps({{
    "mechanism": _o.environ.get("NSLS2_MEMORY_MECHANISM"),
    "detail": _o.environ.get("NSLS2_MEMORY_DETAIL"),
    "limit": int(_o.environ.get("NSLS2_MEMORY_LIMIT") or 0) or None,
    "rlimit_data": _r.getrlimit(_r.RLIMIT_DATA)[0],
    "threads": _o.environ.get("OPENBLAS_NUM_THREADS"),
}}))
"""


@dataclass(frozen=True)
class KernelCheck:
    """One kernel started and checked (`status --check-kernels --json` lists these)."""

    name: str
    ok: bool
    seconds: float
    mechanism: str | None = None  # cgroup2 | cgroup1 | rlimit | None (no ceiling)
    detail: str | None = None
    limit: int | None = None
    threads: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _smoke(deploy_root: Path, info: dict[str, Any]) -> tuple[str, ...]:
    env, build_id = str(info.get("env")), str(info.get("build_id"))
    ready = layout.read_ready(deploy_root, env, build_id)
    return ready.smoke if ready else ()


def _failed(name: str, started: float, argv: list[str], error: str) -> KernelCheck:
    """A kernel that did not start or import: with the ceiling its spec asks for and the
    mechanism this node gives kernels, so the failure says under what it failed."""
    found = _LIMIT_RE.search(" ".join(argv))
    node = kernel_ceiling.probe()
    return KernelCheck(
        name,
        False,
        time.monotonic() - started,
        mechanism=node.mechanism,
        detail=node.detail,
        limit=int(found.group(1)) if found else None,
        error=error or "error",
    )


def check_kernel(deploy_root: Path, name: str, timeout: float = 120) -> KernelCheck:
    """Start kernel NAME from DEPLOY_ROOT's kernelspecs, run the check cell, shut it down."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[str(layout.kernels_dir(deploy_root))])
    data = kernels.installed(deploy_root).get(name, {})
    argv = [str(a) for a in data.get("argv", [])]
    imports = "\n".join(f"import {m}" for m in _smoke(deploy_root, kernels.spec_target(data)))
    started = time.monotonic()
    manager = KernelManager(kernel_name=name, kernel_spec_manager=specs)
    output: list[str] = []
    try:
        manager.start_kernel()
        client = manager.blocking_client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=timeout)

            def hook(msg: dict[str, Any]) -> None:
                if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                    output.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    output.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

            reply = client.execute_interactive(
                CELL.format(imports=imports), timeout=timeout, output_hook=hook
            )
        finally:
            client.stop_channels()
    except Exception as exc:  # noqa: BLE001 - a kernel that does not start is the finding
        return _failed(name, started, argv, f"{exc}".strip())
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    text = "".join(output).strip()
    if reply["content"]["status"] != "ok":
        return _failed(name, started, argv, text.splitlines()[-1] if text else "")
    seconds = time.monotonic() - started
    seen = answer(text)
    if seen is None:  # one kernel's odd output must not stop the check of the others
        return _failed(name, started, argv, f"the check printed no answer: {text[-200:]!r}")
    return KernelCheck(
        name,
        True,
        seconds,
        mechanism=seen.mechanism,
        detail=seen.detail,
        limit=seen.limit,
        threads=seen.threads,
    )


class Answer(msgspec.Struct, frozen=True):
    """What CELL prints (as one JSON line) from inside the kernel."""

    mechanism: str | None
    detail: str | None
    limit: int | None
    threads: str | None


def answer(text: str) -> Answer | None:
    """CELL's answer in the kernel's output: the last line that decodes as one (an import
    may print, and a warning on stderr may arrive after it), None if no line does."""
    for line in reversed(text.splitlines()):
        with contextlib.suppress(msgspec.DecodeError):  # ValidationError is a DecodeError
            return _ANSWER.decode(line)
    return None


_ANSWER = msgspec.json.Decoder(Answer)


def check_kernels(deploy_root: Path) -> list[KernelCheck]:
    """Every NSLS-II kernel of the deploy root, one after another (one failing never stops
    the others)."""
    return [check_kernel(deploy_root, name) for name in sorted(kernels.installed(deploy_root))]


def render(checks: list[KernelCheck]) -> list[str]:
    lines = ["kernel checks (started under their ceilings):"]
    for c in checks:
        ceiling = (
            f"{c.limit / 2**30:g} GiB by {c.mechanism} ({c.detail})" if c.limit else "no ceiling"
        )
        if not c.ok:
            lines.append(
                f"  {c.name:<28} FAILED after {c.seconds:.1f} s under {ceiling}: {c.error}"
            )
            continue
        lines.append(f"  {c.name:<28} ok in {c.seconds:.1f} s; {ceiling}; BLAS threads {c.threads}")
    return lines
