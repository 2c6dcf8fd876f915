"""Usage: python -m benchmarks.ultrasound_export_set OUT [PATIENTS] [SEED]

A breast ultrasound clinic's DICOM export, as a new user would bring one: a study a patient
(default 300 patients), one to three images a study, stored as scanners store them: colour (RGB
pixels of a grey picture, with yellow calipers and a burned-in text line), JPEG baseline compressed
(``YBR_FULL_422``), a fifth of them cine loops of 8 frames, and a tenth uncompressed RGB. Files sit
in ``OUT/scans/<PatientID>/<study>/US<n>`` (no suffix). Each picture is a sector of speckle; a benign
study's images show a smooth dark oval with brighter tissue behind it, a malignant one's an irregular
dark mass with a shadow behind it, a normal one's neither.

``OUT/labels.csv`` labels 40% of the studies by accession number (``AccessionNumber,finding``:
normal, benign or malignant, a third each), as a RIS export gives them; ``OUT/truth.csv`` holds every
file's label, standing in for the radiologist. The patient name written (in the header and burned in)
is a placeholder.
"""
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from benchmarks.common import dicom_instance

ROWS, COLUMNS = 480, 640
FINDINGS = ("normal", "benign", "malignant")


def picture(finding: str, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """A grey sector of speckle (``ROWS x COLUMNS``, 0-255) with the finding's mass, if any."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    apex_x, apex_y = COLUMNS / 2, -40.0
    radius, angle = np.hypot(x - apex_x, y - apex_y), np.arctan2(x - apex_x, y - apex_y)
    inside = (radius > 80) & (radius < ROWS + 20) & (np.abs(angle) < 0.6)
    echo = 0.45 + 0.25 * np.sin(y / rng.uniform(25, 45) + rng.uniform(0, 6)) * np.cos(x / rng.uniform(40, 80))
    echo = echo * np.exp(-radius / 900)
    if finding != "normal":
        cy, cx = rng.uniform(180, 330) + shift, rng.uniform(240, 400)
        a, b = rng.uniform(25, 45), rng.uniform(15, 30)
        theta = np.arctan2(y - cy, x - cx)
        edge = 1.0 if finding == "benign" else 1.0 + 0.3 * np.sin(7 * theta + rng.uniform(0, 6))
        mass = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < edge ** 2
        behind = (np.abs(x - cx) < a * 0.8) & (y > cy + b) & (y < cy + b + 120)
        echo = np.where(mass, 0.08, echo)
        echo = np.where(behind & ~mass, echo * (1.5 if finding == "benign" else 0.4), echo)
    speckle = rng.rayleigh(1.0, size=echo.shape)
    return np.clip(np.where(inside, echo * speckle, 0.0) * 200, 0, 255).astype(np.uint8)


def colour(grey: np.ndarray, patient: str, rng: np.random.Generator) -> np.ndarray:
    """The picture as a scanner saves it: RGB, a text line and yellow calipers burned in."""
    image = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), f"Placeholder^Name  {patient}  BREAST L  12L-RS", fill=(230, 230, 230))
    for _ in range(2):
        cx, cy = rng.uniform(200, 440), rng.uniform(150, 380)
        draw.line([(cx - 6, cy), (cx + 6, cy)], fill=(255, 230, 0))
        draw.line([(cx, cy - 6), (cx, cy + 6)], fill=(255, 230, 0))
    return np.asarray(image)


def ultrasound(frames: list[np.ndarray], compressed: bool, patient: str, study: dict):
    multi = len(frames) > 1
    ds = dicom_instance(UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage)
    ds.Modality, ds.BodyPartExamined = "US", "BREAST"
    ds.PatientID, ds.PatientName = patient, "Placeholder^Name"
    ds.AccessionNumber, ds.StudyInstanceUID = study["accession"], study["uid"]
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = ROWS, COLUMNS, 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if multi:
        ds.NumberOfFrames, ds.FrameTime = len(frames), 33.3
    if compressed:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        encoded = []
        for frame in frames:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=90, subsampling=1)  # 4:2:2
            encoded.append(buffer.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = np.stack(frames).tobytes()
    return ds


def main(out: Path, patients: int = 300, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows, labelled = [], []
    for p in range(patients):
        patient, finding = f"US{p:05d}", FINDINGS[p % 3]
        study = {"accession": f"B{seed}{p:06d}", "uid": generate_uid()}
        folder = out / "scans" / patient / f"ST{p % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(int(rng.integers(1, 4))):
            kind = rng.uniform()
            if kind < 0.2:  # a cine loop: the mass moves a little with the probe
                state = rng.bit_generator.state
                frames = []
                for f in range(8):
                    rng.bit_generator.state = state
                    frames.append(colour(picture(finding, rng, shift=3.0 * f), patient, rng))
            else:
                frames = [colour(picture(finding, rng), patient, rng)]
            ds = ultrasound(frames, compressed=kind >= 0.1, patient=patient, study=study)
            path = folder / f"US{n}"
            ds.save_as(path, enforce_file_format=True)
            rows.append({"file": str(path.relative_to(out / "scans")), "finding": finding})
        if rng.uniform() < 0.4:
            labelled.append({"AccessionNumber": study["accession"], "finding": finding})
    pd.DataFrame(labelled).to_csv(out / "labels.csv", index=False)
    pd.DataFrame(rows).to_csv(out / "truth.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:4]))
