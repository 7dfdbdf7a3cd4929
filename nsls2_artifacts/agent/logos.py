"""Kernel logos: the env's own (from nsls2.yaml, carried in manifest.json) or a generated
default (a coloured tile with the env's initials), as the `logo-svg.svg` and
`logo-64x64.png` resources stock Jupyter shows. Pure: bytes in, bytes out; `kernels.py`
writes them. The PNG is made with zlib + struct (a 5x7 pixel font), so no imaging
library is needed for a 64x64 tile.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

from ..records import KernelExtras

SIZE = 64
# colour-blind-safe, dark enough for white letters (Okabe-Ito / Tol shades)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#7B5EA7", "#AA3377", "#117733", "#994F00")

# 5x7 glyphs, one string of 7 rows per character ('#' = ink)
_FONT = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}
_SCALE = 4  # each font pixel is 4x4 image pixels: two letters fit a 64 px tile


@dataclass(frozen=True)
class Logo:
    """The two kernelspec resources, ready to write."""

    svg: bytes
    png: bytes


def initials(env: str) -> str:
    """`base` -> `BA`, `csx-analysis` -> `CA`: two letters/digits naming the env."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", env) if w]
    text = words[0][0] + words[1][0] if len(words) >= 2 else (words[0] if words else "?")[:2]
    return "".join(c for c in text.upper() if c in _FONT) or "?"


def colour(env: str) -> str:
    """A stable colour per env name, so every kernel of one env shares its tile."""
    return PALETTE[hashlib.sha256(env.encode()).digest()[0] % len(PALETTE)]


def default_svg(env: str) -> bytes:
    text = initials(env)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
        f'viewBox="0 0 {SIZE} {SIZE}">'
        f'<rect width="{SIZE}" height="{SIZE}" rx="10" fill="{colour(env)}"/>'
        f'<text x="32" y="43" font-family="DejaVu Sans, Arial, sans-serif" font-size="28" '
        f'font-weight="bold" text-anchor="middle" fill="#fff">{text}</text></svg>\n'
    ).encode()


def default_png(env: str) -> bytes:
    """A 64x64 RGB tile in the env's colour with its initials in white."""
    background = bytes.fromhex(colour(env)[1:])
    rows = [bytearray(background * SIZE) for _ in range(SIZE)]
    text = initials(env)
    width = len(text) * 5 * _SCALE + (len(text) - 1) * _SCALE
    left, top = (SIZE - width) // 2, (SIZE - 7 * _SCALE) // 2
    for index, char in enumerate(text):
        x0 = left + index * 6 * _SCALE
        for gy, line in enumerate(_FONT[char]):
            for gx, ink in enumerate(line):
                if ink != "#":
                    continue
                for dy in range(_SCALE):
                    row = rows[top + gy * _SCALE + dy]
                    start = (x0 + gx * _SCALE) * 3
                    row[start : start + 3 * _SCALE] = b"\xff" * (3 * _SCALE)
    return encode_png(SIZE, SIZE, rows)


def encode_png(width: int, height: int, rows: list[bytearray]) -> bytes:
    """8-bit RGB PNG from rows of `width * 3` bytes (filter 0 on every row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def svg_wrapping_png(png: bytes) -> bytes:
    """An SVG showing a PNG logo, so a PNG-only logo also fills `logo-svg.svg`."""
    data = base64.b64encode(png).decode()
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
        f'viewBox="0 0 {SIZE} {SIZE}"><image width="{SIZE}" height="{SIZE}" '
        f'href="data:image/png;base64,{data}"/></svg>\n'
    ).encode()


@lru_cache(maxsize=256)
def _cached_logo(env: str, fmt: str, data_b64: str) -> Logo:
    if fmt == "svg":
        return Logo(svg=base64.b64decode(data_b64), png=default_png(env))
    if fmt == "png":
        png = base64.b64decode(data_b64)
        return Logo(svg=svg_wrapping_png(png), png=png)
    return Logo(svg=default_svg(env), png=default_png(env))


def logo_for(env: str, extras: KernelExtras | None) -> Logo:
    """The env's logo from its build's manifest, or the generated default.

    An SVG logo keeps the generated PNG (turning SVG into pixels needs a renderer);
    JupyterLab's launcher prefers the SVG, so users see the env's own logo there.
    """
    if extras is None or not extras.logo_format:
        return _cached_logo(env, "", "")
    return _cached_logo(env, extras.logo_format, extras.logo_base64)
