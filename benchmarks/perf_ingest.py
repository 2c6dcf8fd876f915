"""Ingest speed and memory: ``pipeline ingest`` on folders of distinct scans, against only reading
and decoding the same files.

Ingest reads every file whole (sha256, decoding, the intensity fingerprint, a perceptual hash of
each picture), then compares every picture's hash with every other's for near duplicates: the one
step whose cost grows faster than the number of scans. Each measurement runs in a fresh process
(``python -m benchmarks.perf_ingest ingest FOLDER OUT``) and the parent samples its peak memory, as
``benchmarks.perf_scoring`` does. The folders are made once under ``cache/bench``: every file is
distinct (so none is a duplicate), in two class subfolders as a user's export would be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.perf_scoring import WORK, _picture, measured, run_sampled, volume_folder

CLASSES = ("normal", "abnormal")


def _linked_subset(source: Path, out: Path, n: int, suffix: str) -> Path:
    """``out`` holding hard links to the first ``n`` files of ``source`` (class subfolders kept)."""
    files = sorted(source.rglob(f"*{suffix}"), key=lambda p: p.name)[:n]
    for path in files:
        target = out / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                target.write_bytes(path.read_bytes())
    (out / ".complete").write_text(f"{n} files linked from {source}\n")
    return out


def distinct_pictures(n: int, made: int = 10_000) -> Path:
    """``n`` (at most ``made``) distinct 512x512 grey JPEGs, half of them with a bright opacity."""
    import numpy as np

    source = WORK / f"ingest_jpeg512_{made}"
    if not (source / ".complete").exists():
        for i in range(made):
            label = CLASSES[i % 2]
            path = source / label / f"pic_{i:05d}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                _picture(np.random.default_rng(100_000 + i), 512, abnormal=label == "abnormal").save(path, quality=90)
        (source / ".complete").write_text(f"{made} distinct pictures\n")
    if n == made:
        return source
    out = WORK / f"ingest_jpeg512_{n}"
    return out if (out / ".complete").exists() else _linked_subset(source, out, n, ".jpg")


def distinct_volumes(n: int) -> Path:
    """``n`` distinct 64^3 ``.nii.gz`` volumes: the 50 synthetic heads, each copy with one voxel changed."""
    import nibabel as nib
    import numpy as np

    out = WORK / f"ingest_nii64_{n}"
    if (out / ".complete").exists():
        return out
    sources = sorted(volume_folder(50).glob("*.nii.gz"))
    for i in range(n):
        label = CLASSES[i % 2]
        path = out / label / f"vol_{i:05d}.nii.gz"
        if path.exists():
            continue
        image = nib.load(sources[i % len(sources)])
        data = np.asarray(image.dataobj).copy()
        data.flat[i % data.size] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, image.affine, image.header), path)
    (out / ".complete").write_text(f"{n} distinct volumes\n")
    return out


def distinct_dicoms(n: int) -> Path:
    """``n`` distinct 512x512 radiographs as single-file DICOM (DX, 12 bits stored in 16, uncompressed,
    about 0.5 MB each), two a patient, half of them with a bright opacity: a hospital's export."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    out = WORK / f"ingest_dcm512_{n}"
    if (out / ".complete").exists():
        return out
    for i in range(n):
        label = CLASSES[i % 2]
        path = out / label / f"IM{i:05d}.dcm"
        if path.exists():
            continue
        pixels = np.asarray(_picture(np.random.default_rng(200_000 + i), 512, abnormal=label == "abnormal"),
                            dtype=np.uint16) * 16
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality, ds.BodyPartExamined = f"BENCH-{i // 2:05d}", "DX", "CHEST"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    (out / ".complete").write_text(f"{n} distinct DICOM radiographs\n")
    return out


def ingest_all(folder: Path, out: Path) -> dict:
    """``pipeline ingest`` of ``folder`` (class subfolders) in this process."""
    from pipeline.stages.ingest import ingest

    start = time.perf_counter()
    result = ingest(folder, class_subfolders=True, out=out, workers=2)
    seconds = time.perf_counter() - start
    status = result.manifest["status"].value_counts().to_dict()
    return {"files": len(result.manifest), "seconds": seconds, "status": status, "problems": len(result.problems)}


def ingest_against_decoding(kind: str, n: int) -> dict:
    """``kind``: jpeg512, nii64 or dcm512."""
    folder = {"jpeg512": distinct_pictures, "nii64": distinct_volumes, "dcm512": distinct_dicoms}[kind](n)
    decoded = measured("decode", str(folder))
    out = WORK / "manifests" / f"{folder.name}.csv"
    ingested = _measured("ingest", str(folder), str(out))
    return {"kind": kind, "files": n, "decode": decoded, "ingest": ingested,
            "decode_per_second": decoded["files"] / decoded["seconds"],
            "ingest_per_second": ingested["files"] / ingested["seconds"],
            "ratio": (ingested["files"] / ingested["seconds"]) / (decoded["files"] / decoded["seconds"])}


def _measured(*args: str) -> dict:
    """Run ``python -m benchmarks.perf_ingest *args``; its JSON result plus ``peak_pss_mb``."""
    output, _, peak = run_sampled([sys.executable, "-m", "benchmarks.perf_ingest", *args])
    return {**json.loads(output.strip().splitlines()[-1]), "peak_pss_mb": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description="one measurement, run by benchmarks.performance")
    sub = parser.add_subparsers(dest="what", required=True)
    ingesting = sub.add_parser("ingest")
    ingesting.add_argument("folder", type=Path)
    ingesting.add_argument("out", type=Path)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(ingest_all(args.folder, args.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
