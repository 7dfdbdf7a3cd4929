"""This node's rollout report: what it serves, what is ready, what failed; put in the store.

`reconcile.run_pass` calls `publish_report` at the end of every pass. The report goes
through the store's `NodeReports` interface (the one channel the build host shares with
the nodes), replaced whole each pass; the hook reads every node's (rollout.py) to tell
staff when users can restart.
"""

from __future__ import annotations

from .. import __version__
from ..config import SiteConfig
from ..records import isoformat, utcnow
from ..rollout import EnvRollout, NodeRollout
from ..store import NodeReports
from . import latest, layout
from .deploy import list_quarantined


def collect_report(
    site: SiteConfig,
    *,
    seconds: float,
    store_ok: bool,
    superseded: list[tuple[str, str, str]],
    errors: dict[tuple[str, str], str],
    node_failures: dict[tuple[str, str], str],
) -> NodeRollout:
    """The report as the deploy root stands now (after the pass's flips)."""
    root = site.deploy_root
    failed: dict[str, dict[str, str]] = {}
    for q in list_quarantined(root):
        failed.setdefault(q.env, {})[q.build_id] = f"{q.stage} failed on {q.node}: {q.reason}"
    for (env, build_id), reason in {**errors, **node_failures}.items():
        failed.setdefault(env, {})[build_id] = reason
    skipped: dict[str, dict[str, str]] = {}
    for env, build_id, newer in superseded:
        skipped.setdefault(env, {})[build_id] = newer
    envs = {}
    for env in sorted(set(layout.deployed_envs(root)) | set(failed) | set(skipped)):
        envs[env] = EnvRollout(
            latest=latest.current_latest(root, env),
            ready=tuple(r.build_id for r in layout.ready_builds(root, env)),
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
