"""Check a folder before any work: every bad file listed at once, with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.masks import segmentation_masks
from pipeline.reading import (
    SCAN_FORMATS,
    ScanReadError,
    included,
    is_scan_file,
    list_files,
    load_scan,
    sidecars,
    volume_location,
)
from pipeline.sequences import group_cases


def _read_problem(path: str) -> str | None:
    try:
        array = np.asarray(load_scan(path).array, dtype=np.float64)
    except ScanReadError as error:
        return error.reason
    if not np.isfinite(array).all():
        return "contains NaN or infinite values"
    if array.min() == array.max():
        return f"constant image (every value is {array.min():g})"
    return None


def validate(scans: str | Path, run_dir: str | Path | None = None, workers: int = 2,
             progress: bool = True) -> pd.DataFrame:
    """One row per file below ``scans``: file, status (ok, error, or skipped for a segmentation
    mask beside its scan, which ingest and score leave out), reason.

    With a run folder, files go through that model's own preprocessing, so a 3D volume
    offered to a 2D model (or a file of another number of volumes, or the wrong channel count) is caught too;
    without one, each file is read and checked for non-finite and constant values.
    """
    scans = Path(scans)
    config, include = None, ""
    if run_dir is not None:
        from pipeline.checkpoint import load_checkpoint

        trained = load_checkpoint(run_dir).config
        config, include = trained.preprocess, trained.data.include
    # as score lists them: a 2D model's scans are each slice of a DICOM series
    files = list_files(scans, series=config is None or len(config.spatial_size) == 3)
    # what score leaves out, each with the reason
    skipped = {mask: f"segmentation mask of {scan.relative_to(scans).as_posix()}: not a scan"
               for mask, scan in segmentation_masks(files).items()}
    skipped.update({file: f"metadata of {scan.relative_to(scans).as_posix()}: not a scan"
                    for file, scan in sidecars(files).items()})
    if include:  # the kind of file the model was trained on
        skipped.update(dict.fromkeys(included([f for f in files if is_scan_file(f) and f not in skipped], scans,
                                              include)[1], f"not matching {include!r}, the run's data.include"))
    if config is not None and config.sequences:  # each case's sequences one scan
        files, _, others = group_cases(files, config.sequences, volume_location)
        files = sorted([*files, *others])
        skipped.update({file: f"none of the sequences the model reads as {case.relative_to(scans).as_posix()}'s "
                        f"channels" for file, case in others.items()})
    skipped[scans / "labels.csv"] = "the folder's labels file: not a scan"  # as score and ingest read it
    readable = [str(f) for f in files if is_scan_file(f) and f not in skipped]
    if config is not None:
        from pipeline.data import preprocessor

        with preprocessor(config, workers if len(readable) >= 64 else 1, progress) as process:
            _, errors = process(readable)
    else:
        errors = [_read_problem(p) for p in readable]
    reasons = dict(zip(readable, errors))
    rows = []
    for f in files:
        if f in skipped:
            rows.append({"file": f.relative_to(scans).as_posix(), "status": "skipped", "reason": skipped[f]})
            continue
        reason = reasons[str(f)] if str(f) in reasons else f"not a scan file ({SCAN_FORMATS})"
        rows.append({"file": f.relative_to(scans).as_posix(), "status": "error" if reason else "ok",
                     "reason": reason or ""})
    return pd.DataFrame(rows, columns=["file", "status", "reason"])
