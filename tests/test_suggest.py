"""Suggest: uncertain and diverse unlabelled scans first, written as a list and a labelling page."""

import numpy as np
import pandas as pd

from pipeline.stages.suggest import k_centre_greedy, rank_for_labelling, suggest

from toy import calibrated_toy_run, toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=60", "train.eval_every=60",
       "train.threads=2", "calibrate.min_support=3", "method.name=supervised"]


def test_k_centre_picks_spread_out_points_away_from_the_labelled_ones():
    points = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [-1, 0]], dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert k_centre_greedy(points, np.array([[1.0, 0.0]], dtype=np.float32), 2) == [4, 2]


def test_shortlist_by_margin_then_diversity():
    probs = np.array([[0.5, 0.5], [0.51, 0.49], [0.99, 0.01], [0.52, 0.48]])
    features = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    picks = rank_for_labelling(probs, features, np.zeros((0, 2), dtype=np.float32), 2)
    assert 2 not in picks  # confident: never a candidate while uncertain ones remain
    assert len(set(picks)) == 2 and not {0, 1} <= set(picks)  # the two look-alikes are not both taken


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
