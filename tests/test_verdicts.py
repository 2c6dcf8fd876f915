"""Reviewed labels back into training: verdicts merged into a new labels file, bad rows named."""

import zlib

import pandas as pd
import pytest

from pipeline.labels import patient_pseudonym
from pipeline.verdicts import merge_verdicts


def folder(tmp_path, write):
    scans = tmp_path / "scans"
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write.png(scans / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    write.csv(scans / "labels.csv", [{"file": "a.png", "label": "normal", "split": "test", "group": "p1"},
                                     {"file": "b.png", "label": "abnormal", "split": "", "group": ""}])
    return scans


def test_verdicts_add_and_change_labels_keeping_every_earlier_label_and_its_provenance(tmp_path, write):
    scans = folder(tmp_path, write)
    verdicts = write.csv(tmp_path / "verdicts.csv", [
        {"file": "b.png", "label": "normal", "verdict": "relabelled", "reviewed_at": "2026-12-01T10:00:00Z"},
        {"file": "c.png", "label": "abnormal", "verdict": "confirmed", "reviewed_at": "2026-12-01T10:01:00Z"},
    ])
    merged = pd.read_csv(merge_verdicts(scans, verdicts, tmp_path / "out"), keep_default_na=False)
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in merged.to_dict("records")}
    assert set(rows) == {"a.png", "b.png", "c.png"}  # d.png stays unlabelled
    assert rows["a.png"]["label"] == "normal" and rows["a.png"]["split"] == "test" and rows["a.png"]["group"] == patient_pseudonym("p1")
    assert rows["a.png"]["label_source"] == "labels file"
    assert (rows["b.png"]["label"], rows["b.png"]["previous_label"], rows["b.png"]["label_source"]) == \
        ("normal", "abnormal", "review")
    assert rows["c.png"]["label"] == "abnormal" and rows["c.png"]["reviewed_at"] == "2026-12-01T10:01:00Z"
    assert (scans / "labels.csv").read_text().count("\n") == 3  # the original is never modified


def test_bad_verdict_rows_are_all_named_and_nothing_is_merged(tmp_path, write):
    scans = folder(tmp_path, write)
    verdicts = write.csv(tmp_path / "verdicts.csv", [
        {"file": "nowhere.png", "label": "normal"},
        {"file": "c.png", "label": "cat"},
        {"file": "d.png", "label": "normal"},
        {"file": "d.png", "label": "abnormal"},
        {"file": "../verdicts.csv", "label": "normal"},
    ])
    with pytest.raises(ValueError) as error:
        merge_verdicts(scans, verdicts, tmp_path / "out")
    text = str(error.value)
    assert "4 problem(s); nothing was merged" in text
    assert "line 2: 'nowhere.png' is not a scan" in text and "line 3: label 'cat' is not one of" in text
    assert "line 5: 'd.png' is listed again (first on line 4)" in text
    assert "line 6: '../verdicts.csv' is not a scan" in text
    assert not (tmp_path / "out").exists()


def test_verdicts_on_a_split_folder_export_keep_its_classes_and_test_folder(tmp_path, write):
    # Training/glioma/x.png: the classes are the second-level folders, never "Training".
    scans = tmp_path / "export"
    write.png(scans / "Training" / "glioma" / "a.png", write.image(1))
    write.png(scans / "Training" / "notumor" / "b.png", write.image(2))
    write.png(scans / "Testing" / "glioma" / "c.png", write.image(3))
    write.png(scans / "Training" / "glioma" / "a_mask.png", write.image(4))
    verdicts = write.csv(tmp_path / "verdicts.csv", [{"file": "Training/notumor/b.png", "label": "glioma",
                                                      "verdict": "relabelled", "reviewed_at": ""}])
    merged = pd.read_csv(merge_verdicts(scans, verdicts, tmp_path / "out"), keep_default_na=False)
    rows = {r["file"].rsplit("/", 1)[-1]: (r["label"], r["split"]) for r in merged.to_dict("records")}
    assert rows == {"a.png": ("glioma", "train"), "b.png": ("glioma", "train"), "c.png": ("glioma", "test")}


def test_verdicts_read_the_labels_file_as_ingest_does(tmp_path, write):
    # A labels file beside the scan folder naming files as they sit inside it, one by id alone,
    # saved by a spreadsheet with ';' between columns.
    scans = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        write.png(scans / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    labels = tmp_path / "train.csv"
    labels.write_text("file;label\na.png;normal\nb;abnormal\n")
    verdicts = write.csv(tmp_path / "verdicts.csv", [{"file": "c.png", "label": "normal"}])
    merged = pd.read_csv(merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels), keep_default_na=False)
    assert dict(zip(merged["file"], merged["label"])) == {
        str((scans / "a.png").resolve()): "normal", str((scans / "b.png").resolve()): "abnormal",
        str((scans / "c.png").resolve()): "normal"}


def test_verdicts_read_the_labels_columns_ingest_was_told(tmp_path, write):
    scans = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        write.png(scans / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    labels = tmp_path / "train.csv"
    labels.write_text("image_name,diagnosis,target\na.png,nevus,0\nb.png,melanoma,1\n")
    verdicts = write.csv(tmp_path / "verdicts.csv", [{"file": "c.png", "label": "1"}])
    with pytest.raises(ValueError, match="could each be the label"):
        merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels)
    merged = merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels, columns={"label": "target"})
    table = pd.read_csv(merged, keep_default_na=False)
    assert dict(zip(table["file"].map(lambda f: f.rsplit("/", 1)[-1]), table["label"].astype(str))) == {
        "a.png": "0", "b.png": "1", "c.png": "1"}
    # another choice of columns is another merged file; the verdict's label must be one of its classes
    with pytest.raises(ValueError, match="label '1' is not one of the classes melanoma, nevus"):
        merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels, columns={"label": "diagnosis"})
    verdicts.write_text("file,label\nc.png,melanoma\n")
    again = pd.read_csv(merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels, columns={"label": "diagnosis"}))
    assert sorted(again["label"]) == ["melanoma", "melanoma", "nevus"]


def test_a_verdict_of_a_joined_class_keeps_the_finer_label_it_confirms(tmp_path, write):
    # A model screening benign+malignant as one class offers that class on its review page.
    scans = tmp_path / "scans"
    for label, name in [("benign", "a.png"), ("malignant", "b.png"), ("normal", "c.png"), ("normal", "d.png")]:
        write.png(scans / label / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    rows = merged_after_a_bad_row(tmp_path, write, scans, [
        {"file": "benign/a.png", "label": "benign+malignant", "verdict": "confirmed"},
        {"file": "normal/c.png", "label": "benign+malignant", "verdict": "relabelled"},
    ], {"file": "normal/d.png", "label": "benign+cyst", "verdict": "relabelled"},
        "label 'benign\\+cyst' is not one of the classes benign, malignant, normal")
    assert rows["a.png"] == ("benign", "confirmed") and rows["c.png"] == ("benign+malignant", "review")


def merged_after_a_bad_row(tmp_path, write, scans, good, bad, refused):
    """{file name: (label, label source)} merged from the verdicts ``good``, once ``good`` with the row
    ``bad`` has been refused with a message matching ``refused`` (and nothing merged)."""
    with pytest.raises(ValueError, match=refused):
        merge_verdicts(scans, write.csv(tmp_path / "verdicts.csv", [*good, bad]), tmp_path / "out")
    merged = pd.read_csv(merge_verdicts(scans, write.csv(tmp_path / "verdicts.csv", good), tmp_path / "out"),
                         keep_default_na=False)
    return {r["file"].rsplit("/", 1)[-1]: (r["label"], r["label_source"]) for r in merged.to_dict("records")}


def test_a_verdict_of_a_class_screened_from_many_keeps_the_finer_label_it_confirms(tmp_path, write):
    # Classes named "not <healthy>" (--healthy over many findings) and "with <finding>" (--positive over lists).
    scans = tmp_path / "scans"
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write.png(scans / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    write.csv(scans / "labels.csv", [{"file": "a.png", "label": "Effusion|Nodule"}, {"file": "b.png", "label": "Nodule"},
                                     {"file": "c.png", "label": "No Finding"}, {"file": "d.png", "label": "No Finding"}])
    rows = merged_after_a_bad_row(tmp_path, write, scans, [
        {"file": "a.png", "label": "with Effusion", "verdict": "confirmed"},
        {"file": "b.png", "label": "not No Finding", "verdict": "confirmed"},
        {"file": "c.png", "label": "not No Finding", "verdict": "relabelled"},
    ], {"file": "d.png", "label": "with Hernia", "verdict": "relabelled"}, "label 'with Hernia' is not one of the classes")
    assert rows["a.png"] == ("Effusion|Nodule", "confirmed") and rows["b.png"] == ("Nodule", "confirmed")
    assert rows["c.png"] == ("not No Finding", "review")


def test_verdicts_from_a_page_of_a_folder_inside_the_scans_merge(tmp_path, write):
    # New scans arrive in incoming/ inside a class-folder export; the page scored incoming/ alone.
    scans = tmp_path / "scans"
    for label, name in [("normal", "a.png"), ("tumour", "b.png"), ("incoming", "new1.png"), ("incoming", "new2.png")]:
        write.png(scans / label / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    folder = str((scans / "incoming").resolve())
    verdicts = write.csv(tmp_path / "verdicts.csv", [
        {"file": "new1.png", "label": "tumour", "verdict": "relabelled", "reviewed_at": "", "folder": folder}])
    merged = pd.read_csv(merge_verdicts(scans, verdicts, tmp_path / "out", classes=["normal", "tumour"]),
                         keep_default_na=False)
    rows = {r["file"].rsplit("/", 1)[-1]: r["label"] for r in merged.to_dict("records")}
    assert rows == {"a.png": "normal", "b.png": "tumour", "new1.png": "tumour"}  # new2 is no class "incoming"


def test_verdicts_on_scans_of_a_folder_outside_are_trained_on_where_they_lie(tmp_path, write):
    from pipeline.stages.ingest import ingest

    # The hospital's loop: scans/ trains, a day's scans arrive in incoming/ beside it and are scored there.
    scans = tmp_path / "scans"
    for label, name in [("normal", "a.png"), ("tumour", "b.png")]:
        write.png(scans / label / name, write.image(zlib.crc32(name.encode()) % 1000 + 100))
    incoming = tmp_path / "incoming"
    write.png(incoming / "x.png", write.image(5))
    write.png(incoming / "y.png", write.image(6))
    (incoming / "notes.txt").write_text("not a scan")
    verdicts = write.csv(tmp_path / "verdicts.csv", [
        {"file": "x.png", "label": "tumour", "verdict": "relabelled", "reviewed_at": "", "folder": str(incoming)}])
    merged_path = merge_verdicts(scans, verdicts, tmp_path / "out", classes=["normal", "tumour"])
    merged = pd.read_csv(merged_path, keep_default_na=False)
    x = merged[merged["file"].str.endswith("x.png")].iloc[0]
    assert x["label"] == "tumour" and x["label_source"] == "review"
    result = ingest(scans, labels=merged_path, out=tmp_path / "m.csv", workers=1)
    ids = dict(zip(result.manifest["scan_id"], result.manifest["label"]))
    assert ids == {"normal/a.png": "normal", "tumour/b.png": "tumour", "../incoming/x.png": "tumour"}  # not y.png
    # A labels file of the user's own naming a file outside the folder is still a problem, never a scan.
    own = write.csv(tmp_path / "own.csv", [{"file": str(incoming / "y.png"), "label": "normal"}])
    result = ingest(scans, labels=own, out=tmp_path / "own_m.csv", workers=1)
    assert "../incoming/y.png" not in set(result.manifest["scan_id"])
    assert any("is not a scan under" in reason for reason in result.problems["reason"])
    # a file there that is not a scan is refused, naming both folders
    bad = write.csv(tmp_path / "bad.csv", [{"file": "notes.txt", "label": "tumour", "folder": str(incoming)}])
    with pytest.raises(ValueError, match=r"'notes.txt' is not a scan in .*scans or in .*incoming"):
        merge_verdicts(scans, bad, tmp_path / "out", classes=["normal", "tumour"])


def test_scans_a_reviewer_labelled_or_confirmed_train_and_the_earlier_split_of_the_other_labels_is_kept(tmp_path, write):
    from pipeline.stages.ingest import ingest
    from pipeline.stages.split import make_split

    scans, incoming = tmp_path / "scans", tmp_path / "incoming"
    rows = []
    for k in range(60):  # 40 labelled, 20 unlabelled
        write.png(scans / f"s{k:02d}.png", write.image(100 + k, (12, 12)))
        if k < 40:
            rows.append({"file": f"s{k:02d}.png", "label": "abnormal" if k % 2 else "normal"})
    labels = write.csv(scans / "labels.csv", rows)
    for image in (1, 2):  # a patient's two unlabelled scans, named so
        write.png(scans / f"IM-0100-000{image}.png", write.image(300 + image, (12, 12)))
    for name in ("x.png", "y.png"):
        write.png(incoming / name, write.image(zlib.crc32(name.encode()) % 1000 + 500, (12, 12)))
    options = {"labels_per_class": 5, "calibration_per_class": 5, "test_fraction": 0.25, "selection": "random",
               "seed": 3}

    def subsets(manifest_dir, labels_file):
        found = ingest(scans, labels=labels_file, manifest_dir=manifest_dir, workers=1)
        split = pd.read_csv(make_split(found.manifest_path, **options), keep_default_na=False)
        return split.set_index("scan_id")["subset"].to_dict()

    before = subsets(tmp_path / "m1", labels)
    hidden = next(f"s{k:02d}.png" for k in range(40) if before[f"s{k:02d}.png"] == "unlabelled")
    # suggest chose four unlabelled scans; a reviewer labelled them and two scored scans of incoming/,
    # confirmed two labelled scans' labels and changed one
    verdicts = write.csv(tmp_path / "verdicts.csv", [
        *({"file": f"s{k}.png", "label": "abnormal" if k % 2 else "normal", "verdict": "labelled", "folder": ""}
          for k in (41, 44, 47, 52)),
        {"file": "x.png", "label": "abnormal", "verdict": "relabelled", "folder": str(incoming)},
        {"file": "y.png", "label": "normal", "verdict": "confirmed", "folder": str(incoming)},
        {"file": "s04.png", "label": "normal", "verdict": "confirmed", "folder": ""},
        {"file": "s03.png", "label": "normal", "verdict": "relabelled", "folder": ""},  # was abnormal
        # a labelled scan the draw had left in the pool (beyond --labels-per-class), suggested and confirmed
        {"file": hidden, "label": "abnormal" if int(hidden[1:3]) % 2 else "normal", "verdict": "confirmed",
         "folder": ""},
        {"file": "IM-0100-0001.png", "label": "abnormal", "verdict": "labelled", "folder": ""}])
    after = subsets(tmp_path / "m2", merge_verdicts(scans, verdicts, tmp_path / "out", labels=labels))
    reviewed = ["s41.png", "s44.png", "s47.png", "s52.png", "../incoming/x.png", "../incoming/y.png",
                "IM-0100-0001.png", hidden]
    assert {scan: after[scan] for scan in reviewed} == dict.fromkeys(reviewed, "labelled")
    assert before["IM-0100-0002.png"] == "unlabelled" and "IM-0100-0002.png" not in after  # its patient trains
    # every other scan keeps its subset: the test and calibration scans are the ones the first model had
    assert after["s03.png"] == (before["s03.png"] if before["s03.png"] != "unlabelled" else "labelled")
    kept = [scan for scan in before if scan not in reviewed and not scan.startswith("IM-") and scan != "s03.png"]
    assert {scan: after[scan] for scan in kept} == {scan: before[scan] for scan in kept}
    assert sum(subset == "test" for subset in before.values()) == 10
