"""Label check: planted wrong labels among 100 come out at the top of cleanlab's ranking."""

import pandas as pd
import torch

from pipeline.config import load_config
from pipeline.stages.check_labels import check_labels
from pipeline.trainer import Trainer

from toy import toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.threads=2", "method.name=supervised",
       "train.steps=150", "train.eval_every=150", "train.batch_size=32"]


def test_five_planted_wrong_labels_among_100_rank_in_the_top_10(tmp_path):
    data = toy_training_data(n=400, n_labelled=100, n_calibration=60, n_test=60, seed=3)
    planted = data.labelled[torch.arange(5) * 17]  # five labelled scans, spread through the set
    data.labels[planted] = (data.labels[planted] + 1) % 3  # each given another class
    Trainer(load_config(None, TOY), data, tmp_path, progress=False).fit()
    issues = pd.read_csv(check_labels(tmp_path, folds=4, steps=150, data=data))
    top = set(issues.head(10)["scan_id"])
    found = top & {data.scan_ids[i] for i in planted.tolist()}
    assert len(found) >= 4, issues.head(12)
    assert len(issues) == 160 and issues["rank"].tolist() == list(range(1, 161))
    assert (tmp_path / "label_issues.html").read_text().count("<img") == 160
