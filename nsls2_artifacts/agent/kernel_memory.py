"""Runs inside every NSLS-II kernel with a memory ceiling (`--IPKernelApp.exec_files`): a
MemoryError in a cell says what the ceiling is and how to get more, above the traceback.

The agent copies this file to DEPLOY_ROOT/share/jupyter/nsls2/kernel_memory.py (stdlib
only: the kernel's python cannot import nsls2_artifacts). It registers an IPython custom
exception handler for MemoryError only, so ordinary cells cost nothing at all; the
ceiling comes from the environment kernel_ceiling.py set before the kernel started. The
kernel survives the error (its variables stay) and the next cell runs.
"""


def _nsls2_memory_hook() -> None:
    import os
    import sys

    limit = int(os.environ.get("NSLS2_MEMORY_LIMIT", "0") or 0)
    mechanism = os.environ.get("NSLS2_MEMORY_MECHANISM", "")
    if not limit:
        return

    def size(n: float) -> str:
        for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024 or unit == "TiB":
                return f"{n:.1f} {unit}" if unit != "bytes" else f"{int(n)} bytes"
            n /= 1024
        return str(n)

    def in_use() -> str:
        # VmData is what RLIMIT_DATA counts; VmRSS what a cgroup counts
        wanted = "VmData:" if mechanism == "rlimit" else "VmRSS:"
        try:
            with open("/proc/self/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(wanted):
                        return f" (it holds {size(int(line.split()[1]) * 1024)} now)"
        except (OSError, ValueError, IndexError):
            pass
        return ""

    def explain(self, etype, value, tb, tb_offset=None):  # noqa: ANN001 - IPython's API
        message = (
            f"[NSLS-II] MemoryError: this kernel may use at most {size(limit)} of memory"
            f"{in_use()}. Free what you no longer need (del big arrays), work in smaller "
            "chunks or memory-map large files (numpy.memmap), or ask your beamline staff "
            "to raise the ceiling for this environment (kernels.memory_limit in its "
            "nsls2.yaml, or the site's). The kernel keeps running; your variables are kept."
        )
        print(message, file=sys.stderr, flush=True)
        self.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell = get_ipython()  # noqa: F821 - exec_files runs in the kernel's user namespace
    shell.set_custom_exc((MemoryError,), explain)


if __name__ == "__main__":  # exec_files runs it as __main__; importing it does nothing
    _nsls2_memory_hook()
    del _nsls2_memory_hook
