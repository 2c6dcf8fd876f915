"""split: labelled/unlabelled/calibration/test subsets, per class, seeded and group-aware."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.manifest import load_split, validate_split
from pipeline.stages.split import make_split


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def members(split: pd.DataFrame, subset: str) -> list[str]:
    return split.loc[split["subset"] == subset, "scan_id"].tolist()


@pytest.fixture
def interleaved(tmp_path, write):
    """30 scans labelled a, b, c in turn; the first of each class is a labels-file test row."""
    rows = [
        {"scan_id": f"s{i:02d}", "label": "abc"[i % 3], "split": "test" if i < 3 else "train"}
        for i in range(30)
    ]
    rows += [{"scan_id": "u1"}, {"scan_id": "x1", "label": "a", "status": "error"}]
    return write.manifest(tmp_path / "toy.csv", rows)


def test_first_n_per_class_in_manifest_order_then_calibration_next(interleaved):
    path = make_split(interleaved, labels_per_class=2, calibration_per_class=3)
    split = read(path)

    assert path == interleaved.with_name("toy.split.csv")
    assert list(split.columns) == ["scan_id", "subset", "label", "group"]
    assert members(split, "test") == ["s00", "s01", "s02"]
    assert members(split, "labelled") == ["s03", "s04", "s05", "s06", "s07", "s08"]
    assert members(split, "calibration") == [f"s{i:02d}" for i in range(9, 18)]
    assert members(split, "unlabelled") == [f"s{i:02d}" for i in range(18, 30)] + ["u1"]
    assert "x1" not in split["scan_id"].tolist(), "only status ok scans are split"
    unused = split[split["scan_id"] == "s18"]
    assert unused["label"].tolist() == ["a"], "unused labelled scans keep their label"

    record = json.loads(path.with_suffix(".json").read_text())
    assert record["parameters"]["labels_per_class"] == 2
    assert record["counts_per_subset_and_label"]["calibration"] == {"a": 3, "b": 3, "c": 3}


def test_test_fraction_is_drawn_per_class_when_the_manifest_has_no_test_rows(tmp_path, write):
    rows = [{"scan_id": f"s{i:03d}", "label": "ab"[i % 2]} for i in range(40)]
    path = write.manifest(tmp_path / "m.csv", rows)
    split = read(make_split(path, labelled_fraction=0.5, test_fraction=0.25, seed=3))
    counts = split.groupby(["subset", "label"]).size().to_dict()
    assert counts == {
        ("test", "a"): 5,
        ("test", "b"): 5,
        ("labelled", "a"): 8,  # half of the 15 left, rounded
        ("labelled", "b"): 8,
        ("unlabelled", "a"): 7,
        ("unlabelled", "b"): 7,
    }
    assert members(split, "test") != members(
        read(make_split(path, labelled_fraction=0.5, seed=4)), "test"
    )


def test_random_selection_is_seeded(interleaved, tmp_path):
    def labelled(seed, name):
        out = make_split(
            interleaved, out=tmp_path / name, labels_per_class=2, selection="random", seed=seed
        )
        return out.read_bytes(), members(read(out), "labelled")

    first, again, other = labelled(7, "a.csv"), labelled(7, "b.csv"), labelled(8, "c.csv")
    assert first[0] == again[0]
    assert first[1] != other[1]
    assert len(other[1]) == 6


@pytest.mark.parametrize("seed", range(5))
def test_groups_never_span_two_subsets(tmp_path, write, seed):
    rng = np.random.default_rng(seed)
    groups = [f"p{g}" if g < 30 else "" for g in rng.integers(0, 40, size=300)]
    rows = [
        {"scan_id": f"s{i:03d}", "label": str(rng.integers(0, 3)), "group": group}
        for i, group in enumerate(groups)
    ]
    path = write.manifest(tmp_path / "m.csv", rows)
    out = make_split(
        path,
        labels_per_class=5,
        calibration_per_class=5,
        test_fraction=0.2,
        selection="random",
        seed=seed,
    )
    split = load_split(path, out)
    grouped = split[split["group"] != ""]
    assert (grouped.groupby("group")["subset"].nunique() == 1).all()
    assert len(split) == 300
    for subset in ("labelled", "calibration"):
        assert (split[split["subset"] == subset]["label"].value_counts() >= 5).all()
        assert split[split["subset"] == subset]["label"].nunique() == 3


def test_a_group_split_across_test_in_the_labels_file_is_refused(tmp_path, write):
    rows = [
        {"scan_id": "a", "label": "x", "group": "p1", "split": "test"},
        {"scan_id": "b", "label": "x", "group": "p1", "split": "train"},
        {"scan_id": "c", "label": "x"},
    ]
    path = write.manifest(tmp_path / "m.csv", rows)
    with pytest.raises(
        ValueError, match=r"groups p1 \(test: a; not test: b\) have scans with split 'test' and scans without"
    ):
        make_split(path, labels_per_class=1)


def test_too_few_scans_in_a_class_names_it(interleaved):
    with pytest.raises(ValueError, match="class 'c' has 9 available, labels_per_class=10 needs 10"):
        make_split(interleaved, labels_per_class=10)
    with pytest.raises(ValueError, match="class 'a' has 7 available, calibration_per_class=8"):
        make_split(interleaved, labels_per_class=2, calibration_per_class=8)


@pytest.mark.parametrize(
    "options, named",
    [
        ({}, "exactly one of labels_per_class and labelled_fraction"),
        ({"labels_per_class": 2, "labelled_fraction": 0.1}, "exactly one of"),
        ({"labels_per_class": 0}, "labels_per_class must be"),
        ({"labels_per_class": 2.5}, "labels_per_class must be"),
        ({"labelled_fraction": 1.5}, "labelled_fraction must be"),
        ({"labels_per_class": 1, "calibration_per_class": -1}, "calibration_per_class must be"),
        (
            {"labels_per_class": 1, "calibration_fraction": 0.1, "calibration_per_class": 1},
            "not both",
        ),
        ({"labels_per_class": 1, "test_fraction": 1.0}, "test_fraction must be"),
        ({"labels_per_class": 1, "selection": "best"}, "selection must be one of first, random"),
    ],
)
def test_bad_parameters_are_named(interleaved, options, named):
    with pytest.raises(ValueError, match=named):
        make_split(interleaved, **options)


def test_a_user_split_with_several_problems_lists_them_all(tmp_path, write):
    manifest = write.manifest(
        tmp_path / "m.csv",
        [
            {"scan_id": "a", "label": "x", "group": "p1"},
            {"scan_id": "b", "label": "x", "group": "p1"},
            {"scan_id": "c", "label": "y"},
            {"scan_id": "d"},
        ],
    )
    split = write.csv(
        tmp_path / "mine.csv",
        [
            {"scan_id": "a", "subset": "labelled"},
            {"scan_id": "b", "subset": "test"},
            {"scan_id": "zzz", "subset": "unlabelled"},
            {"scan_id": "c", "subset": "training"},
            {"scan_id": "d", "subset": "calibration"},
            {"scan_id": "c", "subset": "test"},
        ],
    )
    with pytest.raises(ValueError) as raised:
        load_split(manifest, split)
    message = str(raised.value)
    assert "mine.csv has 5 problem(s)" in message
    assert "line 4: scan 'zzz' is not in the manifest" in message
    assert "line 5: subset 'training' is not one of" in message
    assert "line 6: scan 'd' is in calibration but has no label" in message
    assert "line 7: scan 'c' is listed again (first on line 5)" in message
    assert "group 'p1' is in more than one subset: labelled (lines 2); test (lines 3)" in message


def test_load_split_returns_manifest_rows_with_their_subset(interleaved):
    manifest = pd.read_csv(interleaved, dtype=str, keep_default_na=False)
    rows = load_split(manifest, make_split(interleaved, labels_per_class=1))
    assert rows["scan_id"].tolist() == manifest["scan_id"].tolist()[:-1]  # x1 is an error row
    assert rows.loc[rows["scan_id"] == "s03", "subset"].item() == "labelled"
    assert set(rows.columns) == set(manifest.columns) | {"subset"}


def test_validate_split_catches_a_label_that_disagrees_with_the_manifest(tmp_path, write):
    manifest = pd.read_csv(
        write.manifest(tmp_path / "m.csv", [{"scan_id": "a", "label": "x"}]),
        dtype=str,
        keep_default_na=False,
    )
    edited = pd.DataFrame([{"scan_id": "a", "subset": "labelled", "label": "y", "group": ""}])
    with pytest.raises(ValueError, match="line 2: label 'y' differs from the manifest's 'x'"):
        validate_split(manifest, edited)


def test_a_class_joined_by_a_verdict_draws_its_parts_with_it(tmp_path, write):
    # Reviewers of a model screening glioma+meningioma as one class gave one scan that class.
    rows = [{"scan_id": f"s{i:02d}", "label": ["glioma", "meningioma", "notumor"][i % 3]} for i in range(30)]
    rows.append({"scan_id": "v1", "label": "glioma+meningioma"})
    path = make_split(write.manifest(tmp_path / "toy.csv", rows), labels_per_class=4, calibration_per_class=3,
                      selection="random")
    split = read(path)
    drawn = split[split["subset"] == "labelled"]
    joined = drawn["label"].isin(["glioma", "meningioma", "glioma+meningioma"])
    assert joined.sum() == 4 and (drawn["label"] == "notumor").sum() == 4
    assert split.set_index("scan_id").loc["v1", "label"] == "glioma+meningioma"  # labels kept as given


def test_a_class_too_small_for_a_labelled_and_a_calibration_scan_is_left_out(tmp_path, write, caplog):
    # A stray class folder of two scans beside two real classes stopped every run ("rounds to 0").
    rows = [{"scan_id": f"s{i:02d}", "label": "ab"[i % 2]} for i in range(20)]
    rows += [{"scan_id": "stray1", "label": "other"}, {"scan_id": "stray2", "label": "other"}]
    manifest = write.manifest(tmp_path / "toy.csv", rows)
    path = make_split(manifest, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2)
    split = read(path)
    assert set(split["label"]) == {"a", "b"} and "stray1" not in set(split["scan_id"])
    assert json.loads(path.with_suffix(".json").read_text())["classes_left_out"] == {"other": 2}
    assert "'other' (2 outside the test set)" in caplog.text and "relabel them" in caplog.text
    # asked for by count, a class too small is still refused, by name
    with pytest.raises(ValueError, match="class 'other' has 2 available, labels_per_class=3"):
        make_split(manifest, labels_per_class=3)
    # a class left out before others in the manifest (a stray folder sorted first) shifts no label
    first = write.manifest(tmp_path / "first.csv", rows[-2:] + rows[:-2])
    split = read(make_split(first, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2))
    assert (split["label"] == split["scan_id"].map({r["scan_id"]: r["label"] for r in rows})).all()


def test_labels_of_fewer_than_two_classes_are_refused_before_training(tmp_path, write):
    # A folder whose scans sit in one subfolder (images/) is one class; the plan's probe crashed on it.
    one = write.manifest(tmp_path / "one.csv", [{"scan_id": f"images/s{i}.png", "label": "images"} for i in range(30)])
    with pytest.raises(ValueError, match="of one class, 'images' \\(24 scans\\), and a model needs two or more.*"
                                         "subfolder per class"):
        make_split(one, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2)
    # Shenzhen's chest X-rays give tuberculosis in their names: the refusal says so, with a labels row to write
    shenzhen = write.manifest(tmp_path / "shenzhen.csv", [
        {"scan_id": f"CXR_png/CHNCXR_{i:04d}_{i % 2}.png", "label": "CXR_png"} for i in range(30)])
    with pytest.raises(ValueError, match=r"names end in one of _0, _1: if that is each scan's class, a labels file "
                                         r"of columns file,label saying so \(CXR_png/CHNCXR_\d{4}_\d.png,\d\) gives"):
        make_split(shenzhen, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2)
    with pytest.raises(ValueError) as refused:  # ids, not codes: no hint
        make_split(one, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2)
    assert "names end in" not in str(refused.value)
    # the other class left out as too small leaves one: refused, naming what was left out and what to do
    rows = [{"scan_id": f"s{i}", "label": "a"} for i in range(20)] + [{"scan_id": "t", "label": "b"}]
    with pytest.raises(ValueError, match="only 'a' is left once the classes too small .* \\('b': 1 outside the "
                                         "test set\\); label more scans of each class, or give --labels-per-class 1"):
        make_split(write.manifest(tmp_path / "stray.csv", rows), labelled_fraction=0.75, calibration_fraction=0.99)
    tiny = write.manifest(tmp_path / "tiny.csv", [{"scan_id": f"s{i}", "label": "ab"[i % 2]} for i in range(4)])
    with pytest.raises(ValueError, match="none is left once the classes too small"):
        make_split(tiny, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2)
    none = write.manifest(tmp_path / "none.csv", [{"scan_id": f"s{i}.png"} for i in range(10)])
    with pytest.raises(ValueError, match="no scan outside the test set is labelled.*--labels"):
        make_split(none, labels_per_class=2)
    # one group holding most labelled scans (a site, not a patient) goes to test whole: named, not "give labels"
    site = write.manifest(tmp_path / "site.csv", [{"scan_id": f"s{i}", "label": "ab"[i % 2], "group": "site-1"}
                                                  for i in range(40)] + [{"scan_id": f"u{i}"} for i in range(10)])
    with pytest.raises(ValueError, match="one group, 'site-1', holds 40 of the 40 labelled scans.*give a group "
                                         "column that names patients"):
        make_split(site, labels_per_class=2)


def test_a_test_set_without_a_class_is_warned_of(tmp_path, write, caplog):
    rows = [{"scan_id": f"s{i:02d}", "label": "ab"[i % 2], "split": "test" if i < 10 and i % 2 == 0 else ""}
            for i in range(40)]
    make_split(write.manifest(tmp_path / "toy.csv", rows), labels_per_class=5)
    assert "no test scans of class 'b' (the labels file's split column gives them none)" in caplog.text
    caplog.clear()
    make_split(write.manifest(tmp_path / "drawn.csv", [{**row, "split": ""} for row in rows]), labels_per_class=5)
    assert "no test scans" not in caplog.text


def test_random_manifests_split_with_each_scans_own_label(tmp_path, write):
    # classes of 1-30 scans in any order, unlabelled scans, patients, some test rows: every split
    # either refuses by name or gives each scan the manifest's label (a class left out once shifted them)
    rng = np.random.default_rng(7)
    made = 0
    for trial in range(60):
        labels = [f"c{c}" for c, n in enumerate(rng.integers(1, 30, rng.integers(2, 6))) for _ in range(n)]
        labels += [""] * int(rng.integers(0, 10))
        rows = [{"scan_id": f"s{i:03d}", "label": label, "group": f"g{rng.integers(0, 200)}" if rng.random() < 0.3 else "",
                 "split": "test" if trial % 3 == 0 and rng.random() < 0.15 else ""}
                for i, label in enumerate(rng.permutation(labels))]
        manifest = write.manifest(tmp_path / f"m{trial}.csv", rows)
        try:
            split = read(make_split(manifest, labelled_fraction=0.75, calibration_fraction=0.99, test_fraction=0.2,
                                    selection="random", seed=trial))
        except ValueError as error:
            assert "problem" not in str(error)
            continue
        made += 1
        assert (split["label"] == split["scan_id"].map({r["scan_id"]: r["label"] for r in rows})).all()
    assert made > 30


def nih_like_manifest(write, path):
    """40 healthy scans, 24 of one finding, and six combinations of findings of 2-4 scans each."""
    rows = [{"scan_id": f"h{i}.png", "label": "No Finding"} for i in range(40)]
    rows += [{"scan_id": f"e{i}.png", "label": "Effusion"} for i in range(24)]
    for k, combo in enumerate(["Atelectasis|Effusion", "Effusion|Mass", "Mass|Nodule", "Atelectasis|Mass",
                               "Effusion|Nodule", "Infiltration|Mass"]):
        rows += [{"scan_id": f"c{k}_{i}.png", "label": combo} for i in range(2 + k % 3)]
    return write.manifest(path, rows)


def test_rare_classes_screened_as_one_are_drawn_together_not_refused_or_left_out(tmp_path, write):
    manifest = nih_like_manifest(write, tmp_path / "nih.csv")
    screened = ["Effusion", "Atelectasis|Effusion", "Effusion|Mass", "Mass|Nodule", "Atelectasis|Mass",
                "Effusion|Nodule", "Infiltration|Mass"]
    options = dict(labels_per_class=4, calibration_per_class=4, test_fraction=0.2, selection="random", seed=1)
    with pytest.raises(ValueError, match="class 'Atelectasis\\|Effusion' has"):  # each combination alone: refused
        make_split(manifest, out=tmp_path / "alone.split.csv", **options)
    split = pd.read_csv(make_split(manifest, out=tmp_path / "together.split.csv", screened_as_one=screened,
                                   **options), keep_default_na=False)
    labelled = split[split["subset"] == "labelled"]
    combos = labelled[labelled["label"].str.contains("|", regex=False)]
    assert len(combos) >= 4 and set(combos["label"]) <= set(screened)  # drawn together, saved as labelled
    assert (labelled["label"] == "Effusion").sum() == 4 and (labelled["label"] == "No Finding").sum() == 4
    assert set(split["scan_id"]) == set(pd.read_csv(manifest)["scan_id"])  # nothing left out
    # by fractions too: the combinations are drawn together rather than left out
    split = pd.read_csv(make_split(manifest, out=tmp_path / "fractions.split.csv", labelled_fraction=0.75,
                                   calibration_fraction=0.99, screened_as_one=screened, seed=1), keep_default_na=False)
    assert set(split["scan_id"]) == set(pd.read_csv(manifest)["scan_id"])
    # one rare class alone is not helped by drawing it "together": left out as before
    alone = make_split(manifest, out=tmp_path / "one.split.csv", labelled_fraction=0.75, calibration_fraction=0.99,
                       screened_as_one=["Effusion", "Atelectasis|Effusion"], seed=1)
    assert "Atelectasis|Effusion" not in set(pd.read_csv(alone, keep_default_na=False)["label"])
    # by count, where the user did not ask for a class of its own: left out too, not refused
    frame = pd.read_csv(manifest, keep_default_na=False)
    write.manifest(tmp_path / "one_rare.csv", frame[~frame["label"].str.contains("Mass|Nodule|Infiltration")
                                                    ].to_dict("records"))
    alone = make_split(tmp_path / "one_rare.csv", out=tmp_path / "one_rare.split.csv",
                       screened_as_one=["Effusion", "Atelectasis|Effusion"], **options)
    assert set(pd.read_csv(alone, keep_default_na=False)["label"]) == {"No Finding", "Effusion"}


def test_rare_classes_not_screened_as_abnormal_are_drawn_and_trained_together(tmp_path, write):
    from pipeline.manifest import trained_as_one
    from pipeline.stages.split import OTHER_CLASSES

    # Screening Effusion alone: the combinations without it are the healthy side's, each a class of its own.
    manifest = nih_like_manifest(write, tmp_path / "nih.csv")
    apart = ["No Finding", "Mass|Nodule", "Atelectasis|Mass", "Infiltration|Mass"]
    options = dict(labels_per_class=2, calibration_per_class=2, test_fraction=0.2, selection="random", seed=1)
    with pytest.raises(ValueError, match="class 'Atelectasis\\|Mass' has"):  # each alone: refused
        make_split(manifest, out=tmp_path / "alone.split.csv",
                   screened_as_one=["Effusion", "Atelectasis|Effusion", "Effusion|Mass", "Effusion|Nodule"], **options)
    path = make_split(manifest, out=tmp_path / "apart.split.csv", screened_apart=apart,
                      screened_as_one=["Effusion", "Atelectasis|Effusion", "Effusion|Mass", "Effusion|Nodule"],
                      **options)
    assert trained_as_one(path) == {OTHER_CLASSES: ["Atelectasis|Mass", "Infiltration|Mass", "Mass|Nodule"]}
    split = pd.read_csv(path, keep_default_na=False)
    labelled = split[split["subset"] == "labelled"]
    assert labelled["label"].isin(trained_as_one(path)[OTHER_CLASSES]).sum() == 2  # two drawn for them all
    assert (labelled["label"] == "No Finding").sum() == 2  # a class large enough is drawn alone, as before
    assert set(split["scan_id"]) == set(pd.read_csv(manifest)["scan_id"])  # every scan kept, with its own label
    # too few even together: left out, not refused; and no record of classes trained as one
    path = make_split(manifest, out=tmp_path / "few.split.csv", screened_apart=apart,
                      screened_as_one=["Effusion", "Atelectasis|Effusion", "Effusion|Mass", "Effusion|Nodule"],
                      **{**options, "labels_per_class": 6, "calibration_per_class": 6})
    assert trained_as_one(path) == {} and "Mass|Nodule" not in set(pd.read_csv(path, keep_default_na=False)["label"])
    assert trained_as_one(tmp_path / "no.split.csv") == {}  # a split without its record: nothing merged


def test_a_split_screening_classes_as_one_is_named_apart():
    from pipeline.config import load_config
    from pipeline.manifest import split_path

    names = {key: split_path(load_config(None, ["data.manifest=\"m.csv\"", *extra])).name for key, extra in [
        ("one", ["data.positive_class=\"b\""]), ("joined", ["data.positive_class=\"b+c\""]),
        ("healthy", ["data.healthy_class=\"a\""]), ("healthy_planned", ["data.healthy_class=\"a\"",
                                                                        "data.positive_class=\"b+c\""])]}
    assert ".screen-" not in names["one"]
    assert ".screen-" in names["joined"] and ".screen-" in names["healthy"] and names["joined"] != names["healthy"]
    assert names["healthy"] == names["healthy_planned"]  # the plan's join from --healthy keeps the name


def test_every_class_keeps_a_calibration_patient_when_whole_patients_are_drawn_for_training(tmp_path, write, caplog):
    # every label used (fractions): a class of two patients of three scans each is drawn whole for training
    # (three-quarters of six rounds to four: both patients), which left calibration none of it, and the run
    # learnt so only after training ("the calibration set needs both healthy and abnormal scans")
    rows = [{"scan_id": f"n{i:02d}", "label": "normal", "split": "test" if i < 4 else ""} for i in range(24)]
    rows += [{"scan_id": f"a{p}{k}", "label": "abnormal", "group": f"p{p}", "split": "test" if p == 0 else ""}
             for p in range(3) for k in range(3)]
    path = make_split(write.manifest(tmp_path / "m.csv", rows), labelled_fraction=0.75, calibration_fraction=0.99)
    split = read(path)
    abnormal = split[split["label"] == "abnormal"].groupby("subset")["group"].agg(set).to_dict()
    assert abnormal["test"] == {"p0"} and len(abnormal["labelled"]) == len(abnormal["calibration"]) == 1
    assert "calibration: class 'abnormal' had none left (whole patients drawn for training took them all)" in caplog.text
    # a class of one patient outside the test set trains, and calibration goes without it, as before
    one = [row for row in rows if row.get("group") != "p2"]
    split = read(make_split(write.manifest(tmp_path / "one.csv", one), labelled_fraction=0.75,
                            calibration_fraction=0.99))
    assert set(split.loc[split["label"] == "abnormal", "subset"]) == {"test", "labelled"}
