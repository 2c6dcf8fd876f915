"""Out-of-distribution flag: fitted at calibration, reported by score, foreign scans flagged."""

import json

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline import ood
from pipeline.stages.score import score

from toy import calibrated_toy_run, toy_images

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=120", "train.eval_every=120",
       "train.threads=2", "calibrate.min_support=3", "method.name=supervised"]


def test_knn_score_is_the_distance_to_the_kth_neighbour():
    bank = np.eye(4, dtype=np.float32)
    features = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(ood.knn_scores(features, bank, k=1), [0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(ood.knn_scores(features, bank, k=2), [1.0, 0.4], atol=1e-6)


def test_penultimate_features_are_the_head_input_and_leave_the_network_as_it_was():
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    net = network_factory(NetworkConfig(channels=[4, 8]), 1, [16, 16], 3)()
    net.train()
    images = torch.rand(5, 1, 16, 16)
    features = ood.penultimate_features(net, images)
    assert features.shape == (5, 8) and net.training
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_scans_unlike_the_training_scans_are_flagged_and_in_distribution_ones_mostly_not(tmp_path):
    run = calibrated_toy_run(tmp_path / "run", TOY)
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["ood"]["threshold"] > 0 and (run / ood.BANK).exists()
    scans = tmp_path / "scans"
    scans.mkdir()
    images, _ = toy_images(40, seed=11)
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(scans / f"toy{i:02d}.png")
    rng = np.random.default_rng(0)
    for i in range(40):  # foreign: smooth gradients and checkerboards, no bars or squares
        y, x = np.mgrid[0:16, 0:16]
        foreign = (np.sin(x * rng.uniform(0.3, 1.5)) * np.cos(y * rng.uniform(0.3, 1.5)) + 1) * 127
        Image.fromarray(foreign.astype(np.uint8)).save(scans / f"foreign{i:02d}.png")
    report = pd.read_csv(score(scans, run, out=tmp_path / "r.csv", workers=1, progress=False))
    foreign = report["scan_id"].str.startswith("foreign")
    assert report.loc[foreign, "out_of_distribution"].mean() >= 0.8
    assert report.loc[~foreign, "out_of_distribution"].mean() <= 0.2
    assert report.loc[foreign & report["out_of_distribution"], "needs_review"].all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(foreign, report["ood_score"]) > 0.9
