"""All stages on a small MNIST subset through the command line: fetch -> ingest -> split ->
train -> calibrate -> score (with bad files in the scored folder)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.io import sha256_file

REPO = Path(__file__).resolve().parent.parent
PER_CLASS_TRAIN = 40
N_TEST = 200


@pytest.fixture(scope="module")
def mnist_raw():
    from pipeline.stages.fetch import FetchError, fetch_mnist, read_idx

    try:
        raw = fetch_mnist(REPO / "data")  # cached there for later runs
    except FetchError as error:
        pytest.skip(f"MNIST could not be fetched here: {error}")
    return {name: read_idx(raw / f"{name}.gz") for name in
            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_subset(folder: Path, raw) -> None:
    """A scan folder like materialise_mnist's, but small: 40 per class train, 200 test."""
    rows = []
    train_x, train_y = raw["train-images-idx3-ubyte"], raw["train-labels-idx1-ubyte"]
    chosen = np.concatenate([np.flatnonzero(train_y == k)[:PER_CLASS_TRAIN] for k in range(10)])
    (folder / "train").mkdir(parents=True)
    for i in sorted(chosen):
        Image.fromarray(train_x[i]).save(folder / "train" / f"{i:05d}.png")
        rows.append({"file": f"train/{i:05d}.png", "label": str(train_y[i]), "split": "train"})
    (folder / "test").mkdir()
    for i in range(N_TEST):
        Image.fromarray(raw["t10k-images-idx3-ubyte"][i]).save(folder / "test" / f"{i:05d}.png")
        rows.append({"file": f"test/{i:05d}.png", "label": str(raw["t10k-labels-idx1-ubyte"][i]), "split": "test"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)


def test_all_stages_on_a_small_mnist_subset(mnist_raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scans = tmp_path / "mnist_small"
    write_subset(scans, mnist_raw)

    assert main(["ingest", str(scans)]) == 0
    manifest = tmp_path / "data_manifests" / "mnist_small.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert len(frame) == 10 * PER_CLASS_TRAIN + N_TEST and (frame["status"] == "ok").all()

    assert main(["split", str(manifest), "--labels-per-class", "10", "--calibration-per-class", "10"]) == 0
    split = pd.read_csv(manifest.with_name("mnist_small.split.csv"), dtype=str)
    assert split["subset"].value_counts().to_dict() == {"unlabelled": 200, "test": 200, "labelled": 100,
                                                         "calibration": 100}

    config = tmp_path / "small.toml"
    config.write_text((REPO / "configs" / "mnist100.toml").read_text().replace('dataset = "mnist"', 'dataset = ""'))
    overrides = [f"data.scans={scans}", f"data.manifest={manifest}", "data.split=", "train.steps=150",
                 "train.eval_every=50", "method.name=self_training", "method.self_training.rounds=2", "train.unlabelled_batch_size=64",
                 "calibrate.min_support=3", "--quiet"]
    assert main(["run", "--config", str(config), *overrides]) == 0
    run = Path((tmp_path / "runs" / "LATEST").read_text().strip())
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["n_test"] == N_TEST and summary["test_accuracy"] > 0.5  # chance is 0.1
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["n_calibration"] == 100 and calibration["temperature"] > 0
    for name in ("training_curves.png", "reliability.png", "metrics.csv", "rounds.csv", "pseudo_labels.csv"):
        assert (run / name).exists(), name

    to_score = tmp_path / "incoming"
    to_score.mkdir()
    for i in range(20):
        (to_score / f"{i:03d}.png").write_bytes((scans / "test" / f"{i:05d}.png").read_bytes())
    good = (to_score / "000.png").read_bytes()
    (to_score / "truncated.png").write_bytes(good[:40])
    (to_score / "empty").write_bytes(b"")
    (to_score / "notes.png").write_text("not an image")
    out = tmp_path / "report.csv"
    assert main(["score", str(to_score), "--out", str(out), "--quiet"]) == 0
    report = pd.read_csv(out, keep_default_na=False)
    assert len(report) == 23
    assert set(report.loc[report["status"] == "error", "scan_id"]) == {"truncated.png", "empty", "notes.png"}
    assert {f"p_{k}" for k in range(10)} <= set(report.columns)
    labels = mnist_raw["t10k-labels-idx1-ubyte"][:20]
    ok = report[report["status"] == "ok"].sort_values("scan_id")
    assert (ok["prediction"].astype(int).to_numpy() == labels).mean() > 0.5
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["weights_sha256"] == json.loads((run / "checkpoint.json").read_text())["weights_sha256"]
    # the split file's name was derived (data.split=""): the run and the report still say which it was
    inputs = json.loads((run / "inputs.json").read_text())
    split = Path(inputs["split"]["path"])
    assert split.name.endswith(".split.csv") and split.exists() and Path(inputs["manifest"]["path"]) == manifest.resolve()
    assert inputs["split"]["sha256"] == sha256_file(split) and meta["trained_on"] == inputs


def test_labels_file_naming_missing_files_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scans = tmp_path / "s"
    scans.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / "a.png")
    pd.DataFrame([{"file": "a.png", "label": "x"}, {"file": "gone.png", "label": "x"}]).to_csv(
        scans / "labels.csv", index=False)
    assert main(["ingest", str(scans)]) == 0
    problems = pd.read_csv(tmp_path / "data_manifests" / "s.problems.csv", dtype=str)
    assert problems["reason"].str.contains("gone.png").any() or problems["item"].str.contains("gone.png").any()


def test_config_with_unknown_key_exits_with_an_error_naming_it(tmp_path, caplog):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nstepz = 3\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "train.stepz" in caplog.text
