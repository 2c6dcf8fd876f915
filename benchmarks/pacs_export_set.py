"""Usage: python -m benchmarks.pacs_export_set OUT STUDIES SEED [LABELLED] [--sites] [--flair-only]
       [--last-site-without-diffusion]

A generated brain MRI export as a hospital's PACS writes one: ``DICOM/P<patient>/S<study>/SE<series>/I<n>``,
files without a suffix, two studies a patient. Each study holds a 3-plane localizer (one series, three
orientations, ImageType LOCALIZER), axial T2 and FLAIR series, a diffusion series of two b-values at the
same positions, an RGB screen save (secondary capture) and a structured report without pixels; 40% of
studies are abnormal (a bright patch on slices 4-8 of every series but the localizer). ``labels.csv`` is
keyed by accession number (``AccessionNumber,finding``) for the first LABELLED studies (default: all).
With ``--sites``, patients come from three sites (in turn) that describe the same series each in their own
words (``SITES``), the last of them, with ``--last-site-without-diffusion``, acquiring no diffusion
series. With ``--flair-only``, the patch shows on the FLAIR series alone (a lesion that only FLAIR
brings out), so a series read apart from its study's others shows nothing half the time. Names, birth dates
and ids are made up."""
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from benchmarks.common import dicom_instance

SLICES, SIZE = 12, 48
AXIAL = [1, 0, 0, 0, 1, 0]
PLANES = (AXIAL, [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])
# The T2, FLAIR and diffusion series' descriptions: a GE-like, a Siemens-like and a Philips-like site
SITES = (("AX T2", "AX FLAIR", "DWI"), ("t2_tse_tra", "t2_tirm_tra_dark-fluid", "ep2d_diff_tra"),
         ("Ax T2 FSE", "Ax T2 FLAIR", "DWI trace"))


def dataset(sop_class, study: dict, series: str, number: int, description: str) -> Dataset:
    ds = dicom_instance(sop_class)
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = study["patient"], f"DOE^{study['patient']}", "19600101"
    ds.AccessionNumber, ds.StudyInstanceUID = study["accession"], study["uid"]
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series, number, description
    ds.Modality, ds.BodyPartExamined = "MR", "BRAIN"
    return ds


def with_pixels(ds: Dataset, pixels: np.ndarray, position: list[float], orientation: list[int], number: int) -> Dataset:
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 4.0
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.InstanceNumber = position, orientation, number
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.clip(pixels, 0, 65535).astype(np.uint16).tobytes()
    return ds


def brain(rng, abnormal: bool, k: int, level: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    inside = (yy - 24) ** 2 + (xx - 24) ** 2 < (18 - abs(k - 6)) ** 2
    pixels = np.where(inside, level, 20.0) + rng.normal(0, 15, (SIZE, SIZE))
    if abnormal and 4 <= k <= 8:
        pixels[18:26, 26:34] += level * 0.8
    return pixels


def write_study(rng, root: Path, study: dict, abnormal: bool, site: int = 0, flair_only: bool = False,
                diffusion: bool = True) -> None:
    count = 0
    elsewhere = abnormal and not flair_only
    t2, flair, diffusion_description = SITES[site]

    def save(folder: str, ds: Dataset) -> None:
        nonlocal count
        count += 1
        (root / folder).mkdir(parents=True, exist_ok=True)
        ds.save_as(root / folder / f"I{count:05d}", enforce_file_format=True)

    series = generate_uid()
    for k, plane in enumerate(PLANES):
        ds = dataset(MRImageStorage, study, series, 1, "3-PLANE LOC")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        save("SE0001", with_pixels(ds, brain(rng, False, 6, 200), [0.0, 0.0, 0.0], plane, k + 1))
    for number, description, level, shows in ((2, t2, 400, elsewhere), (3, flair, 300, abnormal)):
        series = generate_uid()
        for k in range(SLICES):
            ds = dataset(MRImageStorage, study, series, number, description)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            save(f"SE{number:04d}", with_pixels(ds, brain(rng, shows, k, level), [0.0, 0.0, 4.0 * k], AXIAL, k + 1))
    series = generate_uid()
    for volume, (b_value, level) in enumerate(((0, 300), (1000, 120)) if diffusion else ()):
        for k in range(SLICES):
            ds = dataset(MRImageStorage, study, series, 4, diffusion_description)
            ds.DiffusionBValue = b_value
            save("SE0004", with_pixels(ds, brain(rng, elsewhere, k, level), [0.0, 0.0, 4.0 * k], AXIAL,
                                       volume * SLICES + k + 1))
    ds = dataset(SecondaryCaptureImageStorage, study, generate_uid(), 99, "SCREEN SAVE")
    ds.Modality, ds.Rows, ds.Columns = "OT", 64, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()
    save("SE0099", ds)
    report = dataset(BasicTextSRStorage, study, generate_uid(), 100, "REPORT")
    report.Modality = "SR"
    save("SE0100", report)


def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    sites = 3 if "--sites" in sys.argv else 1
    out, studies = Path(args[0]), int(args[1])
    rng = np.random.default_rng(int(args[2]))
    labelled = int(args[3]) if len(args) > 3 else studies
    lines = ["AccessionNumber,finding"]
    for s in range(studies):
        study = {"patient": f"MRN{1000 + s // 2}", "accession": f"ACC{50000 + s}", "uid": generate_uid()}
        abnormal = bool(rng.random() < 0.4)
        write_study(rng, out / "DICOM" / f"P{s // 2:04d}" / f"S{s % 2:04d}", study, abnormal, site=s // 2 % sites,
                    flair_only="--flair-only" in sys.argv,
                    diffusion=not ("--last-site-without-diffusion" in sys.argv and s // 2 % sites == sites - 1))
        if s < labelled:
            lines.append(f"{study['accession']},{'abnormal' if abnormal else 'normal'}")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
