"""DICOM: single-file images, multi-frame files and slice series read through pydicom, the same
volume as a series and as NIfTI giving the same tensor and probability, every bad DICOM an error
row, and no patient name anywhere in what the pipeline writes."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from pipeline import dicom as dicom_module
from pipeline.agreement import folder_truth
from pipeline.cli import main
from pipeline.config import NetworkConfig, PreprocessConfig
from pipeline.data import build_preprocess
from pipeline.networks import network_factory
from pipeline.reading import ScanReadError, is_scan_file, list_files, load_scan, series_slices
from pipeline.stages.ingest import folder_changes, ingest

PATIENT_NAME = "Doe^Jane"  # must never appear in any output
SLOPE, INTERCEPT = 2.0, -1024.0


def dicom_dataset(pixels: np.ndarray, sop_class=CTImageStorage, patient_id="PAT-0001", **tags) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, patient_id, "19600101"
    ds.AccessionNumber, ds.InstitutionName = "ACC-77", "Saint Nobody Hospital"
    ds.Modality, ds.BodyPartExamined = tags.pop("Modality", "CT"), "HEAD"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = tags.pop("study", generate_uid()), tags.pop("series", generate_uid())
    ds.SeriesNumber = 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, tags.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    return ds


def write_series(folder: Path, stored: np.ndarray, affine_ras: np.ndarray, patient_id="PAT-0001",
                 order=None) -> list[Path]:
    """Slices stored[:, :, k] of a volume whose voxel -> RAS affine is ``affine_ras``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing_r, spacing_c = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    column_cosine, row_cosine = lps[:3, 0] / spacing_r, lps[:3, 1] / spacing_c
    study, series = generate_uid(), generate_uid()
    paths = []
    n = stored.shape[2]
    for position, k in enumerate(order if order is not None else range(n)):
        ds = dicom_dataset(stored[:, :, k], patient_id=patient_id, study=study, series=series,
                           InstanceNumber=n - k,  # numbered against the position order
                           ImagePositionPatient=[float(v) for v in lps[:3, 3] + k * lps[:3, 2]],
                           ImageOrientationPatient=[float(v) for v in (*row_cosine, *column_cosine)],
                           PixelSpacing=[float(spacing_r), float(spacing_c)], SliceThickness=float(np.linalg.norm(lps[:3, 2])))
        path = folder / f"IM{position:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def head(seed=0, shape=(20, 22, 12)):
    """Stored int16 values of a smooth phantom, and its modality values (slope and intercept applied)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    stored = (600 + 400 * np.exp(-(grid**2).sum(0) * 2) + rng.normal(0, 20, shape)).astype(np.int16)
    return stored, stored.astype(np.float32) * SLOPE + INTERCEPT


AFFINE = np.array([[-0.9, 0, 0, 10.0], [0, 0.95, 0, -20.0], [0, 0, 1.6, 5.0], [0, 0, 0, 1]])


def test_a_series_and_the_same_volume_as_nifti_give_the_same_tensor_and_probability(tmp_path):
    stored, values = head()
    order = list(np.random.default_rng(1).permutation(stored.shape[2]))  # files in no particular order
    write_series(tmp_path / "series", stored, AFFINE, order=order)
    nib.save(nib.Nifti1Image(values, AFFINE), tmp_path / "same.nii.gz")
    series = load_scan(tmp_path / "series")
    assert series.is_volume and series.array.shape == stored.shape
    np.testing.assert_allclose(series.array, values)  # slices ordered by position, rescale applied
    np.testing.assert_allclose(series.affine, AFFINE, atol=1e-5)
    assert series.info["modality"] == "CT" and series.info["patient_group"].startswith("patient-")
    config = PreprocessConfig(spatial_size=[16, 16, 16], intensity="percentile", target_spacing=[1.2, 1.2, 1.2])
    chain = build_preprocess(config)
    a = chain({"image": str(tmp_path / "series")})["image"]
    b = chain({"image": str(tmp_path / "same.nii.gz")})["image"]
    assert float((a - b).abs().max()) < 1e-4
    torch.manual_seed(0)
    net = network_factory(NetworkConfig(channels=[4, 8]), 1, [16, 16, 16], 2)().eval()
    with torch.no_grad():
        p = torch.softmax(net(torch.stack([a, b])), 1)
    assert float((p[0] - p[1]).abs().max()) < 1e-4


def test_single_images_multiframe_files_and_monochrome1(tmp_path):
    pixels = np.arange(30, dtype=np.int16).reshape(5, 6) * 10
    dicom_dataset(pixels, DigitalXRayImageStorageForPresentation, Modality="DX",
                  PhotometricInterpretation="MONOCHROME1").save_as(tmp_path / "chest", enforce_file_format=True)
    image = load_scan(tmp_path / "chest")  # no suffix: recognised by its DICM preamble
    assert is_scan_file(tmp_path / "chest") and not image.is_volume
    values = pixels * SLOPE + INTERCEPT
    np.testing.assert_allclose(image.array, values.max() + values.min() - values)  # inverted: bright is dense
    frames = np.stack([pixels + 100 * k for k in range(4)])
    ds = dicom_dataset(frames, NumberOfFrames=4, PixelSpacing=[0.5, 0.5], SpacingBetweenSlices=2.0,
                       ImageOrientationPatient=[1, 0, 0, 0, 1, 0], ImagePositionPatient=[0, 0, 0])
    ds.save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    volume = load_scan(tmp_path / "cine.dcm")
    assert volume.is_volume and volume.array.shape == (5, 6, 4) and volume.spacing == (0.5, 0.5, 2.0)
    np.testing.assert_allclose(volume.array[:, :, 3], (pixels + 300) * SLOPE + INTERCEPT)


def enhanced_file(path: Path, stored: np.ndarray, affine_ras: np.ndarray, order, volumes=None, b_values=None,
                  sop_class=EnhancedCTImageStorage) -> Path:
    """An enhanced file of ``stored``'s slices in ``order``: its geometry and rescale in functional groups.
    With ``volumes`` (a volume index for each frame), ``stored`` holds volumes on a fourth axis; with
    ``b_values`` (one for each frame), each frame's diffusion group gives its b-value."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing_r, spacing_c = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    pixels = (np.stack([stored[:, :, k, v] for k, v in zip(order, volumes)]) if volumes is not None
              else np.moveaxis(stored[:, :, order], 2, 0))
    ds = dicom_dataset(pixels, sop_class, NumberOfFrames=len(order))
    del ds.RescaleSlope, ds.RescaleIntercept  # in the functional groups instead
    measures, facing, values = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [float(spacing_r), float(spacing_c)], 1.6
    facing.ImageOrientationPatient = [float(v) for v in (*lps[:3, 1] / spacing_c, *lps[:3, 0] / spacing_r)]
    values.RescaleSlope, values.RescaleIntercept, values.RescaleType = SLOPE, INTERCEPT, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [facing]
    shared.PixelValueTransformationSequence = [values]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for index, k in enumerate(order):
        frame, place = Dataset(), Dataset()
        place.ImagePositionPatient = [float(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        frame.PlanePositionSequence = [place]
        if b_values is not None:
            diffusion = Dataset()
            diffusion.DiffusionBValue = b_values[index]
            frame.MRDiffusionSequence = [diffusion]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.save_as(path, enforce_file_format=True)
    return path


def test_several_volumes_in_one_enhanced_file_are_one_scan_of_a_channel_each(tmp_path):
    # Enhanced MR diffusion: b0 and b1000 at each position, frames in no particular order; as a 4D NIfTI
    stored, values = head(shape=(20, 22, 6))
    stored4 = np.stack([stored, stored // 2], axis=-1)
    values4 = stored4.astype(np.float32) * SLOPE + INTERCEPT
    frames = [(3, 1), (0, 0), (5, 1), (1, 0), (4, 0), (2, 1), (0, 1), (5, 0), (1, 1), (3, 0), (2, 0), (4, 1)]
    order, volumes = [k for k, _ in frames], [v for _, v in frames]
    b_values = [(0, 1000)[v] for v in volumes]
    dwi = load_scan(enhanced_file(tmp_path / "dwi.dcm", stored4, AFFINE, order, volumes, b_values))
    single = load_scan(enhanced_file(tmp_path / "b0.dcm", stored, AFFINE, [3, 0, 5, 1, 4, 2]))
    assert dwi.is_volume and dwi.array.shape == (20, 22, 6, 2)
    np.testing.assert_allclose(dwi.array, values4)  # b0 the first channel, b1000 the second, each by position
    np.testing.assert_allclose(dwi.affine, single.affine, atol=1e-5)
    # b-values given in the reverse order of the frames still put b0 first
    reverse = load_scan(enhanced_file(tmp_path / "reverse.dcm", stored4, AFFINE, order, volumes,
                                      [(1000, 0)[v] for v in volumes]))
    np.testing.assert_allclose(reverse.array, values4[..., ::-1])
    # nothing to tell the volumes apart but the frames' order: a volume per occurrence at each position
    echoes = load_scan(enhanced_file(tmp_path / "echoes.dcm", stored4, AFFINE, [0, 1, 2, 3, 4, 5] * 2,
                                     [0] * 6 + [1] * 6))
    np.testing.assert_allclose(echoes.array, values4)
    # more volumes than a scan's channels are read as (a diffusion run's directions): an error row saying so
    many = np.stack([stored + v for v in range(9)], axis=-1)
    with pytest.raises(ScanReadError, match="9 volumes in one file"):
        load_scan(enhanced_file(tmp_path / "directions.dcm", many, AFFINE, list(range(6)) * 9,
                                [v for v in range(9) for _ in range(6)]))
    # ingested, planned and preprocessed as one scan of two channels
    (tmp_path / "scans").mkdir()
    for name in ("a", "b", "c"):
        enhanced_file(tmp_path / "scans" / f"{name}.dcm", stored4, AFFINE, order, volumes, b_values)
    found = ingest(tmp_path / "scans", manifest_dir=tmp_path / "m", workers=1)
    assert set(found.manifest["shape"]) == {"20x22x6x2"} and (found.manifest["status"] == "ok").all()
    from pipeline import fingerprint as fingerprinting

    fingerprint = fingerprinting.fingerprint(found.manifest.assign(subset="unlabelled"), ["a"])
    assert fingerprint["spatial_dims"] == 3 and fingerprinting.planned_channels(fingerprint) == 2
    tensor = build_preprocess(PreprocessConfig(spatial_size=[8, 8, 8], channels=2))(
        {"image": str(tmp_path / "scans" / "a.dcm")})["image"]
    assert tuple(tensor.shape) == (2, 8, 8, 8) and not torch.equal(tensor[0], tensor[1])


def test_an_enhanced_multiframe_volume_and_a_cine_loop(tmp_path):
    # Enhanced CT: frames in no particular order, geometry and Hounsfield rescale in functional groups
    stored, values = head(shape=(20, 22, 6))
    order = [3, 0, 5, 1, 4, 2]
    volume = load_scan(enhanced_file(tmp_path / "enhanced.dcm", stored, AFFINE, order))
    write_series(tmp_path / "series", stored, AFFINE)
    series = load_scan(tmp_path / "series")
    assert volume.is_volume and volume.array.shape == (20, 22, 6)
    np.testing.assert_allclose(volume.array, values)  # ordered by position, rescaled
    np.testing.assert_allclose(volume.affine, series.affine, atol=1e-5)
    np.testing.assert_allclose(volume.spacing, series.spacing, atol=1e-5)
    # positions that do not part into volumes of the same positions are refused, saying so
    with pytest.raises(ScanReadError, match="several volumes in one file"):
        load_scan(enhanced_file(tmp_path / "echoes.dcm", stored, AFFINE, [0, 1, 2, 0, 1]))
    # an ultrasound cine loop is frames in time: its middle frame is a 2D image, in grey or colour
    frames = np.stack([np.full((5, 6), 10 * k, np.int16) for k in range(4)])
    dicom_dataset(frames, UltrasoundMultiFrameImageStorage, Modality="US", NumberOfFrames=4).save_as(
        tmp_path / "cine.dcm", enforce_file_format=True)
    cine = load_scan(tmp_path / "cine.dcm")
    assert not cine.is_volume and cine.array.shape == (5, 6)
    np.testing.assert_allclose(cine.array, 20 * SLOPE + INTERCEPT)
    colour = dicom_dataset(np.zeros((5, 6), np.int16), UltrasoundMultiFrameImageStorage, Modality="US",
                           NumberOfFrames=4, PhotometricInterpretation="RGB")
    colour.SamplesPerPixel, colour.PlanarConfiguration = 3, 0
    colour.BitsAllocated, colour.BitsStored, colour.HighBit, colour.PixelRepresentation = 8, 8, 7, 0
    del colour.RescaleSlope, colour.RescaleIntercept
    colour.PixelData = np.stack([np.full((5, 6, 3), 40 * k, np.uint8) for k in range(4)]).tobytes()
    colour.save_as(tmp_path / "colour_cine.dcm", enforce_file_format=True)
    picture = load_scan(tmp_path / "colour_cine.dcm")
    assert not picture.is_volume and picture.array.shape[:2] == (5, 6) and picture.array.max() == 80


def test_every_bad_dicom_is_an_error_naming_the_problem(tmp_path):
    stored, _ = head(shape=(8, 8, 6))
    good = write_series(tmp_path / "complete", stored, AFFINE)
    assert load_scan(tmp_path / "complete").array.shape == (8, 8, 6)
    (tmp_path / "corrupt.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 3)
    (tmp_path / "truncated.dcm").write_bytes(good[0].read_bytes()[:-40])
    gap = write_series(tmp_path / "gap", stored, AFFINE)
    gap[3].unlink()
    mixed = write_series(tmp_path / "mixed", stored, AFFINE)
    tilted = dicom_dataset(stored[:, :, 0], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6],
                           ImagePositionPatient=[0, 0, 99], PixelSpacing=[1, 1])
    import pydicom

    tilted.SeriesInstanceUID = pydicom.dcmread(mixed[0]).SeriesInstanceUID
    tilted.save_as(tmp_path / "mixed" / "odd.dcm", enforce_file_format=True)
    no_pixels = dicom_dataset(stored[:, :, 0])
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    # A segmentation carries pixels (its masks, frame by frame) that would pass as a volume.
    segmentation = dicom_dataset(np.stack([stored[:, :, 0] > 700] * 3).astype(np.int16), Modality="SEG",
                                 NumberOfFrames=3)
    segmentation.save_as(tmp_path / "lesion_seg.dcm", enforce_file_format=True)
    expected = {"corrupt.dcm": "not a readable DICOM file", "truncated.dcm": "cannot decode pixel data",
                "gap": "a slice is missing", "lesion_seg.dcm": r"DICOM SEG object \(a segmentation\), not a scan",
                "mixed": "mixed orientations", "report.dcm": "without pixel data"}
    for name, reason in expected.items():
        with pytest.raises(ScanReadError, match=reason):
            load_scan(tmp_path / name)


def test_compressed_transfer_syntaxes_decode_through_the_pylibjpeg_plugins():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPEG2000.dcm")
    if path is None:
        pytest.skip("pydicom's test files are not in this wheel")
    scan = load_scan(path)
    assert scan.array.ndim == 2 and np.isfinite(scan.array).all() and scan.array.std() > 0


def mixed_folder(root: Path) -> Path:
    """DICOM series, single DICOM, NIfTI, PNG, JPEG, 16-bit TIFF and BMP, 2D in the majority."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        label = "abnormal" if i % 2 else "normal"
        picture = (rng.random((24, 24)) * 90).astype(np.uint8)
        if label == "abnormal":
            picture[8:16, 8:16] = 230
        kind = ["png", "jpg", "tif", "bmp", "dcm", "jpg"][i % 6]
        name = f"{label}/s{i}.{kind}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "tif":
            Image.fromarray(picture.astype(np.uint16) * 250).save(path)
        elif kind == "dcm":
            dicom_dataset(picture.astype(np.int16), DigitalXRayImageStorageForPresentation, Modality="DX",
                          patient_id=f"PAT-{i}").save_as(path, enforce_file_format=True)
        else:
            Image.fromarray(picture).save(path)
        rows.append({"file": name, "label": label})
    stored, values = head()
    write_series(root / "normal" / "ct_series", stored, AFFINE)
    nib.save(nib.Nifti1Image(values, AFFINE), root / "normal" / "ct.nii.gz")
    for suffix in ("png", "jpg"):  # two scans that differ only by their suffix
        Image.fromarray((rng.random((24, 24)) * 90).astype(np.uint8)).save(root / "normal" / f"Y92.{suffix}")
    # bad input: each an error row, the rest of the folder scored
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "normal" / "blank.png")
    (root / "normal" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)))
    no_pixels = dicom_dataset(np.zeros((4, 4), np.int16))
    del no_pixels.PixelData
    no_pixels.save_as(root / "normal" / "report.dcm", enforce_file_format=True)
    pages = [Image.fromarray(np.full((5, 5), v, np.uint8)) for v in (10, 200)]
    pages[0].save(root / "normal" / "stack.tif", save_all=True, append_images=pages[1:])
    gap = write_series(root / "abnormal" / "gap_series", *head(seed=3, shape=(8, 8, 6))[:1], AFFINE)
    gap[2].unlink()
    rows += [{"file": "normal/ct_series", "label": "normal"}, {"file": "normal/Y92.jpg", "label": "normal"},
             {"file": "normal/Y92.png", "label": "normal"}]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_a_mixed_folder_ingests_trains_and_scores_one_row_per_scan(tmp_path, monkeypatch):
    scans = mixed_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    entries = list_files(scans)
    assert scans / "normal" / "ct_series" in entries and not any(p.name.startswith("IM") for p in entries)
    result = ingest(scans, out=tmp_path / "data_manifests" / "scans.csv")
    manifest = result.manifest.set_index("scan_id")
    assert "normal/ct_series" in manifest.index and manifest.loc["normal/ct_series", "shape"] == "20x22x12"
    assert manifest.loc["normal/ct_series", "label"] == "normal"  # a labels row may name a series folder
    assert "a slice is missing" in manifest.loc["abnormal/gap_series", "error"]
    assert manifest.loc["normal/s4.dcm", "modality"] == "DX"
    assert manifest.loc["normal/s4.dcm", "group"].startswith("patient-")  # hashed PatientID
    assert {"normal/Y92.jpg", "normal/Y92.png"} <= set(manifest.index)  # two scans, not a clash
    assert main(["run", "--scans", str(scans), "--positive", "abnormal", "--labels-per-class", "3", "--quiet",
                 "split.test_fraction=0.25", "network.channels=[4,8]", "train.minutes=0", "train.steps=8",
                 "train.eval_every=4"]) == 0
    run = Path((tmp_path / "runs" / "LATEST").read_text().strip())
    assert main(["score", str(scans), "--model", str(run), "--out", str(tmp_path / "report.csv"), "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "report.csv").set_index("scan_id")
    # the folder's labels are read, not scored; a 2D model scores each slice of a series
    scanned = [p for p in list_files(scans, series=False) if p != scans / "labels.csv"]
    assert len(report) == len(scanned) == len(entries) - 1 + 12 - 1 + 5 - 1 and report.index.is_unique
    assert report.loc["normal/s0.png", "folder_label"] == "normal"  # and set beside each prediction
    assert report.loc["normal/s0.png", "status"] == "ok" and report.loc["normal/s4.dcm", "status"] == "ok"
    assert report.loc["abnormal/s3.bmp", "status"] == "ok" and report.loc["normal/s2.tif", "status"] == "ok"
    assert report.loc["normal/ct.nii.gz", "status"] == "error"  # a volume given to the 2D model
    assert (report.loc[[f"normal/ct_series/IM{k:04d}.dcm" for k in range(12)], "status"] == "ok").all()
    assert report.loc["normal/Y92.jpg", "status"] == "ok" and report.loc["normal/Y92.png", "status"] == "ok"
    reasons = report["error"].fillna("")
    assert "constant image" in reasons["normal/blank.png"]
    assert "not a readable DICOM file" in reasons["normal/broken.dcm"]
    assert "without pixel data" in reasons["normal/report.dcm"]
    assert "multi-page TIFF" in reasons["normal/stack.tif"]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(scans)]
    for path in written:
        if path.suffix in (".csv", ".json", ".html", ".txt", ".toml"):
            text = path.read_text(errors="ignore")
            for secret in (PATIENT_NAME, "PAT-0001", "19600101", "ACC-77", "Saint Nobody"):
                assert secret not in text, f"{secret} leaked into {path}"
    assert json.loads((run / "plan.json").read_text())["fingerprint"]["spatial_dims"] == 2


def test_a_study_folder_of_two_series_gives_two_scans_labelled_by_the_folder(tmp_path):
    # A patient's T1 and T2 in one folder, and a labels file that names the patient's folder.
    scans = tmp_path / "scans"
    for patient in ("P0", "P1"):
        for index in range(2):
            stored, _ = head(seed=10 * int(patient[1]) + index)
            for slice_file in write_series(tmp_path / f"tmp{patient}{index}", stored, AFFINE, patient_id=patient):
                (scans / patient).mkdir(parents=True, exist_ok=True)
                slice_file.rename(scans / patient / f"S{index}_{slice_file.name}")
    write_series(scans / "P2" / "study" / "T1", head(seed=7)[0], AFFINE, patient_id="P2")  # nested deeper
    (scans / "labels.csv").write_text("file,label\nP0,healthy\nP1,lesion\nP2,lesion\n")
    result = ingest(scans, out=tmp_path / "m.csv")
    manifest = result.manifest
    assert len(manifest) == 5 and (manifest["status"] == "ok").all()  # one series is no copy of the other
    assert manifest["sha256"].nunique() == 5
    assert manifest.groupby(manifest["scan_id"].str[:2])["label"].agg(set).to_dict() == {
        "P0": {"healthy"}, "P1": {"lesion"}, "P2": {"lesion"}}
    assert "P2/study/T1" in set(manifest["scan_id"])
    assert result.problems.empty


def test_slices_a_labels_file_names_one_by_one_are_scans_and_a_series_it_does_not_stays_one(tmp_path):
    # RSNA intracranial haemorrhage: every CT slice of every series in one folder, ID_<hex>.dcm, labelled alone
    scans = tmp_path / "stage_2_train"
    rows, labels = [], {}
    for index, patient in enumerate(["P0", "P1", "P2"]):
        slices = write_series(tmp_path / f"tmp{index}", head(seed=index, shape=(16, 16, 4))[0], AFFINE, patient_id=patient)
        for k, slice_file in enumerate(slices):
            scans.mkdir(exist_ok=True)
            name = f"ID_{index}{k}abc"
            slice_file.rename(scans / f"{name}.dcm")
            if patient != "P2":  # P2's series has no labels: one scan, unlabelled
                labels[f"{name}.dcm"] = "subdural" if index == 1 and k >= 2 else "no finding"
                rows += [f"{name}_subdural,{int(labels[f'{name}.dcm'] == 'subdural')}", f"{name}_epidural,0",
                         f"{name}_any,{int(labels[f'{name}.dcm'] == 'subdural')}"]
    (tmp_path / "stage_2_train.csv").write_text("ID,Label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m.csv"
    result = ingest(scans, labels=tmp_path / "stage_2_train.csv", out=out, workers=1)
    manifest = result.manifest.set_index("scan_id")
    assert manifest["label"].drop(labels="#" + manifest.loc[manifest.index.str.startswith("#"), "series_uid"].iloc[0]
                                  ).to_dict() == labels
    assert manifest.loc[list(labels), "shape"].eq("16x16").all()  # each slice a 2D scan
    series = manifest[manifest.index.str.startswith("#")]
    assert len(series) == 1 and series["shape"].iloc[0] == "16x16x4" and not series["label"].iloc[0]
    assert manifest.loc[list(labels), "group"].nunique() == 2  # slices of a patient stay together
    assert result.problems.empty
    assert folder_changes(scans, out) is None  # the slices listed are the folder as it is


def test_a_folder_of_several_series_has_its_headers_read_once_and_again_when_a_slice_changes(tmp_path, monkeypatch):
    # a hospital export: every series of a study in one folder
    folder = tmp_path / "export"
    for index in range(4):
        for slice_file in write_series(tmp_path / f"tmp{index}", head(seed=index, shape=(8, 8, 5))[0], AFFINE):
            folder.mkdir(exist_ok=True)
            slice_file.rename(folder / f"S{index}_{slice_file.name}")
    reads = []
    real_read = dicom_module.read_header
    monkeypatch.setattr(dicom_module, "read_header", lambda path: reads.append(path) or real_read(path))
    result = ingest(folder, out=tmp_path / "m.csv", workers=1)
    assert len(result.manifest) == 4 and (result.manifest["status"] == "ok").all()
    assert len(reads) <= 3 * 20  # listing, and once more for all four series: not the folder again for each
    # a slice written again in place (its folder's listing unchanged) is read again
    first = sorted(folder.glob("S0_*.dcm"))[0]
    moved = pydicom.dcmread(first)
    moved.ImagePositionPatient = [float(v) + 100 for v in moved.ImagePositionPatient]
    moved.save_as(first, enforce_file_format=True)
    uid = str(moved.SeriesInstanceUID)
    assert str(first) in {header.path for header in series_slices(folder, uid)}
    assert [h.position for h in series_slices(folder, uid) if h.path == str(first)] == [
        tuple(float(v) for v in moved.ImagePositionPatient)]


@pytest.mark.parametrize("header, values", [
    ("patient_id,label", ["PAT-A", "PAT-B", "PAT-C", "PAT-Z"]),
    ("Accession Number,finding", ["ACC-1", "ACC-2", "ACC-3", "ACC-9"]),
    ("patient_id,accession,finding", ["PAT-A,ACC-1", "PAT-B,ACC-2", "PAT-C,ACC-3", "PAT-Z,ACC-9"]),  # by exam
    ("StudyInstanceUID,diagnosis", ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.9"]),
])
def test_labels_keyed_by_a_header_value_label_the_dicom_scans_that_have_it(tmp_path, header, values):
    # a hospital's labels by patient, accession number or study; its files named by UIDs
    scans = tmp_path / "export"
    rng = np.random.default_rng(0)
    for index in range(3):
        for _ in range(2):
            path = scans / f"{generate_uid()}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            dicom_dataset(rng.integers(0, 1000, (16, 16)), DigitalXRayImageStorageForPresentation,
                          patient_id=f"PAT-{'ABC'[index]}", AccessionNumber=f"ACC-{index + 1}",
                          study=f"1.2.3.{index + 1}", Modality="DX").save_as(path, enforce_file_format=True)
    labels = tmp_path / "labels.csv"
    labels.write_text(header + "\n" + "".join(f"{value},{label}\n" for value, label in
                                               zip(values, ["normal", "abnormal", "normal", "abnormal"])))
    result = ingest(scans, labels=labels, out=tmp_path / "m.csv", workers=1)
    manifest = result.manifest
    assert sorted(manifest["label"]) == ["abnormal"] * 2 + ["normal"] * 4
    assert manifest.groupby("group")["label"].nunique().eq(1).all() and manifest["group"].nunique() == 3
    # the row no scan has is named by its line; the values themselves never leave the labels file
    assert result.problems["item"].tolist() == ["labels.csv line 5"]
    # score's check against the labels of an external, labelled folder matches them so too
    truth, source, _ = folder_truth(scans, [path.name for path in scans.iterdir()], ["abnormal", "normal"],
                                    labels_file=labels)
    assert source == "labels.csv" and truth == dict(zip(manifest["scan_id"], manifest["label"]))
    written = (tmp_path / "m.csv").read_text() + (tmp_path / "m.problems.csv").read_text()
    assert not any(part in written for value in values for part in value.split(",") if not value.startswith("1.2.3"))


def test_verdicts_merge_into_labels_keyed_by_a_header_value(tmp_path):
    from pipeline.verdicts import merge_verdicts

    scans = tmp_path / "export"
    scans.mkdir()
    rng = np.random.default_rng(1)
    for index in range(4):
        dicom_dataset(rng.integers(0, 1000, (16, 16)), DigitalXRayImageStorageForPresentation, Modality="DX",
                      AccessionNumber=f"ACC-{index}").save_as(scans / f"{index}.dcm", enforce_file_format=True)
    labels = tmp_path / "labels.csv"
    labels.write_text("accession,label\nACC-0,normal\nACC-1,abnormal\n")
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text("file,label,verdict\n2.dcm,abnormal,relabelled\n")
    merged = merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels)
    assert "ACC-" not in merged.read_text()  # the rows keep their hashed keys, not the accession numbers
    manifest = ingest(scans, labels=merged, out=tmp_path / "m.csv", workers=1).manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {"0.dcm": "normal", "1.dcm": "abnormal", "2.dcm": "abnormal", "3.dcm": ""}


def write_study_series(folder: Path, slices: list[dict], study: str, patient_id="PAT-0001") -> None:
    """One series of a study: a slice per dict of its tags (ImagePositionPatient, ImageOrientationPatient,
    pixel value ``value``, and any other), numbered in order."""
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for number, tags in enumerate(slices, start=1):
        tags = {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [1.0, 1.0], **tags}
        pixels = np.full((8, 9), tags.pop("value", 100), np.int16) + np.arange(9, dtype=np.int16)
        ds = dicom_dataset(pixels, Modality="MR", patient_id=patient_id, study=study, series=series,
                           InstanceNumber=number, **tags)
        ds.save_as(folder / f"I{number:04d}", enforce_file_format=True)  # no suffix, as exports name them


def hospital_study(study_folder: Path, study: str) -> None:
    """A brain MRI study as a PACS export holds it: a 3-plane localizer, an axial series, a diffusion
    series of two b-values, a series of two echoes with no tag to tell them apart, and a series with one
    slice stored twice."""
    planes = ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])
    write_study_series(study_folder / "SE1", [{"ImagePositionPatient": [0.0, 0.0, 0.0], "ImageOrientationPatient": p,
                                               "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]} for p in planes], study)
    at = [{"ImagePositionPatient": [0.0, 0.0, 3.0 * k]} for k in range(5)]
    write_study_series(study_folder / "SE2", [{**place, "ImageType": ["ORIGINAL", "PRIMARY", "M"]} for place in at],
                       study)
    write_study_series(study_folder / "SE3", [{**place, "DiffusionBValue": b, "value": 400 if b else 100}
                                              for b in (0, 1000) for place in at], study)
    write_study_series(study_folder / "SE4", [{**place, "value": 100 * echo} for echo in (1, 2) for place in at],
                       study)
    write_study_series(study_folder / "SE5", [*at, at[2]], study)


def test_a_hospital_export_gives_a_scan_per_volume_and_leaves_the_localizer_out(tmp_path):
    scans = tmp_path / "export"
    hospital_study(scans / "P0" / "ST0", generate_uid())
    (scans / "labels.csv").write_text("file,label\nP0,lesion\n")
    result = ingest(scans, out=tmp_path / "m.csv")
    manifest = result.manifest.set_index("scan_id")
    ok = manifest[manifest["status"] == "ok"]
    assert set(ok.index) == {"P0/ST0/SE2", "P0/ST0/SE3/@b0", "P0/ST0/SE3/@b1000", "P0/ST0/SE4/@volume1",
                             "P0/ST0/SE4/@volume2"}
    assert (ok["shape"] == "8x9x5").all() and (ok["label"] == "lesion").all() and ok["sha256"].nunique() == 5
    assert "a localizer (scout) series: 3 slices in 3 orientations" in manifest.loc["P0/ST0/SE1", "error"]
    assert "two slices at the same position" in manifest.loc["P0/ST0/SE5", "error"]
    # each volume holds its own slices: b1000's are the bright ones, the second echo's twice the first's
    assert load_scan(scans / "P0/ST0/SE3/@b1000").array.min() == 400 * SLOPE + INTERCEPT
    assert load_scan(scans / "P0/ST0/SE3/@b0").array.max() == (100 + 8) * SLOPE + INTERCEPT
    assert load_scan(scans / "P0/ST0/SE4/@volume2").array.min() == 200 * SLOPE + INTERCEPT
    with pytest.raises(ScanReadError, match="no volume 'b500'"):
        load_scan(scans / "P0/ST0/SE3/@b500")


def test_a_series_of_several_volumes_in_a_folder_of_several_series_is_named_by_its_uid(tmp_path):
    study = generate_uid()
    hospital_study(tmp_path / "study", study)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((tmp_path / "study").rglob("I*")):
        path.rename(flat / f"{path.parent.name}_{path.name}")  # every series' slices in one folder
    found = {path.name for path in list_files(flat)}
    dwi = pydicom.dcmread(flat / "SE3_I0001").SeriesInstanceUID
    assert {f"#{dwi}@b0", f"#{dwi}@b1000"} <= found
    assert load_scan(flat / f"#{dwi}@b1000").array.shape == (8, 9, 5)


def test_a_single_image_localizer_is_left_out(tmp_path):
    # a CT topogram: one image, taken to plan the scan
    dicom_dataset(np.ones((8, 8)), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]).save_as(
        tmp_path / "topogram.dcm", enforce_file_format=True)
    with pytest.raises(ScanReadError, match="localizer"):
        load_scan(tmp_path / "topogram.dcm")


def test_score_gives_a_row_per_study_of_dicom_series(tmp_path):
    from pipeline.cases import case_rows, study_cases

    scans = tmp_path / "export"
    first, second = generate_uid(), generate_uid()
    hospital_study(scans / "P0" / "ST0", first)
    write_study_series(scans / "P0" / "ST1" / "SE2", [{"ImagePositionPatient": [0.0, 0.0, 3.0 * k]} for k in range(4)],
                       second)
    for name in ("a.dcm", "b.dcm"):  # a chest study's two images, each a file of its own, loose in the folder
        dicom_dataset(np.ones((8, 8)), study=second).save_as(
            scans / name, enforce_file_format=True)
    ids = [path.relative_to(scans).as_posix() for path in list_files(scans)]
    found = study_cases(scans, ids)
    assert found["P0/ST0/SE3/@b1000"] == ("P0/ST0", "SE3/@b1000") and found["P0/ST0/SE2"] == ("P0/ST0", "SE2")
    assert found["a.dcm"][0] == found["P0/ST1/SE2"][0] == dicom_module.opaque_id("study", second)  # no shared folder
    assert found["P0/ST1/SE2"][1] == "P0/ST1/SE2"
    report = pd.DataFrame({"scan_id": ids, "status": "ok", "p_lesion": np.linspace(0, 1, len(ids)),
                           "prediction": ["lesion" if p > 0.5 else "healthy" for p in np.linspace(0, 1, len(ids))]})
    rows = case_rows(report, "lesion", found).set_index("case")
    assert len(rows) == 2 and rows.loc[dicom_module.opaque_id("study", second), "views"] == 3
    assert case_rows(report, "lesion").empty  # by their names alone these are no case's views


def test_cases_of_ingested_scans_take_their_study_from_the_manifest_without_reading_headers(tmp_path, monkeypatch):
    import pipeline.cases as cases
    from pipeline.manifest import study_uids

    scans = tmp_path / "export"
    for patient in ("P0", "P1"):
        hospital_study(scans / patient / "ST0", generate_uid())
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(scans / "photo.png")
    manifest = ingest(scans, out=tmp_path / "m.csv").manifest
    ids = list(manifest.loc[manifest["status"] == "ok", "scan_id"])
    expected = cases.case_keys(scans, ids)
    assert expected.count("P0/ST0") >= 2 and expected[ids.index("photo.png")] is None
    monkeypatch.setattr(cases, "_study_uid", lambda path: pytest.fail(f"read the header of {path} again"))
    assert cases.case_keys(scans, ids, study_uids(tmp_path / "m.csv")) == expected
    # a manifest written before the study_uid column: the headers are read
    manifest.drop(columns="study_uid").to_csv(tmp_path / "old.csv", index=False)
    assert study_uids(tmp_path / "old.csv") == {} and study_uids(tmp_path / "none.csv") == {}


def test_studies_side_by_side_in_one_folder_are_cases_apart_and_a_study_of_one_scan_is_none(tmp_path):
    from pipeline.cases import study_cases

    # a day's folder of radiographs, a study each (RSNA's pneumonia DICOMs), and two studies of two views each
    scans = tmp_path / "export"
    day = scans / "day1"
    day.mkdir(parents=True)
    for index in range(4):
        dicom_dataset(np.ones((8, 8)) * index).save_as(day / f"single{index}.dcm", enforce_file_format=True)
    studies = [generate_uid(), generate_uid()]
    for i, study in enumerate(studies):
        for view in ("fro", "lat"):
            dicom_dataset(np.ones((8, 8)), study=study).save_as(day / f"s{i}_{view}.dcm", enforce_file_format=True)
    ids = [path.relative_to(scans).as_posix() for path in list_files(scans)]
    found = study_cases(scans, ids)
    assert sorted(found) == [f"day1/s{i}_{view}.dcm" for i in range(2) for view in ("fro", "lat")]
    assert found["day1/s0_fro.dcm"] == (dicom_module.opaque_id("study", studies[0]), "day1/s0_fro.dcm")
    assert found["day1/s1_lat.dcm"][0] == dicom_module.opaque_id("study", studies[1]) != found["day1/s0_lat.dcm"][0]
    # in folders of their own, each study is named by its folder
    for i in range(2):
        (day / f"study{i}").mkdir()
        for view in ("fro", "lat"):
            (day / f"s{i}_{view}.dcm").rename(day / f"study{i}" / f"{view}.dcm")
    ids = [path.relative_to(scans).as_posix() for path in list_files(scans)]
    assert study_cases(scans, ids) == {f"day1/study{i}/{view}.dcm": (f"day1/study{i}", f"{view}.dcm")
                                       for i in range(2) for view in ("fro", "lat")}


def test_a_patient_id_an_anonymiser_wrote_for_every_scan_is_no_patient_and_the_study_groups_instead(tmp_path, caplog):
    # every PatientID "ANONYMOUS": one group would put every scan on one side of the split
    scans = tmp_path / "export"
    scans.mkdir()
    studies = [generate_uid() for _ in range(12)]
    for index in range(24):
        dicom_dataset(np.arange(64).reshape(8, 8) * (index + 1), patient_id="ANONYMOUS",
                      study=studies[index // 2]).save_as(scans / f"{index}.dcm", enforce_file_format=True)
    with caplog.at_level("WARNING", logger="pipeline.stages.ingest"):
        groups = ingest(scans, manifest_dir=tmp_path / "m", workers=1).manifest.set_index("scan_id")["group"]
    assert "24 of 24 scans share one DICOM PatientID" in caplog.text and "ANONYMOUS" not in caplog.text
    assert groups["0.dcm"] == groups["1.dcm"] == dicom_module.opaque_id("study", studies[0]) != groups["2.dcm"]
    assert groups.nunique() == 12
    # a patient with half the scans or fewer stays one
    for index in range(12, 24):
        (scans / f"{index}.dcm").unlink()
        dicom_dataset(np.arange(64).reshape(8, 8) * (index + 1), patient_id=f"P{index}",
                      study=studies[index // 2]).save_as(scans / f"{index}.dcm", enforce_file_format=True)
    groups = ingest(scans, manifest_dir=tmp_path / "m", workers=1).manifest.set_index("scan_id")["group"]
    assert groups.nunique() == 13 and groups["0.dcm"] == groups["11.dcm"] == dicom_module.opaque_id("patient", "ANONYMOUS")


def test_a_labels_file_or_verdicts_naming_series_and_volumes_by_their_scan_ids_label_them(tmp_path):
    # score's report and a reader's verdicts name scans by id: SE3/@b1000, and #<uid>@b0 in a folder of series
    scans = tmp_path / "export"
    hospital_study(scans / "P0" / "ST0", generate_uid())
    hospital_study(tmp_path / "study", generate_uid())
    for path in sorted((tmp_path / "study").rglob("I*")):
        (scans / "P1").mkdir(exist_ok=True)
        path.rename(scans / "P1" / f"{path.parent.name}_{path.name}")
    dwi = pydicom.dcmread(scans / "P1" / "SE3_I0001").SeriesInstanceUID
    axial = pydicom.dcmread(scans / "P1" / "SE2_I0001").SeriesInstanceUID
    (scans / "labels.csv").write_text(f"file,label\nP0/ST0/SE3/@b1000,lesion\nP0/ST0/SE4/@volume2,healthy\n"
                                      f"P1/#{dwi}@b0,lesion\nP1/#{axial},healthy\nP0/ST0/SE3/@b500,lesion\n")
    result = ingest(scans, out=tmp_path / "m.csv")
    labelled = result.manifest[result.manifest["label"] != ""].set_index("scan_id")["label"].to_dict()
    assert labelled == {"P0/ST0/SE3/@b1000": "lesion", "P0/ST0/SE4/@volume2": "healthy", f"P1/#{dwi}@b0": "lesion",
                        f"P1/#{axial}": "healthy"}
    assert result.problems["item"].str.contains("line 6").any()  # a volume the series does not have


def test_verdicts_on_a_scored_dicom_export_label_its_series_and_volumes_where_they_lie(tmp_path):
    from pipeline.verdicts import merge_verdicts

    # Training scans and a day's export, named alike (P0/ST0/SE2/I0001) as a PACS names every export.
    scans, incoming = tmp_path / "scans", tmp_path / "incoming"
    hospital_study(scans / "P0" / "ST0", generate_uid())
    hospital_study(incoming / "P0" / "ST0", generate_uid())
    (scans / "labels.csv").write_text("file,label\nP0,healthy\n")
    pd.DataFrame({"file": ["P0/ST0/SE3/@b1000", "P0/ST0/SE2"], "label": "lesion", "verdict": "relabelled",
                  "reviewed_at": "", "folder": str(incoming)}).to_csv(tmp_path / "verdicts.csv", index=False)
    merged = merge_verdicts(scans, tmp_path / "verdicts.csv", tmp_path / "out", classes=["healthy", "lesion"])
    reviewed = pd.read_csv(merged, keep_default_na=False).query("label_source == 'review'")["file"]
    assert sorted(reviewed) == [str((incoming / "P0/ST0/SE2").resolve()), str((incoming / "P0/ST0/SE3").resolve() / "@b1000")]
    result = ingest(scans, labels=merged, out=tmp_path / "m.csv", workers=1)
    labels = result.manifest.set_index("scan_id")["label"]
    assert labels["../incoming/P0/ST0/SE3/@b1000"] == labels["../incoming/P0/ST0/SE2"] == "lesion"
    assert labels["P0/ST0/SE2"] == labels["P0/ST0/SE3/@b1000"] == "healthy"  # the training scans keep theirs
    assert result.manifest.set_index("scan_id").loc["../incoming/P0/ST0/SE3/@b1000", "status"] == "ok"
    assert "labels.csv" not in set(result.problems["item"])  # the labels the merged file replaced are no problem


def test_dicom_named_by_uids_or_as_siemens_ima_files_are_scans(tmp_path):
    # dcm4che's and PACS exports name files by their UIDs (dots, a number last); Siemens' by .IMA
    study = generate_uid()
    write_study_series(tmp_path / "raw", [{"ImagePositionPatient": [0.0, 0.0, 3.0 * k]} for k in range(4)], study)
    series = tmp_path / "export" / "series"
    series.mkdir(parents=True)
    for k, path in enumerate(sorted((tmp_path / "raw").iterdir())):
        path.rename(series / f"1.3.12.2.1107.5.2.32.35162.{2019010112000000 + k}")
    dicom_dataset(np.ones((8, 8))).save_as(tmp_path / "export" / "PATIENT.MR.HEAD.0001.0001.IMA", enforce_file_format=True)
    (tmp_path / "export" / "notes.1").write_text("not DICOM")  # a number after the dot is no proof
    found = {path.relative_to(tmp_path / "export").as_posix() for path in list_files(tmp_path / "export")}
    assert found == {"series", "PATIENT.MR.HEAD.0001.0001.IMA", "notes.1"}
    assert load_scan(tmp_path / "export" / "series").array.shape == (8, 9, 4)
    assert is_scan_file(tmp_path / "export" / "PATIENT.MR.HEAD.0001.0001.IMA")
    assert not is_scan_file(tmp_path / "export" / "notes.1")


@pytest.mark.parametrize("shape, spacing, spatial", [
    ("64x64x3", "0.5x0.5x2", ((64, 64, 3), 1)),  # a volume of three slices (a thick-slab series)
    ("64x64x3", "", ((64, 64), 3)),  # an ultrasound frame in colour
    ("64x64x12", "0.5x0.5x2", ((64, 64, 12), 1)),
    ("64x64x6x2", "0.5x0.5x2", ((64, 64, 6), 2)),  # an enhanced file's b-values
])
def test_a_dicom_scan_s_manifest_shape_reads_as_a_volume_by_its_spacings(shape, spacing, spatial):
    from pipeline.data import matching_scans
    from pipeline.reading import spatial_shape_of

    assert spatial_shape_of(shape, "export/SE2", spacing) == spatial
    frame = pd.DataFrame({"shape": [shape], "path": ["export/SE2"], "spacing": [spacing], "scan_id": ["SE2"]})
    kept = matching_scans(frame, PreprocessConfig(spatial_size=[8] * len(spatial[0]), channels=spatial[1]))
    assert len(kept) == 1
