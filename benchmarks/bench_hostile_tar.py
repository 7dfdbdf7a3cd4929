"""Hostile-archive benchmark: CPU per member of the worst shapes the reader's caps allow
(names and link targets of 255 parts, ~3.8 kB; files below many symlinks) vs plain
short-named files, through `safe_extract` into tmpfs. Issue 17 item 1: before the caps
one 1 MiB link target of 500,000 parts cost minutes of CPU; the work per member is now
bounded by constants, and this shows how large they are.

    .venv/bin/python benchmarks/bench_hostile_tar.py [--members 2000] [--scratch /dev/shm]
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsls2_artifacts.agent import extract  # noqa: E402
from nsls2_artifacts.errors import RejectedArtifactError  # noqa: E402

DEEP = "/".join(["d" * 14] * 255)  # 3824 bytes, 255 parts: within every cap


def member(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def archive(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def shapes(n: int) -> dict[str, list[tuple[tarfile.TarInfo, bytes]]]:
    deep = [f"{DEEP[:-6]}{i:06}" for i in range(n)]
    symlinks = [member(f"s{i}", type=tarfile.SYMTYPE, linkname="x") for i in range(1000)]
    return {
        "plain files, short names": [member(f"lib/f{i}", b"x") for i in range(n)],
        "files, 255-part names": [member(name, b"x") for name in deep],
        "files, 255-part names, after 1000 symlinks": symlinks
        + [member(name, b"x") for name in deep],
        "symlinks, 255-part names and targets": [
            member(name, type=tarfile.SYMTYPE, linkname="../" * 250 + "x") for name in deep
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    opts = parser.parse_args()
    for label, members in shapes(opts.members).items():
        with tempfile.TemporaryDirectory(dir=opts.scratch) as work:
            path = Path(work) / "a.tar"
            path.write_bytes(archive(members))
            dest = Path(work) / "x"
            dest.mkdir()
            start = time.process_time()
            try:
                extract.safe_extract(
                    path, "tar", dest, build_id="b", max_members=10**6, max_bytes=1 << 34
                )
                verdict = "accepted"
            except RejectedArtifactError as exc:
                verdict = f"refused: {exc}"[:80]
            cpu = time.process_time() - start
        print(
            f"{label}: {len(members)} members, {cpu:.2f} s CPU, "
            f"{cpu / len(members) * 1e6:.0f} us per member ({verdict})"
        )


if __name__ == "__main__":
    main()
