"""Usage: python -m benchmarks.mammography_export_set OUT [STUDIES] [SEED]

A screening mammography export as a breast-imaging centre's PACS gives one: a study a woman (default
160 studies), the four views of a screening study (left and right breast, CC and MLO) as four DX-style
MG files in ``OUT/scans/<study>/<view>.dcm``, 12-bit pixels of 1,024 x 832 in 16-bit words (a fifth of
full size, to keep the set quick to make), from two vendors: one writes MONOCHROME2, the other
MONOCHROME1 (dense tissue dark in the stored values, as some detectors store them), each with its
own window centre and width. A third of the studies are recalls: a small bright spiculated mass in
one breast, seen in both of its views. ``OUT/labels.csv`` labels the first 60% of the studies by
accession number (``AccessionNumber,outcome``: ``normal`` or ``recall``), as a screening programme's
outcome table does; ``OUT/truth.csv`` holds every file's label. Names and ids are made up.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, generate_uid

from benchmarks.common import dicom_instance

ROWS, COLUMNS = 1024, 832
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))


def breast(laterality: str, view: str, rng: np.random.Generator, mass: bool) -> np.ndarray:
    """A breast on black, 0-4095 (dense tissue bright), chest wall at the side of its laterality."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    wall = 0.0 if laterality == "R" else COLUMNS - 1.0
    depth = np.abs(x - wall) / COLUMNS
    reach = rng.uniform(0.75, 0.9) * (1.0 - ((y - ROWS / 2) / (ROWS * (0.55 if view == "CC" else 0.6))) ** 2)
    inside = depth < np.clip(reach, 0, None)
    texture = sum(rng.uniform(0.05, 0.15) * np.sin(x / rng.uniform(8, 40) + rng.uniform(0, 6))
                  * np.cos(y / rng.uniform(8, 40) + rng.uniform(0, 6)) for _ in range(4))
    density = np.clip(0.55 - 0.35 * depth + texture + rng.normal(0, 0.03, depth.shape), 0.05, 1)
    if mass:
        cy, cx = rng.uniform(0.3, 0.7) * ROWS, wall + (1 if laterality == "R" else -1) * rng.uniform(0.15, 0.4) * COLUMNS
        theta = np.arctan2(y - cy, x - cx)
        spikes = 1 + 0.35 * np.abs(np.sin(5 * theta + rng.uniform(0, 6)))
        density = np.where(np.hypot(y - cy, x - cx) < rng.uniform(14, 24) * spikes, 0.95, density)
    return np.where(inside, density * 3500 + 300, 80).astype(np.uint16)


def mammogram(pixels: np.ndarray, vendor: int, laterality: str, view: str, study: dict):
    ds = dicom_instance(DigitalMammographyXRayImageStorageForPresentation)
    ds.Modality, ds.BodyPartExamined = "MG", "BREAST"
    ds.PatientID, ds.PatientName = study["patient"], "Placeholder^Name"
    ds.AccessionNumber, ds.StudyInstanceUID = study["accession"], study["uid"]
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageLaterality, ds.ViewPosition, ds.PresentationIntentType = laterality, view, "FOR PRESENTATION"
    ds.Manufacturer = ("Vendor A", "Vendor B")[vendor]
    ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLUMNS, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.35, 0.35]
    if vendor == 1:  # stored inverted: tissue dark in the values, shown bright
        ds.PhotometricInterpretation = "MONOCHROME1"
        pixels = 4095 - pixels
        ds.WindowCenter, ds.WindowWidth = 2000, 3600
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.WindowCenter, ds.WindowWidth = 2100, 3800
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def main(out: Path, studies: int = 160, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels, truth = [], []
    for s in range(studies):
        outcome = "recall" if s % 3 == 0 else "normal"
        study = {"patient": f"W{seed}{s:05d}", "accession": f"M{seed}{s:06d}", "uid": generate_uid()}
        side, vendor = rng.choice(["L", "R"]), int(rng.integers(0, 2))
        folder = out / "scans" / f"study{s:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for laterality, view in VIEWS:
            pixels = breast(laterality, view, rng, mass=outcome == "recall" and laterality == side)
            name = f"{laterality}{view}.dcm"
            mammogram(pixels, vendor, laterality, view, study).save_as(folder / name, enforce_file_format=True)
            truth.append({"file": f"study{s:04d}/{name}", "outcome": outcome,
                          "finding_in_view": outcome == "recall" and laterality == side})
        if s < 0.6 * studies:
            labels.append({"AccessionNumber": study["accession"], "outcome": outcome})
    pd.DataFrame(labels).to_csv(out / "labels.csv", index=False)
    pd.DataFrame(truth).to_csv(out / "truth.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:4]))
