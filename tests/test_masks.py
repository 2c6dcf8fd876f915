"""Segmentation masks kept beside their scans are left out, named, never trained on or scored."""

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from test_score import trained_run, write_pngs  # noqa: F401  (module fixture reused)

from pipeline.masks import segmentation_masks
from pipeline.stages.ingest import ingest
from pipeline.stages.score import format_summary, score
from pipeline.stages.validate import validate


def test_masks_are_found_by_name_beside_their_scan_or_in_a_masks_folder():
    paths = [Path(p) for p in [
        "busi/benign/benign (3).png", "busi/benign/benign (3)_mask.png", "busi/benign/benign (3)_mask_1.png",
        "ct/case_7.nii.gz", "ct/case_7_seg.nii.gz", "ct/case_8-Label.nii.gz",
        "polyps/images/x.jpg", "polyps/masks/x.jpg", "polyps/Masks/y_mask.png", "polyps/images/y.png",
        "polyps/masks/z.png", "brats/BraTS_001_t1.nii.gz", "brats/BraTS_001_flair.nii.gz", "brats/BraTS_001_seg.nii.gz",
    ]]
    masks = segmentation_masks(paths)
    assert {m.as_posix(): s.as_posix() for m, s in masks.items()} == {
        "busi/benign/benign (3)_mask.png": "busi/benign/benign (3).png",
        "busi/benign/benign (3)_mask_1.png": "busi/benign/benign (3).png",
        "ct/case_7_seg.nii.gz": "ct/case_7.nii.gz",
        "polyps/masks/x.jpg": "polyps/images/x.jpg",
        "polyps/Masks/y_mask.png": "polyps/images/y.png",
        "brats/BraTS_001_seg.nii.gz": "brats/BraTS_001_flair.nii.gz",  # the case's first sequence by name
    }  # case_8's and z's scans are not there: they stay scans


def test_masks_in_a_folder_named_with_the_word_mask_among_others_or_labelstr_are_masks():
    # COVID-QU-Ex: Train/COVID-19/images/x.png beside Train/COVID-19/lung masks/x.png (and infection masks/)
    paths = [Path(p) for p in [
        "Train/COVID-19/images/covid_1.png", "Train/COVID-19/lung masks/covid_1.png",
        "Train/COVID-19/infection masks/covid_1.png", "Train/Normal/images/n_1.png", "Train/Normal/Lung_Masks/n_1.png",
        # the Medical Segmentation Decathlon's and nnU-Net's labelsTr/ beside imagesTr/
        "Task01/imagesTr/BRATS_001.nii.gz", "Task01/labelsTr/BRATS_001.nii.gz",
        "Dataset001/imagesTr/case_7_0000.nii.gz", "Dataset001/labelsTr/case_7.nii.gz",
        # ISIC 2018 task 1: a mask named as one, in a folder not named for masks, beside its scan's folder
        "isic/Training_Input/ISIC_0000000.jpg", "isic/Training_GroundTruth/ISIC_0000000_segmentation.png",
        # folders that name a data set, not masks: their files stay scans
        "Lung Segmentation Data/a.png", "Infection Segmentation Data/a.png", "Dataset_with_GT/b.png", "other/b.png",
    ]]
    assert {m.as_posix(): s.as_posix() for m, s in segmentation_masks(paths).items()} == {
        "Train/COVID-19/lung masks/covid_1.png": "Train/COVID-19/images/covid_1.png",
        "Train/COVID-19/infection masks/covid_1.png": "Train/COVID-19/images/covid_1.png",
        "Train/Normal/Lung_Masks/n_1.png": "Train/Normal/images/n_1.png",
        "Task01/labelsTr/BRATS_001.nii.gz": "Task01/imagesTr/BRATS_001.nii.gz",
        "Dataset001/labelsTr/case_7.nii.gz": "Dataset001/imagesTr/case_7_0000.nii.gz",
        "isic/Training_GroundTruth/ISIC_0000000_segmentation.png": "isic/Training_Input/ISIC_0000000.jpg",
    }


def test_masks_in_folders_of_mask_folders_are_masks_of_the_scans_beside_the_outer_one():
    # Montgomery County's chest X-rays: MontgomerySet/CXR_png/x.png, ManualMask/leftMask/x.png and rightMask/x.png
    paths = [Path(p) for p in [
        "MontgomerySet/CXR_png/MCUCXR_0001_0.png", "MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png",
        "MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png", "MontgomerySet/CXR_png/MCUCXR_0002_1.png",
        "MontgomerySet/ManualMask/leftMask/MCUCXR_0002_1.png",
        # a class folder inside a folder named for a part of the body is no mask folder: its files stay scans
        "chest/leftLung/p_1.png", "chest/images/p_1.png",
    ]]
    assert {m.as_posix(): s.as_posix() for m, s in segmentation_masks(paths).items()} == {
        "MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png": "MontgomerySet/CXR_png/MCUCXR_0001_0.png",
        "MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png": "MontgomerySet/CXR_png/MCUCXR_0001_0.png",
        "MontgomerySet/ManualMask/leftMask/MCUCXR_0002_1.png": "MontgomerySet/CXR_png/MCUCXR_0002_1.png",
    }


def test_a_file_named_by_a_mask_word_alone_is_the_mask_of_its_case_folders_scan():
    # KiTS19: case_00000/imaging.nii.gz and segmentation.nii.gz; a case folder of ct and seg
    paths = [Path(p) for p in ["kits/case_00000/imaging.nii.gz", "kits/case_00000/segmentation.nii.gz",
                               "kits/case_00001/imaging.nii.gz", "x/ct.nii.gz", "x/seg.nii.gz",
                               "y/labels.nii.gz", "lone/mask.png"]]  # alone in their folders: scans
    assert {m.as_posix(): s.as_posix() for m, s in segmentation_masks(paths).items()} == {
        "kits/case_00000/segmentation.nii.gz": "kits/case_00000/imaging.nii.gz", "x/seg.nii.gz": "x/ct.nii.gz"}


def test_scans_that_are_masks_themselves_are_not_left_out():
    # AdrenalMNIST3D-like: every scan a binary shape mask, none named after another.
    paths = [Path(f"adrenal/{i:04d}.nii.gz") for i in range(5)] + [Path("x/segmentation.png"), Path("x/gt.png")]
    assert segmentation_masks(paths) == {}


def busi_like(root, write, n=4):
    """Class folders of scans, each with its lesion mask (and a second mask for one)."""
    for label in ("benign", "malignant", "normal"):
        for i in range(1, n + 1):
            write.png(root / label / f"{label} ({i}).png", write.image(zlib.crc32(f"{label} {i}".encode()) % 1000, (12, 14)))
            mask = np.zeros((12, 14), np.uint8)
            mask[3:7, 4:9] = 255 if label != "normal" else 0
            write.png(root / label / f"{label} ({i})_mask.png", mask)
        write.png(root / label / f"{label} (1)_mask_1.png", np.eye(12, 14, dtype=np.uint8) * 255)
    return root


def test_ingest_leaves_masks_out_and_names_each_with_its_scan(tmp_path, write):
    scans = busi_like(tmp_path / "Dataset_BUSI_with_GT", write)
    result = ingest(scans, class_subfolders=True, out=tmp_path / "m.csv")
    manifest = result.manifest
    assert len(manifest) == 12 and not manifest["scan_id"].str.contains("mask").any()
    assert (manifest["status"] == "ok").all()  # the blank masks of normal scans are no error rows
    masks = result.problems[result.problems["source"] == "mask"].set_index("item")
    assert len(masks) == 15
    assert "segmentation mask of benign/benign (1).png" in masks.loc["benign/benign (1)_mask_1.png", "reason"]
    assert (result.problems["source"] == "mask").all()
    checked = validate(scans).set_index("file")
    assert (checked["status"] == "skipped").sum() == 15 and (checked["status"] == "ok").sum() == 12
    assert checked.loc["normal/normal (2)_mask.png", "reason"] == "segmentation mask of normal/normal (2).png: not a scan"


def test_a_mask_the_labels_file_names_is_ingested(tmp_path, write):
    scans = busi_like(tmp_path / "scans", write, n=1)
    labels = write.csv(tmp_path / "labels.csv", [{"file": "scans/benign/benign (1)_mask.png", "label": "benign"}])
    result = ingest(scans, labels=labels, out=tmp_path / "m.csv")
    assert "benign/benign (1)_mask.png" in set(result.manifest["scan_id"])
    left_out = result.problems.loc[result.problems["source"] == "mask", "item"]
    assert "benign/benign (1)_mask.png" not in set(left_out) and len(left_out) == 5


def test_a_labels_row_naming_a_patients_slices_and_masks_by_their_start_labels_the_slices(tmp_path, write):
    # The LGG MRI set (kaggle_3m): TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1.tif and _1_mask.tif, and a
    # data.csv keyed by patient (TCGA_CS_4941): the row labels the slices; the masks stay out, without a problem
    scans = tmp_path / "kaggle_3m"
    for n, patient in enumerate(["TCGA_CS_4941", "TCGA_DU_5849"]):
        for k in (1, 2):
            write.png(scans / f"{patient}_19960909" / f"{patient}_19960909_{k}.png", write.image(10 * n + k))
            write.png(scans / f"{patient}_19960909" / f"{patient}_19960909_{k}_mask.png", write.image(99 - k))
    (tmp_path / "data.csv").write_text("Patient,death01\nTCGA_CS_4941,0\nTCGA_DU_5849,1\n")
    result = ingest(scans, labels=tmp_path / "data.csv", out=tmp_path / "m.csv", columns={"label": "death01"})
    assert sorted(result.manifest["label"]) == ["0", "0", "1", "1"] and result.manifest["group"].nunique() == 2
    assert set(result.problems["source"]) == {"mask"}  # no "is not a scan" row for the masks the row named
    # without labels, the patients' folders are no classes: every slice unlabelled
    unlabelled = ingest(scans, out=tmp_path / "u.csv").manifest
    assert len(unlabelled) == 4 and (unlabelled["label"] == "").all()


def test_score_leaves_masks_out_of_the_report_and_counts_them(trained_run, tmp_path):  # noqa: F811
    scans = tmp_path / "incoming"
    write_pngs(scans, n=4)
    for i in range(4):
        (scans / f"scan{i:02d}_mask.png").write_bytes((scans / f"scan{i:02d}.png").read_bytes())
    out = score(scans, trained_run, out=tmp_path / "report.csv", progress=False)
    report = pd.read_csv(out, keep_default_na=False)
    assert sorted(report["scan_id"]) == [f"scan{i:02d}.png" for i in range(4)]
    summary = (tmp_path / "report.summary.txt").read_text()
    assert "skipped: 4 segmentation masks" in summary
    assert "segmentation masks" not in format_summary({"files": 1, "scored": 1, "errors": 0, "needs_review": 0,
                                          "predicted": {}}, out)
