"""Suggest: uncertain and diverse unlabelled scans first, written as a list and a labelling page."""

import numpy as np
import pandas as pd

from pipeline.stages.suggest import (
    case_representatives,
    k_centre_greedy,
    rank_for_labelling,
    suggest,
)

from toy import calibrated_toy_run, toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=60", "train.eval_every=60",
       "train.threads=2", "calibrate.min_support=3", "method.name=supervised"]


def test_k_centre_picks_spread_out_points_away_from_the_labelled_ones():
    points = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [-1, 0]], dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert k_centre_greedy(points, np.array([[1.0, 0.0]], dtype=np.float32), 2) == [4, 2]


def test_shortlist_by_margin_then_diversity():
    # 20 uncertain scans (18 look-alikes, 2 of other kinds) and 20 confident ones of a third kind.
    margins = np.r_[np.linspace(0, 0.017, 18), 0.05, 0.06, np.full(20, 0.98)]
    probs = np.stack([(1 + margins) / 2, (1 - margins) / 2], axis=1)
    features = np.array([[1, 0]] * 18 + [[0, 1], [0.6, 0.8]] + [[-1, 0]] * 20, dtype=np.float32)
    picks = rank_for_labelling(probs, features, np.zeros((0, 2), dtype=np.float32), 2)
    assert picks == [0, 18]  # the most uncertain, then the uncertain scan least like it
    assert all(p < 20 for p in picks)  # confident scans are not on the shortlist


def test_suggest_writes_a_ranked_list_of_unlabelled_scans_and_a_labelling_page(tmp_path):
    data = toy_training_data()
    run = calibrated_toy_run(tmp_path / "run", TOY)
    out = suggest(run, n=12, data=data)
    frame = pd.read_csv(out)
    unlabelled = {data.scan_ids[i] for i in data.unlabelled.tolist()}
    assert len(frame) == 12 and frame["scan_id"].is_unique and set(frame["scan_id"]) <= unlabelled
    assert frame["rank"].tolist() == list(range(1, 13))
    page = out.with_suffix(".html").read_text()
    assert "Scans to label next" in page and page.count('"id":') == 12


def test_a_capped_pool_is_ranked_whole_not_only_the_part_training_loaded(tmp_path, monkeypatch, caplog):
    from PIL import Image

    from pipeline.cli import main

    rng = np.random.default_rng(0)
    for folder, count in (("normal", 10), ("abnormal", 10), ("unlabelled", 12)):
        for i in range(count):
            array = (rng.random((20, 20)) * 60).astype(np.uint8)
            if folder == "abnormal" or (folder == "unlabelled" and i % 2):
                array[6:14, 6:14] = 230
            (tmp_path / "scans" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(tmp_path / "scans" / folder / f"{folder}{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", "scans", "--positive", "abnormal", "--labels-per-class", "3",
                 "--quiet", "train.minutes=0.05", "split.test_fraction=0.2", "network.channels=[4,8]", "train.max_unlabelled=4"]) == 0
    run = tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()
    split = pd.read_csv(next((tmp_path / "data_manifests").glob("*.split.csv")))
    pool = set(split.loc[split["subset"] == "unlabelled", "scan_id"])
    assert len(pool) > 12  # the unlabelled folder and the labelled scans the split left over
    with caplog.at_level("INFO", logger="pipeline.suggest"):
        out = suggest(run, n=len(pool) + 5)
    frame = pd.read_csv(out)
    assert set(frame["scan_id"]) == pool  # every scan of the pool, where training loaded 4 of them
    assert f"ranking {len(pool)} unlabelled scans in {-(-len(pool) // 4)} parts of 4" in caplog.text
    assert out.with_suffix(".html").read_text().count('"id":') == len(pool)


def test_a_case_is_ranked_by_the_view_its_call_rests_on():
    cases = [None, "0001", "0001", "0001", "0002", "0002", None]
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.45, 0.55], [0.2, 0.8], [0.6, 0.4]])
    assert case_representatives(cases, probs, positive=1) == [0, 2, 5, 6]  # each case's most abnormal view
    assert case_representatives(cases, probs, positive=None) == [0, 2, 4, 6]  # else its least certain one


def test_suggest_picks_cases_of_several_views_once_and_lists_their_views_together(tmp_path):
    data = toy_training_data()
    # the pool's scans as a knee's three planes each (MRNet's axial/0000.npy, coronal/0000.npy, ...)
    for number, i in enumerate(data.unlabelled.tolist()):
        data.scan_ids[i] = f"{('axial', 'coronal', 'sagittal')[number % 3]}/{number // 3:04d}.npy"
    run = calibrated_toy_run(tmp_path / "run", TOY)
    frame = pd.read_csv(suggest(run, n=5, data=data), dtype={"case": str})
    assert len(frame) == 15 and frame["scan_id"].is_unique
    assert frame.groupby("rank")["case"].nunique().eq(1).all() and frame["case"].nunique() == 5
    assert frame.groupby("case").size().eq(3).all()  # every plane of each case, under one rank
