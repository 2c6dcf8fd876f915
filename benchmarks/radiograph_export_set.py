"""Usage: python -m benchmarks.radiograph_export_set OUT

A hospital's chest radiograph export as DICOM, for the review-label-retrain loop (`benchmarks/loop_dicom.md`):
1,400 PneumoniaMNIST training pictures (a seeded draw) as DX files named by their SOPInstanceUID, no
suffix, a study each, two studies a patient (PatientID); 1,200 in ``OUT/scans`` and 200 in
``OUT/incoming``. ``OUT/labels.csv`` labels the first 500 of ``scans`` by accession number
(``AccessionNumber,finding``, as a RIS export gives them); ``OUT/truth.csv`` holds every scan's label by
file, standing in for the radiologist. The patient name written is a placeholder that must never reach
an output.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from benchmarks.common import dicom_instance

PNEUMONIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist"


def radiograph(pixels: np.ndarray, patient: str, accession: str) -> Dataset:
    ds = dicom_instance(DigitalXRayImageStorageForPresentation)
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    ds.PatientID, ds.PatientName, ds.AccessionNumber = patient, "Placeholder^Name", accession
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def main(out: Path) -> None:
    labels = pd.read_csv(PNEUMONIA / "labels.csv")
    drawn = labels[labels["split"] == "train"].sample(1400, random_state=0).reset_index(drop=True)
    rows = []
    for i, row in drawn.iterrows():
        folder = out / ("incoming" if i >= 1200 else "scans")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(Image.open(PNEUMONIA / row.file).convert("L")).astype(np.uint16) * 16
        ds = radiograph(pixels, f"MRN{i // 2:05d}", f"A{i:06d}")
        ds.save_as(folder / ds.SOPInstanceUID, enforce_file_format=True)
        rows.append({"AccessionNumber": ds.AccessionNumber, "finding": row.label, "file": ds.SOPInstanceUID})
    table = pd.DataFrame(rows)
    table.iloc[:500][["AccessionNumber", "finding"]].to_csv(out / "labels.csv", index=False)
    table[["file", "finding"]].to_csv(out / "truth.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
