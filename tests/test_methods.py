"""Every registered method: one finite step, a live unsupervised term, learning on a toy task."""

import pytest
import torch

from pipeline.augment import BatchAugmenter
from pipeline.checkpoint import build_method
from pipeline.config import ConfigError, load_config
from pipeline.methods import METHODS, get_method
from pipeline.methods.base import RoundContext, StepBatch
from pipeline.trainer import Trainer, accuracy

from toy import toy_training_data

# The toy's 20 calibration scans a class vouch for a pseudo-label precision of about 0.92 at best
# (its lower bound, three classes), so the default target of 0.95 would call no scan.
TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.unlabelled_batch_size=64",
       "calibrate.min_support=3", "calibrate.target_precision=0.8", "train.threads=2"]


def toy_config(method, *extra):
    return load_config(None, [f"method.name={method}", *TOY, *extra])


def make_batch(config, data, augment):
    lab = data.labelled[:8]
    unl = torch.arange(16)
    return StepBatch(data.images[lab], data.labels[lab], data.images[data.unlabelled[unl]], unl, augment, 0.5)


def test_unknown_method_fails_loudly():
    with pytest.raises(ConfigError, match="known methods"):
        get_method("nope")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_gives_finite_loss_and_gradients(name, tmp_path):
    config = toy_config(name)
    data = toy_training_data()
    trainer = Trainer(config, data, tmp_path, progress=False)
    method = trainer.method
    context = RoundContext(data, config.calibrate, trainer.subset_logits)
    for round_index in range(method.rounds):
        method.start_round(round_index, context)
    batch = make_batch(config, data, BatchAugmenter(config.augment, 2))
    pool = method.unlabelled_pool()
    if pool is not None:
        batch.unlabelled_index = pool[:16]
        batch.unlabelled = data.images[data.unlabelled[batch.unlabelled_index]]
    terms = method.losses(batch)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    # Trained parameters: the prediction network's own, except for EMA teachers (no gradients by design).
    grads = [p.grad for p in method.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_self_training_unsupervised_term_is_nonzero_and_carries_gradient(tmp_path):
    config = toy_config("self_training", "method.self_training.rounds=2")
    data = toy_training_data()
    trainer = Trainer(config, data, tmp_path, progress=False)
    method = trainer.method
    context = RoundContext(data, config.calibrate, trainer.subset_logits)
    method.start_round(0, context)
    for _ in range(60):  # learn enough that some predictions pass the thresholds
        terms = method.losses(trainer._batch(0.1))
        trainer.optimizer.zero_grad()
        terms["loss"].backward()
        trainer.optimizer.step()
    info = method.start_round(1, context)
    assert info["pseudo_labelled"] > 0
    batch = trainer._batch(0.6)
    assert len(batch.unlabelled_index) > 0
    trainer.optimizer.zero_grad()
    terms = method.losses(batch)
    assert terms["unsupervised"] > 0
    # The unsupervised term alone must move the trained network's weights.
    method.zero_grad()
    targets = method.pseudo_labels[batch.unlabelled_index]
    logits = method.network(batch.augment.strong(batch.unlabelled))
    torch.nn.functional.cross_entropy(logits, targets).backward()
    assert sum(p.grad.abs().sum() for p in method.network.parameters() if p.grad is not None) > 0
    assert set(method.pseudo_round[method.pseudo_labels.numpy() >= 0]) == {1}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_learns_toy_task_beyond_chance(name, tmp_path):
    # 120 steps: methods with rounds get 2 (one supervised, one with pseudo-labels); co-training's half
    # views need more than 60 steps on the toy shapes before their pseudo-labels cover every class.
    config = toy_config(name, "train.steps=120", "train.eval_every=40", "method.self_training.rounds=2",
                        "method.co_teaching.rounds=2", "method.co_training.rounds=2", "method.co_training.views=augment")
    data = toy_training_data()
    summary = Trainer(config, data, tmp_path, progress=False).fit()
    assert summary["test_accuracy"] > 0.8  # chance is 1/3
    history = __import__("pandas").read_csv(tmp_path / "metrics.csv")
    assert history["supervised"].iloc[-1] < history["supervised"].iloc[0]


def test_self_training_writes_pseudo_labels_with_their_round(tmp_path):
    config = toy_config("self_training", "train.steps=90", "train.eval_every=30", "method.self_training.rounds=3")
    Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    import pandas as pd

    pseudo = pd.read_csv(tmp_path / "pseudo_labels.csv", dtype={"pseudo_label": str, "true_label": str})
    assert len(pseudo) > 0
    assert set(pseudo["round"]) <= {1, 2}
    assert (pseudo["pseudo_label"] == pseudo["true_label"]).mean() > 0.8
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2]


def test_dropout_is_available_to_every_method():
    for name in METHODS:
        config = toy_config(name, "network.dropout=0.3")
        method = build_method(config, 3, 1)
        assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in method.modules())


@pytest.mark.parametrize("dims", [2, 3])
def test_channel_dropout_drops_whole_feature_maps_and_element_dropout_single_values(dims):
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    def dropped(kind):
        net = network_factory(NetworkConfig(channels=[4, 64], dropout=0.5, dropout_kind=kind), 1, [8] * dims, 2)()
        dropout = next(m for m in net.features.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd))
        maps = dropout.train()(torch.ones(4, 64, *[6] * dims)).flatten(2)
        return (maps == 0).all(dim=2), (maps == 0).any(dim=2)

    whole, some = dropped("channel")
    assert 0.3 < whole.float().mean() < 0.7 and torch.equal(whole, some)  # a map is dropped entirely or not at all
    whole, some = dropped("element")
    assert not whole.any() and some.all()  # values drop one by one, never a whole 6^d map at p = 0.5
    with pytest.raises(ValueError, match="dropout_kind 'pixel'"):
        network_factory(NetworkConfig(dropout_kind="pixel"), 1, [8, 8], 2)


def test_accuracy_helper():
    import numpy as np

    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
