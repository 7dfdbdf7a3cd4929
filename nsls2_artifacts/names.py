"""Names staff choose (environment names, LTS labels) and the kernel names made from them.

`manifest.py` checks environment names, `publish.promote` / `publish --lts` and the hook's
promote form check labels, and the agent (`agent/reconcile.py`) and `status` call
`assign_kernel_names` before any kernelspec is written. Node names (`agent.node`) follow
one rule too, `node_name_problem`, checked by the config and by every path made from one.
No I/O here.

The rules make `kernel_name` injective, so one kernel can never be mistaken for another:
a kernel is `nsls2-ENV-latest` (the rolling kernel) or `nsls2-ENV-LABEL` (an LTS release),
where ENV has no `-` (so the first `-` after the prefix ends it), LABEL is never the
reserved word `latest`, and both are lowercase (Jupyter lowercases kernel names, so
`Beta` and `beta` would be one kernel). `parse_kernel_name` is the inverse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import KernelNameError

KERNEL_PREFIX = "nsls2-"
LATEST = "latest"
RESERVED_LABELS = frozenset({LATEST})
ENV_NAME_RULE = (
    "lowercase letters, digits and '_' (no '-': it separates ENV and LABEL in kernel names)"
)
LABEL_RULE = "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
_ENV_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}\Z")
_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
BEAMLINE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
# a beamline name becomes a file name (etc/tiled/profiles/NAME.yml) and a tiled profile name
BEAMLINE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"  # for schemas (msgspec Meta)
_BEAMLINE_NAME_RE = re.compile(BEAMLINE_NAME_PATTERN)
NODE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
# a node name becomes a file name (state/nodes/NODE.json) and an object key (.nodes/NODE.json)
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def env_name_problem(env: str) -> str | None:
    """Why `env` is not a valid environment name, or None."""
    if not isinstance(env, str) or not _ENV_NAME_RE.match(env):
        return f"environment name {env!r}: use {ENV_NAME_RULE}, at most 64"
    return None


def label_problem(label: str) -> str | None:
    """Why `label` is not a valid LTS label, or None."""
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        return f"LTS label {label!r}: use {LABEL_RULE}, at most 64 (e.g. 2026-1)"
    if label in RESERVED_LABELS:
        return f"LTS label {label!r} is reserved: nsls2-ENV-{label} is the rolling kernel"
    return None


def node_name_problem(node: str) -> str | None:
    """Why `node` cannot name a node (its heartbeat file, its rollout report), or None.
    The one rule: the site config checks `agent.node` with it when it is loaded, and the
    deploy-root and store paths made from a node name refuse any other."""
    if not isinstance(node, str) or not _NODE_NAME_RE.match(node):
        return f"node name {node!r}: use {NODE_NAME_RULE}, at most 128"
    return None


def beamline_name_problem(name: str) -> str | None:
    """Why `name` cannot name a beamline (the site config's `beamlines:` keys, nsls2.yaml's
    `beamlines:` entries), or None."""
    if not isinstance(name, str) or not _BEAMLINE_NAME_RE.match(name):
        return f"beamline name {name!r}: use {BEAMLINE_NAME_RULE}, at most 64"
    return None


def kernel_name(env: str, label: str | None = None) -> str:
    """`nsls2-ENV-latest` (label None) or `nsls2-ENV-LABEL`; KernelNameError if either
    breaks its rule (then no name would be safe to write)."""
    problem = env_name_problem(env) or (label_problem(label) if label is not None else None)
    if problem:
        raise KernelNameError(problem)
    return f"{KERNEL_PREFIX}{env}-{label or LATEST}"


def parse_kernel_name(name: str) -> tuple[str, str | None] | None:
    """(env, label or None for the rolling kernel) that `kernel_name` made `name` from."""
    if not name.startswith(KERNEL_PREFIX):
        return None
    env, sep, rest = name[len(KERNEL_PREFIX) :].partition("-")
    if not sep:
        return None
    label = None if rest == LATEST else rest
    try:
        return (env, label) if kernel_name(env, label) == name else None
    except KernelNameError:
        return None


Pair = tuple[str, str | None]  # (env, LTS label) or (env, None) for the rolling kernel


@dataclass(frozen=True)
class KernelNameClash:
    """A kernel that gets no kernelspec, and why (shown by the agent's pass and `status`)."""

    env: str
    label: str | None
    name: str | None  # the name it would have had, if it has one
    reason: str

    def describe(self) -> str:
        what = f"{self.env} {'latest' if self.label is None else 'LTS ' + repr(self.label)}"
        return f"kernel for {what}: {self.reason}"


@dataclass
class KernelNaming:
    names: dict[Pair, str] = field(default_factory=dict)  # the kernels that may be written
    clashes: list[KernelNameClash] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)  # installed specs to leave as they are


def assign_kernel_names(
    wanted: Iterable[Pair], installed: Mapping[str, Pair] | None = None
) -> KernelNaming:
    """Names for the kernels in `wanted` (in priority order), never overwriting another.

    A pair that breaks the rules gets no name; a kernelspec already installed for it
    (written under older rules) is kept, so its users lose nothing, and the clash is
    reported. A name already taken, by a wanted pair earlier in the order or by such a
    kept kernelspec of another pair, is refused the same way instead of overwritten.
    """
    naming = KernelNaming()
    installed = dict(installed or {})
    candidates: list[tuple[Pair, str]] = []
    for pair in dict.fromkeys(wanted):
        try:
            candidates.append((pair, kernel_name(*pair)))
        except KernelNameError as exc:
            naming.clashes.append(KernelNameClash(pair[0], pair[1], None, str(exc)))
            naming.keep.update(n for n, p in installed.items() if p == pair)
    taken = {name: installed[name] for name in naming.keep}
    for pair, name in candidates:
        owner = taken.get(name)
        if owner is not None and owner != pair:
            other = f"{owner[0]} {'latest' if owner[1] is None else 'LTS ' + repr(owner[1])}"
            reason = f"{name} is already the kernel of {other}; not overwritten"
            naming.clashes.append(KernelNameClash(pair[0], pair[1], name, reason))
            continue
        taken[name] = pair
        naming.names[pair] = name
    return naming
