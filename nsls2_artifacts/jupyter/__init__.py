"""Jupyter-side parts of nsls2-artifacts: the server extension and the notebook tools.

`pip install nsls2-artifacts[jupyter]` into the single-user server's environment drops
`etc/jupyter/jupyter_server_config.d/nsls2_artifacts.json`, which enables this package as
a Jupyter server extension; jupyter_server then calls `_jupyter_server_extension_points`.
This module stays import-light (no jupyter_server import) because the CLI imports
`nsls2_artifacts.jupyter.notebook` on machines without a Jupyter server.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "nsls2_artifacts.jupyter.extension"}]
