"""The sync agent: reconcile a node's deploy root with the artifact store.

`reconcile.run_pass` is one look → plan → apply pass; `watch.run_daemon` repeats it on
store changes and every `poll_seconds`. The stages it drives live one per module:
`deploy` (verify, extract, conda-unpack, smoke), `latest` (flip the alias), `kernels`
(the only kernelspec writer), `profiles` (tiled beamline profiles), `locks`. Every path
they touch comes from `nsls2_artifacts.layout`.
"""
