"""Parse a content index of N entries (`index.json.zst`), as the agent does at every deploy:
the reader (msgspec decodes the JSON bytes straight into the Struct records, types, ranges,
hex and entry types checked in C, path rules in Python) vs json.loads followed by
`ContentIndex.from_dict` (msgspec.convert of the parsed JSON, the same checks): what
decoding from the bytes saves. Before the records were Structs the reader was json.loads
plus a field-by-field reader (0.30 s per 100k entries, docs/benchmarks.md).

Issue #21 item 1 asked for the index records as Structs only if the hot path did not get
slower. Prints the median of --repeat runs of each and their ratio; docs/benchmarks.md has
the numbers.

    .venv/bin/python benchmarks/bench_index_parse.py --entries 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nsls2_artifacts.contentindex import ContentIndex, FrameRecord, IndexEntry  # noqa: E402


def from_parsed_json(blob: bytes) -> ContentIndex:
    text = zstandard.ZstdDecompressor().stream_reader(blob).read()
    return ContentIndex.from_dict(json.loads(text))


def sample(entries: int) -> bytes:
    per_frame = 100
    frames = []
    rows = []
    for f in range(entries // per_frame):
        frames.append(FrameRecord(f * 1000, 1000, f * 4096, 4096, f"pkg{f}", f"{f:064x}"))
        for i in range(per_frame):
            n = f * per_frame + i
            path = f"lib/python3.11/site-packages/pkg{f}/module_{i}.py"
            rows.append(IndexEntry(path, "file", 100 + n, f"{n:064x}", 0o644, "", False, f))
    return ContentIndex("ab" * 32, tuple(frames), tuple(rows)).to_bytes()


def timed(fn, blob: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(blob)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    blob = sample(args.entries)
    assert ContentIndex.from_bytes(blob) == from_parsed_json(blob)
    slow = timed(from_parsed_json, blob, args.repeat)
    fast = timed(ContentIndex.from_bytes, blob, args.repeat)
    print(f"entries={args.entries} index_bytes={len(blob)}")
    print(f"json.loads + from_dict (msgspec.convert): {slow:.3f} s")
    print(f"from_bytes (msgspec Structs from bytes):  {fast:.3f} s")
    print(f"ratio from_bytes/json.loads+from_dict: {fast / slow:.2f}x")


if __name__ == "__main__":
    main()
