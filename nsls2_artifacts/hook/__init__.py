"""The staff build hook: a web page, an API and a CI webhook in front of a build queue.

`nsls2-artifacts hook serve` (cli/hook_cmd.py) runs `app.create_app(site)` on uvicorn.
Routes by audience: pages (HTML for staff), api (JSON for scripts, one bearer-token
dependency), webhook (CI, HMAC-signed); app wires them with context (the shared `Hook`
and read views) and web (bounded bodies, JSON errors). Below them: queue (SQLite queue
of build requests + history), runner (publish subprocesses), auth (tokens, sessions,
CSRF, webhook signatures), nightly (schedule), diff (package diffs), envs (which
environments exist), metrics (Prometheus text).
"""
