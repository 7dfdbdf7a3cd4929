"""This node's rollout report: what it serves, what is ready, what failed; put in the store.

`reconcile.run_pass` calls `publish_report` at the end of every pass. The report goes
through the store's `NodeReports` interface (the one channel the build host shares with
the nodes), replaced whole each pass; the hook reads every node's (rollout.py) to tell
staff when users can restart.
"""

from __future__ import annotations

from .. import __version__
from ..config import SiteConfig
from ..records import isoformat, parse_time, utcnow
from ..rollout import EnvRollout, NodeRollout
from ..store import NodeReports
from .observe import Observed


def collect_report(
    site: SiteConfig,
    obs: Observed,
    *,
    seconds: float,
    store_ok: bool,
    superseded: list[tuple[str, str, str]],
    errors: dict[tuple[str, str], str],
    node_failures: dict[tuple[str, str], str],
) -> NodeRollout:
    """The report from the pass's snapshot `obs`, as its flips left it (`after_state`):
    what this node serves is what the pass saw and did, with no second look."""
    failed: dict[str, dict[str, str]] = {}
    for q in obs.quarantine_records:
        failed.setdefault(q.env, {})[q.build_id] = f"{q.stage} failed on {q.node}: {q.reason}"
    for (env, build_id), reason in {**errors, **node_failures}.items():
        failed.setdefault(env, {})[build_id] = reason
    skipped: dict[str, dict[str, str]] = {}
    for env, build_id, newer in superseded:
        skipped.setdefault(env, {})[build_id] = newer
    envs = {}
    for env in sorted(set(obs.deployed_envs) | set(failed) | set(skipped)):
        ready = sorted(
            (r for r in obs.dirs.get(env, {}).values() if r is not None),
            key=lambda r: (parse_time(r.created), r.build_id),
        )
        envs[env] = EnvRollout(
            latest=obs.current.get(env),
            ready=tuple(r.build_id for r in ready),
            failed=failed.get(env, {}),
            superseded=skipped.get(env, {}),
        )
    return NodeRollout(
        node=site.agent.node,
        time=isoformat(utcnow()),
        version=__version__,
        pass_seconds=round(seconds, 3),
        envs=envs,
        store_ok=store_ok,
    )


def publish_report(store: NodeReports, report: NodeRollout) -> None:
    store.put_node_report(report.node, report.to_dict())
