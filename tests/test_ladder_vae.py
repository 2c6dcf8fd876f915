"""Ladder network and semi-supervised VAE (M2), MLP and convolutional variants: live unsupervised
terms, 2D and 3D, generation, checkpoints, ``pipeline sample``."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline import cli
from pipeline.augment import BatchAugmenter
from pipeline.checkpoint import CheckpointError, build_method, load_checkpoint, load_method
from pipeline.config import load_config
from pipeline.methods.base import StepBatch
from pipeline.trainer import Trainer

from toy import toy_images, toy_training_data

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.unlabelled_batch_size=32",
       "calibrate.min_support=3", "train.threads=2", "train.batch_size=16"]
SMALL_LADDER = ["method.ladder.hidden=[64,32]", "method.ladder.denoising_costs=[1000,10,0.1,0.1]"]
SMALL_VAE = ["method.vae_m2.hidden=[32]", "method.vae_m2.latent=4", "method.vae_m2.classifier_hidden=[32]"]
CONV_GAMMA = ["method.ladder.variant=conv_gamma"]
CONV_VAE = [*SMALL_VAE, "method.vae_m2.architecture=conv", "method.vae_m2.conv_channels=[4,8]"]
CONV = {"ladder": CONV_GAMMA, "vae_m2": CONV_VAE}


def toy_config(method, *extra):
    return load_config(None, [f"method.name={method}", *TOY, *extra])


def toy_batch(config, n_labelled=8, n_unlabelled=12, dims=2, size=16):
    images, labels = toy_images(n_labelled + n_unlabelled, size=size, dims=dims, seed=3)
    return StepBatch(images[:n_labelled], labels[:n_labelled], images[n_labelled:],
                     torch.arange(n_unlabelled), BatchAugmenter(config.augment, dims), 0.5)


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def spatial(dims, size=16):
    return f"preprocess.spatial_size={[size] * dims}"


def weights(module):
    """Weights of every convolution and linear layer (their biases may sit before a batch norm)."""
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d,
                                                                  nn.ConvTranspose3d, nn.Linear))]


def all_have_gradient(parameters):
    parameters = list(parameters)
    return bool(parameters) and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in parameters)


# -- ladder --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["full", "gamma", "decoder_only"])
def test_ladder_variants_take_a_finite_step(variant):
    config = toy_config("ladder", *SMALL_LADDER, f"method.ladder.variant={variant}")
    method = build_method(config, 3, 1)
    terms = method.losses(toy_batch(config))
    assert torch.isfinite(terms["loss"])
    assert terms["unsupervised"] > 0
    terms["loss"].backward()
    assert grad_norm(method.prediction_network()) > 0
    logits = method.prediction_network().eval()(toy_batch(config).labelled)
    assert logits.shape == (8, 3)


@pytest.mark.parametrize("variant", ["full", "gamma", "decoder_only"])
def test_ladder_denoising_term_alone_carries_gradient_to_the_encoder(variant):
    config = toy_config("ladder", *SMALL_LADDER, f"method.ladder.variant={variant}")
    method = build_method(config, 3, 1)
    costs = method.denoising_costs(toy_batch(config).unlabelled)
    assert len(costs) == (1 if variant == "gamma" else 4)
    total = torch.stack(costs).sum()
    assert total > 0
    total.backward()
    encoder = method.prediction_network()
    assert all(float(linear.weight.grad.abs().sum()) > 0 for linear in encoder.linears)


def test_ladder_full_combinator_has_ten_parameters_per_unit_and_laterals():
    config = toy_config("ladder", *SMALL_LADDER)
    method = build_method(config, 3, 1)
    assert [tuple(c.a.shape) for c in method.combinators.values()] == [(10, 3), (10, 32), (10, 64), (10, 256)]
    # The lateral input matters: corrupting z~ differently changes the reconstruction.
    combinator = method.combinators["1"]
    with torch.no_grad():
        combinator.a.normal_()
    u = torch.randn(4, 64)
    assert not torch.allclose(combinator(torch.zeros(4, 64), u), combinator(torch.ones(4, 64), u))


def test_ladder_denoising_cost_falls_in_training(tmp_path):
    config = toy_config("ladder", *SMALL_LADDER, "train.steps=50")
    trainer = Trainer(config, toy_training_data(), tmp_path, progress=False)
    method, costs = trainer.method, []
    for step in range(50):
        terms = method.losses(trainer._batch(step / 50))
        trainer.optimizer.zero_grad()
        terms["loss"].backward()
        trainer.optimizer.step()
        costs.append(float(terms["unsupervised"]))
    assert np.mean(costs[-5:]) < 0.5 * np.mean(costs[:5])


def test_ladder_runs_on_volumes():
    config = toy_config("ladder", *SMALL_LADDER, "preprocess.spatial_size=[8,8,8]")
    method = build_method(config, 3, 1)
    terms = method.losses(toy_batch(config, dims=3, size=8))
    assert torch.isfinite(terms["loss"]) and terms["unsupervised"] > 0


def test_ladder_rejects_bad_settings():
    with pytest.raises(ValueError, match="one weight per layer"):
        build_method(toy_config("ladder", "method.ladder.hidden=[64,32]"), 3, 1)
    with pytest.raises(ValueError, match="variant"):
        build_method(toy_config("ladder", *SMALL_LADDER, "method.ladder.variant=nope"), 3, 1)


# -- VAE M2 --------------------------------------------------------------------------------

def test_vae_m2_takes_a_finite_step():
    config = toy_config("vae_m2", *SMALL_VAE)
    method = build_method(config, 3, 1)
    terms = method.losses(toy_batch(config))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    for part in (method.prediction_network(), method.encoder, method.decoder):
        assert grad_norm(part) > 0


@pytest.mark.parametrize("architecture", [SMALL_VAE, CONV_VAE], ids=["mlp", "conv"])
def test_vae_m2_unlabelled_term_decodes_every_class_for_every_image(monkeypatch, architecture):
    config = toy_config("vae_m2", *architecture)
    method = build_method(config, 3, 1)
    encoded = []
    method.encoder.image_in.register_forward_hook(lambda module, args, out: encoded.append(len(args[0])))
    seen = []
    original = method.decoder.forward

    def spy(z, onehot):
        seen.append(onehot.detach().clone())
        return original(z, onehot)

    monkeypatch.setattr(method.decoder, "forward", spy)
    batch = toy_batch(config, n_labelled=5, n_unlabelled=7)
    method.losses(batch)
    labelled, unlabelled = seen
    assert encoded == [5 + 7]  # the image part once per image, not once per class
    assert labelled.argmax(1).tolist() == batch.labels.tolist()
    # Each unlabelled image is decoded once with each of the 3 classes.
    assert unlabelled.shape == (7 * 3, 3)
    assert unlabelled.argmax(1).view(7, 3).tolist() == [[0, 1, 2]] * 7


def test_vae_m2_unlabelled_bound_matches_a_hand_computed_sum_over_classes(monkeypatch):
    config = toy_config("vae_m2", *SMALL_VAE)
    method = build_method(config, 3, 1)
    monkeypatch.setattr(method, "latent_noise", torch.zeros_like)  # z = mean: deterministic
    images, _ = toy_images(4, seed=5)
    x = images.flatten(1)
    probs = F.softmax(torch.randn(4, 3), dim=1)
    with torch.no_grad():
        got = method.unlabelled_bound(method.encoder.image_in(x), x, probs)
        expected = torch.zeros(4)
        for k in range(3):
            labels = torch.full((4,), k)
            onehot = F.one_hot(labels, 3).float()
            mean, log_var = method.encoder(method.encoder.image_in(x), onehot)
            recon = F.binary_cross_entropy_with_logits(method.decoder(mean, onehot), x, reduction="none").sum(1)
            kl = 0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(1)
            expected += probs[:, k] * (recon + kl + np.log(3))
        expected += (probs * probs.log()).sum(1)  # minus the entropy
    torch.testing.assert_close(got, expected)


def test_vae_m2_unsupervised_term_is_nonzero_and_carries_gradient_to_the_classifier():
    config = toy_config("vae_m2", *SMALL_VAE)
    method = build_method(config, 3, 1)
    batch = toy_batch(config)
    assert method.losses(batch)["unsupervised"] > 0
    method.zero_grad()
    x = batch.unlabelled.flatten(1)
    probs = F.softmax(method.network(batch.unlabelled), dim=1)
    unsupervised = method.unlabelled_bound(method.encoder.image_in(x), x, probs).mean()
    unsupervised.backward()
    assert grad_norm(method.prediction_network()) > 0


def test_vae_m2_mlp_classifier_option():
    config = toy_config("vae_m2", *SMALL_VAE, "method.vae_m2.classifier=mlp", "network.dropout=0.3",
                        "method.vae_m2.classifier_augment=none", "method.vae_m2.classifier_noise=0.3")
    method = build_method(config, 3, 1)
    classifier = method.prediction_network()
    assert classifier.__class__.__name__ == "MLP"
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in classifier.modules())
    terms = method.losses(toy_batch(config))
    assert torch.isfinite(terms["loss"])
    with pytest.raises(ValueError, match="classifier"):
        build_method(toy_config("vae_m2", "method.vae_m2.classifier=nope"), 3, 1)


def test_vae_m2_with_the_network_classifier_and_volumes():
    config = toy_config("vae_m2", *SMALL_VAE, "preprocess.spatial_size=[8,8,8]")
    method = build_method(config, 3, 1)
    assert method.prediction_network().__class__.__name__ == "ConvNet"  # the default classifier
    terms = method.losses(toy_batch(config, dims=3, size=8))
    assert torch.isfinite(terms["loss"])
    assert method.generate([0, 2], 3).shape == (6, 1, 8, 8, 8)


def test_vae_m2_generates_images_in_unit_range():
    config = toy_config("vae_m2", *SMALL_VAE)
    method = build_method(config, 3, 1)
    images = method.generate([0, 2], 5, torch.Generator().manual_seed(1))
    assert images.shape == (10, 1, 16, 16)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    again = method.generate([0, 2], 5, torch.Generator().manual_seed(1))
    torch.testing.assert_close(images, again)
    with pytest.raises(ValueError, match="class indices"):
        method.generate([3], 1)


# -- pipeline sample -----------------------------------------------------------------------

# -- convolutional variants: ladder conv_gamma, vae_m2 architecture = "conv" ---------------

@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["ladder", "vae_m2"])
def test_conv_variants_take_a_finite_step_in_2d_and_3d(name, dims):
    config = toy_config(name, *CONV[name], spatial(dims))
    torch.manual_seed(0)
    method = build_method(config, 3, 1)
    batch = toy_batch(config, dims=dims)
    terms = method.losses(batch)
    assert torch.isfinite(terms["loss"]) and terms["unsupervised"] > 0
    terms["loss"].backward()
    assert grad_norm(method.prediction_network()) > 0
    with torch.no_grad():
        logits = method.prediction_network().eval()(batch.unlabelled)
    assert logits.shape == (12, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_gamma_denoising_cost_alone_carries_gradient_to_every_layer(dims):
    config = toy_config("ladder", *CONV_GAMMA, spatial(dims))
    method = build_method(config, 3, 1)
    encoder = method.prediction_network()
    assert encoder.convnet.__class__.__name__ == "ConvNet"
    (cost,) = method.denoising_costs(toy_batch(config, dims=dims).unlabelled)
    assert cost > 0
    cost.backward()
    assert all_have_gradient(weights(encoder.convnet))
    # The paper's combinator starts as g = 0, so u (hence beta, gamma) first gets gradient later.
    assert grad_norm(method.combinators) > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_vae_unlabelled_bound_alone_carries_gradient_to_all_three_networks(dims):
    config = toy_config("vae_m2", *CONV_VAE, spatial(dims))
    method = build_method(config, 3, 1)
    images = toy_batch(config, dims=dims).unlabelled
    x = images.flatten(1)
    probs = F.softmax(method.network(images), dim=1)
    unsupervised = method.unlabelled_bound(method.encoder.image_in(x), x, probs).mean()
    assert unsupervised > 0
    unsupervised.backward()
    assert grad_norm(method.prediction_network()) > 0
    assert all_have_gradient(weights(method.encoder)) and all_have_gradient(weights(method.decoder))


def test_conv_gamma_clean_pass_is_the_prediction_network_without_noise_or_dropout():
    config = toy_config("ladder", *CONV_GAMMA, "network.dropout=0.5")
    method = build_method(config, 3, 1)
    encoder, x = method.prediction_network(), toy_batch(config).unlabelled
    dropouts = [m for m in encoder.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]  # channel ones too
    assert dropouts
    clean = [encoder.passes([], [x], 0.3)[0].top for _ in range(2)]
    torch.testing.assert_close(clean[0], clean[1])
    # Noise alone, and dropout alone, make the corrupted passes differ.
    for noise in (0.3, 0.0):
        first, second = (encoder.passes([x], [], noise)[0].top for _ in range(2))
        assert not torch.allclose(first, second)
    assert all(m.training for m in dropouts)
    for m in dropouts:
        m.eval()
    torch.testing.assert_close(encoder(x), clean[0])  # training mode: the same batch statistics


def test_conv_gamma_denoising_cost_falls_in_training(tmp_path):
    config = toy_config("ladder", *CONV_GAMMA, "train.steps=30", "train.threads=1")
    trainer = Trainer(config, toy_training_data(), tmp_path, progress=False)
    method, costs = trainer.method, []
    for step in range(30):
        terms = method.losses(trainer._batch(step / 30))
        trainer.optimizer.zero_grad()
        terms["loss"].backward()
        trainer.optimizer.step()
        costs.append(float(terms["denoise_1"]))
    assert np.mean(costs[-5:]) < 0.5 * np.mean(costs[:5])


@pytest.mark.parametrize("size", [[28, 28], [16, 16, 16], [13, 20]])
def test_conv_vae_reconstructions_have_exactly_the_input_shape(size):
    # Three stride-2 stages: 28 -> 4 -> 32 and 13 -> 2 -> 16 are cropped, 16 -> 2 -> 16 is exact.
    config = toy_config("vae_m2", *CONV_VAE, "method.vae_m2.conv_channels=[4,8,8]", f"preprocess.spatial_size={size}")
    method = build_method(config, 3, 1)
    assert method.decoder.images(torch.zeros(2, 4), torch.eye(3)[:2]).shape == (2, 1, *size)
    images = torch.rand(10, 1, *size)
    batch = StepBatch(images[:4], torch.tensor([0, 1, 2, 0]), images[4:], torch.arange(6),
                      BatchAugmenter(config.augment, len(size)), 0.5)
    assert torch.isfinite(method.losses(batch)["loss"])
    assert method.generate([1], 2).shape == (2, 1, *size)


def test_conv_variants_reject_bad_settings():
    with pytest.raises(ValueError, match="method.vae_m2.architecture"):
        build_method(toy_config("vae_m2", "method.vae_m2.architecture=nope"), 3, 1)
    with pytest.raises(ValueError, match="conv_channels"):
        build_method(toy_config("vae_m2", *CONV_VAE, "method.vae_m2.conv_channels=[]"), 3, 1)
    with pytest.raises(ValueError, match="conv_gamma"):  # the error lists the variants
        build_method(toy_config("ladder", "method.ladder.variant=conv"), 3, 1)
    # hidden and denoising_costs belong to the MLP variants and are not checked against each other here
    build_method(toy_config("ladder", *CONV_GAMMA, "method.ladder.hidden=[8]"), 3, 1)


@pytest.mark.parametrize("name", ["ladder", "vae_m2"])
def test_checkpoint_of_a_conv_variant_reloads_and_predicts_volumes(name, tmp_path):
    config = toy_config(name, *CONV[name], spatial(3, 8), "train.steps=4", "train.eval_every=2", "train.threads=1")
    data = toy_training_data(n=160, size=8, dims=3, n_calibration=20, n_test=20)
    trainer = Trainer(config, data, tmp_path, progress=False)
    trainer.fit()
    before, _ = trainer.subset_logits("test")
    images = data.images[data.test]
    with torch.no_grad():
        after = load_checkpoint(tmp_path).network(images)
        full = load_method(tmp_path).method.prediction_network()(images)
    assert after.shape == (20, 3)
    assert abs(before - after.numpy()).max() < 1e-4
    torch.testing.assert_close(full, after)


def train_tiny(tmp_path, method, *extra):
    run = tmp_path / method
    config = toy_config(method, *SMALL_VAE, "train.steps=4", "train.eval_every=4", *extra)
    Trainer(config, toy_training_data(n=200, n_calibration=20, n_test=20), run, progress=False).fit()
    return run


@pytest.mark.parametrize("architecture", [SMALL_VAE, CONV_VAE], ids=["mlp", "conv"])
def test_sample_cli_writes_a_png_grid(tmp_path, architecture):
    run = train_tiny(tmp_path, "vae_m2", *architecture)
    out = tmp_path / "grid.png"
    assert cli.main(["sample", str(run), "--label", "b", "--n", "9", "--out", str(out), "--seed", "3"]) == 0
    picture = np.asarray(Image.open(out))
    # 3 x 3 tiles of 16 pixels with 2-pixel borders, scaled 2x
    assert picture.shape == (2 * (3 * 18 + 2), 2 * (3 * 18 + 2))
    assert cli.main(["sample", str(run), "--label", "2", "--n", "4"]) == 0
    assert (run / "samples_c.png").is_file()
    # The saved method reproduces the trained one: same classifier as the checkpoint.
    images = toy_images(6, seed=9)[0]
    torch.testing.assert_close(load_method(run).method.prediction_network()(images),
                               load_checkpoint(run).network(images))


def test_sample_refuses_tampered_weights_and_non_generative_methods(tmp_path, caplog):
    run = train_tiny(tmp_path, "vae_m2")
    with caplog.at_level(logging.ERROR):
        assert cli.main(["sample", str(run), "--label", "nope"]) == 2
    assert "neither a class" in caplog.text
    weights = run / "method.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_method(run)
    supervised = train_tiny(tmp_path, "supervised")
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert cli.main(["sample", str(supervised), "--label", "a"]) == 2
    assert "cannot generate" in caplog.text
