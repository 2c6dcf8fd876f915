import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.checkpoint import CheckpointError, load_checkpoint
from pipeline.config import load_config
from pipeline.trainer import (
    REFRESH_SCANS,
    Trainer,
    learning_rate_factor,
    predict_logits,
    refresh_batchnorm,
    refresh_count,
)

from clock import RunClock
from toy import toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=60", "train.eval_every=20",
       "train.threads=2"]


def test_learning_rate_schedule_is_constant_then_decays_to_zero():
    assert learning_rate_factor(0.0, 0.3) == 1.0
    assert learning_rate_factor(0.69, 0.3) == 1.0
    assert learning_rate_factor(0.85, 0.3) == pytest.approx(0.5)
    assert learning_rate_factor(1.0, 0.3) == 0.0


def test_run_folder_has_checkpoint_curves_and_metrics(tmp_path):
    config = load_config(None, ["method.name=supervised", *TOY])
    Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    for name in ("model.safetensors", "checkpoint.json", "metrics.csv", "training_curves.png", "train_summary.json"):
        assert (tmp_path / name).exists(), name
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["classes"] == ["a", "b", "c"]
    assert meta["config"]["preprocess"]["spatial_size"] == [16, 16]


def test_checkpoint_reloads_to_the_same_predictions(tmp_path):
    config = load_config(None, ["method.name=supervised", *TOY])
    data = toy_training_data()
    trainer = Trainer(config, data, tmp_path, progress=False)
    trainer.fit()
    before, _ = trainer.subset_logits("test")
    model = load_checkpoint(tmp_path)
    with torch.no_grad():
        after = model.network(data.images[data.test]).numpy()
    assert abs(before - after).max() < 1e-4


def test_tampered_checkpoint_is_refused(tmp_path):
    config = load_config(None, ["method.name=supervised", *TOY, "train.steps=5"])
    Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    weights = tmp_path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path)


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.json not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "LATEST").write_text("runs/x_supervised_1\n")  # the marker given for the run it names
    with pytest.raises(CheckpointError, match="LATEST is the file naming the newest run, runs/x_supervised_1: pass"):
        load_checkpoint(tmp_path / "LATEST")


def test_refresh_batchnorm_uses_clean_statistics():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    images = torch.rand(64, 1, 8, 8) * 5 + 3
    refresh_batchnorm(net, images, torch.device("cpu"))
    with torch.no_grad():
        expected = net[0](images).mean(dim=(0, 2, 3))
    assert torch.allclose(net[1].running_mean, expected, atol=1e-4)
    assert net[1].momentum == 0.1
    whole = net[1].running_var.clone()
    refresh_batchnorm(net, images, torch.device("cpu"), batch_size=16)  # small batches: the same statistics
    assert torch.allclose(net[1].running_mean, expected, atol=1e-4)
    assert torch.allclose(net[1].running_var, whole, rtol=0.05)


def test_batchnorm_refresh_sees_fewer_scans_when_they_are_larger():
    small_2d = refresh_count(torch.empty(0, 1, 28, 28))
    rgb_2d = refresh_count(torch.empty(0, 3, 128, 128))
    volume = refresh_count(torch.empty(0, 1, 28, 28, 28))
    large_volume = refresh_count(torch.empty(0, 1, 128, 128, 128))
    assert small_2d == REFRESH_SCANS[1]
    assert REFRESH_SCANS[0] <= rgb_2d < small_2d
    assert REFRESH_SCANS[0] < volume < small_2d
    assert large_volume == REFRESH_SCANS[0]


def _panel_network(shape, channels, stem_stride=1, name="cnn"):
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    config = NetworkConfig(name=name, channels=channels, stem_stride=stem_stride, hidden=[256], dropout=0.1)
    return network_factory(config, 1, list(shape), 2)()


def test_forward_batches_hold_about_16_mib_of_first_layer_output_and_predictions_do_not_depend_on_them():
    from pipeline.networks import FORWARD_BYTES, FORWARD_SCANS, forward_batch

    def batch(shape, channels, stem_stride=1, **kw):
        return forward_batch(_panel_network(shape, channels, stem_stride), (1, *shape), **kw)

    # the panel's planned inputs: the batches benchmarks/performance.md found fast
    assert batch((28, 28), [32, 64, 128]) == FORWARD_SCANS[1]
    assert batch((128, 128), [32, 64, 128, 192, 256], stem_stride=2) == 32
    assert batch((24, 24, 24), [16, 32, 64]) == 18
    assert batch((28, 28, 28), [16, 32, 64]) == 11
    assert batch((256, 256, 256), [16, 32, 64]) == FORWARD_SCANS[0]
    # a strided stem shrinks the first layer's output, so more scans fit
    assert batch((64, 64, 64), [16, 32], stem_stride=2) == 8 * batch((64, 64, 64), [16, 32]) == 8
    assert batch((28, 28), [32, 64, 128], most=5) == 5
    for shape, channels in [((28, 28, 28), [16, 32, 64]), ((96, 96), [32, 64])]:
        assert batch(shape, channels) * 4 * channels[0] * np.prod(shape) <= FORWARD_BYTES
    mlp = _panel_network((28, 28), [8], name="mlp")
    assert FORWARD_SCANS[0] <= forward_batch(mlp, (1, 28, 28)) <= FORWARD_SCANS[1]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.LazyLinear(2))
    images = torch.rand(10, 1, 8, 8)
    net(images)  # materialise the lazy layer
    whole = predict_logits(net, images, torch.device("cpu"), batch_size=10)
    assert np.allclose(predict_logits(net, images, torch.device("cpu"), batch_size=3), whole, atol=1e-6)
    assert predict_logits(net, images, torch.device("cpu")).shape == (10, 2)


def test_time_budget_stops_training_inside_it_and_uses_most_of_it(tmp_path, monkeypatch):
    RunClock(monkeypatch, step=0.05)
    config = load_config(None, ["method.name=supervised", *TOY, "train.minutes=0.1", "train.steps=100000"])
    summary = Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    assert 0.9 * 6.0 <= summary["wall_seconds"] <= 6.0
    assert 0 < summary["steps"] < 6.0 / 0.05


def test_a_run_deadline_bounds_training_and_leaves_calibration_its_time(tmp_path, monkeypatch, caplog):
    from pipeline.trainer import CALIBRATION_SECONDS

    clock = RunClock(monkeypatch, step=0.05)
    config = load_config(None, ["method.name=supervised", *TOY, "train.minutes=1", "train.steps=100000",
                                "train.run_minutes=2"])
    # preprocessing ran late: 3 s left past calibration's share, of the 60 s planned. Calibration's
    # predictions (2 x 60 calibration scans, 90 test, 450 for the bank at 1 ms) come out of the 3 s as well.
    predictions = (2 * 60 + 90 + 450) * 0.001
    summary = Trainer(config, toy_training_data(), tmp_path / "late", progress=False).fit(
        deadline=clock.now + CALIBRATION_SECONDS + 3)
    assert 0.8 * (3 - predictions) <= summary["wall_seconds"] <= 3 - predictions
    assert "training gets 12 s of the 60 s the plan foresaw" in caplog.text
    with pytest.raises(ValueError, match="budget of 2 minutes is spent before training"):
        Trainer(config, toy_training_data(), tmp_path / "spent", progress=False).fit(deadline=clock.now + 2)
    # steps the user asked for stop where the run's budget would not leave calibration its time (the end's
    # writing timed before the first step, and again by the first evaluation, at step 20, 1.2 s in)
    steps = load_config(None, ["method.name=supervised", *TOY, "train.minutes=0", "train.steps=100000",
                               "train.run_minutes=2"])
    summary = Trainer(steps, toy_training_data(), tmp_path / "steps", progress=False).fit(
        deadline=clock.now + CALIBRATION_SECONDS + 3)
    assert 0 < summary["steps"] < 100000 and summary["wall_seconds"] <= 3 - predictions
    assert "stopped at step" in caplog.text and "of 100000" in caplog.text


def test_a_run_that_ends_before_its_first_evaluation_still_leaves_the_predictions_their_time(tmp_path,
                                                                                            monkeypatch):
    from pipeline.trainer import CALIBRATION_SECONDS

    clock = RunClock(monkeypatch, step=0.05)
    config = load_config(None, ["method.name=supervised", *TOY, "train.minutes=1", "train.steps=100000",
                                "train.run_minutes=2", "train.eval_every=100000"])
    # calibration's 2 x 60 calibration scans, 90 test and 450 for the bank at 1 ms (and, inside the training
    # stage, the summary's 90 test scans): paced on a few scans timed before the first step, as no evaluation
    # comes to time them; the end's writing timed then too
    predictions = (2 * 60 + 90 + 450) * 0.001
    trainer = Trainer(config, toy_training_data(), tmp_path, progress=False)
    summary = trainer.fit(deadline=clock.now + CALIBRATION_SECONDS + 3)
    assert trainer.predict_seconds == pytest.approx(0.001)
    assert trainer.write_seconds == pytest.approx(0.1 + 0.1)  # the curves and the checkpoint, timed at the start
    assert len(trainer.history) == 1  # the end's evaluation only
    assert 0.8 * (3 - predictions) <= summary["wall_seconds"] <= 3 - predictions
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".timing-")] == []


@pytest.mark.parametrize("spatial_size", [[16, 16], [8, 8, 8]])
def test_channels_last_changes_the_layout_not_the_outputs(spatial_size):
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    layouts = {}
    for channels_last in (True, False):
        torch.manual_seed(0)
        config = NetworkConfig(channels=[4, 8], channels_last=channels_last)
        layouts[channels_last] = network_factory(config, 1, spatial_size, 3)().eval()
    fast, plain = layouts[True], layouts[False]
    fast.load_state_dict(plain.state_dict())
    conv = [m for m in fast.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))][-1]  # C_in > 1
    layout = torch.channels_last if len(spatial_size) == 2 else torch.channels_last_3d
    assert conv.weight.is_contiguous(memory_format=layout) and not conv.weight.is_contiguous()
    images = torch.rand(5, 1, *spatial_size)
    torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_cnn_global_pooling_is_selectable(pooling):
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    net = network_factory(NetworkConfig(channels=[4, 8], pooling=pooling), 1, [8, 8, 8], 2)().eval()
    images = torch.rand(3, 1, 8, 8, 8)
    features = net.features(images).flatten(2)
    expected = {"avg": [features.mean(2)], "max": [features.amax(2)],
                "avgmax": [features.mean(2), features.amax(2)]}[pooling]
    torch.testing.assert_close(net(images), net.head(torch.cat(expected, dim=1)))
    # avg keeps the parameter names of checkpoints written before pooling was selectable
    assert sorted(k for k in net.state_dict() if k.startswith("head")) == ["head.bias", "head.weight"]


def test_unknown_pooling_is_refused_by_name():
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    with pytest.raises(ValueError, match="network.pooling 'median'"):
        network_factory(NetworkConfig(channels=[4], pooling="median"), 1, [8, 8], 2)


def test_bfloat16_precision_learns_and_keeps_float32_weights(tmp_path):
    config = load_config(None, ["method.name=fixmatch", "train.precision=bfloat16", *TOY])
    trainer = Trainer(config, toy_training_data(), tmp_path, progress=False)
    summary = trainer.fit()
    assert summary["test_accuracy"] > 0.6  # three classes: chance is 1/3
    assert {p.dtype for p in trainer.method.parameters()} == {torch.float32}


def test_unknown_precision_is_refused_by_name():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.precision.*float32, bfloat16.*'half'"):
        load_config(None, ["train.precision=half"])


def test_time_budget_is_wall_time_with_evaluation_included(tmp_path, monkeypatch):
    # An evaluation after every step, each costing five steps: without counting them and the end of the
    # run they foretell, the stage would run far past its budget.
    RunClock(monkeypatch, step=0.02, scan=0.001, figure=0.04, checkpoint=0.1)
    config = load_config(None, ["method.name=supervised", *TOY, "train.minutes=0.05", "train.steps=100000",
                                "train.eval_every=1"])
    summary = Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    assert 0.8 * 3.0 <= summary["wall_seconds"] <= 3.0
    assert summary["train_seconds"] < summary["wall_seconds"]


def test_evaluations_are_spread_out_when_they_cost_over_a_tenth_of_the_time(tmp_path, monkeypatch):
    # Each evaluation costs three steps (60 calibration scans at 0.5 ms), drawing the curves nothing.
    RunClock(monkeypatch, step=0.01, scan=0.0005, figure=0.0)
    config = load_config(None, ["method.name=supervised", *TOY, "train.minutes=0.05", "train.steps=100000",
                                "train.eval_every=1"])
    trainer = Trainer(config, toy_training_data(), tmp_path, progress=False)
    summary = trainer.fit()
    metrics = pd.DataFrame(trainer.history)
    assert summary["steps"] >= 100
    assert len(metrics) < summary["steps"] / 4  # one evaluation a step would be as many rows as steps
    assert metrics["step"].diff().dropna().max() > 1


def test_curves_are_redrawn_at_every_evaluation_so_a_long_run_can_be_watched(tmp_path, monkeypatch):
    drawn = []
    original = Trainer._write_curves

    def recording(self):
        original(self)
        drawn.append(len(pd.read_csv(tmp_path / "metrics.csv")))

    monkeypatch.setattr(Trainer, "_write_curves", recording)
    config = load_config(None, ["method.name=supervised", *TOY])  # 60 steps, an evaluation every 20
    Trainer(config, toy_training_data(), tmp_path, progress=False).fit()
    assert drawn == [1, 2, 3, 3]  # after each evaluation in the loop, then with the finished run
    assert (tmp_path / "training_curves.png").stat().st_size > 0


def test_a_screening_run_logs_how_well_it_ranks_the_calibration_scans(tmp_path):
    # Accuracy at the arg-max says little where one class is rare; the curves show the ranking too.
    config = load_config(None, ["method.name=supervised", *TOY, "data.positive_class=b"])
    Trainer(config, toy_training_data(), tmp_path / "screening", progress=False).fit()
    history = pd.read_csv(tmp_path / "screening" / "metrics.csv")
    assert history["calibration_auroc"].between(0, 1).all()
    assert history["calibration_auroc"].iloc[-1] > 0.8
    config = load_config(None, ["method.name=supervised", *TOY])
    Trainer(config, toy_training_data(), tmp_path / "classes", progress=False).fit()
    assert "calibration_auroc" not in pd.read_csv(tmp_path / "classes" / "metrics.csv")
