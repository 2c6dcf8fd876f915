"""The data fingerprint the plan stage reads: what the ingested scans are, from the manifest and a sample.

Dimensionality, file types, sizes and spacings, channels and colour, the kind of intensities (binary
mask, 8-bit picture, CT-like, MRI-like, high-bit picture) and class counts per subset, as a JSON-ready
dict, the way nnU-Net's fingerprint extractor describes a data set before its planner turns it into
settings (``pipeline.stages.plan``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import CT_WINDOWS
from pipeline.reading import ScanReadError, load_scan, scan_suffix, spatial_shapes
from pipeline.sequences import case_location

FINGERPRINT_SAMPLE = 120  # scans read for intensity statistics
# ...or fewer, where reading them takes longer than this (the time is the user's budget: 80 CT series of
# 100 slices took 22 s of a 2-minute run), but never fewer than FINGERPRINT_MIN_SAMPLE.
FINGERPRINT_SECONDS = 8.0
FINGERPRINT_MIN_SAMPLE = 20


def planned_channels(fp: dict[str, Any]) -> int:
    """A file's channels for the fingerprinted scans: a picture's 3 where most have colour, else 1; a
    volume's the number of volumes most of its files hold (a multi-sequence MRI's modalities)."""
    if fp["spatial_dims"] == 3:
        return int(max(fp["channels"], key=lambda count: (fp["channels"][count], -int(count))))
    return 3 if fp["colour_fraction"] >= 0.5 else 1


def planned_input_channels(fp: dict[str, Any]) -> int:
    """A model's input channels for the fingerprinted scans: the file's, each as many times as there are
    CT windows where the scans are CT-like (the plan makes each window a channel)."""
    return planned_channels(fp) * (len(CT_WINDOWS) if (fp.get("intensity") or {}).get("kind") == "ct_like" else 1)


def _intensity_of(path: str) -> dict[str, Any] | None:
    try:
        scan = load_scan(path)
    except (ScanReadError, OSError):
        return None
    array = np.asarray(scan.array)
    colour = False
    if not scan.is_volume and array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        spread = float(np.ptp(rgb)) or 1.0
        # grey pictures saved as RGB have identical channels; real colour differs between them
        colour = float(np.abs(rgb - rgb.mean(-1, keepdims=True)).mean()) > 0.02 * spread
        array = rgb.mean(-1)
    values = array.astype(np.float64).ravel()
    if values.size > 200_000:
        values = values[:: values.size // 200_000 + 1]
    low, high = np.percentile(values, [0.5, 99.5])
    return {"min": float(values.min()), "max": float(values.max()), "p0_5": float(low), "p99_5": float(high),
            "binary": bool(np.unique(values).size <= 2), "colour": colour, "dtype": scan.source_dtype}


def _case_sequences(paths: pd.Series) -> list[str]:
    """The sequences of the most common case among ``paths`` that are cases' (``pipeline.sequences``), else []."""
    found = Counter(tuple(case.sequences) for path in paths if (case := case_location(path)) is not None)
    return list(found.most_common(1)[0][0]) if found else []


def fingerprint(frame: pd.DataFrame, classes: list[str], sample: int = FINGERPRINT_SAMPLE,
                seed: int = 0, seconds: float = FINGERPRINT_SECONDS) -> dict[str, Any]:
    """Describe the usable scans of a split frame (manifest rows with a ``subset`` column).

    Returns a JSON-ready dict: dimensionality, file types, sizes (median, min, max per axis),
    spacings, channels and colour, intensity kind (binary mask, 8-bit picture, CT-like,
    MRI-like) from a sample of scans, and class counts per subset. The sample is a seeded draw of
    ``sample`` scans, read in the drawn order until ``seconds`` have gone (at least
    ``FINGERPRINT_MIN_SAMPLE`` are read).
    """
    rows = frame[frame.get("status", pd.Series("ok", index=frame.index)) == "ok"]
    if rows.empty:
        raise ValueError("no usable scans to plan for: every scan has an error")
    suffixes = [scan_suffix(p) or ("case of sequences" if case_location(p) else "dicom") for p in rows["path"]]
    parsed = spatial_shapes(rows)
    # a case of several sequences counts as its volumes: a PACS study's four series (one scan) outweigh its one
    # screen save, as they did read a scan each
    dims = Counter()
    for (shape, _), path in zip(parsed, rows["path"]):
        dims[len(shape)] += len(case.sequences) if (case := case_location(path)) is not None else 1
    spatial_dims = dims.most_common(1)[0][0]
    shapes = np.array([shape for shape, _ in parsed if len(shape) == spatial_dims], dtype=float)
    channels = Counter(c for shape, c in parsed if len(shape) == spatial_dims)
    spacings = []
    for text in rows["spacing"].astype(str):
        values = [float(v) for v in text.split("x") if v and v != "nan"]
        if len(values) == spatial_dims:
            spacings.append(values)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=min(sample, len(rows)), replace=False)
    stats = []
    started = time.perf_counter()
    for read, i in enumerate(picks, start=1):  # the drawn order: a sample cut short is still a random one
        if (found := _intensity_of(rows["path"].iloc[i])) is not None:
            stats.append(found)
        if read >= FINGERPRINT_MIN_SAMPLE and time.perf_counter() - started > seconds:
            break
    if not stats:
        raise ValueError("none of the sampled scans could be read for the fingerprint")
    # every scan's stored type, from the manifest: one 16-bit radiograph among 8-bit ones, unsampled, would
    # be clipped white by a fixed 0-255 range
    stored = Counter(str(v) for v in rows["dtype"] if str(v) not in ("", "nan")) if "dtype" in rows else Counter()
    kind = intensity_kind(stats, int(spatial_dims), stored)
    counts = {
        subset: {label or "(unlabelled)": int(n) for label, n in members["label"].value_counts().sort_index().items()}
        for subset, members in rows.groupby("subset")
    } if "subset" in rows else {}
    return {
        "n_scans": int(len(rows)),
        "spatial_dims": int(spatial_dims),
        "mixed_dimensionality": len(dims) > 1,
        "file_types": dict(Counter(suffixes)),
        "size": {"median": np.median(shapes, 0).tolist(), "min": shapes.min(0).tolist(),
                 "max": shapes.max(0).tolist()},
        "all_same_size": bool((shapes == shapes[0]).all()),
        "spacing": ({"median": np.median(spacings, 0).tolist(), "min": np.min(spacings, 0).tolist(),
                     "max": np.max(spacings, 0).tolist()} if spacings else None),
        "channels": {str(k): int(v) for k, v in channels.items()},
        "sequences": _case_sequences(rows["path"]),
        "colour_fraction": round(float(np.mean([s["colour"] for s in stats])), 3),
        "dtypes": dict(Counter(s["dtype"] for s in stats)),
        "stored_dtypes": dict(stored),
        "intensity": {"kind": kind, "sampled": len(stats),
                      "min": min(s["min"] for s in stats), "max": max(s["max"] for s in stats),
                      "median_p0_5": float(np.median([s["p0_5"] for s in stats])),
                      "median_p99_5": float(np.median([s["p99_5"] for s in stats])),
                      "binary_fraction": round(float(np.mean([s["binary"] for s in stats])), 3)},
        "classes": list(classes),
        "counts": counts,
    }


EIGHT_BIT = ("uint8", "bool")


def intensity_kind(stats: list[dict[str, Any]], spatial_dims: int = 3, stored: Counter | None = None) -> str:
    """The kind of intensities of the sampled scans' ``stats``; ``stored`` counts every scan's stored
    type (the manifest's), so that 8-bit pictures are so only where every scan is."""
    if np.mean([s["binary"] for s in stats]) >= 0.9:
        return "binary_mask"
    if all(s["dtype"] in EIGHT_BIT for s in stats) and all(dtype in EIGHT_BIT for dtype in stored or ()):
        return "8bit_picture"
    if np.median([s["min"] for s in stats]) <= -500:
        return "ct_like"  # Hounsfield units: air near -1000
    if spatial_dims == 2:
        return "high_bit_picture"  # 12- or 16-bit radiographs (DICOM, 16-bit PNG or TIFF): no fixed range
    return "mri_like"  # other scanner intensities: arbitrary scale, no fixed range


# How each kind that is scaled per scan is named in the plan's reasons.
PERCENTILE_KINDS = {
    "ct_like": "CT-like intensities (Hounsfield units, whose window differs by finding)",
    "mri_like": "MRI-like intensities have no fixed scale",
    "high_bit_picture": "12- or 16-bit pictures (radiographs) have no fixed range",
}
