"""ingest: one manifest row per scan, every problem reported at once, labels checked."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.labels import patient_pseudonym
from pipeline.manifest import MANIFEST_COLUMNS, load_manifest
from pipeline.stages.ingest import ingest
from pipeline.stages.split import make_split


def run(scans, tmp_path, **options):
    return ingest(scans, manifest_dir=tmp_path / "manifests", workers=1, **options)


@pytest.fixture
def mixed_folder(tmp_path, write):
    """Good PNGs, a NIfTI volume, and every kind of bad file ingest must survive."""
    scans = tmp_path / "scans"
    write.png(scans / "a.png", write.image(1))
    write.png(scans / "b.png", write.image(2))
    write.nifti(scans / "sub" / "vol.nii.gz", np.arange(120, dtype=np.float32).reshape(4, 5, 6), spacing=(1, 1, 1.5))
    good = (scans / "a.png").read_bytes()
    (scans / "c_truncated.png").write_bytes(good[: len(good) // 2])
    (scans / "d_empty.png").write_bytes(b"")
    (scans / "e_text.png").write_text("not an image\n")
    shutil.copy(scans / "a.png", scans / "f_copy.png")
    (scans / "notes.txt").write_text("not a scan: named in the problems, not ingested\n")
    return scans


def test_every_file_gets_a_row_and_every_bad_one_a_problem(mixed_folder, tmp_path):
    result = run(mixed_folder, tmp_path)
    manifest = result.manifest.set_index("scan_id")

    assert list(result.manifest.columns) == MANIFEST_COLUMNS
    assert result.manifest["scan_id"].tolist() == [
        "a.png",
        "b.png",
        "c_truncated.png",
        "d_empty.png",
        "e_text.png",
        "f_copy.png",
        "sub/vol.nii.gz",
    ]
    assert manifest["status"].to_dict() == {
        "a.png": "ok",
        "b.png": "ok",
        "c_truncated.png": "error",
        "d_empty.png": "error",
        "e_text.png": "error",
        "f_copy.png": "duplicate",
        "sub/vol.nii.gz": "ok",
    }
    assert "truncated" in manifest.loc["c_truncated.png", "error"]
    assert "empty" in manifest.loc["d_empty.png", "error"]
    assert "cannot decode" in manifest.loc["e_text.png", "error"]
    assert manifest.loc["f_copy.png", "error"] == "same content (sha256) as a.png"
    assert manifest.loc["a.png", ["shape", "dtype", "spacing"]].tolist() == ["6x8", "uint8", ""]
    assert manifest.loc["sub/vol.nii.gz", ["shape", "dtype", "spacing"]].tolist() == [
        "4x5x6",
        "float32",
        "1x1x1.5",
    ]
    assert manifest.loc["sub/vol.nii.gz", "path"] == str(mixed_folder / "sub" / "vol.nii.gz")
    assert len(manifest.loc["a.png", "sha256"]) == 64

    assert result.problems[["source", "item"]].values.tolist() == [
        ["file", "notes.txt"],
        ["scan", "c_truncated.png"],
        ["scan", "d_empty.png"],
        ["scan", "e_text.png"],
        ["scan", "f_copy.png"],
    ]
    assert result.manifest_path == tmp_path / "manifests" / "scans.csv"
    assert result.problems_path == tmp_path / "manifests" / "scans.problems.csv"
    pd.testing.assert_frame_equal(
        load_manifest(result.manifest_path), result.manifest, check_dtype=False
    )
    assert len(pd.read_csv(result.problems_path)) == 5


def test_parallel_workers_give_the_same_manifest(mixed_folder, tmp_path):
    serial = run(mixed_folder, tmp_path, name="serial").manifest
    parallel = ingest(mixed_folder, manifest_dir=tmp_path, name="parallel", workers=2).manifest
    pd.testing.assert_frame_equal(serial, parallel)


def test_labels_file_problems_are_all_reported_together(tmp_path, write, caplog):
    scans = tmp_path / "scans"
    write.pngs(scans, ["cat1.png", "cat2.png", "dog1.png", "dog2.png"])
    (scans / "readme.md").write_text("x")
    labels = write.csv(
        tmp_path / "labels.csv",
        [
            {"file": "scans/cat1.png", "label": "cat", "split": "train", "group": "p1"},
            {"file": "scans/cat2.png", "label": "cat", "split": "Testing", "group": "p1"},
            {"file": "scans/dog1.png", "label": "dgo", "split": "", "group": ""},
            {"file": "scans/missing.png", "label": "dog", "split": "", "group": ""},
            {"file": "scans/cat1.png", "label": "dog", "split": "", "group": ""},
            {"file": "scans/readme.md", "label": "dog", "split": "", "group": ""},
            {"file": str(scans / "dog2.png"), "label": "dog", "split": "tset", "group": "p2"},
        ],
    )
    caplog.set_level("INFO", logger="pipeline.stages.ingest")
    result = run(scans, tmp_path, labels=labels, classes=["cat", "dog"])
    manifest = result.manifest.set_index("scan_id")

    # the labels file's patient id is written hashed, as a DICOM PatientID is
    assert manifest.loc["cat1.png", ["label", "group", "split"]].tolist() == ["cat", patient_pseudonym("p1"), "train"]
    assert manifest.loc["cat2.png", ["label", "split"]].tolist() == ["cat", "test"]
    assert manifest.loc["dog1.png", "label"] == "", "an unknown label leaves the scan unlabelled"
    assert manifest.loc["dog2.png", ["label", "group", "split"]].tolist() == ["dog", patient_pseudonym("p2"), ""]
    problems = dict(zip(result.problems["item"], result.problems["reason"]))
    assert set(problems) == {
        "labels.csv line 4",
        "labels.csv line 5",
        "labels.csv line 6",
        "labels.csv line 7",
        "labels.csv line 8",
        "readme.md",
    }
    assert "'dgo' is not one of the classes cat, dog" in problems["labels.csv line 4"]
    assert "'scans/missing.png' does not exist" in problems["labels.csv line 5"]
    assert "listed again (first on labels.csv line 2)" in problems["labels.csv line 6"]
    assert "readme.md is not a scan" in problems["labels.csv line 7"]
    assert "split 'tset' is not one of train, val, test" in problems["labels.csv line 8"]
    assert result.classes == ["cat", "dog"]
    assert "6 problems" in caplog.text and "missing.png" in caplog.text


def test_a_sidecar_beside_every_volume_does_not_hide_a_bad_scan_in_the_log(tmp_path, write, caplog):
    # dcm2niix writes x.json beside each x.nii.gz: 25 of them must not push the one broken file out of the log
    scans = tmp_path / "export"
    for patient in range(25):
        write.nifti(scans / f"{patient:03d}" / "t1_3.nii.gz", np.full((4, 5, 6), patient + 1.0, dtype=np.float32) +
                    np.arange(120, dtype=np.float32).reshape(4, 5, 6))
        (scans / f"{patient:03d}" / "t1_3.json").write_text('{"SeriesNumber": 3}')
    (scans / "999").mkdir()
    (scans / "999" / "t1_3.nii.gz").write_bytes(b"not a volume")
    with caplog.at_level(logging.INFO, logger="pipeline.stages.ingest"):
        result = run(scans, tmp_path)
    assert len(result.problems) == 26
    assert "1 problems, 25 files left out as no scans of their own" in caplog.text
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("999/t1_3.nii.gz" in message for message in warnings)
    assert not any(".json" in message for message in warnings)
    assert "skipped 25 converters' sidecars (acquisition parameters beside a volume), e.g. 000/t1_3.json" in caplog.text


def test_each_patients_same_kinds_of_pictures_are_named_as_one_model_learning_them_all(tmp_path, write, caplog):
    # every patient's folder holds a dermoscopic and a clinical photograph (numbered differently); volumes so
    # kept are a case's sequences, read as one scan (test_sequences.py); a folder's numbered pictures are no
    # kinds, and views named so (a knee's axial/) are a case's, which score calls
    scans = tmp_path / "export"
    write.pngs(scans, [f"{4412000 + patient}/{kind}_{3 + patient % 2}.png" for patient in range(6)
                       for kind in ("dermoscopic", "clinical")])
    brats = tmp_path / "BraTS"  # the case's name in each file's: BraTS2021_00000/BraTS2021_00000_flair.nii.gz
    for case in range(5):
        for sequence in ("flair", "t1", "t2"):
            write.nifti(brats / f"BraTS2021_{case:05d}" / f"BraTS2021_{case:05d}_{sequence}.nii.gz",
                        np.arange(120, dtype=np.float32).reshape(4, 5, 6) * (case + 1) + len(sequence))
    write.pngs(tmp_path / "pictures", [f"{4412000 + patient}/{image}.png" for patient in range(6) for image in (1, 2)])
    with caplog.at_level(logging.WARNING, logger="pipeline.stages.ingest"):
        run(scans, tmp_path)
        assert "6 of 6 patients or cases hold the same 2 kinds of scan by name (clinical, dermoscopic)" in caplog.text
        caplog.clear()
        assert len(run(brats, tmp_path).manifest) == 5  # a scan a case, its sequences the channels
        run(tmp_path / "pictures", tmp_path, name="pictures")
    assert "kinds of scan" not in caplog.text


def test_split_values_as_public_sets_write_them_are_read(tmp_path, write):
    # MIMIC-CXR's split file says validate; others hold-out or tuning
    scans = tmp_path / "scans"
    names = [f"s{i}.png" for i in range(6)]
    write.pngs(scans, names)
    splits = ["train", "validate", "Hold-out", "holdout", "tuning", "TEST"]
    (scans / "labels.csv").write_text("file,label,split\n" + "".join(f"{name},{'ab'[i % 2]},{split}\n"
                                                                      for i, (name, split) in enumerate(zip(names, splits))))
    result = run(scans, tmp_path)
    assert result.problems.empty
    assert result.manifest["split"].tolist() == ["train", "val", "test", "test", "val", "test"]


def test_a_bids_datasets_derivatives_sourcedata_and_metadata_are_no_scans(tmp_path, write):
    # OpenNeuro's layout: processed copies in derivatives/, the raw DICOMs in sourcedata/, metadata as JSON and TSV
    root = tmp_path / "ds000001"
    volume = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    for subject in (1, 2):
        write.nifti(root / f"sub-0{subject}" / "anat" / f"sub-0{subject}_T1w.nii.gz", volume * subject + 1)
        (root / f"sub-0{subject}" / f"sub-0{subject}_scans.tsv").write_text("filename\tacq_time\n")
        write.nifti(root / "derivatives" / f"sub-0{subject}" / "anat" / f"sub-0{subject}_desc-brain_T1w.nii.gz",
                    volume * subject + 2)
        write.png(root / "sourcedata" / f"sub-0{subject}" / "scout.png", write.image(subject))
    for name in ("participants.tsv", "participants.json", "README", "CHANGES", "task-rest_bold.json"):
        (root / name).write_text("x")
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    result = run(root, tmp_path)
    assert result.manifest["scan_id"].tolist() == ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz"]
    assert set(result.problems["source"]) == {"skipped"} and len(result.problems) == 12
    # a dataset whose scans lie only in derivatives/ says where they are and which folder to give
    processed = tmp_path / "processed"
    write.nifti(processed / "derivatives" / "fmriprep" / "sub-01" / "anat" / "sub-01_desc-brain_T1w.nii.gz", volume)
    (processed / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    with pytest.raises(ValueError, match=r"found under .*processed; 1 lie in derivatives/ \(e.g. derivatives/fmriprep/"
                                         r"sub-01/anat/sub-01_desc-brain_T1w.nii.gz\), which a BIDS dataset .* give "
                                         r"--scans .*processed/derivatives/fmriprep$"):
        run(processed, tmp_path, name="processed")
    # without dataset_description.json it is no BIDS dataset: a derivatives/ folder holds scans
    (root / "dataset_description.json").unlink()
    assert len(run(root, tmp_path, name="plain").manifest) == 6


def test_labels_file_in_the_scan_folder_is_used_by_default(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "x" / "1.png", write.image(1))
    write.png(scans / "x" / "2.png", write.image(2))
    write.csv(scans / "labels.csv", [{"file": "x/2.png", "label": "7", "extra": "ignored"}])
    result = run(scans, tmp_path)
    assert result.manifest[["scan_id", "label"]].values.tolist() == [["x/1.png", ""], ["x/2.png", "7"]]
    assert result.classes == ["7"]
    assert result.problems.empty


@pytest.mark.parametrize("columns", [["file", "lable"], ["fiel", "label"]])
def test_labels_file_without_a_required_column_is_a_clear_error(tmp_path, write, columns):
    write.png(tmp_path / "scans" / "a.png", write.image(1))
    # values naming no scan: a column of another name whose values name scans is taken as the files
    labels = write.csv(tmp_path / "my_labels.csv", [dict.fromkeys(columns, "b.png")])
    missing = ({"file", "label"} - set(columns)).pop()
    with pytest.raises(ValueError, match=rf"my_labels\.csv: no '{missing}' column"):
        run(tmp_path / "scans", tmp_path, labels=labels)


def test_class_subfolders_give_labels(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "cat" / "1.png", write.image(1))
    write.png(scans / "dog" / "deep" / "2.png", write.image(2))
    write.png(scans / "loose.png", write.image(3))
    result = run(scans, tmp_path, class_subfolders=True, name="pets")
    assert result.manifest[["scan_id", "label"]].values.tolist() == [
        ["cat/1.png", "cat"],
        ["dog/deep/2.png", "dog"],
        ["loose.png", ""],
    ]
    assert result.problems.values.tolist() == [
        ["scan", "loose.png", "not inside a class subfolder; kept unlabelled"]
    ]
    assert result.manifest_path.name == "pets.csv"
    with pytest.raises(ValueError, match="not both"):
        run(scans, tmp_path, labels=tmp_path / "x.csv", class_subfolders=True)


def test_files_differing_only_by_suffix_are_two_scans(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "yes" / "Y92.png", write.image(1))
    write.png(scans / "yes" / "Y92.jpg", write.image(2))
    write.nifti(scans / "a.nii.gz", np.arange(27, dtype=np.float32).reshape(3, 3, 3))
    result = run(scans, tmp_path)
    assert result.manifest["scan_id"].tolist() == ["a.nii.gz", "yes/Y92.jpg", "yes/Y92.png"]
    assert result.manifest["status"].tolist() == ["ok", "ok", "ok"]


def test_a_manifest_with_the_old_suffixless_ids_says_what_to_do(tmp_path, write):
    from pipeline.manifest import load_manifest

    old = write.manifest(tmp_path / "old.csv", [{"scan_id": "yes/Y92", "path": "/scans/yes/Y92.jpg"}])
    with pytest.raises(ValueError, match=r"older version.*'yes/Y92'.*Delete .*old.csv"):
        load_manifest(old)


def test_folder_without_scans_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no scans"):
        run(tmp_path / "empty", tmp_path)


def test_load_manifest_keeps_ids_and_labels_as_text_and_checks_columns(tmp_path, write):
    path = write.manifest(tmp_path / "m.csv", [{"scan_id": "00007", "label": "7", "group": ""}])
    manifest = load_manifest(path)
    assert manifest.loc[0, ["scan_id", "label", "group"]].tolist() == ["00007", "7", ""]
    write.csv(tmp_path / "bad.csv", [{"scan_id": "a", "path": "/a.png"}])
    with pytest.raises(ValueError, match=r"bad\.csv is not a manifest: missing column\(s\) label"):
        load_manifest(tmp_path / "bad.csv")


def test_files_that_are_not_scans_are_named_in_the_problems(tmp_path, write):
    write.png(tmp_path / "scans" / "a.png", write.image(1))
    (tmp_path / "scans" / "notes.txt").write_text("x")
    (tmp_path / "scans" / "broken.dcm").write_bytes(b"DICM")
    result = ingest(tmp_path / "scans", manifest_dir=tmp_path / "m", workers=1)
    named = set(result.problems["item"])
    assert {"notes.txt", "broken.dcm"} <= named
    assert result.manifest["status"].tolist() == ["ok", "error"]  # a DICOM that cannot be read: an error row
    assert "not a readable DICOM file" in result.manifest["error"].iloc[1]


def test_identical_copies_share_one_label_or_none_where_their_labels_disagree(tmp_path, write):
    scans = tmp_path / "scans"
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
        write.png(scans / name, write.image(seed))
    shutil.copy(scans / "a.png", scans / "a_copy.png")  # same scan, other class
    shutil.copy(scans / "b.png", scans / "b_copy.png")  # only the copy is labelled
    shutil.copy(scans / "c.png", scans / "c_copy.png")  # both labelled alike
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nscans/a.png,normal\nscans/a_copy.png,tumour\nscans/b_copy.png,tumour\n"
                      "scans/c.png,normal\nscans/c_copy.png,normal\n")
    result = run(scans, tmp_path, labels=labels)
    manifest = result.manifest.set_index("scan_id")
    assert manifest["status"].to_dict() == {"a.png": "ok", "a_copy.png": "duplicate", "b.png": "ok",
                                            "b_copy.png": "duplicate", "c.png": "ok", "c_copy.png": "duplicate"}
    assert manifest.loc[["a.png", "b.png", "c.png"], "label"].tolist() == ["", "tumour", "normal"]
    conflicts = result.problems[result.problems["source"] == "labels"]
    assert conflicts["item"].tolist() == ["a.png"]
    reason = conflicts["reason"].iloc[0]
    assert "a.png (normal)" in reason and "a_copy.png (tumour)" in reason and "kept unlabelled" in reason


def test_a_labels_file_beside_the_scan_folder_may_name_files_as_they_sit_inside_it(tmp_path, write, caplog):
    scans = tmp_path / "images"
    write.png(scans / "a.png", write.image(1))
    write.png(scans / "sub" / "b.png", write.image(2))
    labels = write.csv(tmp_path / "meta" / "train.csv", [
        {"file": "a.png", "label": "normal"}, {"file": "sub/b.png", "label": "tumour"},
        {"file": "c.png", "label": "tumour"}])
    caplog.set_level("INFO", logger="pipeline.labels")
    result = run(scans, tmp_path, labels=labels)
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {"a.png": "normal", "sub/b.png": "tumour"}
    missing = result.problems.set_index("item").loc["train.csv line 4", "reason"]
    assert str(tmp_path / "meta" / "c.png") in missing and str(scans / "c.png") in missing
    assert "2 files found in the scan folder" in caplog.text


def test_class_names_that_differ_only_in_case_or_spacing_are_reported(tmp_path, write):
    scans = tmp_path / "scans"
    for index, folder in enumerate(["Tumour", "tumour", "no_tumour", "No Tumour", "other"]):
        write.png(scans / folder / "a.png", write.image(index))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["No Tumour", "Tumour", "no_tumour", "other", "tumour"]
    reasons = result.problems.set_index("item")["reason"]
    assert set(reasons.index) == {"Tumour / tumour", "No Tumour / no_tumour"}
    assert "'Tumour' (1 scans), 'tumour' (1 scans) differ only in case" in reasons["Tumour / tumour"]


def test_first_level_folders_named_for_splits_hold_the_class_folders(tmp_path, write):
    scans = tmp_path / "brain"
    seed = 0
    for split in ("Training", "Testing"):
        for label in ("glioma", "notumor"):
            for i in range(2):
                seed += 1
                write.png(scans / split / label / f"{i}.jpg.png", write.image(seed))
    write.png(scans / "Training" / "loose.png", write.image(99))
    result = run(scans, tmp_path, class_subfolders=True)
    manifest = result.manifest.set_index("scan_id")
    assert result.classes == ["glioma", "notumor"]
    assert manifest.loc["Testing/glioma/0.jpg.png", ["label", "split"]].tolist() == ["glioma", "test"]
    assert manifest.loc["Training/notumor/1.jpg.png", ["label", "split"]].tolist() == ["notumor", "train"]
    assert manifest.loc["Training/loose.png", "label"] == ""
    assert "not inside a class subfolder of Training/" in result.problems.set_index("item").loc[
        "Training/loose.png", "reason"]


def test_a_split_named_folder_among_class_folders_is_taken_as_a_class_and_reported(tmp_path, write):
    scans = tmp_path / "scans"
    for index, folder in enumerate(["normal", "tumour", "test"]):
        write.png(scans / folder / "a.png", write.image(index))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["normal", "test", "tumour"]
    assert "taken as a class" in result.problems.set_index("item").loc["test/", "reason"]


def test_a_copy_of_the_class_folders_inside_a_first_level_folder_keeps_their_classes(tmp_path, write):
    # Some downloads ship yes/, no/ and brain_tumor_dataset/{yes,no}/ with the same files.
    scans = tmp_path / "download"
    for index, (label, name) in enumerate([("yes", "Y1.jpg"), ("yes", "Y2.jpg"), ("no", "1 no.jpeg")]):
        write.png(scans / label / name, write.image(index))
        write.png(scans / "brain_tumor_dataset" / label / name, write.image(index))
    write.png(scans / "brain_tumor_dataset" / "No" / "only here.png", write.image(7))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["No", "no", "yes"]
    manifest = result.manifest.set_index("scan_id")
    assert manifest.loc["brain_tumor_dataset/yes/Y1.jpg", "label"] == "yes"
    assert manifest.loc["brain_tumor_dataset/No/only here.png", "label"] == "No"
    assert (manifest["status"] == "ok").sum() == 4 and (manifest["status"] == "duplicate").sum() == 3
    assert not result.problems["reason"].str.contains("labelled differently").any()


def test_a_folder_holding_every_scan_and_a_copy_of_the_split_folders_is_looked_through(tmp_path, write):
    # As the chest X-ray pneumonia download unpacks: chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/,
    # a copy under chest_xray/chest_xray/, and __MACOSX/ beside them.
    scans = tmp_path / "download"
    for index, (split, label) in enumerate([("train", "NORMAL"), ("train", "PNEUMONIA"), ("test", "NORMAL"),
                                            ("test", "PNEUMONIA"), ("val", "PNEUMONIA")]):
        write.png(scans / "chest_xray" / split / label / f"{index}.jpeg", write.image(index))
        write.png(scans / "chest_xray" / "chest_xray" / split / label / f"{index}.jpeg", write.image(index))
    (scans / "__MACOSX" / "chest_xray").mkdir(parents=True)
    (scans / "__MACOSX" / "chest_xray" / "._0.jpeg").write_bytes(b"\x00\x05\x16\x07")
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["NORMAL", "PNEUMONIA"]
    manifest = result.manifest.set_index("scan_id")
    assert manifest.loc["chest_xray/chest_xray/test/NORMAL/2.jpeg", ["label", "split"]].tolist() == ["NORMAL", "test"]
    assert manifest.loc["chest_xray/val/PNEUMONIA/4.jpeg", ["label", "split"]].tolist() == ["PNEUMONIA", "val"]
    assert not result.problems["reason"].str.contains("named like a split|labelled differently").any()


@pytest.mark.parametrize("folders", [("train", "val", "test", "auto_test"), ("Training Set", "Test Set"),
                                     ("train_data", "test_data")])
def test_split_folders_named_as_exports_name_them(tmp_path, write, folders):
    # the knee osteoarthritis export ships a second test set, auto_test/, beside train/, val/ and test/
    scans = tmp_path / "export"
    for index, folder in enumerate(folders):
        write.png(scans / folder / "0" / f"a{index}.png", write.image(index))
        write.png(scans / folder / "4" / f"b{index}.png", write.image(index + 10))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["0", "4"] and result.problems.empty
    splits = result.manifest.set_index("scan_id")["split"]
    assert splits[f"{folders[-1]}/4/b{len(folders) - 1}.png"] == "test"
    assert splits[f"{folders[0]}/0/a0.png"] == "train"


def test_a_folder_of_one_known_class_is_not_looked_through(tmp_path, write):
    # scoring incoming/abnormal/<patient>/: the class is the folder, not the patients inside it
    from pipeline.folder_labels import folder_labels

    scans = tmp_path / "incoming"
    paths = [scans / "abnormal" / patient / "a.png" for patient in ("P1", "P2")]
    assert set(folder_labels(scans, paths, [], ["abnormal", "normal"]).values()) == {("abnormal", "")}
    assert set(folder_labels(scans, paths, [])) == set(paths)
    assert {label for label, _ in folder_labels(scans, paths, []).values()} == {"P1", "P2"}


def test_a_class_folder_with_loose_scans_is_no_copy(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "yes" / "a.png", write.image(1))
    write.png(scans / "no" / "b.png", write.image(2))
    write.png(scans / "other" / "c.png", write.image(3))
    write.png(scans / "other" / "yes" / "d.png", write.image(4))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.manifest.set_index("scan_id").loc["other/yes/d.png", "label"] == "other"


def test_a_labels_row_without_a_suffix_finds_the_one_scan_of_that_name(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "ISIC_001.jpg", write.image(1))
    write.png(scans / "ISIC_002.png", write.image(2))
    write.png(scans / "twice.png", write.image(3))
    write.png(scans / "twice.tif", write.image(4))
    labels = write.csv(tmp_path / "labels.csv", [
        {"file": "scans/ISIC_001", "label": "nevus"}, {"file": "scans/ISIC_002", "label": "melanoma"},
        {"file": "scans/twice", "label": "nevus"}, {"file": "scans/none", "label": "nevus"}])
    result = run(scans, tmp_path, labels=labels)
    labels_of = result.manifest.set_index("scan_id")["label"].to_dict()
    assert labels_of == {"ISIC_001.jpg": "nevus", "ISIC_002.png": "melanoma", "twice.png": "", "twice.tif": ""}
    problems = result.problems.set_index("item")["reason"]
    assert "matches twice.png, twice.tif; write the file name in full" in problems["labels.csv line 4"]
    assert "also with a scan suffix added" in problems["labels.csv line 5"]


@pytest.mark.parametrize("text, encoding", [
    ("file;label\na.png;Läsion\nb.png;normal\n", "utf-8"),        # Excel where the decimal mark is a comma
    ("file\tlabel\na.png\tLäsion\nb.png\tnormal\n", "utf-8"),
    ("\ufefffile,label\na.png,Läsion\nb.png,normal\n", "utf-8"),   # Excel's "CSV UTF-8"
    ("file,label\na.png,Läsion\nb.png,normal\n", "cp1252"),        # Excel's plain "CSV" on Windows
])
def test_labels_files_as_spreadsheets_save_them_are_read(tmp_path, write, text, encoding):
    scans = tmp_path / "scans"
    write.png(scans / "a.png", write.image(1))
    write.png(scans / "b.png", write.image(2))
    (scans / "labels.csv").write_bytes(text.encode(encoding))
    result = run(scans, tmp_path)
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {"a.png": "Läsion", "b.png": "normal"}


def test_a_labels_file_that_is_not_text_is_named(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "a.png", write.image(1))
    (scans / "labels.csv").write_bytes(b"file,label\na.png,\x81\x8d\x8f\n")
    with pytest.raises(ValueError, match=r"labels file .*labels.csv is not text"):
        run(scans, tmp_path)
    (scans / "labels.csv").write_bytes(b"PK\x03\x04" + bytes(200))  # an .xlsx renamed
    with pytest.raises(ValueError, match=r"labels.csv is a spreadsheet file, not CSV text; save it .* as CSV"):
        run(scans, tmp_path)


def test_labels_columns_under_their_usual_other_names_are_taken(tmp_path, write):
    # As HAM10000 and the NIH chest X-ray set name them: image id, diagnosis, lesion or patient id.
    scans = tmp_path / "scans"
    write.pngs(scans, ["a.jpg", "b.jpg", "c.jpg"])
    (scans / "labels.csv").write_text("Image Index,Finding Labels,Patient ID,age\na,nv,p1,40\nb,mel,p1,41\nc,nv,p2,50\n")
    manifest = run(scans, tmp_path).manifest.set_index("scan_id")
    assert manifest[["label", "group"]].to_dict("index") == {
        "a.jpg": {"label": "nv", "group": patient_pseudonym("p1")}, "b.jpg": {"label": "mel", "group": patient_pseudonym("p1")},
        "c.jpg": {"label": "nv", "group": patient_pseudonym("p2")}}


@pytest.mark.parametrize("header, rows, expected", [
    # APTOS: an id without suffix and a grade; "id" is taken only where no usual file column is there
    ("id_code,diagnosis", ["a,0", "b,2", "c,0"], {"a.jpg": "0", "b.jpg": "2", "c.jpg": "0"}),
    ("id,image,level", ["1,a,0", "2,b,1", "3,c,0"], {"a.jpg": "0", "b.jpg": "1", "c.jpg": "0"}),
    # ISIC 2019: one-hot classes, named as the header writes them
    ("image,MEL,NV,UNK", ["a,1.0,0.0,0.0", "b,0.0,1.0,0.0", "c,0,1,0"], {"a.jpg": "MEL", "b.jpg": "NV", "c.jpg": "NV"}),
    # Messidor-2: the grade, not the two 0/1 columns beside it (one of them 1 on every row)
    ("image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable", ["a.jpg,0,0,1", "b.jpg,3,1,1", "c.jpg,2,0,1"],
     {"a.jpg": "0", "b.jpg": "3", "c.jpg": "2"}),
])
def test_labels_files_of_public_sets_are_read(tmp_path, write, header, rows, expected):
    scans = tmp_path / "scans"
    write.pngs(scans, ["a.jpg", "b.jpg", "c.jpg"])
    (scans / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    result = run(scans, tmp_path)
    assert result.manifest.set_index("scan_id")["label"].to_dict() == expected and result.problems.empty


def test_a_table_beside_the_labels_file_gives_the_groups_it_lacks(tmp_path, write, caplog):
    # ISIC 2019: the classes in ..._GroundTruth.csv, the lesions in ..._Metadata.csv beside it
    scans = tmp_path / "ISIC_2019_Training_Input"
    write.pngs(scans, ["ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0024306.jpg", "ISIC_0024307.jpg"])
    labels = tmp_path / "ISIC_2019_Training_GroundTruth.csv"
    labels.write_text("image,MEL,NV,UNK\nISIC_0000000,0.0,1.0,0.0\nISIC_0000001,0.0,1.0,0.0\n"
                      "ISIC_0024306,1.0,0.0,0.0\nISIC_0024307,1.0,0.0,0.0\n")
    (tmp_path / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\nISIC_0000000,55.0,anterior torso,,female\n"
        "ISIC_0000001,30.0,anterior torso,,female\nISIC_0024306,45.0,,HAM_0000550,male\n"
        "ISIC_0024307,50.0,lower extremity,HAM_0000550,male\n")
    (tmp_path / "notes.csv").write_text("what,when\nexported,2019\n")  # no groups in it
    with caplog.at_level("INFO", logger="pipeline.labels"):
        groups = run(scans, tmp_path, labels=labels).manifest.set_index("scan_id")["group"]
    lesion = patient_pseudonym("HAM_0000550")
    assert groups.to_dict() == {"ISIC_0000000.jpg": "", "ISIC_0000001.jpg": "", "ISIC_0024306.jpg": lesion,
                                "ISIC_0024307.jpg": lesion}
    assert "2 of its 4 rows take column 'lesion_id' of ISIC_2019_Training_Metadata.csv beside it" in caplog.text
    # a lesion the labels file's own split puts on both sides keeps that split and no group
    labels.write_text("image,MEL,NV,UNK,split\nISIC_0000000,0,1,0,train\nISIC_0000001,0,1,0,train\n"
                      "ISIC_0024306,1,0,0,test\nISIC_0024307,1,0,0,train\n")
    assert (run(scans, tmp_path, labels=labels).manifest["group"] == "").all()
    # a group the labels file gives wins
    labels.write_text("image,MEL,NV,UNK,patient_id\nISIC_0000000,0,1,0,p1\nISIC_0000001,0,1,0,p1\n"
                      "ISIC_0024306,1,0,0,p2\nISIC_0024307,1,0,0,p3\n")
    groups = run(scans, tmp_path, labels=labels).manifest.set_index("scan_id")["group"]
    assert groups["ISIC_0024306.jpg"] == patient_pseudonym("p2") != groups["ISIC_0024307.jpg"]


def test_findings_given_as_columns_of_ones_are_listed_as_nih_lists_them(tmp_path, write, caplog):
    # CheXpert: Path,...,No Finding,Edema,...; 1 a finding, blank or 0 not, -1 uncertain; several a scan
    root = tmp_path / "CheXpert-v1.0-small"
    names = [f"train/patient0000{i}/study1/view1_frontal.jpg" for i in range(5)]
    for index, name in enumerate(names):
        write.png(root / name, write.image(index))
    (root / "train.csv").write_text(
        "Path,Sex,Age,No Finding,Edema,Pleural Effusion,Support Devices\n"
        f"CheXpert-v1.0-small/{names[0]},Male,61,1.0,,,\n"
        f"CheXpert-v1.0-small/{names[1]},Female,40,,1.0,1.0,0.0\n"
        f"CheXpert-v1.0-small/{names[2]},Female,52,,-1.0,1.0,\n"
        f"CheXpert-v1.0-small/{names[3]},Male,70,,-1.0,0.0,\n"  # nothing certain: unlabelled
        f"CheXpert-v1.0-small/{names[4]},Male,33,1.0,,,1.0\n")
    with caplog.at_level("INFO", logger="pipeline.labels"):
        result = run(root, tmp_path, labels=root / "train.csv")
    labels = result.manifest.set_index("path")["label"]
    assert [labels[str(root / name)] for name in names[:3] + names[4:]] == [
        "No Finding", "Edema|Pleural Effusion", "Pleural Effusion", "No Finding|Support Devices"]
    assert not labels[str(root / names[3])] or pd.isna(labels[str(root / names[3])])
    assert "2 cells of -1 (uncertain) read as not the finding; 1 rows with no 1 left unlabelled" in caplog.text
    # VinDr-CXR's image labels: a row per reader, the readers' findings listed together
    scans = tmp_path / "vindr"
    for index in range(4):
        write.png(scans / f"i{index}.png", write.image(index))
    (scans / "image_labels_train.csv").write_text(
        "image_id,rad_id,Aortic enlargement,Cardiomegaly,No finding\n"
        "i0,R1,0,0,1\ni0,R2,0,0,1\ni1,R1,1,0,0\ni1,R3,0,1,0\ni2,R1,1,1,0\ni2,R2,0,0,1\ni3,R2,0,1,0\ni3,R4,0,0,1\n")
    result = run(scans, tmp_path, labels=scans / "image_labels_train.csv")
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "i0.png": "No finding", "i1.png": "Aortic enlargement|Cardiomegaly",
        "i2.png": "Aortic enlargement|Cardiomegaly|No finding", "i3.png": "Cardiomegaly|No finding"}
    # A hospital's export of findings as columns lists its healthy scans as rows of 0s
    (scans / "export.csv").write_text("file,pneumothorax,effusion\ni0.png,0,0\ni1.png,1,0\ni2.png,1,1\ni3.png,0,\n")
    labels = run(scans, tmp_path, labels=scans / "export.csv").manifest.set_index("scan_id")["label"]
    assert labels[["i0.png", "i1.png", "i2.png"]].tolist() == ["no finding", "pneumothorax", "effusion|pneumothorax"]
    assert not labels["i3.png"] or pd.isna(labels["i3.png"])  # a blank: not a healthy scan's row of 0s
    # Columns of 0s and 1s of which only one holds a 1 are no classes: the label column is still asked for
    (scans / "image_labels_train.csv").write_text("image_id,frontal,lateral\ni0,1,0\ni1,1,0\n")
    with pytest.raises(ValueError, match="no 'label' column"):
        run(scans, tmp_path, labels=scans / "image_labels_train.csv")


def test_a_row_per_scan_and_finding_in_one_value_lists_the_scans_findings(tmp_path, write, caplog):
    # RSNA intracranial haemorrhage: ID,Label with ID_<image>_<subtype>; "any" is whether any subtype is
    root = tmp_path / "rsna"
    images = ["ID_0a1", "ID_0b2", "ID_0c3", "ID_0d4"]
    for index, image in enumerate(images):
        write.png(root / "stage_2_train" / f"{image}.png", write.image(index))
    subtypes = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]
    given = {"ID_0a1": (), "ID_0b2": ("subdural",), "ID_0c3": ("epidural", "subarachnoid"), "ID_0d4": ()}
    rows = [f"{image}_{subtype},{int(subtype in found or (subtype == 'any' and bool(found)))}"
            for image, found in given.items() for subtype in subtypes]
    rows.append("ID_0b2_subdural,1")  # RSNA's file repeats a few rows
    (root / "stage_2_train.csv").write_text("ID,Label\n" + "\n".join(rows[:-7] + rows[-1:]) + "\n")  # ID_0d4 absent
    with caplog.at_level("INFO", logger="pipeline.labels"):
        result = run(root / "stage_2_train", tmp_path, labels=root / "stage_2_train.csv")
    labels = result.manifest.set_index("scan_id")["label"]
    assert labels[["ID_0a1.png", "ID_0b2.png", "ID_0c3.png"]].tolist() == [
        "no finding", "subdural", "epidural|subarachnoid"]
    assert not labels["ID_0d4.png"] or pd.isna(labels["ID_0d4.png"])
    assert result.problems.empty
    assert "'any' is whether any other is, so no finding of its own: left out" in caplog.text
    # Where 'any' is not the others' summary it is a finding like them
    (root / "stage_2_train.csv").write_text("ID,Label\nID_0a1_any,1\nID_0a1_subdural,0\nID_0a1_epidural,0\n"
                                            "ID_0b2_any,0\nID_0b2_subdural,1\nID_0b2_epidural,0\n")
    labels = run(root / "stage_2_train", tmp_path, labels=root / "stage_2_train.csv").manifest.set_index("scan_id")["label"]
    assert labels[["ID_0a1.png", "ID_0b2.png"]].tolist() == ["any", "subdural"]
    # A file and a 0/1 label per row, the names with underscores, is read as it always was
    (root / "labels.csv").write_text("file,label\nID_0a1,0\nID_0b2,1\nID_0c3,1\n")
    labels = run(root / "stage_2_train", tmp_path, labels=root / "labels.csv").manifest.set_index("scan_id")["label"]
    assert labels[["ID_0a1.png", "ID_0b2.png", "ID_0c3.png"]].tolist() == ["0", "1", "1"]


def test_labels_written_as_lists_of_findings_are_listed_as_nih_lists_them(tmp_path, write):
    # PadChest: ImageID,...,Labels with Python lists, some empty; a bracketed name that is no list stays
    scans = tmp_path / "scans"
    for index in range(5):
        write.png(scans / f"i{index}.png", write.image(index))
    (scans / "labels.csv").write_text(
        "ImageID,PatientID,Labels\ni0.png,1,['normal']\ni1.png,2,\"['pleural effusion', ' cardiomegaly']\"\n"
        "i2.png,3,[]\ni3.png,4,\"[\"\"pneumonia\"\"]\"\ni4.png,5,[benign]\n")
    labels = run(scans, tmp_path).manifest.set_index("scan_id")["label"]
    assert labels[["i0.png", "i1.png", "i3.png", "i4.png"]].tolist() == [
        "normal", "cardiomegaly|pleural effusion", "pneumonia", "[benign]"]
    assert not labels["i2.png"] or pd.isna(labels["i2.png"])


def test_labels_given_as_run_length_encoded_masks_say_whether_a_scan_has_a_finding(tmp_path, write, caplog):
    # SIIM-ACR pneumothorax: ImageId, EncodedPixels; a mask's start and length pairs, -1 for none, a row per mask
    caplog.set_level("INFO", logger="pipeline.labels")
    scans = tmp_path / "scans"
    write.pngs(scans, [f"1.2.3.{index}.png" for index in range(1, 6)])
    (scans / "labels.csv").write_text("ImageId, EncodedPixels\n1.2.3.1, 387620 23 996 33 1000 33\n"
                                      "1.2.3.1, 500000 10\n1.2.3.2, -1\n1.2.3.3, 12 4\n1.2.3.4, -1\n1.2.3.5, 7 9\n")
    labels = run(scans, tmp_path).manifest.set_index("scan_id")["label"]
    assert labels.to_dict() == {"1.2.3.1.png": "finding", "1.2.3.2.png": "no finding", "1.2.3.3.png": "finding",
                                "1.2.3.4.png": "no finding", "1.2.3.5.png": "finding"}
    assert "the labels are run-length encoded masks: a scan with a mask is labelled 'finding'" in caplog.text
    # numbers that are no pairs of start and length are classes as they are
    (scans / "labels.csv").write_text("ImageId,grade\n1.2.3.1,1 2 3\n1.2.3.2,-1\n1.2.3.3,2\n1.2.3.4,2\n1.2.3.5,2\n")
    assert run(scans, tmp_path).manifest.set_index("scan_id")["label"]["1.2.3.1.png"] == "1 2 3"


def test_a_name_a_scan_and_its_mask_share_names_the_scan_and_an_id_column_is_no_class(tmp_path, write):
    # SIIM-ACR's PNG release: png_images/ and png_masks/ of one name a scan, new_filename,ImageId,has_pneumo
    scans = tmp_path / "siim"
    names = [f"{index}_train_{index % 2}_.png" for index in range(6)]
    write.pngs(scans / "png_images", names)
    write.pngs(scans / "png_masks", names)
    (scans / "labels.csv").write_text("new_filename,ImageId,has_pneumo\n" + "".join(
        f"{name},1.2.276.0.7230010.3.1.4.{index},{index % 2}\n" for index, name in enumerate(names)))
    result = run(scans, tmp_path)
    labels = result.manifest.set_index("scan_id")["label"]
    assert labels.to_dict() == {f"png_images/{name}": str(index % 2) for index, name in enumerate(names)}
    assert set(result.problems["source"]) == {"mask"}


def test_the_views_of_a_case_share_a_group_where_nothing_else_gives_one(tmp_path, write):
    # EyePACS: trainLabels.csv image,level grades each eye; a patient's two eyes stay on one side of the split
    scans = tmp_path / "train"
    write.pngs(scans, ["10_left.png", "10_right.png", "13_left.png", "13_right.png", "15.png", "17_left.png"])
    (scans / "labels.csv").write_text("image,level\n10_left,0\n10_right,2\n13_left,1\n13_right,1\n15,0\n17_left,3\n")
    groups = run(scans, tmp_path).manifest.set_index("scan_id")["group"]
    assert groups.to_dict() == {"10_left.png": "10", "10_right.png": "10", "13_left.png": "13", "13_right.png": "13",
                                "15.png": "", "17_left.png": ""}  # one view is no case


@pytest.mark.parametrize("copies, originals", [
    # the Augmented Alzheimer MRI set: AugmentedAlzheimerDataset/ beside OriginalDataset/, the same classes in each
    (["AugmentedAlzheimerDataset"], "OriginalDataset"),
    # the Monkeypox skin lesion set: Augmented Images/ and Fold1/Fold1/Fold1/Train/ beside Original Images/Original Images/
    (["Augmented Images/Augmented Images", "Fold1/Fold1/Fold1/Train"], "Original Images/Original Images"),
])
def test_augmented_copies_and_folds_beside_the_originals_are_left_out(tmp_path, write, copies, originals):
    scans = tmp_path / "download"
    names = [f"{originals}/{label}/{index}.png" for label in ("NonDemented", "MildDemented") for index in range(3)]
    names += [f"{copy}/{label}/{index}_{k}.png" for copy in copies for label in ("NonDemented", "MildDemented")
              for index in range(3) for k in range(2)]
    write.pngs(scans, names)
    result = run(scans, tmp_path, class_subfolders=True)
    assert sorted(result.manifest["label"].value_counts().items()) == [("MildDemented", 3), ("NonDemented", 3)]
    left_out = result.problems.set_index("item")["reason"]
    for copy in copies:
        folder = copy.split("/")[0]
        assert left_out[f"{folder}/"].startswith("12 copies (augmented, or a cross-validation fold's) beside the "
                                                 "originals' folder: not ingested")
    # without the originals beside them, augmented scans are the data
    (tmp_path / "alone").mkdir()
    (scans / copies[0].split("/")[0]).rename(tmp_path / "alone" / "Augmented")
    assert len(run(tmp_path / "alone", tmp_path, class_subfolders=True).manifest) == 12


def test_a_patient_id_that_names_the_file_and_repeated_rows_per_finding_are_read(tmp_path, write, caplog):
    # RSNA pneumonia: patientId,x,y,width,height,Target; <patientId>.dcm; a row per box of a finding
    scans = tmp_path / "scans"
    write.pngs(scans, ["p0.png", "p1.png", "p2.png"])
    (scans / "labels.csv").write_text("patientId,x,y,width,height,Target\np0,,,,,0\np1,1,2,3,4,1\n"
                                      "p1,5,6,7,8,1\np2,,,,,0\np2,,,,,1\n")
    with caplog.at_level(logging.INFO, logger="pipeline.labels"):
        result = run(scans, tmp_path)
    assert "column 'patientId' taken as the file name" in caplog.text  # named as the user wrote it
    manifest = result.manifest.set_index("scan_id")
    assert manifest[["label", "group"]].to_dict("index") == {
        "p0.png": {"label": "0", "group": patient_pseudonym("p0")}, "p1.png": {"label": "1", "group": patient_pseudonym("p1")},
        "p2.png": {"label": "0", "group": patient_pseudonym("p2")}}
    # the same file and label again is no problem; another label for it is
    assert result.problems["item"].tolist() == ["labels.csv line 6"]
    (scans / "labels.csv").write_text("patient_id,label\nq1,0\nq2,1\n")
    with pytest.raises(ValueError, match="no 'file' column, and its patient, accession or study values are not file "
                                         "names either, nor found in a DICOM scan's header"):
        run(scans, tmp_path)


def test_rows_per_finding_or_reader_with_different_labels_list_the_scans_findings(tmp_path, write):
    # VinDr-CXR: image_id,class_name,rad_id,...; a row per finding and per radiologist, different labels
    scans = tmp_path / "scans"
    for index in range(5):
        write.png(scans / f"i{index}.png", write.image(index))
    (scans / "train.csv").write_text(
        "image_id,class_name,rad_id\n"
        "i0,No finding,R1\ni0,No finding,R2\n"  # the same label again: read once
        "i1,Nodule/Mass,R1\ni1,Cardiomegaly,R1\ni1,Nodule/Mass,R2\n"
        "i2,Cardiomegaly,R3\ni2,No finding,R4\n"  # readers disagree: both listed
        "i3,Atelectasis|Effusion,R1\ni3,Effusion|Nodule/Mass,R2\n"  # lists already: their findings once each
        "i4,Cardiomegaly,R1\n")
    result = run(scans, tmp_path, labels=scans / "train.csv")
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "i0.png": "No finding", "i1.png": "Cardiomegaly|Nodule/Mass", "i2.png": "Cardiomegaly|No finding",
        "i3.png": "Atelectasis|Effusion|Nodule/Mass", "i4.png": "Cardiomegaly"}
    assert result.problems.empty
    # A few scans of another label in a file of one label a scan are mistakes: each a problem, the first
    # row's label kept (as in the RSNA case above).
    (scans / "train.csv").write_text("image_id,label\n" + "".join(f"i{i},{i % 2}\n" for i in range(5)) + "i1,0\n")
    result = run(scans, tmp_path, labels=scans / "train.csv")
    assert result.manifest.set_index("scan_id")["label"]["i1.png"] == "1"
    assert result.problems["item"].tolist() == ["train.csv line 7"]


def test_ids_of_scans_in_subfolders_are_found_by_name(tmp_path, write):
    # HAM10000: the metadata names ISIC_0000001; the pictures lie in two part folders
    scans = tmp_path / "ham"
    write.png(scans / "HAM10000_images_part_1" / "ISIC_0000001.jpg", write.image(1))
    write.png(scans / "HAM10000_images_part_2" / "ISIC_0000002.jpg", write.image(2))
    write.png(scans / "a" / "twice.jpg", write.image(3))
    write.png(scans / "b" / "twice.jpg", write.image(4))
    (scans / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,age\nL1,ISIC_0000001,nv,40\n"
                                                 "L2,ISIC_0000002,mel,50\nL3,twice,nv,60\n")
    result = run(scans, tmp_path, labels=scans / "HAM10000_metadata.csv")
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "HAM10000_images_part_1/ISIC_0000001.jpg": "nv", "HAM10000_images_part_2/ISIC_0000002.jpg": "mel",
        "a/twice.jpg": "", "b/twice.jpg": ""}
    problems = dict(zip(result.problems["item"], result.problems["reason"]))
    assert "2 files of that name lie below the scan folder (a/twice.jpg, b/twice.jpg)" in problems[
        "HAM10000_metadata.csv line 4"]


def test_ids_naming_folders_deep_below_the_scans_label_every_scan_inside(tmp_path, write):
    # ADNI's download: ADNI/<subject>/<series>/<date>/<image id>/<file>.nii, its collection CSV naming the image id
    # and the subject (and "Group", the diagnosis, which the user names: it is not the split group)
    scans = tmp_path / "ADNI"
    rows = ["Image Data ID,Subject,Group,Visit"]
    for index, (subject, group, image) in enumerate([("002_S_0295", "CN", "I45108"), ("002_S_0295", "CN", "I45109"),
                                                    ("011_S_0003", "AD", "I32237"), ("011_S_0005", "AD", "I40657")]):
        write.nifti(scans / subject / "MPRAGE" / f"2006-0{index + 1}-18_08_20_30.0" / image / f"ADNI_{subject}_{image}.nii",
                    write.image(index, (6, 8, 5)))
        rows.append(f"{image},{subject},{group},sc")
    (tmp_path / "ADNI1_Screening.csv").write_text("\n".join(rows) + "\n")
    result = run(scans, tmp_path, labels=tmp_path / "ADNI1_Screening.csv", columns={"label": "Group"})
    manifest = result.manifest.set_index("scan_id")
    assert sorted(manifest["label"]) == ["AD", "AD", "CN", "CN"]
    assert manifest["group"].nunique() == 3 and result.problems.empty  # the subject column groups
    # OASIS-1: oasis_cross-sectional.csv's ID names each subject's folder, holding several runs and no group
    scans = tmp_path / "oasis"
    for subject in ("OAS1_0001_MR1", "OAS1_0002_MR1"):
        for run_name in ("RAW/mpr-1_anon.nii.gz", "RAW/mpr-2_anon.nii.gz", "PROCESSED/t88_gfc.nii.gz"):
            write.nifti(scans / "disc1" / subject / run_name, write.image(len(run_name) + len(subject), (6, 8, 5)))
    write.nifti(scans / "disc1" / "OAS1_0003_MR1" / "RAW" / "mpr-1_anon.nii.gz", write.image(40, (6, 8, 5)))
    (tmp_path / "oasis.csv").write_text("ID,M/F,CDR\nOAS1_0001_MR1,F,0\nOAS1_0002_MR1,M,0.5\nOAS1_0004_MR1,M,1\n")
    result = run(scans, tmp_path, labels=tmp_path / "oasis.csv", columns={"label": "CDR"})
    manifest = result.manifest.set_index("scan_id")
    assert manifest.loc["disc1/OAS1_0001_MR1/RAW/mpr-2_anon.nii.gz", "label"] == "0"
    assert (manifest.filter(like="OAS1_0002", axis=0)["label"] == "0.5").sum() == 3
    assert manifest.loc["disc1/OAS1_0003_MR1/RAW/mpr-1_anon.nii.gz", "label"] == ""  # no row: unlabelled
    groups = manifest.filter(like="OAS1_0001", axis=0)["group"]
    assert set(groups) == {"disc1/OAS1_0001_MR1"}  # a subject's runs stay on one side of the split
    problems = dict(zip(result.problems["item"], result.problems["reason"]))
    assert "'OAS1_0004_MR1' does not exist" in problems["oasis.csv line 4"]


def test_studies_named_by_the_number_of_their_lettered_folder_label_their_views(tmp_path, write):
    # MIMIC-CXR-JPG: files/p10/p10000032/s50414267/<dicom id>.jpg; its CheXpert labels name subject and study
    # by number, the findings as columns
    scans = tmp_path / "files"
    studies = {("10000032", "50414267"): 2, ("10000032", "53189527"): 1, ("10000764", "57375967"): 2}
    for index, ((subject, study), views) in enumerate(studies.items()):
        for view in range(views):
            write.png(scans / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{index}{view}-a1b2.jpg",
                      write.image(3 * index + view))
    write.png(scans / "p10" / "p10000764" / "s1" / "x.jpg", write.image(9))  # no study of that number
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id,Atelectasis,Edema,No Finding\n"
        "10000032,50414267,,,1.0\n10000032,53189527,1.0,-1.0,\n10000764,57375967,1.0,1.0,\n10000764,1,1.0,,\n")
    result = run(scans, tmp_path, labels=tmp_path / "mimic-cxr-2.0.0-chexpert.csv")
    manifest = result.manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {
        "p10/p10000032/s50414267/00-a1b2.jpg": "No Finding", "p10/p10000032/s50414267/01-a1b2.jpg": "No Finding",
        "p10/p10000032/s53189527/10-a1b2.jpg": "Atelectasis",
        "p10/p10000764/s57375967/20-a1b2.jpg": "Atelectasis|Edema",
        "p10/p10000764/s57375967/21-a1b2.jpg": "Atelectasis|Edema", "p10/p10000764/s1/x.jpg": ""}
    assert sorted(set(manifest["group"]))[0] == "" and manifest["group"].nunique() == 3  # two subjects; no row, no group
    assert result.problems["item"].tolist() == ["mimic-cxr-2.0.0-chexpert.csv line 5"]  # study 1: no folder s1


def test_a_row_naming_a_folder_of_many_scans_groups_none_of_them(tmp_path, write, monkeypatch):
    import pipeline.stages.ingest as ingest_stage

    monkeypatch.setattr(ingest_stage, "CASE_FOLDER_SCANS", 2)
    scans = tmp_path / "scans"
    for index, name in enumerate(["normal/a.png", "normal/b.png", "normal/c.png", "case7/x.png", "case7/y.png"]):
        write.png(scans / name, write.image(index + 1))
    (tmp_path / "labels.csv").write_text("file,label\nscans/normal,normal\nscans/case7,abnormal\n")
    manifest = run(scans, tmp_path, labels=tmp_path / "labels.csv").manifest.set_index("scan_id")
    assert manifest["group"].to_dict() == {"case7/x.png": "case7", "case7/y.png": "case7", "normal/a.png": "",
                                           "normal/b.png": "", "normal/c.png": ""}


def test_ids_naming_the_start_of_file_names_label_those_files(tmp_path, write):
    # INbreast: "File Name" 22678622 for AllDICOMs/22678622_d71fc3e8fd9e4c5e_MG_L_CC_ANON.dcm (a ';' file);
    # PI-CAI-like: a study id naming the start of its three sequences' files labels all three
    scans = tmp_path / "AllDICOMs"
    write.png(scans / "22678622_d71fc3e8fd9e4c5e_MG_L_CC_ANON.png", write.image(1))
    write.png(scans / "22678694_aaa0c8f2b1e4d9f1_MG_R_CC_ANON.png", write.image(2))
    write.png(scans / "226786_0000000000000000_MG_R_CC_ANON.png", write.image(3))  # a shorter id: not a match
    for index, sequence in enumerate(("t2w", "adc", "hbv")):
        write.png(scans / f"10000_1000000_{sequence}.png", write.image(index + 10))
    (tmp_path / "INbreast.csv").write_text("Patient ID;File Name;Bi-Rads\np1;22678622;1\np2;22678694;4\n"
                                           "p3;10000_1000000;4\np4;2267869;1\n")
    result = run(scans, tmp_path, labels=tmp_path / "INbreast.csv", columns={"label": "Bi-Rads"})
    labels = result.manifest.set_index("scan_id")["label"].to_dict()
    assert labels == {"22678622_d71fc3e8fd9e4c5e_MG_L_CC_ANON.png": "1", "22678694_aaa0c8f2b1e4d9f1_MG_R_CC_ANON.png": "4",
                      "226786_0000000000000000_MG_R_CC_ANON.png": "",
                      **{f"10000_1000000_{s}.png": "4" for s in ("adc", "hbv", "t2w")}}
    assert list(result.problems["item"]) == ["INbreast.csv line 5"]  # 2267869 starts no name at a separator
    # without a patient column, a study id naming several files keeps them in one group
    write.png(scans / "10001_1000001_t2w.png", write.image(20))
    (tmp_path / "studies.csv").write_text("file,label\n10000_1000000,4\n10001_1000001,1\n")
    groups = run(scans, tmp_path, labels=tmp_path / "studies.csv").manifest.set_index("scan_id")["group"]
    assert groups["10000_1000000_t2w.png"] == groups["10000_1000000_adc.png"] == patient_pseudonym("10000_1000000")
    assert groups["10001_1000001_t2w.png"] != groups["10000_1000000_t2w.png"]


def test_a_class_column_whose_values_name_class_folders_is_not_taken_for_the_files(tmp_path, write):
    scans = tmp_path / "images"
    for index, (finding, name) in enumerate([("polyps", "0a1b"), ("cecum", "0c2d"), ("polyps", "1e3f"),
                                             ("polyps", "2a4b"), ("cecum", "3c5d")]):
        write.png(scans / finding / f"{name}.jpg", write.image(index))
    labels = tmp_path / "labels.csv"
    labels.write_text("Video,Result\n0a1b,polyps\n0c2d,cecum\n1e3f,polyps\n2a4b,polyps\n3c5d,cecum\n")
    manifest = run(scans, tmp_path, labels=labels, columns={"label": "Result"}).manifest
    assert dict(zip(manifest["scan_id"], manifest["label"]))["cecum/0c2d.jpg"] == "cecum"


def test_a_labels_file_without_a_header_line_naming_study_folders_is_read(tmp_path, write):
    # MURA: MURA-v1.1/train_labeled_studies.csv holds "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1"
    scans = tmp_path / "MURA-v1.1"
    write.png(scans / "train" / "XR_WRIST" / "patient00001" / "study1_positive" / "image1.png", write.image(1))
    write.png(scans / "train" / "XR_WRIST" / "patient00001" / "study1_positive" / "image2.png", write.image(2))
    write.png(scans / "train" / "XR_WRIST" / "patient00002" / "study1_negative" / "image1.png", write.image(3))
    (scans / "train_labeled_studies.csv").write_text("MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1\n"
                                                     "MURA-v1.1/train/XR_WRIST/patient00002/study1_negative/,0\n"
                                                     "MURA-v1.1/train/XR_WRIST/patient00003/study1_negative/,0\n")
    result = run(scans, tmp_path, labels=scans / "train_labeled_studies.csv")
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "train/XR_WRIST/patient00001/study1_positive/image1.png": "1",
        "train/XR_WRIST/patient00001/study1_positive/image2.png": "1",
        "train/XR_WRIST/patient00002/study1_negative/image1.png": "0"}
    # the first row is data: line 1 is where an editor shows it
    assert result.problems["item"].tolist() == ["train_labeled_studies.csv line 3"]
    # a patient's studies share a group, so that no patient straddles training and test
    assert set(result.manifest["group"]) == {"patient00001", "patient00002"}


@pytest.mark.parametrize("header, message", [
    ("image,path,label", "columns image, path could each be the file"),
    ("file,age", "no 'label' column"),
])
def test_labels_columns_that_cannot_be_told_apart_are_named(tmp_path, write, header, message):
    scans = tmp_path / "scans"
    write.png(scans / "a.png", write.image(1))
    (scans / "labels.csv").write_text(header + "\n" + ",".join(["a.png"] * len(header.split(","))) + "\n")
    option = "--file-column" if "file" in message else "--label-column"
    with pytest.raises(ValueError, match=message + rf".*name the columns to use with {option}"):
        run(scans, tmp_path)


def test_labels_columns_the_user_names_are_taken(tmp_path, write):
    # SIIM-ISIC 2020: diagnosis and target could each be the label; the user says which
    scans = tmp_path / "siim"
    write.pngs(scans / "train", ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.jpg"])
    (scans / "train.csv").write_text("image_name,patient_id,Diagnosis,benign_malignant,target,label\n"
                                     "ISIC_1,IP_1,nevus,benign,0,x\nISIC_2,IP_1,melanoma,malignant,1,x\n"
                                     "ISIC_3,IP_2,unknown,benign,0,x\n")
    labels = scans / "train.csv"
    without = scans / "without_label.csv"
    without.write_text("\n".join(line.rsplit(",", 1)[0] for line in labels.read_text().splitlines()) + "\n")
    with pytest.raises(ValueError, match="columns diagnosis, target could each be the label.*--label-column"):
        run(scans, tmp_path, labels=without)
    result = run(scans, tmp_path, labels=labels, columns={"label": "target"})
    manifest = result.manifest.set_index("scan_id")
    # the column named wins over the one called "label"; the patient column is still found by its name
    assert manifest["label"].to_dict() == {"train/ISIC_1.jpg": "0", "train/ISIC_2.jpg": "1", "train/ISIC_3.jpg": "0"}
    assert manifest["group"].tolist() == [patient_pseudonym(p) for p in ("IP_1", "IP_1", "IP_2")]
    named = run(scans, tmp_path, labels=labels, columns={"label": "Diagnosis", "group": "benign_malignant"})
    assert named.manifest["label"].tolist() == ["nevus", "melanoma", "unknown"]
    assert named.manifest["group"].tolist() == [patient_pseudonym(p) for p in ("benign", "malignant", "benign")]
    with pytest.raises(ValueError, match="has no column 'targets' \\(--label-column\\); its columns: image_name, "
                       "patient_id, Diagnosis"):
        run(scans, tmp_path, labels=labels, columns={"label": "targets"})
    with pytest.raises(ValueError, match="'target' is named for both label and group"):
        run(scans, tmp_path, labels=labels, columns={"label": "target", "group": "target"})
    with pytest.raises(ValueError, match="no labels file"):
        run(scans, tmp_path, class_subfolders=True, columns={"label": "target"})


def test_a_bids_subjects_sequences_share_a_group(tmp_path, write):
    scans = tmp_path / "bids"
    for subject in ("sub-01", "sub-02"):
        for sequence in ("T1w", "FLAIR"):
            write.nifti(scans / subject / "anat" / f"{subject}_{sequence}.nii.gz",
                        np.random.default_rng(len(subject + sequence)).random((6, 6, 4)).astype(np.float32))
    write.nifti(scans / "other.nii.gz", np.random.default_rng(9).random((6, 6, 4)).astype(np.float32))
    groups = run(scans, tmp_path).manifest.set_index("scan_id")["group"]
    assert groups["sub-01/anat/sub-01_T1w.nii.gz"] == groups["sub-01/anat/sub-01_FLAIR.nii.gz"] == "sub-01"
    assert groups["sub-02/anat/sub-02_FLAIR.nii.gz"] == "sub-02" and groups["other.nii.gz"] == ""


@pytest.mark.parametrize("scan_id, patient", [
    ("XR_WRIST/patient00001/study1_positive/image1.png", "patient00001"),
    ("Case_012/t1.nii.gz", "Case_012"), ("Subject 3/a.dcm", "Subject 3"),
    ("patient7.png", ""), ("cases/x.png", ""), ("P7/study/T1/a.dcm", ""),
])
def test_a_folder_named_for_its_patient_is_the_group(scan_id, patient):
    from pipeline.folder_labels import folder_patient

    assert folder_patient(scan_id) == patient


def test_a_patient_folder_on_both_sides_of_the_data_s_own_split_is_refused_naming_where_groups_come_from(
        tmp_path, write):
    scans = tmp_path / "export"
    write.pngs(scans, ["Training/yes/patient1/a.png", "Training/no/patient2/b.png", "Training/no/patient3/c.png",
                       "Testing/yes/patient1/d.png", "Testing/no/patient4/e.png"])
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.manifest.set_index("scan_id")["group"]["Testing/yes/patient1/d.png"] == "patient1"
    with pytest.raises(ValueError, match=r"groups patient1 .*a folder named for a patient"):
        make_split(result.manifest_path, labels_per_class=1)


def test_a_patient_numbered_in_file_names_is_the_group(tmp_path, write):
    # Kaggle's chest_xray/ (Kermany): a child's images share IM-0115 or person1; nothing else names patients
    scans = tmp_path / "chest_xray"
    names = ["train/NORMAL/IM-0115-0001.jpeg", "train/NORMAL/IM-0115-0002.jpeg", "train/NORMAL/IM-0117-0001.jpeg",
             "train/NORMAL/NORMAL2-IM-0135-0001.jpeg", "train/NORMAL/NORMAL2-IM-0135-0002.jpeg",
             "train/PNEUMONIA/person1_bacteria_1.jpeg", "train/PNEUMONIA/person1_virus_6.jpeg",
             "train/PNEUMONIA/person10_virus_35.jpeg", "test/NORMAL/IM-0001-0001.jpeg",
             "test/PNEUMONIA/person100_bacteria_475.jpeg", "test/PNEUMONIA/person100_bacteria_477.jpeg"]
    write.pngs(scans, names)
    groups = run(scans, tmp_path, class_subfolders=True).manifest.set_index("scan_id")["group"]
    assert groups.to_dict() == {
        "train/NORMAL/IM-0115-0001.jpeg": "train/NORMAL/IM-0115", "train/NORMAL/IM-0115-0002.jpeg": "train/NORMAL/IM-0115",
        "train/NORMAL/IM-0117-0001.jpeg": "",  # one image: no group needed
        "train/NORMAL/NORMAL2-IM-0135-0001.jpeg": "train/NORMAL/NORMAL2-IM-0135",
        "train/NORMAL/NORMAL2-IM-0135-0002.jpeg": "train/NORMAL/NORMAL2-IM-0135",
        "train/PNEUMONIA/person1_bacteria_1.jpeg": "train/PNEUMONIA/person1",
        "train/PNEUMONIA/person1_virus_6.jpeg": "train/PNEUMONIA/person1", "train/PNEUMONIA/person10_virus_35.jpeg": "",
        "test/NORMAL/IM-0001-0001.jpeg": "",
        "test/PNEUMONIA/person100_bacteria_475.jpeg": "test/PNEUMONIA/person100",
        "test/PNEUMONIA/person100_bacteria_477.jpeg": "test/PNEUMONIA/person100"}


def test_one_patient_filed_under_two_class_folders_is_one_group_kept_on_one_side(tmp_path, write):
    # OCT2017 (Kermany): CNV/CNV-1016042-1.jpeg and DRUSEN/DRUSEN-1016042-1.jpeg are one patient's
    scans = tmp_path / "OCT2017"
    names = [f"{cls}/{cls}-{patient}-{image}.jpeg" for patient in range(1000, 1012)
             for cls in ("CNV", "DRUSEN", "NORMAL") for image in (1, 2)]
    write.pngs(scans, names)
    result = run(scans, tmp_path, class_subfolders=True)
    groups = result.manifest.set_index("scan_id")["group"]
    assert groups["CNV/CNV-1003-1.jpeg"] == groups["DRUSEN/DRUSEN-1003-2.jpeg"] == groups["NORMAL/NORMAL-1003-1.jpeg"]
    assert groups.nunique() == 12
    split = pd.read_csv(make_split(result.manifest_path, labels_per_class=2), keep_default_na=False)
    subsets = split.assign(patient=split["scan_id"].str.extract(r"-(\d+)-")[0]).groupby("patient")["subset"]
    assert (subsets.nunique() == 1).all()


def test_a_split_the_data_came_with_wins_over_patients_read_from_names(tmp_path, write):
    # a labels file whose split column puts one numbered patient's images on both sides: the split is
    # kept and those images get no group (split would refuse a group across test and training)
    scans = tmp_path / "xr"
    write.pngs(scans, ["IM-0115-0001.png", "IM-0115-0002.png", "IM-0116-0001.png", "IM-0116-0002.png",
                       "IM-0117-0001.png", "IM-0117-0002.png"])
    (scans / "labels.csv").write_text("file,label,split\nIM-0115-0001.png,a,test\nIM-0115-0002.png,a,train\n"
                                      "IM-0116-0001.png,b,test\nIM-0116-0002.png,b,test\n"
                                      "IM-0117-0001.png,a,train\nIM-0117-0002.png,b,train\n")
    result = run(scans, tmp_path)
    groups = result.manifest.set_index("scan_id")["group"]
    assert groups.to_dict() == {"IM-0115-0001.png": "", "IM-0115-0002.png": "", "IM-0116-0001.png": "IM-0116",
                                "IM-0116-0002.png": "IM-0116", "IM-0117-0001.png": "IM-0117",
                                "IM-0117-0002.png": "IM-0117"}
    make_split(result.manifest_path, labels_per_class=1)  # no group across test and training to refuse


@pytest.mark.parametrize("names, groups", [
    # OCT2017: disease-patient-image; NIH ChestX-ray14: patient_follow-up
    (["CNV-1016042-1.jpeg", "CNV-1016042-2.jpeg", "CNV-103044-1.jpeg"], ["CNV-1016042", "CNV-1016042", ""]),
    # a class folder that starts its files' names: one patient's scans filed under two classes meet
    (["train/CNV/CNV-1016042-1.jpeg", "train/DRUSEN/DRUSEN-1016042-1.jpeg", "train/CNV/CNV-103044-1.jpeg",
      "test/CNV/CNV-1016042-2.jpeg"], ["train/1016042", "train/1016042", "", ""]),
    (["00000001_000.png", "00000001_001.png", "00000002_000.png"], ["00000001", "00000001", ""]),
    # one number, a phone's date and time, a folder's count: no patient
    (["ISIC_0024306.jpg", "ISIC_0024307.jpg", "Tr-gl_0010.jpg", "Tr-gl_0011.jpg", "benign (1).png", "benign (2).png"],
     [""] * 6),
    (["IMG_20200312_143015.jpg", "IMG_20200312_150101.jpg", "IMG_20200313_090000.jpg"], [""] * 3),
    # one name shared by most files is no patient
    (["scan_1_1.png", "scan_1_2.png", "scan_1_3.png", "scan_2_1.png"], [""] * 4),
    # the folder is part of the patient: two folders' numbers never meet
    (["a/IM-0001-0001.png", "b/IM-0001-0002.png"], ["", ""]),
])
def test_the_patient_a_file_name_numbers(names, groups):
    from pipeline.folder_labels import name_patients

    found = name_patients(names)
    assert [found.get(index, "") for index in range(len(names))] == groups


def test_an_exports_folder_per_patient_named_anyhow_is_the_group_and_split_keeps_it_on_one_side(tmp_path, write):
    # a hospital export by MRN, labelled by a file naming paths: nothing but the folder says whose a scan is
    scans = tmp_path / "export"
    names = [f"{4412000 + patient}/{image}.png" for patient in range(12) for image in range(1 + patient % 3)]
    names += ["Patient 12 - Doe/1.png", "Patient 12 - Doe/2.png"]
    write.pngs(scans, names)
    (scans / "labels.csv").write_text("file,label\n" + "".join(f"{name},{'ab' if i % 2 else 'no'}\n"
                                                                for i, name in enumerate(names)))
    result = run(scans, tmp_path)
    groups = result.manifest.set_index("scan_id")["group"]
    assert groups.to_dict() == {name: name.rsplit("/", 1)[0] for name in names}
    split = pd.read_csv(make_split(result.manifest_path, labels_per_class=2), keep_default_na=False)
    assert (split.groupby(split["scan_id"].str.rsplit("/", n=1).str[0])["subset"].nunique() == 1).all()


@pytest.mark.parametrize("names, labels, groups", [
    # the shallowest folders that are many siblings with few scans: a patient's, above the days of its studies
    ([f"anon_{p:04d}/2019-03-1{d}/{i}.png" for p in range(5) for d in range(2) for i in range(2)], None,
     [f"anon_{p:04d}" for p in range(5) for _ in range(4)]),
    # one patient filed under two class folders is one; the class folders themselves are none
    ([f"{c}/{p}/{i}.png" for c in ("normal", "pneumonia") for p in range(100, 106) for i in range(2)],
     ["normal"] * 12 + ["pneumonia"] * 12, [f"{p}" for _ in range(2) for p in range(100, 106) for _ in range(2)]),
    # an unlabelled/ folder beside the patients' is none of them, and may hold patients of its own
    ([f"{p}/{i}.png" for p in range(100, 105) for i in range(2)] + [f"unlabelled/{p}/{i}.png" for p in "abcde"
                                                                    for i in range(2)],
     None, [f"{p}" for p in range(100, 105) for _ in range(2)] + [f"unlabelled/{p}" for p in "abcde" for _ in range(2)]),
    # fewer than five siblings; folders holding many scans (days, batches); one scan each: no patient
    ([f"site{s}/{i}.png" for s in range(4) for i in range(3)], None, [""] * 12),
    ([f"2019-03-{d:02d}/{i}.png" for d in range(1, 6) for i in range(25)], None, [""] * 125),
    ([f"{p}/1.png" for p in range(100, 110)], None, [""] * 10),
    # small folders named for classes, splits or planes, or fewer than twice their classes: no patients
    ([f"{c}/{i}.png" for c in "abcde" for i in range(3)], [c for c in "abcde" for _ in range(3)], [""] * 15),
    ([f"{g}/{i}.png" for g in range(5) for i in range(3)], [f"grade {g}" for g in range(5) for _ in range(3)],
     [""] * 15),
    ([f"{f}/{i}.png" for f in ("train", "val", "test", "Training", "Testing") for i in range(3)], None, [""] * 15),
    ([f"{f}/{i}.png" for f in ("axial", "coronal", "sagittal", "t1", "unlabelled") for i in range(3)], None, [""] * 15),
])
def test_the_patient_folders_an_export_gives(names, labels, groups):
    from pipeline.folder_labels import sibling_patients

    found = sibling_patients(names, labels)
    assert [found.get(index, "") for index in range(len(names))] == groups


def test_the_ingest_command_reads_class_subfolders_without_a_labels_file(tmp_path, write, monkeypatch):
    from pipeline.cli import main

    scans = tmp_path / "scans"
    write.png(scans / "yes" / "Y1.png", write.image(1))
    write.png(scans / "no" / "N1.png", write.image(2))
    assert main(["ingest", str(scans), "--out", str(tmp_path / "m.csv")]) == 0
    manifest = pd.read_csv(tmp_path / "m.csv", keep_default_na=False).set_index("scan_id")
    assert manifest["label"].to_dict() == {"no/N1.png": "no", "yes/Y1.png": "yes"}
    # --scans, as pipeline run takes the folder, names it too (ingest, score and validate alike)
    assert main(["ingest", "--scans", str(scans), "--out", str(tmp_path / "m2.csv")]) == 0
    assert (tmp_path / "m2.csv").read_text() == (tmp_path / "m.csv").read_text()
    for argv in (["ingest"], ["score", "--scans", str(scans), str(tmp_path)], ["validate"]):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2


def test_a_flat_folder_without_labels_is_unlabelled_without_a_problem_per_scan(tmp_path, write):
    scans = tmp_path / "flat"
    for index in range(5):
        write.png(scans / f"s{index}.png", write.image(index))
    result = run(scans, tmp_path, class_subfolders=True)
    assert (result.manifest["label"] == "").all() and result.problems.empty


@pytest.mark.parametrize("pool", ["Unlabeled", "unlabelled_images", "Unlabelled Scans", "pool-unannotated",
                                  "no label", "pred"])  # Br35H's pred/: scans left for a model to predict
def test_an_unlabelled_folder_beside_the_class_folders_is_the_pool_not_a_class(tmp_path, write, pool):
    scans = tmp_path / "scans"
    write.png(scans / "normal" / "a.png", write.image(1))
    write.png(scans / "tumour" / "b.png", write.image(2))
    write.png(scans / pool / "c.png", write.image(3))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["normal", "tumour"] and result.problems.empty
    assert result.manifest.set_index("scan_id").loc[f"{pool}/c.png", "label"] == ""


@pytest.mark.parametrize("name, unlabelled", [("labelled", False), ("relabelled", False), ("unknown", False),
                                              ("Unlabeled", True), ("images_unlabelled", True)])
def test_folder_names_that_say_unlabelled(name, unlabelled):
    from pipeline.folder_labels import unlabelled_folder

    assert unlabelled_folder(name) is unlabelled


def test_an_unlabelled_folder_beside_split_folders_keeps_them_splits(tmp_path, write):
    scans = tmp_path / "export"
    write.png(scans / "Training" / "glioma" / "a.png", write.image(1))
    write.png(scans / "Testing" / "notumor" / "b.png", write.image(2))
    write.png(scans / "unlabelled" / "c.png", write.image(3))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["glioma", "notumor"] and result.problems.empty


def test_a_class_named_in_full_in_one_split_and_by_its_start_in_another_is_one_class(tmp_path, write):
    # Kaggle's chest CT-scan images: train/adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib/ but test/adenocarcinoma/
    scans = tmp_path / "Data"
    for split in ("train", "valid", "test"):
        for short, full in (("adenocarcinoma", "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib"), ("normal", "normal"),
                            ("glioma", "glioma"), ("glioma_recurrent", "glioma_recurrent")):
            write.png(scans / split / (short if split == "test" else full) / f"{short}{split}.png",
                      write.image(len(short) + len(split)))
    result = run(scans, tmp_path, class_subfolders=True)
    assert result.classes == ["adenocarcinoma", "glioma", "glioma_recurrent", "normal"]  # two names in one split: two
    labels = result.manifest.set_index("scan_id")["label"]
    assert labels["train/adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib/adenocarcinomatrain.png"] == "adenocarcinoma"


@pytest.mark.parametrize("layout, classes", [
    # LC25000: organ folders group their classes; the classes are the folders inside
    ({"lung_colon_image_set/colon_image_sets/colon_aca": 2, "lung_colon_image_set/colon_image_sets/colon_n": 2,
      "lung_colon_image_set/lung_image_sets/lung_aca": 2, "lung_colon_image_set/lung_image_sets/lung_n": 2,
      "lung_colon_image_set/lung_image_sets/lung_scc": 2}, ["colon_aca", "colon_n", "lung_aca", "lung_n", "lung_scc"]),
    # classes holding patients' folders, or the same folders inside each (sources, views): the first level
    ({"tumour/patient01": 2, "tumour/patient02": 2, "normal/patient03": 2, "normal/patient04": 2}, ["normal", "tumour"]),
    ({"tumour/site_a": 2, "tumour/site_b": 2, "normal/site_a": 2, "normal/site_b": 2}, ["normal", "tumour"]),
    ({"tumour/a.png": 0, "normal/x": 2, "normal/y": 2}, ["normal", "tumour"]),  # a scan loose in a class folder
])
def test_first_level_folders_that_group_their_classes(tmp_path, write, layout, classes):
    scans = tmp_path / "scans"
    for n, (folder, count) in enumerate(layout.items()):
        for i in range(count):
            write.png(scans / folder / f"{n}_{i}.png", write.image(10 * n + i))
        if not count:
            write.png(scans / folder, write.image(99))
    assert run(scans, tmp_path, class_subfolders=True).classes == classes


def test_a_labels_file_written_on_windows_finds_its_files(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "images" / "a.png", write.image(1))
    write.png(scans / "images" / "b.png", write.image(2))
    (scans / "labels.csv").write_bytes(b"file,label\r\nimages\\a.png,normal\r\nimages\\b,tumour\r\n")
    result = run(scans, tmp_path)
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {"images/a.png": "normal",
                                                                        "images/b.png": "tumour"}
    assert result.problems.empty


def test_the_commands_pass_the_labels_columns_named(tmp_path, write, monkeypatch):
    from pipeline.cli import build_parser, main, own_data_overrides
    from pipeline.config import load_config
    from pipeline.stages.run import prepare_split

    scans = tmp_path / "scans"
    for index in range(8):
        write.png(scans / f"s{index}.png", write.image(index))
    (scans / "labels.csv").write_text("image,diagnosis,target\n" + "".join(
        f"s{index}.png,{'melanoma' if index % 2 else 'nevus'},{index % 2}\n" for index in range(8)))
    assert main(["ingest", str(scans), "--out", str(tmp_path / "m.csv")]) == 2  # diagnosis or target?
    assert main(["ingest", str(scans), "--out", str(tmp_path / "m.csv"), "--label-column", "target"]) == 0
    assert set(pd.read_csv(tmp_path / "m.csv", dtype=str)["label"]) == {"0", "1"}
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["run", "--scans", str(scans), "--label-column", "diagnosis", "--quiet"])
    overrides, _ = own_data_overrides(args)
    assert 'data.label_column="diagnosis"' in overrides
    frame, classes = prepare_split(load_config(None, overrides), progress=False)
    assert classes == ["melanoma", "nevus"]


def test_patient_folders_holding_class_folders_give_the_class_and_the_group(tmp_path, write):
    # Breast histopathology (IDC): <patient>/<0 or 1>/patches, and a copy of it all in IDC_regular_ps50_idx5/
    scans = tmp_path / "idc"
    names = [f"{copy}{patient}/{label}/{patient}_x{len(copy)}_class{label}.png" for copy in ("", "IDC_regular_ps50_idx5/")
             for patient in ("10253", "8863", "9036") for label in ("0", "1")]
    for index, name in enumerate(names):
        write.png(scans / name, write.image(index))
    manifest = run(scans, tmp_path, class_subfolders=True).manifest.set_index("scan_id")
    assert set(manifest["label"]) == {"0", "1"}
    assert manifest.loc["8863/1/8863_x0_class1.png", ["label", "group"]].tolist() == ["1", "8863"]
    assert manifest.loc["IDC_regular_ps50_idx5/8863/0/8863_x22_class0.png", ["label", "group"]].tolist() == [
        "0", "8863"]


def test_folders_by_date_holding_class_folders_give_the_class(tmp_path, write):
    layout = ["2019/normal/a.png", "2019/abnormal/b.png", "20200312/normal/c.png", "20200312/abnormal/d.png"]
    for index, name in enumerate(layout):
        write.png(tmp_path / "scans" / name, write.image(index))
    manifest = run(tmp_path / "scans", tmp_path, class_subfolders=True).manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {"2019/abnormal/b.png": "abnormal", "2019/normal/a.png": "normal",
                                           "20200312/abnormal/d.png": "abnormal", "20200312/normal/c.png": "normal"}
    assert set(manifest["group"]) == {""}  # a day is not a patient


@pytest.mark.parametrize("layout, classes", [
    (["0/left/a.png", "0/right/b.png", "1/left/c.png", "1/right/d.png"], {"0", "1"}),  # grade folders, eyes inside
    (["ct/normal/a.png", "ct/abnormal/b.png", "mri/normal/c.png", "mri/abnormal/d.png"], {"ct", "mri"}),
    (["normal/001/a.png", "abnormal/002/b.png"], {"normal", "abnormal"}),  # classes holding patients
    (["101/study1/a.png", "102/study2/b.png"], {"101", "102"}),  # ids, but nothing inside them recurs
])
def test_folders_not_named_for_patients_keep_the_first_level_class(tmp_path, write, layout, classes):
    for index, name in enumerate(layout):
        write.png(tmp_path / "scans" / name, write.image(index))
    manifest = run(tmp_path / "scans", tmp_path, class_subfolders=True).manifest
    assert set(manifest["label"]) == classes and set(manifest["group"]) == {""}


def test_patient_folders_without_class_folders_are_not_classes(tmp_path, write):
    # A DICOM export's PT000000/ST000000/SE000000/IM000000 layout, read without a labels file
    scans = tmp_path / "export"
    for index, patient in enumerate(["PT000000", "PT000001", "PT000002"]):
        for study in ("ST000000", "ST000001"):
            write.png(scans / patient / study / "SE000000" / "IM000000.png", write.image(10 * index + len(study)
                                                                                         + int(study[-1])))
    (scans / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    result = run(scans, tmp_path, class_subfolders=True)
    manifest = result.manifest.set_index("scan_id")
    assert set(manifest["label"]) == {""} and len(manifest) == 6
    assert manifest.loc["PT000001/ST000001/SE000000/IM000000.png", "group"] == "PT000001"
    assert result.problems["item"].tolist() == ["DICOMDIR"]  # skipped and counted, not a damaged scan


def test_paths_written_on_another_machine_are_found_by_their_end(tmp_path, write):
    # a labels file made in a Kaggle or Colab notebook, or on Windows, names files where they lay there
    scans = tmp_path / "chest_xray"
    write.png(scans / "train" / "NORMAL" / "a.jpeg", write.image(1))
    write.png(scans / "test" / "NORMAL" / "a.jpeg", write.image(2))
    write.png(scans / "train" / "PNEUMONIA" / "b.jpeg", write.image(3))
    write.png(scans / "train" / "PNEUMONIA" / "c.jpeg", write.image(4))
    (scans / "labels.csv").write_text(
        "file,label\n"
        "/kaggle/input/chest-xray-pneumonia/chest_xray/train/NORMAL/a.jpeg,normal\n"
        "/content/drive/MyDrive/chest_xray/test/NORMAL/a.jpeg,normal\n"
        "C:\\Users\\me\\chest_xray\\train\\PNEUMONIA\\b.jpeg,pneumonia\n"
        "old_root/train/PNEUMONIA/c.jpeg,pneumonia\n"
        "/kaggle/input/chest-xray-pneumonia/chest_xray/val/NORMAL/d.jpeg,normal\n")
    result = run(scans, tmp_path)
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "test/NORMAL/a.jpeg": "normal", "train/NORMAL/a.jpeg": "normal", "train/PNEUMONIA/b.jpeg": "pneumonia",
        "train/PNEUMONIA/c.jpeg": "pneumonia"}
    assert result.problems["item"].tolist() == ["labels.csv line 6"]  # found nowhere: still named


def test_a_headerless_list_of_several_columns_takes_the_label_column_by_number(tmp_path, write):
    # COVIDx's train.txt: "patient id, file name, class, source" separated by spaces, no header line
    scans = tmp_path / "covidx"
    write.pngs(scans / "train", ["ARDSSevere.png", "b.png", "c.png"])
    labels = scans / "train.txt"
    labels.write_text("3 ARDSSevere.png pneumonia cohen\n7 b.png COVID-19 rsna\n9 c.png normal rsna\n")
    with pytest.raises(ValueError, match="no header line \\(column 2 of its first line names a file\\) and 4 columns: "
                                         "say which holds the labels with --label-column N .*column 3 \\('pneumonia'\\)"):
        run(scans / "train", tmp_path, labels=labels)
    result = run(scans / "train", tmp_path, labels=labels, columns={"label": "3"})
    assert result.manifest.set_index("scan_id")["label"].to_dict() == {
        "ARDSSevere.png": "pneumonia", "b.png": "COVID-19", "c.png": "normal"}
    # a column given by number in a file with a header line is the column there
    (scans / "named.csv").write_text("id,image,finding,source\n3,ARDSSevere.png,pneumonia,x\n")
    named = run(scans / "train", tmp_path, labels=scans / "named.csv", columns={"label": "4"})
    assert named.manifest.set_index("scan_id").loc["ARDSSevere.png", "label"] == "x"


def test_a_scan_folder_changed_since_its_manifest_is_said(tmp_path, write):
    from pipeline.stages.ingest import folder_changes

    scans = tmp_path / "scans"
    for name in ("normal/a.png", "normal/b.png", "abnormal/c.png", "abnormal/c_mask.png"):
        write.png(scans / name, write.image(len(name)))
    manifest = run(scans, tmp_path, class_subfolders=True).manifest_path
    assert folder_changes(scans, manifest) is None  # the mask left out is no change
    write.png(scans / "normal" / "new.png", write.image(9))
    (scans / "normal" / "a.png").unlink()
    said = folder_changes(scans, manifest)
    assert "1 scans added, 1 gone (e.g. normal/new.png)" in said and "delete it" in said


def test_a_row_short_of_cells_reads_as_blanks_and_columns_named_twice_are_refused(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "a.png", write.image(1))
    write.png(scans / "b.png", write.image(2))
    (scans / "labels.csv").write_text("file,label,group\na.png,normal\nb.png,tumour,p2\n")  # a trailing comma left out
    manifest = run(scans, tmp_path).manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {"a.png": "normal", "b.png": "tumour"}
    (scans / "labels.txt").write_text("a.png normal\nb.png\n")  # spaces between, a label missing
    assert run(scans, tmp_path, labels=scans / "labels.txt").manifest.set_index("scan_id")["label"].to_dict() == {
        "a.png": "normal", "b.png": ""}
    (scans / "twice.csv").write_text("file,Label,label\na.png,normal,x\n")
    with pytest.raises(ValueError, match="has two columns named 'label' \\('Label', 'label'"):
        run(scans, tmp_path, labels=scans / "twice.csv")


def test_paths_written_in_another_case_are_found(tmp_path, write):
    # a labels file made on Windows or macOS, where file names ignore case
    scans = tmp_path / "data"
    for index in range(4):
        write.png(scans / "images" / f"img_{index}.jpg", write.image(index))
    write.png(scans / "a.jpg", write.image(9))  # the same name elsewhere: not taken for Train/A.JPG
    write.png(scans / "train" / "normal" / "a.jpg", write.image(8))
    (scans / "labels.csv").write_text("file,label\nIMG_0.JPG,a\nImages/IMG_1.jpg,b\nimages/img_2.JPG,a\n"
                                      "data/Images/img_3.jpg,b\nTrain/NORMAL/A.JPG,a\n")
    labels = run(scans, tmp_path).manifest.set_index("scan_id")["label"].to_dict()
    assert labels == {"a.jpg": "", "images/img_0.jpg": "a", "images/img_1.jpg": "b", "images/img_2.jpg": "a",
                      "images/img_3.jpg": "b", "train/normal/a.jpg": "a"}


def test_a_labels_workbook_is_read_from_its_first_sheet(tmp_path, write, caplog):
    # ODIR's and the COVID-19 radiography set's annotations come as .xlsx
    scans = tmp_path / "scans"
    for index in range(3):
        write.png(scans / f"{index}_left.jpg", write.image(index))
    workbook = tmp_path / "annotations.xlsx"
    with pd.ExcelWriter(workbook) as excel:
        pd.DataFrame({"ID": [0, 1, 2], "Left-Fundus": ["0_left.jpg", "1_left.jpg", "2_left.jpg"],
                      "N": [1, 0, 1], "label": [1.0, 0.0, None]}).to_excel(excel, sheet_name="train", index=False)
        pd.DataFrame({"x": [1]}).to_excel(excel, sheet_name="notes", index=False)
    manifest = run(scans, tmp_path, labels=workbook, columns={"file": "Left-Fundus"}).manifest
    # numbers stored as 1.0 read as 1, a blank cell as no label; the first sheet is read, and said so
    assert manifest.set_index("scan_id")["label"].to_dict() == {"0_left.jpg": "1", "1_left.jpg": "0", "2_left.jpg": ""}
    assert "its first sheet, 'train', is read (of 'train', 'notes')" in caplog.text
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(200))  # the older format: still refused
    with pytest.raises(ValueError, match="save it from the spreadsheet as CSV or .xlsx"):
        run(scans, tmp_path, labels=tmp_path / "old.xls")


def test_a_column_of_file_names_under_another_name_is_found_by_its_values(tmp_path, write):
    # HyperKvasir's image-labels.csv: "Video file,Organ,Finding,Classification", the pictures deep in folders
    scans = tmp_path / "labeled-images"
    for index, (finding, name) in enumerate([("polyps", "0a1b"), ("cecum", "0c2d"), ("polyps", "1e3f")]):
        write.png(scans / "lower-gi-tract" / finding / f"{name}.jpg", write.image(index))
    labels = tmp_path / "image-labels.csv"
    labels.write_text("Video file,Organ,Finding,Classification\n0a1b,Lower GI,polyps,pathological\n"
                      "0c2d,Lower GI,cecum,anatomical\n1e3f,Lower GI,polyps,pathological\n")
    manifest = run(scans, tmp_path, labels=labels).manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {"lower-gi-tract/cecum/0c2d.jpg": "cecum",
                                           "lower-gi-tract/polyps/0a1b.jpg": "polyps",
                                           "lower-gi-tract/polyps/1e3f.jpg": "polyps"}
    labels.write_text("Video file,Finding\nx1,polyps\nx2,cecum\n")  # values naming no scan: still refused
    with pytest.raises(ValueError, match="no 'file' column"):
        run(scans, tmp_path, labels=labels)


def test_a_headerless_labels_file_of_case_ids_labels_each_plane_of_the_case(tmp_path, write):
    # MRNet: train/{axial,coronal,sagittal}/0000.npy, and train-abnormal.csv holds "0000,1" (no header line)
    scans = tmp_path / "MRNet-v1.0" / "train"
    rng = np.random.default_rng(0)
    for plane in ("axial", "coronal", "sagittal"):
        for case in ("0000", "0001", "0002"):
            (scans / plane).mkdir(parents=True, exist_ok=True)
            np.save(scans / plane / f"{case}.npy", rng.integers(0, 255, (6, 16, 16), np.uint8))
    labels = tmp_path / "MRNet-v1.0" / "train-abnormal.csv"
    labels.write_text("0000,1\n0001,0\n0002,1\n")
    manifest = run(scans, tmp_path, labels=labels).manifest.set_index("scan_id")
    assert manifest["label"].to_dict() == {f"{plane}/{case}.npy": label for plane in ("axial", "coronal", "sagittal")
                                           for case, label in (("0000", "1"), ("0001", "0"), ("0002", "1"))}
    # a knee's three planes share a group (its id, hashed), so that no knee straddles training and test
    groups = manifest["group"]
    assert groups["axial/0000.npy"] == groups["sagittal/0000.npy"] == patient_pseudonym("0000")
    assert groups["axial/0000.npy"] != groups["axial/0001.npy"]


def test_a_name_shared_by_scans_of_class_folders_still_needs_its_path(tmp_path, write):
    scans = tmp_path / "scans"
    write.png(scans / "yes" / "1.png", write.image(1))
    write.png(scans / "no" / "1.png", write.image(2))
    (tmp_path / "labels.csv").write_text("file,label\n1,yes\n")
    result = run(scans, tmp_path, labels=tmp_path / "labels.csv")
    assert not (result.manifest["label"] != "").any()
    assert "2 files of that name lie below the scan folder" in result.problems["reason"].iloc[0]


def test_cases_labelled_by_their_number_without_zeros_and_a_second_column_of_classes(tmp_path, write):
    # RSNA-MICCAI brain tumour: train/00002/FLAIR/..., train_labels.csv "BraTS21ID,MGMT_value" with "2,1"
    scans = tmp_path / "train"
    for case in ("00000", "00002", "00003", "00005"):
        for sequence in ("FLAIR", "T1w"):
            write.png(scans / case / sequence / "Image-1.png", write.image(int(case) * 2 + len(sequence)))
    (tmp_path / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n0,1\n2,0\n3,1\n5,0\n")
    manifest = run(scans, tmp_path, labels=tmp_path / "train_labels.csv").manifest.set_index("scan_id")
    assert manifest.loc["00002/T1w/Image-1.png", "label"] == "0" and manifest.loc["00003/FLAIR/Image-1.png", "label"] == "1"
    assert manifest.loc["00003/FLAIR/Image-1.png", "group"] == manifest.loc["00003/T1w/Image-1.png", "group"] != ""
    # a second column of many values is not taken for the classes
    (tmp_path / "ages.csv").write_text("BraTS21ID,age\n0,61\n2,47\n3,70\n5,55\n")
    with pytest.raises(ValueError, match="no 'label' column"):
        run(scans, tmp_path, labels=tmp_path / "ages.csv")


def test_a_column_of_ones_on_every_row_is_no_finding(tmp_path, write):
    # file,gradable,dme: 'gradable' holds 1 everywhere, so only 'dme' is a finding, and one finding column
    # is no set of findings: the file needs its label column named
    scans = tmp_path / "scans"
    write.pngs(scans, ["a.png", "b.png", "c.png"])
    (scans / "labels.csv").write_text("file,gradable,dme,other\na.png,1,0,x\nb.png,1,1,y\nc.png,1,0,z\n")
    with pytest.raises(ValueError, match="no 'label' column"):
        run(scans, tmp_path)


def test_a_patient_column_is_the_group_where_a_lesion_column_is_there_too(tmp_path, write):
    # PAD-UFES-20 (and ISIC 2020): patient_id and lesion_id both; 'diagnostic' is PAD-UFES-20's label
    scans = tmp_path / "scans"
    write.pngs(scans, ["a.png", "b.png", "c.png"])
    (scans / "labels.csv").write_text("img_id,lesion_id,patient_id,diagnostic\na.png,L1,P1,MEL\nb.png,L2,P1,NEV\n"
                                      "c.png,L3,P2,NEV\n")
    manifest = run(scans, tmp_path).manifest.set_index("scan_id")
    assert manifest[["label", "group"]].to_dict("index") == {
        "a.png": {"label": "MEL", "group": patient_pseudonym("P1")}, "b.png": {"label": "NEV", "group": patient_pseudonym("P1")},
        "c.png": {"label": "NEV", "group": patient_pseudonym("P2")}}


def test_a_table_beside_the_labels_file_that_cannot_be_opened_is_passed_over(tmp_path, monkeypatch):
    from pipeline.labels import groups_beside

    labels = tmp_path / "labels.csv"
    (tmp_path / "metadata.csv").write_text("image,patient_id\na.png,p1\n")
    table = pd.DataFrame({"file": ["a.png"]})
    assert groups_beside(table, labels).tolist() == ["p1"]
    opened = Path.open

    def denied(path, *args, **kwargs):
        if path.name == "metadata.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert groups_beside(table, labels) is None
