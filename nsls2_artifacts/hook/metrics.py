"""Prometheus text exposition for `/metrics`, computed from the queue's database.

The app calls `render(queue)` per scrape. Counters come from the persistent history, so
they survive a restart of the hook (Prometheus treats a drop as a counter reset anyway).
"""

from __future__ import annotations

from collections import defaultdict

from .queue import FINISHED, BuildQueue

BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def render(queue: BuildQueue) -> str:
    counts = queue.counts()
    queued = sum(n for (_env, state), n in counts.items() if state == "queued")
    running = sum(n for (_env, state), n in counts.items() if state == "running")
    lines = [
        "# HELP nsls2_hook_queue_length Builds waiting to start.",
        "# TYPE nsls2_hook_queue_length gauge",
        f"nsls2_hook_queue_length {queued}",
        "# HELP nsls2_hook_running_builds Builds running now.",
        "# TYPE nsls2_hook_running_builds gauge",
        f"nsls2_hook_running_builds {running}",
        "# HELP nsls2_hook_queue_paused 1 while the queue is paused.",
        "# TYPE nsls2_hook_queue_paused gauge",
        f"nsls2_hook_queue_paused {int(queue.paused)}",
        "# HELP nsls2_hook_joined_requests_total Requests that joined an already queued build.",
        "# TYPE nsls2_hook_joined_requests_total counter",
        f"nsls2_hook_joined_requests_total {queue.joined_requests()}",
        "# HELP nsls2_hook_builds_total Finished builds by env and result.",
        "# TYPE nsls2_hook_builds_total counter",
    ]
    for (env, state), n in sorted(counts.items()):
        if state in FINISHED:
            lines.append(f"nsls2_hook_builds_total{_labels(env=env, result=state)} {n}")
    lines += [
        "# HELP nsls2_hook_build_duration_seconds Wall time of finished builds.",
        "# TYPE nsls2_hook_build_duration_seconds histogram",
    ]
    by_key: dict[tuple[str, str], list[float]] = defaultdict(list)
    for env, state, seconds in queue.durations():
        by_key[(env, state)].append(seconds)
    name = "nsls2_hook_build_duration_seconds"
    for (env, state), values in sorted(by_key.items()):
        for bound in (*BUCKETS, float("inf")):
            n = sum(1 for v in values if v <= bound)
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f"{name}_bucket{_labels(env=env, result=state, le=le)} {n}")
        labels = _labels(env=env, result=state)
        lines.append(f"{name}_sum{labels} {sum(values):.3f}")
        lines.append(f"{name}_count{labels} {len(values)}")
    return "\n".join(lines) + "\n"
