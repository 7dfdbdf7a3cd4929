"""The sync agent: reconcile a node's deploy root with the artifact store.

`reconcile.run_pass` is one look → plan → apply pass; `watch.run_daemon` repeats it on
store changes and every `poll_seconds`. The stages it drives live one per module:
`deploy` (verify, extract, conda-unpack, smoke), `latest` (flip the alias), `kernels`
(the only kernelspec writer), `profiles` (tiled beamline profiles), `locks`. Every path
they touch comes from `nsls2_artifacts.layout`.
"""

import sys

from .. import layout

# The deploy layout lived here as agent/layout.py; it now sits below the agent (so
# jupyter/, status and store prune need nothing of the agent). Old imports keep working.
sys.modules[f"{__name__}.layout"] = layout
