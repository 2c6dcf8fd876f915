"""Shared pieces of the benchmark scripts: where a result came from, and one file per run.

Each benchmarked run leaves ``results/<suite>/<key>.json`` (its summary, calibration figures,
machine, commit, date) and ``<key>_curve.csv`` (its metrics.csv). The markdown page of a suite
is rebuilt from every result file present, so suites can be run a few methods at a time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd

from pipeline.io import write_csv, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        # A benchmark's own pages, figures and results change as it runs; only other changes
        # mean the measured code is not the commit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)benchmarks/figures",
                                ":(exclude)benchmarks/*.md"],
                               capture_output=True, text=True).stdout.strip()
        return (sha or "unknown") + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def record(suite: str, key: str, run: Path, stage_wall_s: float | None, extra: dict | None = None) -> dict:
    """Store what a finished run measured under ``results/<suite>/<key>``."""
    run = Path(run)
    summary = json.loads((run / "train_summary.json").read_text())
    calibration = json.loads((run / "calibration.json").read_text())
    result = {
        "key": key,
        "run": run.name,
        "summary": summary,
        "calibration": {k: v for k, v in calibration.items() if k not in ("class_thresholds", "weights_sha256")},
        "stage_wall_s": None if stage_wall_s is None else round(stage_wall_s, 1),
        "machine": machine(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_load_at_end": round(os.getloadavg()[0], 2),
        **(extra or {}),
    }
    folder = RESULTS / suite
    write_json(folder / f"{key}.json", result)
    write_csv(folder / f"{key}_curve.csv", pd.read_csv(run / "metrics.csv"))
    return result


def load_results(suite: str) -> list[tuple[dict, pd.DataFrame]]:
    folder = RESULTS / suite
    out = []
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        curve = folder / f"{path.stem}_curve.csv"
        out.append((result, pd.read_csv(curve) if curve.exists() else pd.DataFrame()))
    return out


def dicom_instance(sop_class: str):
    """An empty DICOM dataset of ``sop_class`` with a new SOPInstanceUID and its file meta (explicit VR
    little endian), for the generated exports to fill."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds
