"""Near-duplicate scans: a perceptual hash robust to re-encoding and resizing, and groups of
scans whose hashes are close.

The hash is a 16x16 difference hash (Krawetz's dHash) of 2D pictures: the scan, as grey, is
scaled to 0-255, shrunk to 17x16 pixels, and each bit says whether a pixel is brighter than its
left neighbour. Re-saving as JPEG or resizing changes few bits; measured on the development
panel, copies re-saved at JPEG quality 60 or resized by 0.6 or 1.7 differ by at most 7 of 256
bits on chest radiographs (up to 18 on 28-pixel thumbnails), while 95% of distinct radiographs
are more than 23 bits from their nearest neighbour.

Pictures that share their outline can lie as close as copies at 16x16 though distinct: a generated
screening mammography export (``benchmarks/mammography_export_set.py``, 1,024x832) had 28 pairs of
different women's views within the copy distance, and a generated breast ultrasound export
(``benchmarks/ultrasound_export_set.py``, 480x640: a sector of speckle on black) 47, half its
pictures lying within 16 bits of another. So a pair within the distance must also agree in a finer
32x32 difference hash that leaves out ties (cells whose neighbours are equal once shrunk: flat
regions, where re-encoding flips bits), where both pictures are at least :data:`FINE_MIN_SIDE`
pixels a side. Copies re-saved at JPEG quality 60 or 75, resized by 0.6 or 1.7, or darkened differ
in at most 14 of its 1,024 cells on the panel's radiographs shrunk to 128 pixels (5 at 200, 3 at
512) and in 1 on the ultrasound export; a cropped and re-contrasted copy among the panel's COVID-19
radiographs in 71; the mammography pairs in 246 to 339, unrelated pictures' share. Where the set
looks alike as a whole (the ultrasound export), distinct pictures can differ in fewer (in as few as 23
cells there), and only a copy's few cells pass.

Volumes get no hash (exact duplicates are still found by sha256): on the panel's binary shape
masks every mask was within 4% of another under projection and 3D difference hashes alike,
so no threshold told a resampled copy from a different patient's organ.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

HASH_SIDE = 16
MAX_DISTANCE = 10  # bits of 256: the largest Hamming distance still called a near duplicate
# A real group of copies is small; a larger connected group means look-alike scans chained
# together (plain backgrounds, thumbnails), which are not merged.
MAX_GROUP = 20
# Thumbnails (MNIST's 28-pixel digits, say) are too coarse to tell a copy from a look-alike: distinct
# handwritten ones fall within the copy distance, so near duplicates are sought from this side up.
MIN_SIDE = 64
FINE_SIDE = 32
# Under this side a fine cell averages fewer than 4x4 pixels, and JPEG noise flips too many of them.
FINE_MIN_SIDE = 128
# Cells of 1,024 that differ (neither a tie) for a pair still called a near duplicate: pictures of the
# same scene differ in far fewer than unrelated ones (about 230: two thirds of cells no tie in each, half
# of those differing), a crop included; where a set looks alike, distinct pictures may too, and only a
# copy's few cells pass.
MAX_FINE_DISTANCE = 128
MAX_FINE_DISTANCE_LOOK_ALIKE = 20
# Where half the scans lie within this many copy distances of another, the coarse hash cannot tell
# a copy from a look-alike (chest radiographs: a median of 47 bits; a sector of ultrasound: 16).
LOOK_ALIKE = 2


def _grey(array: np.ndarray, is_volume: bool) -> Image.Image | None:
    """The 2D scan as grey scaled to 0-255; None for a volume, a constant picture or one under
    ``MIN_SIDE`` pixels a side."""
    if is_volume:
        return None
    values = np.asarray(array, dtype=np.float32)
    if values.ndim == 3 and values.shape[-1] in (3, 4):
        values = values[..., :3].mean(axis=-1)
    values = values.reshape(values.shape[:2]) if values.ndim > 2 else values
    if min(values.shape) < MIN_SIDE:
        return None
    low, high = float(values.min()), float(values.max())
    if not np.isfinite([low, high]).all() or high <= low:
        return None
    return Image.fromarray(((values - low) / (high - low) * 255).astype(np.uint8))


def _differences(grey: Image.Image, side: int) -> np.ndarray:
    """Each pixel's brightness minus its left neighbour's, of ``grey`` shrunk to ``side + 1`` x ``side``."""
    small = np.asarray(grey.resize((side + 1, side), Image.BILINEAR), dtype=np.int16)
    return (small[:, 1:] - small[:, :-1]).ravel()


def perceptual_hash(array: np.ndarray, is_volume: bool = False) -> str:
    """The 256-bit difference hash of a 2D scan as 64 hex digits ("" for a constant image, a volume or a
    picture under ``MIN_SIDE`` pixels on a side)."""
    return perceptual_hashes(array, is_volume)[0]


def perceptual_hashes(array: np.ndarray, is_volume: bool = False) -> tuple[str, str]:
    """:func:`perceptual_hash` and the fine hash that confirms a near duplicate it finds: the 32x32
    difference signs as 256 hex digits of "brighter than the left neighbour" bits, then 256 of
    "darker" bits, a tie being neither ("" where there is no hash, or the picture is under
    ``FINE_MIN_SIDE`` pixels a side)."""
    grey = _grey(array, is_volume)
    if grey is None:
        return "", ""
    coarse = np.packbits(_differences(grey, HASH_SIDE) > 0).tobytes().hex()
    if min(grey.size) < FINE_MIN_SIDE:
        return coarse, ""
    fine = _differences(grey, FINE_SIDE)
    return coarse, np.packbits(np.concatenate([fine > 0, fine < 0])).tobytes().hex()


def fine_distance(first: str, second: str) -> int:
    """Cells of two fine hashes (:func:`perceptual_hashes`) that differ, ties left out: cells brighter
    than their left neighbour in one and darker in the other."""
    a, b = (np.frombuffer(bytes.fromhex(h), dtype=np.uint8).reshape(2, -1) for h in (first, second))
    return int(np.unpackbits((a[0] & b[1]) | (a[1] & b[0])).sum())


def near_duplicate_groups(hashes: list[str], max_distance: int = MAX_DISTANCE, chunk: int = 2048,
                          fine: list[str] | None = None) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, i < j, of hashes at most ``max_distance`` bits apart and, where both
    have a ``fine`` hash (:func:`perceptual_hashes`), at most ``MAX_FINE_DISTANCE`` cells apart in it;
    ``MAX_FINE_DISTANCE_LOOK_ALIKE`` where the scans look alike as a set (their median distance to
    their nearest neighbour is under ``LOOK_ALIKE * max_distance``).

    All pairs are compared as a product of +-1 bit vectors, a chunk of rows at a time (50,000
    scans take seconds); empty hashes match nothing.
    """
    valid = [i for i, h in enumerate(hashes) if h]
    if len(valid) < 2:
        return []
    bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(hashes[i] for i in valid)), dtype=np.uint8))
    signs = bits.reshape(len(valid), -1).astype(np.float32) * 2 - 1
    n_bits = signs.shape[1]
    pairs, nearest = [], np.empty(len(valid))
    for start in range(0, len(valid), chunk):
        block = signs[start:start + chunk]
        distance = (n_bits - block @ signs.T) / 2
        rows, cols = np.nonzero(distance <= max_distance + 0.5)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                pairs.append((valid[start + r], valid[c], int(round(distance[r, c]))))
        own = np.arange(len(block))
        distance[own, start + own] = n_bits
        nearest[start:start + len(block)] = distance.min(axis=1)
    if fine is None or not pairs:
        return pairs
    typical = float(np.median(nearest))
    alike = typical < LOOK_ALIKE * max_distance
    most = MAX_FINE_DISTANCE_LOOK_ALIKE if alike else MAX_FINE_DISTANCE
    kept = [(i, j, d) for i, j, d in pairs if not (fine[i] and fine[j]) or fine_distance(fine[i], fine[j]) <= most]
    if len(kept) < len(pairs):
        log.info("%d of %d pairs of scans within %d bits are near duplicates in the finer hash too%s", len(kept),
                 len(pairs), max_distance, f" (the scans look alike: half are within {typical:.0f} bits of another)"
                 if alike else "")
    return kept


def connected_groups(n: int, pairs: list[tuple[int, int, int]]) -> list[int]:
    """Union-find over ``pairs``: a group number per item (its smallest member's index)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]
