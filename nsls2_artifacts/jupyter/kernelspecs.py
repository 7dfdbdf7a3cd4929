"""The kernelspec manager of the hub's single-user servers: stock jupyter_client, except
that the server's own python ("Python 3 (ipykernel)", the spec ipykernel's wheel installs
into the server's environment, without databroker or any NSLS-II package) is not listed,
so nobody starts it by mistake among the site's kernels.

Set by deploy/jupyterhub_config.py (`ServerApp.kernel_spec_manager_class`); opt out there
with `NSLS2_SHOW_SERVER_PYTHON=1`, or `--SiteKernelSpecManager.hide_server_python=False`.
A `python3` kernel a user installed for themselves (`~/.local/share/jupyter/kernels`)
stays listed: only the one inside the server's own `sys.prefix` is left out.
"""

from __future__ import annotations

import os
import sys

from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from traitlets import Bool


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)


class SiteKernelSpecManager(KernelSpecManager):
    """`find_kernel_specs` without the server environment's own python kernel."""

    hide_server_python = Bool(
        True, help="Leave out the server environment's own python3 kernelspec."
    ).tag(config=True)

    def find_kernel_specs(self) -> dict[str, str]:
        specs = super().find_kernel_specs()
        found = specs.get(NATIVE_KERNEL_NAME)
        if self.hide_server_python and found and _inside(found, sys.prefix):
            del specs[NATIVE_KERNEL_NAME]
        return specs
