"""Shared test helpers: tiny synthetic scans and tables written into ``tmp_path``.

Helpers are plain functions gathered on the ``write`` fixture (``write.png(path, array)``),
so a new helper is one function plus one line in ``_WRITERS``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image


def pytest_configure(config):
    config.addinivalue_line("markers", "network: downloads from a package registry or the internet")


def image(seed: int, shape: tuple[int, ...] = (6, 8)) -> np.ndarray:
    """A uint8 image that differs for every seed and is not symmetric (catches transposes)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_pngs(folder: str | Path, names: list[str]) -> list[Path]:
    """A picture of its own (``image(index)``) under each of ``names`` below ``folder``."""
    return [write_png(Path(folder) / name, image(index)) for index, name in enumerate(names)]


def write_nifti(path: str | Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return path


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def write_manifest(path: str | Path, rows: list[dict]) -> Path:
    """A manifest CSV; each row gives at least ``scan_id``, other columns default to ok/empty."""
    from pipeline.manifest import MANIFEST_COLUMNS

    full = [{**dict.fromkeys(MANIFEST_COLUMNS, ""), "status": "ok", **row} for row in rows]
    for row in full:
        row["path"] = row["path"] or f"/scans/{row['scan_id']}"
    return write_csv(path, full, columns=MANIFEST_COLUMNS)


_WRITERS = {
    "image": image,
    "png": write_png,
    "pngs": write_pngs,
    "nifti": write_nifti,
    "csv": write_csv,
    "manifest": write_manifest,
}


@pytest.fixture
def write() -> SimpleNamespace:
    """The helpers above: ``write.png``, ``write.pngs``, ``write.nifti``, ``write.csv``, ``write.manifest``, ``write.image``."""
    return SimpleNamespace(**_WRITERS)
