"""Helpers shared by the test modules (one copy each): `ports` (free loopback ports),
`sites` (site configs written to disk), `cli` (the CLI as a real subprocess), `manifests`
(environment manifests fabricated for a test), `publish` (publishing with the shared
rattler cache) and `clock` (an injected clock for schedules).

The domain helpers (`helpers_agent`, `helpers_build`, `helpers_hook`, `helpers_jupyter`,
`helpers_retention`) build on these.
"""
