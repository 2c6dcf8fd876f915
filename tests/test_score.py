"""Calibrate and score a toy model; bad files become error rows, never a crash."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from pipeline.calibration import softmax
from pipeline.checkpoint import load_checkpoint
from pipeline.config import load_config
from pipeline.stages.calibrate import calibrate
from pipeline.stages.score import neutralise_formula, score
from pipeline.trainer import Trainer, predict_logits

from toy import calibrated_toy_run, toy_images, toy_training_data

TOY = [
    "preprocess.spatial_size=[16,16]",
    "network.channels=[8,16]",
    "train.steps=80",
    "train.eval_every=40",
    "train.threads=2",
    "calibrate.min_support=3",
    "method.name=supervised",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return calibrated_toy_run(tmp_path_factory.mktemp("run"), TOY)


def write_pngs(folder, n=12, seed=5):
    images, labels = toy_images(n, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(
            folder / f"scan{i:02d}.png"
        )
    return labels


def test_calibration_json_and_reliability_plot(trained_run):
    result = json.loads((trained_run / "calibration.json").read_text())
    assert result["temperature"] > 0
    assert set(result["class_thresholds"]) == {"a", "b", "c"}
    assert result["n_calibration"] == 60
    assert "ece_before" in result and "ece_after" in result
    assert (trained_run / "reliability.png").stat().st_size > 1000


def test_score_writes_one_row_per_file_with_bad_files_as_errors(trained_run, tmp_path):
    scans = tmp_path / "scans"
    labels = write_pngs(scans)
    good = (scans / "scan00.png").read_bytes()
    (scans / "truncated.png").write_bytes(good[: len(good) // 2])
    (scans / "empty.png").write_bytes(b"")
    (scans / "text.png").write_text("this is not an image\n")
    (scans / "notes.txt").write_text("a stray file\n")
    (scans / "=HYPERLINK(1).png").write_bytes(good)
    out = score(scans, trained_run, out=tmp_path / "report.csv", progress=False)
    report = pd.read_csv(out, keep_default_na=False)
    assert len(report) == 12 + 5
    errors = report[report["status"] == "error"].set_index("scan_id")
    assert set(errors.index) == {"truncated.png", "empty.png", "text.png", "notes.txt"}
    assert "empty" in errors.loc["empty.png", "error"]
    assert "unsupported" in errors.loc["notes.txt", "error"]
    assert all(errors["error"] != "")
    ok = report[report["status"] == "ok"]
    assert len(ok) == 13
    probs = ok[["p_a", "p_b", "p_c"]].astype(float).to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    scored = ok[ok["scan_id"].str.startswith("scan")].sort_values("scan_id")
    predicted = scored["prediction"].map({"a": 0, "b": 1, "c": 2}).to_numpy()
    assert (predicted == labels.numpy()).mean() > 0.7
    assert "'=HYPERLINK(1).png" in set(report["scan_id"])  # neutralised, not a formula
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert (
        meta["weights_sha256"]
        == json.loads((trained_run / "checkpoint.json").read_text())["weights_sha256"]
    )
    assert meta["summary"]["errors"] == 4
    assert out.with_suffix(".summary.txt").exists()


def test_a_converters_metadata_beside_its_scans_is_skipped_and_counted_not_scored(trained_run, tmp_path):
    from pipeline.stages.ingest import ingest
    from pipeline.stages.validate import validate

    scans = tmp_path / "scans"
    write_pngs(scans, n=3)
    for name in ("scan00.json", "scan00.bval", "scan00.bvec", "scan01.JSON"):  # dcm2niix's, BIDS' sidecars
        (scans / name).write_text("{}\n")
    (scans / "dataset.json").write_text("{}\n")  # a set's description names no scan: not a scan file
    out = score(scans, trained_run, out=tmp_path / "report.csv", progress=False)
    report = pd.read_csv(out, keep_default_na=False).set_index("scan_id")
    assert sorted(report.index) == ["dataset.json", "scan00.png", "scan01.png", "scan02.png"]
    assert report.loc["dataset.json", "status"] == "error"
    assert json.loads(out.with_suffix(".meta.json").read_text())["summary"]["skipped_sidecars"] == 4
    assert "skipped: 4 metadata files beside their scans" in out.with_suffix(".summary.txt").read_text()
    problems = ingest(scans, out=tmp_path / "m.csv", workers=1).problems.set_index("item")
    assert problems.loc["scan00.bval", "reason"].startswith("metadata of scan00.png")
    assert problems.loc["scan01.JSON", "source"] == "skipped"
    assert problems.loc["dataset.json", "reason"].startswith("not a scan file")
    (scans / "labels.csv").write_text("file,label\nscan00.png,a\n")
    table = validate(scans, workers=1, progress=False).set_index("file")
    assert table.loc["scan00.bvec", "status"] == "skipped" and table.loc["dataset.json", "status"] == "error"
    assert table.loc["labels.csv", "status"] == "skipped"  # the folder's labels, as score reads them


def test_another_folder_of_the_same_name_gets_a_report_of_its_own(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pngs(tmp_path / "siteA" / "incoming", n=3)
    write_pngs(tmp_path / "siteB" / "incoming", n=4, seed=6)
    first = score(tmp_path / "siteA" / "incoming", trained_run, progress=False)
    assert first == Path("reports") / trained_run.name / "incoming.csv"
    second = score(tmp_path / "siteB" / "incoming", trained_run, progress=False)
    assert second != first and second.name.startswith("incoming-")
    assert len(pd.read_csv(first)) == 3 and len(pd.read_csv(second)) == 4  # the first report kept
    assert score(tmp_path / "siteA" / "incoming", trained_run, progress=False) == first  # scored again: replaced
    # a killed run's unfinished rows are another folder's: not resumed from
    first.with_name("incoming.csv.partial").write_text(first.read_text())
    first.with_suffix(".meta.json").unlink()
    third = score(tmp_path / "siteB" / "incoming", trained_run, progress=False, resume=True)
    assert third == second and len(pd.read_csv(third)) == 4


def test_score_needs_a_calibrated_run(tmp_path):
    run = tmp_path / "run"
    Trainer(
        load_config(None, TOY + ["train.steps=2"]), toy_training_data(), run, progress=False
    ).fit()
    write_pngs(tmp_path / "scans", n=2)
    with pytest.raises(FileNotFoundError, match="calibrate"):
        score(tmp_path / "scans", run, out=tmp_path / "r.csv", progress=False)


def test_formula_neutralisation():
    assert neutralise_formula("=1+1") == "'=1+1"
    assert neutralise_formula("@SUM") == "'@SUM"
    assert neutralise_formula("scan-01") == "scan-01"


def test_screening_run_reports_operating_point_band_and_figures(tmp_path):
    """A two-class task with a positive class: decision threshold, review band, ROC, histogram."""
    data = toy_training_data(n=500, n_calibration=120)
    data.labels = (data.labels == 2).long()  # the square is "abnormal", bars are "healthy"
    data.classes = ["healthy", "abnormal"]
    run = tmp_path / "run"
    config = load_config(None, TOY + ["data.positive_class=abnormal", "calibrate.bootstrap=200",
                                      "calibrate.min_positives=60"])
    Trainer(config, data, run, progress=False).fit()
    result = calibrate(run, data=data)
    screening = result["screening"]
    assert screening["positive_class"] == "abnormal" and screening["sensitivity"] >= 0.95
    assert screening["review_low"] <= screening["decision"] <= screening["review_high"]
    assert screening["n_positive"] + screening["n_negative"] == 120
    assert len(screening["sensitivity_ci95"]) == 2
    assert any("calibration scans of class 'abnormal'" in w for w in result["warnings"])  # ~40 positives < 60
    assert not any("weakly" in w for w in result["warnings"]) and screening["auroc_ci95"][0] > 0.75
    for name in ("roc.png", "score_histogram.png", "reliability.png", "roc_test.png", "score_histogram_test.png"):
        assert (run / name).stat().st_size > 1000
    # The calibration set's thresholds, applied to the untouched test scans.
    logits = predict_logits(load_checkpoint(run).network, data.images[data.test], torch.device("cpu"))
    p_test = softmax(logits, result["temperature"])[:, 1]
    y_test = data.labels[data.test].numpy() == 1
    test = result["test"]["screening"]
    assert (test["n_positive"], test["n_negative"]) == (y_test.sum(), (~y_test).sum())
    assert test["auroc"] == pytest.approx(roc_auc_score(y_test, p_test), abs=1e-6)
    called = p_test >= screening["decision"]
    assert test["sensitivity"] == pytest.approx(called[y_test].mean())
    assert test["specificity"] == pytest.approx((~called[~y_test]).mean())
    predictions = pd.read_csv(run / "test_predictions.csv")  # per scan, for breakdowns afterwards
    assert list(predictions["scan_id"]) == [data.scan_ids[i] for i in data.test.numpy()]
    assert (predictions["label"] == np.where(y_test, "abnormal", "healthy")).all()
    assert np.allclose(predictions["p_abnormal"], p_test, atol=1e-6)
    assert np.allclose(predictions["p_healthy"] + predictions["p_abnormal"], 1.0, atol=1e-6)
    images, labels = toy_images(10, seed=9)
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(scans / f"s{i}.png")
    report = pd.read_csv(score(scans, run, out=tmp_path / "r.csv", progress=False), keep_default_na=False)
    p = report["p_abnormal"].astype(float)
    called = report["prediction"] == "abnormal"
    assert (called == (p >= screening["decision"])).all()
    in_band = (p >= screening["review_low"]) & (p < screening["review_high"])
    assert (report["needs_review"].astype(str) == in_band.astype(str)).all()
    # An external check: a folder labelled by its subfolders (one named in another case).
    external = tmp_path / "external"
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = external / ("Abnormal" if label == 2 else "healthy")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"s{i}.png")
    checked = pd.read_csv(score(external, run, out=tmp_path / "e.csv", progress=False), keep_default_na=False)
    check = json.loads((tmp_path / "e.meta.json").read_text())["summary"]["against_labels"]
    abnormal = checked["scan_id"].str.startswith("Abnormal/").to_numpy()
    assert check["source"] == "class subfolders" and check["n"] == 10 and check["positive_class"] == "abnormal"
    assert (checked["folder_label"] == np.where(abnormal, "abnormal", "healthy")).all()
    assert check["auroc"] == pytest.approx(roc_auc_score(abnormal, checked["p_abnormal"]), abs=1e-4)
    assert check["sensitivity"]["of"] == abnormal.sum()
    assert check["sensitivity"]["rate"] == pytest.approx((checked["prediction"] == "abnormal")[abnormal].mean(), abs=1e-4)
    assert "against the folder's labels (class subfolders, 10 scans)" in (tmp_path / "e.summary.txt").read_text()
    assert "against the folder&#x27;s labels (class subfolders, 10 scans): accuracy" in (tmp_path / "e.html").read_text()


def test_a_folder_labelled_in_its_own_way_is_checked_only_against_labels_the_model_knows(trained_run, tmp_path):
    scans = tmp_path / "scans"
    labels = write_pngs(scans)
    truth = ["abc"[k] for k in labels.numpy()]
    (scans / "labels.csv").write_text("file,label\n" + "".join(
        f"scan{i:02d}.png,{'unknown' if i == 0 else truth[i]}\n" for i in range(12)))
    report = pd.read_csv(score(scans, trained_run, out=tmp_path / "r.csv", progress=False), keep_default_na=False)
    check = json.loads((tmp_path / "r.meta.json").read_text())["summary"]["against_labels"]
    assert "labels.csv" not in set(report["scan_id"])  # read, not scored
    ok = report[report["scan_id"] != "scan00.png"]
    expected = (ok["prediction"] == ok["scan_id"].map(lambda s: truth[int(s[4:6])])).mean()
    assert check["n"] == 11 and check["labels_naming_no_class"] == 1 and "positive_class" not in check
    assert check["accuracy"] == pytest.approx(expected, abs=1e-4)
    dated = tmp_path / "dated"
    write_pngs(dated / "2026-11")
    score(dated, trained_run, out=tmp_path / "d.csv", progress=False)
    assert "against_labels" not in json.loads((tmp_path / "d.meta.json").read_text())["summary"]
    # A labels file named by the user, beside the folder and naming files from above it (CheXpert's valid.csv)
    (tmp_path / "valid.csv").write_text("Path,label\n" + "".join(
        f"dated/2026-11/scan{i:02d}.png,{truth[i]}\n" for i in range(12)))
    score(dated, trained_run, out=tmp_path / "v.csv", progress=False, labels=tmp_path / "valid.csv")
    check = json.loads((tmp_path / "v.meta.json").read_text())["summary"]["against_labels"]
    assert check["source"] == "valid.csv" and check["n"] == 12 and check["labels_naming_no_class"] == 0
    # ... refused before any scan is scored where it is missing, or names none of the model's classes
    with pytest.raises(FileNotFoundError, match="labels file .*nothing.csv does not exist"):
        score(dated, trained_run, out=tmp_path / "x.csv", progress=False, labels=tmp_path / "nothing.csv")
    (tmp_path / "other.csv").write_text("file,label\n" + "".join(f"2026-11/scan{i:02d}.png,kidney\n" for i in range(12)))
    with pytest.raises(ValueError, match="none of its labels of scans in .*dated names a class of the model .*its "
                                         "labels: kidney"):
        score(dated, trained_run, out=tmp_path / "x.csv", progress=False, labels=tmp_path / "other.csv")
    (tmp_path / "elsewhere.csv").write_text("file,label\nct/head01.png,a\n")
    with pytest.raises(ValueError, match="none of its rows labels a scan in .*dated; give the labels file"):
        score(dated, trained_run, out=tmp_path / "x.csv", progress=False, labels=tmp_path / "elsewhere.csv")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.csv.partial").exists()


def test_scoring_batches_and_chunks_shrink_with_the_input_size_so_memory_stays_flat():
    from pipeline.checkpoint import LoadedModel, build_method
    from pipeline.networks import FORWARD_BYTES, FORWARD_SCANS
    from pipeline.scoring import CHUNK_IMAGE_BYTES, memory_bounded_sizes

    def model(*overrides):
        config = load_config(None, list(overrides))
        network = build_method(config, 2, 1).prediction_network()
        return LoadedModel(network, config, ["a", "b"], "", {}, Path("."))

    small = model("preprocess.spatial_size=[28,28]", "network.channels=[8,16]")
    assert memory_bounded_sizes(small, 256, 512) == (256, 512)  # small pictures: as asked
    assert small.config.score.batch_size == FORWARD_SCANS[1]  # by default no more than a CPU runs fastest
    for stride in (1, 2):
        volumes = model("preprocess.spatial_size=[64,64,64]", "network.channels=[16,32]", f"network.stem_stride={stride}")
        batch, chunk = memory_bounded_sizes(volumes, 256, 512)
        assert batch * 64**3 / stride**3 * 16 * 4 <= FORWARD_BYTES
        assert chunk * 64**3 * 4 <= CHUNK_IMAGE_BYTES and chunk >= batch >= 1
    assert memory_bounded_sizes(volumes, 256, 512)[0] > memory_bounded_sizes(
        model("preprocess.spatial_size=[64,64,64]", "network.channels=[16,32]"), 256, 512)[0]


def test_review_page_takes_a_positive_class_whose_name_is_not_an_identifier(tmp_path):
    from pipeline.review import write_review_page

    classes = ["No finding", "covid-19"]
    report = pd.DataFrame({"scan_id": ["a.png", "b.png"], "path": ["", ""], "prediction": ["covid-19", "No finding"],
                           "confidence": [0.9, 0.8], "needs_review": [False, True], "status": ["ok", "ok"],
                           "error": ["", ""], "p_No finding": [0.1, 0.8], "p_covid-19": [0.9, 0.2]})
    screening = {"positive_class": "covid-19", "decision": 0.5, "sensitivity": 0.95, "specificity": 0.6,
                 "n_positive": 30, "n_negative": 30, "review_low": 0.15, "review_high": 0.7}
    page = tmp_path / "r.html"
    write_review_page(page, report, {}, {"files": 2, "scored": 2, "errors": 0, "needs_review": 1,
                                         "predicted": {"covid-19": 1, "No finding": 1}},
                      {"screening": screening}, classes, "report")
    text = page.read_text()
    assert '"id":"a.png","pred":"covid-19","p":0.9' in text and '"id":"b.png","pred":"No finding","p":0.2' in text


def test_a_model_that_cannot_tell_the_classes_apart_is_called_weak(tmp_path):
    data = toy_training_data(n=500, n_calibration=120)
    data.labels = (data.labels == 2).long()
    data.classes = ["healthy", "abnormal"]
    # calibration labels with no relation to the scans: the model cannot rank them
    shuffled = data.labels[data.calibration][torch.randperm(len(data.calibration), generator=torch.Generator().manual_seed(0))]
    data.labels[data.calibration] = shuffled
    run = tmp_path / "run"
    Trainer(load_config(None, TOY + ["data.positive_class=abnormal", "calibrate.bootstrap=200"]), data, run,
            progress=False).fit()
    result = calibrate(run, data=data)
    weak = [w for w in result["warnings"] if "weakly" in w]
    assert len(weak) == 1 and "'abnormal'" in weak[0] and "not safe to leave unread" in weak[0]
    assert result["screening"]["auroc"] < 0.75 and len(result["screening"]["auroc_ci95"]) == 2


def test_a_scored_folders_labels_are_read_with_the_columns_the_run_was_told(tmp_path, write):
    from pipeline.agreement import folder_truth

    scans = tmp_path / "new"
    for index, name in enumerate(["a.png", "b.png"]):
        write.png(scans / name, write.image(index))
    (scans / "labels.csv").write_text("image_name,diagnosis,target\na.png,nevus,0\nb.png,melanoma,1\n")
    assert folder_truth(scans, ["a.png", "b.png"], ["0", "1"]) is None  # diagnosis or target?
    truth, source, unnamed = folder_truth(scans, ["a.png", "b.png"], ["0", "1"], {"label": "target"})
    assert truth == {"a.png": "0", "b.png": "1"} and source == "labels.csv" and unnamed == 0
    # a folder labelled in the usual way is read as it is, whatever the run's columns were
    (scans / "labels.csv").write_text("file,label\na.png,0\nb.png,1\n")
    assert folder_truth(scans, ["a.png", "b.png"], ["0", "1"], {"label": "target"})[0] == {"a.png": "0", "b.png": "1"}


def test_a_labels_file_naming_none_of_the_scans_scored_is_said_so_not_a_crash():
    from pipeline.agreement import format_agreement

    check = {"n": 0, "per_class": {"a": 0}, "accuracy": None}
    assert format_agreement(check, "labels.csv", 0) == ("against the folder's labels (labels.csv): none of the scans "
                                                        "scored is labelled there")
