"""Usage: python -m benchmarks.enhanced_dwi_set OUT N SEED

A generated folder of Enhanced MR diffusion studies as a modern scanner exports them: one DICOM file a
study (``OUT/scans/<class>/dwi_<n>.dcm``), its frames the slices of a b0 and a b1000 volume, ordered
slice by slice with both b-values at each position (each frame's b-value in its MR Diffusion
functional group, its position in its Plane Position group). Half are ``stroke``: a small lesion
bright on b1000 (restricted diffusion) and a little on b0, as an acute infarct is; the rest ``normal``.
The head is an ellipsoid of grey and white matter with ventricles and noise, of random size, shift
and slice count (10 to 14 slices of 5 mm, 48 x 48 pixels of 4 mm). No patient is named.
"""
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from benchmarks.common import dicom_instance

B_VALUES = (0, 1000)


def volumes(rng: np.random.Generator, slices: int, stroke: bool) -> np.ndarray:
    """(rows, columns, slices, b-values) stored values of one head."""
    shape = (48, 48, slices)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radii = rng.uniform(0.75, 0.9, 3)
    centre = rng.uniform(-0.05, 0.05, 3)
    inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0)
    head = inside < 1
    ventricles = (((grid - centre[:, None, None, None]) / (radii[:, None, None, None] * 0.25)) ** 2).sum(0) < 1
    b0 = np.where(head, 600 + 80 * np.cos(6 * grid[0]) * np.sin(5 * grid[1]), 0) + np.where(ventricles, 500, 0)
    b1000 = np.where(head, 300 + 30 * np.sin(7 * grid[1]), 0) - np.where(ventricles, 250, 0)
    if stroke:
        spot = np.where(head & ~ventricles)
        pick = rng.integers(len(spot[0]))
        where = np.array([axis[pick] for axis in spot], dtype=float)
        size = rng.uniform(2.0, 3.5)
        lesion = np.exp(-(((np.indices(shape) - where[:, None, None, None]) / [[[[size]]], [[[size]]], [[[0.8]]]]) ** 2)
                        .sum(0))
        b1000 = b1000 + 450 * lesion * head
        b0 = b0 + 120 * lesion * head
    noise = rng.normal(0, 25, (2, *shape))
    return np.clip(np.stack([b0 + noise[0], b1000 + noise[1]], axis=-1), 0, 4000).astype(np.int16)


def write_study(path: Path, stored: np.ndarray) -> None:
    rows, columns, slices, _ = stored.shape
    ds = dicom_instance(EnhancedMRImageStorage)
    ds.Modality, ds.BodyPartExamined = "MR", "BRAIN"
    ds.PatientID = f"GEN-{path.stem}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), generate_uid(), 5
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, slices * len(B_VALUES)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, facing = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [4.0, 4.0], 5.0
    facing.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [facing]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, pixels = [], []
    for k in range(slices):  # slice by slice, both b-values at each position
        for v, b_value in enumerate(B_VALUES):
            frame, place, diffusion = Dataset(), Dataset(), Dataset()
            place.ImagePositionPatient = [-96.0, -96.0, -30.0 + 5.0 * k]
            diffusion.DiffusionBValue = float(b_value)
            frame.PlanePositionSequence, frame.MRDiffusionSequence = [place], [diffusion]
            frames.append(frame)
            pixels.append(stored[:, :, k, v])
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def main(out: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index in range(n):
        stroke = index % 2 == 1
        write_study(out / "scans" / ("stroke" if stroke else "normal") / f"dwi_{index:04d}.dcm",
                    volumes(rng, int(rng.integers(10, 15)), stroke))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
