"""A case's MRI sequences in files of their own (a dcm2niix export, BraTS 2021, RSNA-MICCAI's DICOM series)
read as the channels of one scan: found by name at ingest, each resampled onto the finest one's grid, planned,
trained, and a new folder's cases scored the same way; a case lacking a sequence an error row naming it."""
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_dicom import write_series

from pipeline.cli import main
from pipeline.reading import ScanReadError, included, load_scan
from pipeline.sequences import (
    case_location,
    case_path,
    description_words,
    group_cases,
    recurring_sequences,
    sequence_kind,
    sequence_name,
)
from pipeline.stages.ingest import folder_changes, ingest
from pipeline.stages.validate import validate

T1_AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
FLAIR_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # the same head at half the resolution: another grid


def head(patient: int) -> np.ndarray:
    """A 16 x 16 x 12 head at 1 mm, brighter to one side (a tumour shows in its FLAIR only: write_patient)."""
    rng = np.random.default_rng(patient)
    return (rng.normal(300, 30, (16, 16, 12)) + 50 * np.arange(16)[:, None, None]).astype(np.float32)


def write_patient(folder, patient, tumour, flair=True, extra=None):
    t1 = head(patient)
    nib.save(nib.Nifti1Image(t1, T1_AFFINE), _mkdir(folder) / f"t1_mprage_tra_{3 + patient % 2}.nii.gz")
    (folder / f"t1_mprage_tra_{3 + patient % 2}.json").write_text("{}")
    if flair:
        values = t1[::2, ::2, ::2] + (900 if tumour else 0) * _block((8, 8, 6))
        nib.save(nib.Nifti1Image(values, FLAIR_AFFINE), folder / f"t2_tirm_tra_dark-fluid_{5 + patient % 3}.nii.gz")
    if extra:
        nib.save(nib.Nifti1Image(t1 * 0.5 + 1, T1_AFFINE), folder / extra)


def _block(shape):
    block = np.zeros(shape, np.float32)
    block[2:6, 2:6, 1:4] = 1
    return block


def _mkdir(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export(root, patients=8, first=7100000):
    """A dcm2niix export: a folder a patient, each sequence a NIfTI with a series number and a sidecar, and a
    labels file naming the patients' folders by record number."""
    rows = []
    for patient in range(patients):
        tumour = patient % 2 == 1
        write_patient(root / "export" / str(first + patient), patient, tumour)
        rows.append(f"{first + patient},{'tumour' if tumour else 'healthy'}\n")
    (root / "patients.csv").write_text("MRN,diagnosis\n" + "".join(rows))
    return root / "export", root / "patients.csv"


SEQUENCES = ["t1_mprage_tra", "t2_tirm_tra_dark_fluid"]


def test_a_sequence_is_named_by_the_parts_of_its_name_no_case_shares():
    assert sequence_name("7100000", "t1_mprage_tra_4.nii.gz") == "t1_mprage_tra"
    # dcm2niix's default name: folder, protocol, time, series number
    assert sequence_name("7100000", "7100000_t1_mprage_tra_20190101120000_4.nii.gz") == "t1_mprage_tra"
    assert sequence_name("7100000", "t2_tirm_tra_dark-fluid_3.nii.gz") == "t2_tirm_tra_dark_fluid"
    assert sequence_name("7100000", "localizer_1_i00002.nii.gz") == ""  # taken to plan a scan: no sequence
    assert sequence_name("BraTS2021_00000", "BraTS2021_00000_t1ce.nii.gz") == "t1ce"
    assert sequence_name("00000", "FLAIR") == "flair"  # RSNA-MICCAI's series folders
    assert sequence_name("10000", "10000_1000000_t2w.mha") == "t2w"  # PI-CAI: patient, study, sequence
    assert sequence_name("study", "0001.nii.gz") == sequence_name("S0000", "SE0002") == ""  # numbered series
    assert sequence_name("S0000", "t1.nii.gz") == "t1"
    assert case_location(case_path("a/7100000", SEQUENCES)) == (Path("a/7100000"), "", SEQUENCES)
    assert case_location("a/imagesTr/BRATS_001_{0000,0001}") == (Path("a/imagesTr"), "BRATS_001_", ["0000", "0001"])
    assert case_location("a/7100000/t1.nii.gz") is None


def test_only_folders_of_the_same_named_sequences_are_cases(tmp_path):
    def volume(path):  # a file, or a DICOM series' folder (with no description), where a case would hold it
        return (path.parent, path.name) if path.suffix == ".gz" or path.name.startswith("SE") else None

    cases = [tmp_path / f"{7100 + p}" / name for p in range(5) for name in (f"t1_{p}.nii.gz", f"flair_{p + 2}.nii.gz")]
    assert recurring_sequences(cases, volume) == ["flair", "t1"]
    assert recurring_sequences(cases[:8], volume) == []  # four patients are too few to tell
    # a study's numbered series, a set's cases side by side in one folder, and pictures are no sequences
    numbered = [tmp_path / f"p{p}" / f"{series:04d}.nii.gz" for p in range(6) for series in (2, 3)]
    pacs = [tmp_path / f"S{p:04d}" / f"SE{series:04d}" for p in range(6) for series in (2, 3)]  # same numbers
    assert recurring_sequences(pacs, volume) == []
    flat = [tmp_path / "imagesTr" / f"BRATS_{case:03d}.nii.gz" for case in range(20)]
    pictures = [tmp_path / f"{p}" / name for p in range(6) for name in ("frontal.png", "lateral.png")]
    assert recurring_sequences(numbered + flat + pictures, volume) == []
    # a localiser beside a case's sequences is left out; a folder of many cases' files is no case
    entries = [*cases, tmp_path / "7100" / "localiser_1.nii.gz", *flat]
    kept, grouped, left_out = group_cases(entries, ["flair", "t1"], volume)
    assert kept == sorted([case_path(tmp_path / f"{7100 + p}", ["flair", "t1"]) for p in range(5)] + flat)
    assert len(grouped) == 10 and left_out == {tmp_path / "7100" / "localiser_1.nii.gz":
                                               case_path(tmp_path / "7100", ["flair", "t1"])}


def test_a_cases_sequences_are_one_scan_each_resampled_onto_the_finest_ones_grid(tmp_path):
    write_patient(tmp_path / "7100001", 1, tumour=True)
    scan = load_scan(case_path(tmp_path / "7100001", SEQUENCES))
    assert scan.is_volume and scan.shape == (16, 16, 12, 2) and scan.spacing == (1.0, 1.0, 1.0)
    t1, flair = scan.array[..., 0], scan.array[..., 1]
    np.testing.assert_allclose(t1, head(1))
    # the FLAIR's 2 mm voxels on the T1's 1 mm grid: the tumour block (FLAIR voxels 2-5) at T1 voxels 4-10
    assert flair[6, 6, 4] > 1000 and flair[12, 12, 4] < 1000 and flair[1, 6, 4] < 1000
    assert flair[15, 15, 11] >= flair[::2, ::2, ::2].min() - 1e-3  # beyond its last slab: its background, not 0
    # the finest grid whatever the order: the FLAIR first, on the T1's 1 mm voxels
    reversed_order = load_scan(case_path(tmp_path / "7100001", SEQUENCES[::-1]))
    np.testing.assert_allclose(reversed_order.array, scan.array[..., ::-1])
    with pytest.raises(ScanReadError, match=r"no t2w volume in the case's folder \(it holds t1_mprage_tra_4.nii.gz, "
                                            r"t2_tirm_tra_dark-fluid_6.nii.gz\)"):
        load_scan(case_path(tmp_path / "7100001", ["t1_mprage_tra", "t2w"]))


def test_an_export_of_a_folder_a_patient_ingests_a_scan_a_case_and_reports_what_it_cannot_read(tmp_path, caplog):
    scans, labels = export(tmp_path)
    write_patient(scans / "7100008", 8, tumour=False, flair=False)  # no FLAIR: an error row naming it
    write_patient(scans / "7100009", 9, tumour=True, extra="localizer_1.nii.gz")  # a sequence no other case has
    with open(labels, "a") as file:
        file.write("7100008,healthy\n7100009,tumour\n")
    with caplog.at_level(logging.INFO, logger="pipeline.stages.ingest"):
        result = ingest(scans, labels, manifest_dir=tmp_path / "manifests", workers=1)
    manifest = result.manifest.set_index("scan_id")
    ids = [f"{7100000 + patient}/{{t1_mprage_tra,t2_tirm_tra_dark_fluid}}" for patient in range(10)]
    assert list(manifest.index) == ids
    assert manifest.loc[ids[1], "shape"] == "16x16x12x2" and manifest.loc[ids[1], "label"] == "tumour"
    assert manifest.loc[ids[1], "group"] == "7100001"  # the patient's folder its labels row names
    assert manifest.loc[ids[8], "status"] == "error"
    assert manifest.loc[ids[8], "error"].startswith("no t2_tirm_tra_dark_fluid volume in the case's folder")
    skipped = result.problems.set_index("item")
    assert skipped.loc["7100009/localizer_1.nii.gz", "reason"].startswith("a volume of none of the sequences")
    assert ("10 cases (a folder, or files sharing the start of their names) hold the same 2 MRI sequences "
            "(t1_mprage_tra, t2_tirm_tra_dark_fluid) by name") in caplog.text
    assert "kinds of scan" not in caplog.text  # no warning of one model learning every kind
    assert folder_changes(scans, result.manifest_path) is None  # the cases are the folder's scans, none added
    # a manifest made before a case's files were read as one scan
    per_file = result.manifest.assign(**{column: result.manifest[column].str.replace(r"\{.*\}$", "t1.nii.gz", regex=True)
                                         for column in ("scan_id", "path")})
    per_file.to_csv(tmp_path / "per_file.csv", index=False)
    assert "ingest now reads each case's t1_mprage_tra, t2_tirm_tra_dark_fluid volumes as one scan" in \
        folder_changes(scans, tmp_path / "per_file.csv")


def test_a_label_for_each_file_labels_the_case_where_its_files_agree(tmp_path):
    scans, _ = export(tmp_path, patients=6)
    rows = ["file,label"]
    for patient in range(6):
        for name in sorted(path.name for path in (scans / str(7100000 + patient)).glob("*.nii.gz")):
            label = "tumour" if patient % 2 or (patient == 4 and name.startswith("t2")) else "healthy"
            rows.append(f"{7100000 + patient}/{name},{label}")
    (tmp_path / "files.csv").write_text("\n".join(rows) + "\n")
    result = ingest(scans, tmp_path / "files.csv", manifest_dir=tmp_path / "manifests", workers=1)
    labels = result.manifest.set_index("scan_id")["label"]
    assert labels.tolist() == ["healthy", "tumour", "healthy", "tumour", "", "tumour"]
    problem = result.problems[result.problems["source"] == "label"]
    assert problem["item"].tolist() == ["7100004/{t1_mprage_tra,t2_tirm_tra_dark_fluid}"]
    assert "labelled differently (t1_mprage_tra_3.nii.gz: healthy, t2_tirm_tra_dark-fluid_6.nii.gz: tumour)" in \
        problem["reason"].iloc[0]
    # a reviewer's verdict naming a case (its id, as score's report gives it) beside its patient's folder's row
    (tmp_path / "verdict.csv").write_text("file,label\n" + "".join(f"{7100000 + p},{'tumour' if p % 2 else 'healthy'}\n"
                                                                   for p in range(6))
                                          + '"7100002/{t1_mprage_tra,t2_tirm_tra_dark_fluid}",tumour\n')
    result = ingest(scans, tmp_path / "verdict.csv", manifest_dir=tmp_path / "manifests", workers=1)
    assert result.manifest["label"].tolist() == ["healthy", "tumour", "tumour", "tumour", "healthy", "tumour"]
    assert set(result.problems["source"]) == {"skipped"}  # the folder's row, superseded, is no problem


def test_brats_cases_and_rsna_miccai_series_are_cases_of_their_sequences(tmp_path):
    brats = tmp_path / "BraTS"  # BraTS 2021: the case's id in each file's name, its mask beside them
    for case in range(5):
        folder = brats / f"BraTS2021_{case:05d}"
        for sequence in ("flair", "t1", "t1ce", "t2", "seg"):
            values = head(case) + len(sequence)
            nib.save(nib.Nifti1Image(values, T1_AFFINE), _mkdir(folder) / f"BraTS2021_{case:05d}_{sequence}.nii.gz")
    result = ingest(brats, manifest_dir=tmp_path / "manifests", workers=1)
    assert result.manifest["scan_id"].tolist() == [f"BraTS2021_{case:05d}/{{flair,t1,t1ce,t2}}" for case in range(5)]
    assert (result.manifest["shape"] == "16x16x12x4").all() and (result.problems["source"] == "mask").sum() == 5
    rsna = tmp_path / "rsna"  # RSNA-MICCAI's brain tumours: a DICOM series a sequence in the patient's folder
    affine = np.array([[-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    for patient in range(5):
        for sequence in ("FLAIR", "T1w"):
            write_series(rsna / f"{patient:05d}" / sequence, np.full((8, 8, 4), 100 + patient, np.int16)
                         + np.arange(8, dtype=np.int16)[:, None, None] * (2 if sequence == "T1w" else 1), affine,
                         patient_id=f"P{patient}")
    result = ingest(rsna, manifest_dir=tmp_path / "manifests", workers=1)
    assert result.manifest["scan_id"].tolist() == [f"{patient:05d}/{{flair,t1w}}" for patient in range(5)]
    assert (result.manifest["shape"] == "8x8x4x2").all() and (result.manifest["status"] == "ok").all()
    assert result.manifest["group"].str.startswith("patient-").all()  # its PatientID, hashed


def test_a_case_folder_export_is_planned_trained_and_a_new_folders_cases_scored(tmp_path, monkeypatch, caplog):
    scans, labels = export(tmp_path, patients=16)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", str(scans), "--labels", str(labels), "--positive", "tumour",
                 "--labels-per-class", "3", "--quiet", "train.minutes=0.05", "split.test_fraction=0.3",
                 "network.channels=[4,8]"]) == 0
    run = tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()
    plan = json.loads((run / "plan.json").read_text())["settings"]
    assert plan["preprocess.sequences"]["value"] == SEQUENCES and plan["preprocess.channels"]["value"] == 2
    # the sequences are the manifest's, which training reads: another order or set would only change score's
    with caplog.at_level(logging.ERROR, logger="pipeline"):
        assert main(["run", "--scans", str(scans), "--labels", str(labels), "--positive", "tumour",
                     "--labels-per-class", "3", "--quiet", "train.minutes=0.05", "split.test_fraction=0.3",
                     f"preprocess.sequences={json.dumps(SEQUENCES[::-1])}"]) == 2
    assert ("preprocess.sequences = ['t2_tirm_tra_dark_fluid', 't1_mprage_tra'] is not how ingest read" in caplog.text
            and "(the same sequences in another order: t1_mprage_tra, t2_tirm_tra_dark_fluid, the channels' order)"
            ", which training reads: leave it unset" in caplog.text)
    assert plan["preprocess.channels"]["reason"].startswith("2 sequences a case (each in a file or series of its own)")
    assert json.loads((run / "checkpoint.json").read_text())["in_channels"] == 2
    new, _ = export(tmp_path / "new", patients=3, first=8200000)
    write_patient(new / "8200003", 3, tumour=True, flair=False)
    write_patient(new / "8200004", 4, tumour=True, extra="localizer_1.nii.gz")
    assert main(["score", str(new), "--model", str(run), "--out", str(tmp_path / "new.csv"), "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "new.csv", keep_default_na=False).set_index("scan_id")
    ids = [f"{8200000 + patient}/{{t1_mprage_tra,t2_tirm_tra_dark_fluid}}" for patient in range(5)]
    assert sorted(report.index) == ids  # the sidecars are skipped, the localiser too
    assert (report.loc[ids[:3] + ids[4:], "status"] == "ok").all()
    assert report.loc[ids[3], "status"] == "error" and "no t2_tirm_tra_dark_fluid volume" in report.loc[ids[3], "error"]
    assert "skipped: 1 volumes in cases of none of the sequences" in (tmp_path / "new.summary.txt").read_text()
    checked = validate(new, run, workers=1).set_index("file")
    assert checked.loc[ids[0], "status"] == "ok" and checked.loc[ids[3], "status"] == "error"
    assert checked.loc["8200004/localizer_1.nii.gz", "status"] == "skipped"


def test_include_keeps_one_kind_of_file_in_training_and_in_scoring(tmp_path, monkeypatch):
    # an export whose kinds are not read as channels (a localiser in some folders only) or a user who wants a
    # FLAIR model: --include keeps the FLAIR files, and score reads a new folder so
    scans, labels = export(tmp_path, patients=16)
    rows = [f"{folder.name}/{file.name},{'tumour' if int(folder.name) % 2 else 'healthy'}"
            for folder in sorted(scans.iterdir()) for file in sorted(folder.glob("*.nii.gz"))]
    (tmp_path / "files.csv").write_text("file,label\n" + "\n".join(rows) + "\n")  # rows for the T1 files too
    with pytest.raises(ValueError, match=r"no scan below .* matches --include '\*t2w\*' \(data.include\), of 32"):
        ingest(scans, tmp_path / "files.csv", manifest_dir=tmp_path / "manifests", workers=1, include="*t2w*")
    result = ingest(scans, tmp_path / "files.csv", manifest_dir=tmp_path / "manifests", workers=1,
                    include="dark-FLUID")
    assert result.manifest["scan_id"].str.contains("/t2_tirm_tra_dark-fluid_").all() and len(result.manifest) == 16
    # globs joined by ',', those to leave out after '!': all but the T1s, and the FLAIRs of all but two patients
    kept, left_out = included(sorted(scans.rglob("*.nii.gz")), scans, "!mprage")
    assert len(kept) == 16 and all("dark-fluid" in path.name for path in kept) and len(left_out) == 16
    kept, _ = included(sorted(scans.rglob("*.nii.gz")), scans, " fluid , !7100000/*, !7100001/* ")
    assert len(kept) == 14 and not any(path.parent.name in ("7100000", "7100001") for path in kept)
    assert (result.manifest["shape"] == "8x8x6").all() and (result.manifest["label"] != "").all()
    assert set(result.problems["source"]) == {"skipped"}  # the T1 files' rows name no problem
    assert (result.problems["reason"].str.startswith("not matching --include")).sum() == 16
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", str(scans), "--labels", str(tmp_path / "files.csv"), "--positive", "tumour",
                 "--include", "*dark-fluid*", "--labels-per-class", "3", "--quiet", "train.minutes=0.05",
                 "split.test_fraction=0.3", "network.channels=[4,8]"]) == 0
    run = tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()
    assert json.loads((run / "plan.json").read_text())["settings"]["data.include"]["value"] == "*dark-fluid*"
    new, _ = export(tmp_path / "new", patients=3, first=8200000)
    assert main(["score", str(new), "--model", str(run), "--out", str(tmp_path / "new.csv"), "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "new.csv", keep_default_na=False)
    assert len(report) == 3 and report["scan_id"].str.contains("dark-fluid").all() and (report["status"] == "ok").all()
    assert "left out: 3 files not matching '*dark-fluid*', the run's data.include" in \
        (tmp_path / "new.summary.txt").read_text()
    checked = validate(new, run, workers=1).set_index("file")
    assert checked.loc["8200000/t1_mprage_tra_3.nii.gz", "status"] == "skipped"
    assert checked.loc["8200000/t2_tirm_tra_dark-fluid_5.nii.gz", "status"] == "ok"


def test_cases_sharing_a_folder_are_told_apart_by_the_start_of_their_names(tmp_path):
    # nnU-Net's raw layout: every case's channels in imagesTr/, numbered _0000, _0001 after the case's name
    task = tmp_path / "Dataset001_BrainTumour"
    for case in range(6):
        for channel in range(2):
            values = head(case) * (channel + 1)
            nib.save(nib.Nifti1Image(values, T1_AFFINE), _mkdir(task / "imagesTr") / f"BRATS_{case:03d}_{channel:04d}.nii.gz")
    (task / "labels.csv").write_text("file,label\n" + "".join(f"BRATS_{case:03d},{'ab'[case % 2]}\n"
                                                              for case in range(6)))  # the start of a case's names
    result = ingest(task, task / "labels.csv", manifest_dir=tmp_path / "manifests", workers=1)
    manifest = result.manifest
    assert manifest["scan_id"].tolist() == [f"imagesTr/BRATS_{case:03d}_{{0000,0001}}" for case in range(6)]
    assert (manifest["shape"] == "16x16x12x2").all() and manifest["label"].tolist() == list("ababab")
    scan = load_scan(manifest["path"].iloc[1])
    np.testing.assert_allclose(scan.array[..., 1], 2 * scan.array[..., 0], rtol=1e-5)
    # a patient's two studies in one folder (PI-CAI: patient_study_sequence), beside patients of one study
    export = tmp_path / "picai"
    for patient, studies in enumerate((2, 1, 1, 1, 1)):
        for study in range(studies):
            for sequence in ("t2w", "adc"):
                name = f"{10000 + patient}_{1000000 + 10 * patient + study}_{sequence}.nii.gz"
                nib.save(nib.Nifti1Image(head(patient + study), T1_AFFINE), _mkdir(export / str(10000 + patient)) / name)
    cases = ingest(export, manifest_dir=tmp_path / "manifests", workers=1).manifest
    assert cases["scan_id"].tolist() == ["10000/10000_1000000_{adc,t2w}", "10000/10000_1000001_{adc,t2w}",
                                         *[f"{10000 + patient}/{{adc,t2w}}" for patient in range(1, 5)]]
    assert cases["group"].tolist()[:2] == ["10000", "10000"]  # the patient's two studies on one side
    # a new flat folder is read in the same cases; a file of another case's name is not one of them
    entries = sorted((task / "imagesTr").glob("*.nii.gz"))
    kept, grouped, left_out = group_cases(entries, ["0000", "0001"], lambda path: (path.parent, path.name))
    assert len(kept) == 6 and len(grouped) == 12 and not left_out
    (task / "imagesTr" / "BRATS_000_0002.nii.gz").write_bytes((task / "imagesTr" / "BRATS_000_0000.nii.gz").read_bytes())
    assert load_scan(kept[0]).shape == (16, 16, 12, 2)  # BRATS_000_'s third channel is not read


def test_a_pacs_exports_numbered_series_are_named_by_their_descriptions_sequence_words(tmp_path):
    # P<patient>/S<study>/SE0002/ "AX T2", SE0003/ "AX FLAIR", SE0004/ a DWI series of b0 and b1000, a localiser,
    # a screen save and a report: each study one scan of four channels; nothing else of a description is kept
    from benchmarks.pacs_export_set import write_study
    from pipeline.agreement import folder_truth
    from pipeline.dicom import read_header
    from pipeline.fingerprint import fingerprint
    from pipeline.sequences import description_words

    assert description_words("AX FLAIR") == description_words("flair_ax") == "ax_flair"
    assert description_words("T1 AX POST GAD Dr. Smith's protocol") == "ax_gad_post_t1"
    assert description_words("3-PLANE LOC") == ""
    rng = np.random.default_rng(0)
    for study in range(6):
        write_study(rng, tmp_path / "DICOM" / f"P{study // 2:04d}" / f"S{study % 2:04d}",
                    {"patient": f"MRN{study // 2}", "accession": f"ACC{study}", "uid": f"1.2.3.{study}"}, study % 3 == 0)
    assert read_header(next((tmp_path / "DICOM/P0000/S0000/SE0003").iterdir())).sequence_words == "ax_flair"
    result = ingest(tmp_path, manifest_dir=tmp_path / "manifests", workers=1)
    cases = result.manifest[result.manifest["scan_id"].str.contains("{", regex=False)]
    assert cases["scan_id"].tolist() == [f"DICOM/P{study // 2:04d}/S{study % 2:04d}/{{ax_flair,ax_t2,dwi_b0,dwi_b1000}}"
                                         for study in range(6)]
    assert (cases["shape"] == "48x48x12x4").all() and (cases["status"] == "ok").all()
    assert cases["group"].nunique() == 3  # a patient's two studies, by PatientID
    skipped = result.problems[result.problems["reason"].str.startswith("a volume of none of the sequences")]
    assert skipped["item"].str.endswith("/SE0001").all() and len(skipped) == 6  # the localisers
    # a study's four series outweigh its one screen save when the plan picks 2D or 3D (a scan a study each)
    usable = result.manifest[result.manifest["status"] == "ok"].assign(subset="unlabelled")
    assert fingerprint(usable, ["abnormal", "normal"])["spatial_dims"] == 3
    # a new folder's cases are checked against labels keyed by accession number, as ingest reads them
    (tmp_path / "labels.csv").write_text("AccessionNumber,finding\n" + "".join(
        f"ACC{study},{'abnormal' if study % 3 == 0 else 'normal'}\n" for study in range(6)))
    truth, _, _ = folder_truth(tmp_path, cases["scan_id"].tolist(), ["abnormal", "normal"])
    assert [truth[case] for case in cases["scan_id"]] == ["abnormal", "normal", "normal"] * 2


def test_sites_naming_one_sequence_differently_agree_on_its_kind(tmp_path):
    assert [sequence_kind(name) for name in (
        "t1_mprage_tra", "t1_mprage_tra_km", "ax_post_t1", "ax_pre_t1", "t1ce", "sag_t1_flair", "t2_tirm_tra_dark_fluid",
        "ax_flair_t2", "flair_sag", "t2_tse_tra", "ax_fse_t2", "dwi_b1000", "diff_tra_b0", "dwi_adc", "swi", "pd",
        "localizer", "0000", "pd_tse_fs_cor", "c_sag_spine_t1", "ax_c_t1")] == [
        "t1", "t1c", "t1c", "t1", "t1c", "t1", "flair", "flair", "flair", "t2", "t2", "dwi_b1000", "dwi_b0", "adc",
        "swi", "pd", "", "", "pd", "t1", "t1c"]
    assert description_words("Ax T2 FLAIR") == "ax_flair_t2" and description_words("ep2d_diff_tra") == "diff_tra"
    assert sequence_kind(description_words("C-SPINE SAG T1")) == "t1"  # the cervical spine, not contrast

    def volume(path):
        return path.parent, path.name

    sites = (("t1_mprage_tra_4.nii.gz", "t2_tirm_tra_dark-fluid_5.nii.gz"), ("T1W_3D_TFE_3.nii.gz", "FLAIR_SAG_4.nii.gz"),
             ("sag_t1_bravo_5.nii.gz", "ax_t2_flair_6.nii.gz"))
    cases = [tmp_path / f"{7100 + p}" / name for p in range(6) for name in sites[p % 3]]
    reformats = [tmp_path / f"{7100 + p}" / "FLAIR_SAG_MPR_COR_7.nii.gz" for p in (1, 4)]  # no second FLAIR
    assert recurring_sequences(cases + reformats, volume) == ["flair", "t1"]  # by name, two cases at most agree
    kept, grouped, left_out = group_cases(cases + reformats, ["flair", "t1"], volume)
    assert kept == [case_path(tmp_path / f"{7100 + p}", ["flair", "t1"]) for p in range(6)] and len(grouped) == 12
    assert sorted(left_out) == reformats
    # where the names tell apart sequences of one kind (T2 in two planes), the names are read, not the kinds
    planes = [tmp_path / f"{7200 + p}" / f"t2_tse_{plane}_{3 + k}.nii.gz" for p in range(6)
              for k, plane in enumerate(("tra", "cor"))]
    assert recurring_sequences(planes, volume) == ["t2_tse_cor", "t2_tse_tra"]
    # a name a case's sequence has is read before a volume of its kind only, which is another sequence's, skipped
    named = [tmp_path / f"{7300 + p}" / name for p in range(6) for name in ("flair_2.nii.gz", "t1_3.nii.gz")]
    named.append(tmp_path / "7300" / "flair_sag_9.nii.gz")
    assert recurring_sequences(named, volume) == ["flair", "t1"]
    assert group_cases(named, ["flair", "t1"], volume)[2] == {tmp_path / "7300" / "flair_sag_9.nii.gz":
                                                              case_path(tmp_path / "7300", ["flair", "t1"])}
    # a sequence a third of the cases lack (a site without diffusion) is not read, so that those cases are;
    # one that 1 case in 10 lacks is, and that case is an error row
    def cases_lacking_dwi(n, lacking):  # each case with a localiser and a scout beside its sequences
        return [tmp_path / f"{7400 + p}" / name for p in range(n)
                for name in ("localiser_1.nii.gz", "scout_2.nii.gz", "flair_3.nii.gz", "t2_4.nii.gz", "dwi_5.nii.gz")
                [: 4 if p < lacking else 5]]

    assert recurring_sequences(cases_lacking_dwi(9, 3), volume) == ["flair", "t2"]
    assert recurring_sequences(cases_lacking_dwi(10, 1), volume) == ["dwi", "flair", "t2"]
    kept, grouped, left_out = group_cases(cases_lacking_dwi(9, 3), ["flair", "t2"], volume)
    assert kept == [case_path(tmp_path / f"{7400 + p}", ["flair", "t2"]) for p in range(9)] and len(grouped) == 18
    assert sorted(path.name for path in left_out) == sorted(["dwi_5.nii.gz"] * 6 + ["localiser_1.nii.gz", "scout_2.nii.gz"] * 9)


def test_a_multi_site_pacs_exports_studies_are_cases_of_their_sequences_kinds(tmp_path):
    # three sites describe the T2, FLAIR and diffusion series in their own words (AX FLAIR, t2_tirm_tra_dark-fluid,
    # Ax T2 FLAIR): by name no two sites' studies agree; by kind every study holds dwi_b0, dwi_b1000, flair, t2
    from benchmarks.pacs_export_set import write_study

    rng = np.random.default_rng(0)
    for study in range(6):
        write_study(rng, tmp_path / "DICOM" / f"P{study // 2:04d}" / f"S{study % 2:04d}",
                    {"patient": f"MRN{study // 2}", "accession": f"ACC{study}", "uid": f"1.2.3.{study}"}, False,
                    site=study // 2)
    result = ingest(tmp_path, manifest_dir=tmp_path / "manifests", workers=1)
    cases = result.manifest[result.manifest["scan_id"].str.contains("{", regex=False)]
    assert cases["scan_id"].tolist() == [f"DICOM/P{study // 2:04d}/S{study % 2:04d}/{{dwi_b0,dwi_b1000,flair,t2}}"
                                         for study in range(6)]
    assert (cases["status"] == "ok").all() and (cases["shape"] == "48x48x12x4").all()
    for case in cases["path"]:  # each site's series in the same channel: b0 300, b1000 120, FLAIR 300, T2 400
        brain = load_scan(case).array[18:30, 18:30, 6]
        assert brain[..., 3].mean() > brain[..., 2].mean() + 50 and brain[..., 1].mean() < brain[..., 0].mean() - 100
    # a study holding two FLAIRs of other names (an axial and a sagittal) is an error row naming both
    flair = tmp_path / "DICOM/P0001/S0000/SE0003"
    copy = tmp_path / "DICOM/P0001/S0000/SE0005"
    copy.mkdir()
    for file in flair.iterdir():
        copy.joinpath(file.name).write_bytes(file.read_bytes())
    with pytest.raises(ScanReadError, match=r"2 flair volumes in the case's folder \(SE0003, SE0005\)"):
        load_scan(cases["path"].iloc[2])


def test_a_model_trained_at_one_site_reads_a_new_sites_cases_by_their_sequences_kinds(tmp_path):
    # trained on a Siemens export's names; a new folder from a Philips site names the same sequences its own way
    def volume(path):
        return path.parent, path.name

    trained = ["t1_mprage_tra", "t2_tirm_tra_dark_fluid"]
    new = [tmp_path / f"{8300 + p}" / name for p in range(3)
           for name in ("survey_1.nii.gz", "T1W_3D_TFE_3.nii.gz", "FLAIR_SAG_4.nii.gz")]
    kept, grouped, left_out = group_cases(new, trained, volume)
    assert kept == [case_path(tmp_path / f"{8300 + p}", trained) for p in range(3)] and len(grouped) == 6
    assert sorted(path.name for path in left_out) == ["survey_1.nii.gz"] * 3
    write_patient(tmp_path / "8400", 0, tumour=True)  # read from its files: T1 first, FLAIR second
    (tmp_path / "8400" / "t1_mprage_tra_3.nii.gz").rename(tmp_path / "8400" / "T1W_3D_TFE_3.nii.gz")
    (tmp_path / "8400" / "t2_tirm_tra_dark-fluid_5.nii.gz").rename(tmp_path / "8400" / "FLAIR_SAG_5.nii.gz")
    scan = load_scan(case_path(tmp_path / "8400", trained))
    np.testing.assert_allclose(scan.array[..., 0], head(0))
    # two trained sequences of one kind tell a volume of that kind under another name apart from neither
    planes = [tmp_path / "8500" / "t2_tse_tra_2.nii.gz", tmp_path / "8500" / "T2W_COR_3.nii.gz"]
    kept, grouped, left_out = group_cases(planes, ["t2_tse_cor", "t2_tse_tra"], volume)
    assert list(left_out) == [tmp_path / "8500" / "T2W_COR_3.nii.gz"]
