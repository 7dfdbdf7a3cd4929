"""The staff build hook: a web page, an API and a CI webhook in front of a build queue.

`nsls2-artifacts hook serve` (cli/hook_cmd.py) runs `app.create_app(site)` on uvicorn.
Modules: queue (SQLite queue + history), runner (publish subprocesses), auth (tokens,
sessions, CSRF, webhook signatures), nightly (schedule), diff (package diffs), envs
(which environments exist), metrics (Prometheus text), app (routes and pages).
"""
