"""Semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014).

Three networks:

* classifier ``q(y|x)`` - the prediction network (calibration, scoring, checkpoint): the
  ``[network]`` classifier (``classifier = "network"``, the default, e.g. the CNN), or a
  permutation-invariant MLP with batch norm and ``network.dropout`` (``classifier = "mlp"``).
  It sees random views of the images (``classifier_augment``, weak by default, and/or
  Gaussian noise), labelled and unlabelled in one pass; the bound always uses the clean image;
* encoder ``q(z|x,y)`` - giving the mean and log-variance of a diagonal Gaussian over
  ``latent`` dimensions from the image and the one-hot label: with ``architecture = "mlp"``
  (the default) an MLP on the flattened image; with ``"conv"`` a stack of stride-2
  convolutions (``conv_channels``; 2D or 3D, as the input), flattened, concatenated
  with the label and mapped linearly to the mean and log-variance;
* decoder ``p(x|y,z)`` - per-voxel Bernoulli logits (binary cross-entropy reconstruction,
  so images must lie in [0, 1]: MNIST with ``intensity = "range"``; targets outside are
  clipped to [0, 1]): an MLP, or with ``"conv"`` a linear map from ``[z, y]`` to a small
  feature map and stride-2 transposed convolutions back up, cropped to the input size.

Either encoder computes its image part once per image, however many classes are tried.

Objective, per image (all in nats):

* labelled ``(x, y)``: ``L(x, y) = -E_q(z|x,y)[log p(x|y,z)] + KL(q(z|x,y) || N(0, I)) - log p(y)``
  (uniform ``p(y)``), plus ``alpha * CE(q(y|x), y)``;
* unlabelled ``x``: ``U(x) = sum_y q(y|x) L(x, y) - H(q(y|x))``, summed over every class
  (the decoder runs once per class for every unlabelled image).

Each step decodes every unlabelled image once per class: memory and time grow with
``unlabelled_batch_size x classes x voxels``, so lower ``train.unlabelled_batch_size`` for
big volumes, and use ``architecture = "conv"`` there: the MLP's first and last layers are
``voxels x hidden`` wide.

The batch loss is ``mean L + mean U + alpha * mean CE`` (``supervised`` is the CE,
``unsupervised`` the mean ``U``).  The paper's ``alpha = 0.1 N`` weighs the summed
classification loss against the bound summed over the N images; per image that is
``alpha = 0.1 x (number of labelled images)``, i.e. 10 for MNIST-100.

On MNIST-100 (2,000 steps, same settings otherwise) the CNN classifier with weak views
reached 97.9 % test accuracy, the MLP classifier with input noise 0.3 only 78.7 % (latent
10 instead of 50: 74.7 %): the M2 term pulls the classifier towards the generative
model's posterior, and the augmented views let it generalise beyond that posterior's errors.

Conditional generation: :meth:`VaeM2.generate` samples ``z ~ N(0, I)``, takes the given
labels and returns the decoder's Bernoulli means (images in [0, 1]); ``pipeline sample``
writes them as a PNG grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.networks import MLP

CLASSIFIERS = ("mlp", "network")
ARCHITECTURES = ("mlp", "conv")
LOG_VAR_RANGE = (-12.0, 8.0)


def _mlp_layers(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z|x,y): the first layer is split into an image part and a label part, so the image
    part is computed once per image even when every class is tried."""

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], latent: int):
        super().__init__()
        self.image_in = nn.Linear(in_features, hidden[0])
        self.label_in = nn.Linear(num_classes, hidden[0], bias=False)
        self.body = _mlp_layers(hidden)
        self.mean = nn.Linear(hidden[-1], latent)
        self.log_var = nn.Linear(hidden[-1], latent)

    def forward(self, image_part: torch.Tensor, labels_onehot: torch.Tensor):
        h = self.body(F.softplus(image_part + self.label_in(labels_onehot)))
        return self.mean(h), self.log_var(h).clamp(*LOG_VAR_RANGE)


class Decoder(nn.Module):
    """p(x|y,z): Bernoulli logits of every voxel."""

    def __init__(self, out_features: int, num_classes: int, hidden: list[int], latent: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent + num_classes, hidden[0]), nn.Softplus(),
                                 _mlp_layers(hidden), nn.Linear(hidden[-1], out_features))

    def forward(self, z: torch.Tensor, labels_onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, labels_onehot], dim=1))


def _halved(spatial: tuple[int, ...], stages: int) -> list[int]:
    """Spatial size after ``stages`` stride-2 convolutions (kernel 3, padding 1): ceil(s / 2^stages)."""
    sizes = list(spatial)
    for _ in range(stages):
        sizes = [(s + 1) // 2 for s in sizes]
    return sizes


class ConvEncoder(nn.Module):
    """q(z|x,y) for ``architecture = "conv"``.

    ``image_in`` takes flattened images, as the MLP encoder's does, so the bound is computed
    the same way for both; it restores the shape, applies the stride-2 convolutions and
    flattens the features.  ``forward`` concatenates them with the one-hot label and maps
    linearly to the mean and log-variance.

    Parameters
    ----------
    input_shape : tuple of int
        (channels, *spatial), 2 or 3 spatial dimensions.
    num_classes : int
        Length of the one-hot label.
    channels : list of int
        Output channels of each stride-2 convolution.
    latent : int
        Dimension of z.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: list[int], latent: int):
        super().__init__()
        dims = len(input_shape) - 1
        widths = [input_shape[0], *channels]
        self.image_in = nn.Sequential(
            nn.Unflatten(1, tuple(input_shape)),
            *(Convolution(dims, a, b, strides=2, kernel_size=3, act="elu", norm=None)
              for a, b in zip(widths[:-1], widths[1:])),
            nn.Flatten(),
        )
        features = channels[-1] * math.prod(_halved(input_shape[1:], len(channels)))
        self.mean = nn.Linear(features + num_classes, latent)
        self.log_var = nn.Linear(features + num_classes, latent)

    def forward(self, image_part: torch.Tensor, labels_onehot: torch.Tensor):
        h = torch.cat([image_part, labels_onehot], dim=1)
        return self.mean(h), self.log_var(h).clamp(*LOG_VAR_RANGE)


class ConvDecoder(nn.Module):
    """p(x|y,z) for ``architecture = "conv"``: Bernoulli logits of every voxel, flattened.

    A linear map from ``[z, onehot y]`` to a feature map of ``ceil(size / 2^stages)`` per axis,
    then one stride-2 transposed convolution per stage (each doubles the size; the last
    gives the logits), cropped to the input size (28 -> 7 -> 28, 13 -> 4 -> 16 -> 13).

    Parameters
    ----------
    input_shape : tuple of int
        (channels, *spatial), 2 or 3 spatial dimensions.
    num_classes : int
        Length of the one-hot label.
    channels : list of int
        The encoder's channels; the decoder runs through them in reverse.
    latent : int
        Dimension of z.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: list[int], latent: int):
        super().__init__()
        self.spatial = tuple(input_shape[1:])
        self.start = (channels[-1], *_halved(self.spatial, len(channels)))
        self.project = nn.Sequential(nn.Linear(latent + num_classes, math.prod(self.start)), nn.ELU())
        widths = [*channels[::-1], input_shape[0]]
        last = len(widths) - 2
        self.up = nn.Sequential(*(
            Convolution(len(self.spatial), a, b, strides=2, kernel_size=3, is_transposed=True, act="elu",
                        norm=None, conv_only=index == last)
            for index, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        ))

    def images(self, z: torch.Tensor, labels_onehot: torch.Tensor) -> torch.Tensor:
        """Logits shaped as the input, ``(N, C, *spatial)``."""
        h = self.project(torch.cat([z, labels_onehot], dim=1)).view(len(z), *self.start)
        return self.up(h)[(..., *(slice(0, s) for s in self.spatial))]

    def forward(self, z: torch.Tensor, labels_onehot: torch.Tensor) -> torch.Tensor:
        return self.images(z, labels_onehot).flatten(1)


@register
class VaeM2(Method):
    name = "vae_m2"

    @dataclass
    class Params:
        latent: int = 50
        hidden: list[int] = field(default_factory=lambda: [500])  # encoder and decoder (paper: 500)
        classifier: str = "network"  # network (the [network] classifier, e.g. the CNN) | mlp (below)
        classifier_hidden: list[int] = field(default_factory=lambda: [1000, 500, 250])  # for "mlp"
        classifier_noise: float = 0.0  # std of Gaussian noise on the classifier's training inputs
        classifier_augment: str = "weak"  # none | weak | strong: random views for the classifier
        alpha: float = 10.0  # weight of the labelled cross-entropy (paper: 0.1 x number of labels)
        kl_warmup: float = 0.0  # fraction of training over which the KL weight ramps 0 -> 1
        architecture: str = "mlp"  # mlp | conv: the encoder and decoder (not the classifier)
        conv_channels: list[int] = field(default_factory=lambda: [32, 64])  # for "conv": one per stride-2 stage

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.classifier not in CLASSIFIERS:
            raise ValueError(f"method.vae_m2.classifier must be one of {', '.join(CLASSIFIERS)}, "
                             f"got '{params.classifier}'")
        if params.classifier_augment not in ("none", "weak", "strong"):
            raise ValueError(f"method.vae_m2.classifier_augment must be none, weak or strong, "
                             f"got '{params.classifier_augment}'")
        if params.architecture not in ARCHITECTURES:
            raise ValueError(f"method.vae_m2.architecture must be one of {', '.join(ARCHITECTURES)}, "
                             f"got '{params.architecture}'")
        if params.latent < 1 or (params.architecture == "mlp" and not params.hidden):
            raise ValueError("method.vae_m2 needs at least one hidden layer and latent >= 1")
        if params.architecture == "conv" and (not params.conv_channels or min(params.conv_channels) < 1):
            raise ValueError(f"method.vae_m2.conv_channels needs at least one positive width, "
                             f"got {params.conv_channels}")
        features = math.prod(self.input_shape)
        if params.classifier == "mlp":
            dropout = next((m.p for m in self.network.modules() if isinstance(m, nn.Dropout)), 0.0)
            self.network = MLP(features, num_classes, list(params.classifier_hidden), dropout)
        if params.architecture == "conv":
            channels = list(params.conv_channels)
            self.encoder = ConvEncoder(self.input_shape, num_classes, channels, params.latent)
            self.decoder = ConvDecoder(self.input_shape, num_classes, channels, params.latent)
        else:
            self.encoder = Encoder(features, num_classes, list(params.hidden), params.latent)
            self.decoder = Decoder(features, num_classes, list(params.hidden)[::-1], params.latent)

    # -- the bound -------------------------------------------------------------------------

    def latent_noise(self, mean: torch.Tensor) -> torch.Tensor:
        """Reparameterisation noise (tests replace it with zeros)."""
        return torch.randn_like(mean)

    def negative_elbo(self, image_part: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                      kl_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row ``-ELBO(x, y)`` (reconstruction + KL + log K) and its KL part.

        ``image_part`` is the encoder's image projection of each row, ``targets`` the
        flattened images in [0, 1], ``labels`` class indices.
        """
        onehot = F.one_hot(labels, self.num_classes).to(targets.dtype)
        mean, log_var = self.encoder(image_part, onehot)
        z = mean + torch.exp(0.5 * log_var) * self.latent_noise(mean)
        logits = self.decoder(z, onehot)
        reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)
        return reconstruction + kl_weight * kl + math.log(self.num_classes), kl

    def unlabelled_bound(self, image_part: torch.Tensor, targets: torch.Tensor, probs: torch.Tensor,
                         kl_weight: float = 1.0) -> torch.Tensor:
        """Per-image ``U(x) = sum_y q(y|x) L(x, y) - H(q(y|x))`` over all classes."""
        n, k = probs.shape
        labels = torch.arange(k, device=probs.device).repeat(n)
        bound, _ = self.negative_elbo(image_part.repeat_interleave(k, 0), targets.repeat_interleave(k, 0),
                                      labels, kl_weight)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(1)
        return (probs * bound.view(n, k)).sum(1) - entropy

    def losses(self, batch: StepBatch):
        p = self.params
        n_lab = len(batch.labelled)
        images = torch.cat([batch.labelled, batch.unlabelled])
        view = images if p.classifier_augment == "none" else getattr(batch.augment, p.classifier_augment)(images)
        if p.classifier_noise > 0:
            view = view + p.classifier_noise * torch.randn_like(view)
        logits = self.network(view)  # one pass: labelled and unlabelled share batch statistics
        supervised = F.cross_entropy(logits[:n_lab], batch.labels)
        targets = images.flatten(1).clamp(0.0, 1.0)
        image_part = self.encoder.image_in(targets)
        kl_weight = min(1.0, batch.progress / p.kl_warmup) if p.kl_warmup > 0 else 1.0
        labelled_bound, kl = self.negative_elbo(image_part[:n_lab], targets[:n_lab], batch.labels, kl_weight)
        terms = {"labelled_bound": labelled_bound.mean().detach(), "kl": kl.mean().detach()}
        if len(batch.unlabelled):
            probs = F.softmax(logits[n_lab:], dim=1)
            unsupervised = self.unlabelled_bound(image_part[n_lab:], targets[n_lab:], probs, kl_weight).mean()
        else:
            unsupervised = supervised.new_zeros(())
        loss = labelled_bound.mean() + unsupervised + p.alpha * supervised
        return {"loss": loss, "supervised": supervised.detach(), "unsupervised": unsupervised.detach(), **terms}

    # -- generation ------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, labels, n_per_label: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(len(labels) * n_per_label, C, *spatial)`` in [0, 1]: for each label in
        turn, ``n_per_label`` draws of ``z ~ N(0, I)`` decoded to Bernoulli means."""
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must be class indices in [0, {self.num_classes - 1}], got {labels.tolist()}")
        device = next(self.decoder.parameters()).device
        labels = labels.repeat_interleave(n_per_label).to(device)
        z = torch.randn(len(labels), self.params.latent, generator=generator).to(device)
        was_training = self.decoder.training
        self.decoder.eval()
        onehot = F.one_hot(labels, self.num_classes).float()
        images = torch.sigmoid(self.decoder(z, onehot))
        self.decoder.train(was_training)
        return images.view(len(labels), *self.input_shape)
