"""Every helper the test modules share, one copy each (there are no helpers elsewhere).

Plumbing: `ports` (free loopback ports), `sites` (site configs written to disk), `cli` (the
CLI as a real subprocess), `processes` (`wait_for`, `kill9`, `stop`: the one wait loop and
the one way to end a process), `manifests` (environment manifests fabricated for a test),
`publish` (publishing with the shared rattler cache), `clock` (an injected clock),
`browser` (chromium through Playwright).

By domain, built on those: `agent` (hand-made archives committed to a store, the agent
as a process; `write_site`), `retention` (deployed build trees and processes using them;
`write_retention_site`), `build`, `dedup`, `hook`, `jupyter`, `lab`.
"""
