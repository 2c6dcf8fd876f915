"""Ladder network (Rasmus et al. 2015, "Semi-supervised learning with ladder networks").

The encoder is a permutation-invariant MLP: every layer is Linear -> batch norm without
affine parameters -> (+ Gaussian noise on the corrupted pass) -> learned per-unit shift
``beta`` (and scale ``gamma`` on the top layer) -> ReLU (softmax on top).  Images of any
shape, 2D or 3D, are flattened, so a big volume gives a very wide first layer; for volumes
use ``conv_gamma`` (below).

One training step runs

* a corrupted pass on the labelled batch -> cross-entropy (the supervised term);
* a clean and a corrupted pass on the unlabelled batch (each batch-normalised with its own
  statistics, the labelled and unlabelled batches separately);
* the top-down decoder on the unlabelled batch: ``u_L = batchnorm(softmax(corrupted top))``,
  ``u_l = batchnorm(V_l zhat_{l+1})`` and ``zhat_l = g_l(ztilde_l, u_l)`` with the paper's
  per-unit "vanilla" combinator ``g`` (10 parameters per unit);
* per-layer denoising costs ``lambda_l * mean ||zhat_l^BN - z_l||^2 / width_l``, where
  ``z_l`` are the clean encoder's normalised pre-activations and ``zhat_l^BN`` is the
  reconstruction normalised with the clean batch's mean and standard deviation (layer 0 is
  the input itself).  Their sum is the unsupervised term.

``variant`` selects the model:

* ``full`` - the ladder above, denoising at every layer;
* ``gamma`` - the Gamma-model: only the top layer is reconstructed and denoised
  (cost ``denoising_costs[-1]``);
* ``decoder_only`` - a simplified ladder without lateral connections: each layer's
  reconstruction is a per-unit affine map of the top-down signal ``u_l`` alone (a
  plain denoising autoencoder's decoder, never seeing ``ztilde_l``), costs as in ``full``;
* ``conv_gamma`` - the Gamma-model on a convolutional encoder, 2D or 3D: the ``[network]``
  classifier (the ConvNet for ``network.name = "cnn"``) whose logits are the top
  pre-activations, batch-normalised without affine parameters, then ``gamma * (z + beta)``.
  The corrupted pass adds Gaussian noise to the input and to the normalised top only (the
  authors' code corrupts every layer; here the ConvNet's inner layers are untouched MONAI
  blocks); the top is denoised with the vanilla combinator as in ``gamma``, cost
  ``top_cost * mean ||zhat_L^BN - z_L||^2 / K``.  ``hidden`` and ``denoising_costs`` are
  not used.  The classifier runs once per batch, so its own batch norms also see the
  labelled, corrupted and clean batches apart.

The prediction network (calibration, scoring, checkpoint) is the clean encoder.  The MLP
variants use ``[network]`` only for ``network.dropout``, which (when > 0) drops units of the
corrupted passes' layer inputs as extra corruption; ``conv_gamma`` keeps the classifier's
own dropout, likewise on the corrupted passes only.  The clean encoder never drops.
On MNIST-100 dropout 0.1 cost a point (94.5 % against 95.5 % after 3,000 steps), so run the
ladder with ``network.dropout = 0``.  The MLP's three passes of a step share each layer's
matrix product (one product over the stacked batches, normalised batch by batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch

VARIANTS = ("full", "gamma", "decoder_only", "conv_gamma")
EPS = 1e-5


def _batch_stats(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = values.mean(0)
    std = torch.sqrt(values.var(0, unbiased=False) + EPS)
    return mean, std


def _normalise(values: torch.Tensor) -> torch.Tensor:
    mean, std = _batch_stats(values)
    return (values - mean) / std


@dataclass
class Pass:
    """One batch's encoder pass: normalised pre-activations per layer, batch statistics, top."""

    z: list[torch.Tensor]
    mean: list
    std: list
    top: torch.Tensor | None = None


class LadderEncoder(nn.Module):
    """The ladder's encoder; called on images it is the clean encoder and returns logits."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.sizes = [in_features, *hidden, num_classes]
        self.linears = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(self.sizes[:-1], self.sizes[1:])
        )
        # Normalisation without affine parameters; the running statistics serve evaluation
        # (the trainer re-estimates them on clean images before every evaluation).
        self.norms = nn.ModuleList(nn.BatchNorm1d(width, affine=False, eps=EPS) for width in self.sizes[1:])
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(width)) for width in self.sizes[1:])
        self.gamma = nn.Parameter(torch.ones(num_classes))  # only the softmax layer needs a scale
        self.dropout = nn.Dropout(dropout)
        for linear in self.linears:
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(linear.in_features))

    def _activate(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        if layer == len(self.linears) - 1:
            return self.gamma * (z + self.beta[layer])  # logits; softmax is applied by the losses
        return F.relu(z + self.beta[layer])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = images.flatten(1)
        for layer, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            h = self._activate(layer, norm(linear(h)))
        return h

    def passes(self, noisy: list[torch.Tensor], clean: list[torch.Tensor], noise: float) -> list[Pass]:
        """Training passes over several batches at once, corrupted ones first, then clean ones.

        Each batch is normalised with its own batch statistics (labelled and unlabelled apart,
        corrupted and clean apart); they share each layer's matrix product for speed.  Every
        pass returns its top output (logits), its normalised pre-activations ``z_l`` (noisy on
        corrupted passes; l = 0 is the input) and, for clean passes, the batch mean and
        standard deviation of every layer's pre-activations (layer 0: 0 and 1).  Only clean
        passes update the running statistics.
        """
        batches = [*noisy, *clean]
        counts = [len(x) for x in batches]
        n_noisy = sum(counts[:len(noisy)])
        results = [Pass([], [0.0], [1.0]) for _ in batches]

        def corrupt(values: torch.Tensor) -> torch.Tensor:
            if noise == 0 or n_noisy == 0:
                return values
            return torch.cat([values[:n_noisy] + noise * torch.randn_like(values[:n_noisy]), values[n_noisy:]])

        h = corrupt(torch.cat([x.flatten(1) for x in batches]))
        for result, z in zip(results, h.split(counts)):
            result.z.append(z)
        for layer, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            if layer > 0 and self.dropout.p > 0 and n_noisy:
                h = torch.cat([self.dropout(h[:n_noisy]), h[n_noisy:]])
            parts = []
            for index, pre in enumerate(linear(h).split(counts)):
                mean, std = _batch_stats(pre)
                parts.append((pre - mean) / std)
                if index >= len(noisy):
                    norm(pre.detach())  # keeps the running statistics current
                    results[index].mean.append(mean)
                    results[index].std.append(std)
            z = corrupt(torch.cat(parts))
            for result, part in zip(results, z.split(counts)):
                result.z.append(part)
            h = self._activate(layer, z)
        for result, top in zip(results, h.split(counts)):
            result.top = top
        return results


class ConvLadderEncoder(nn.Module):
    """The ``conv_gamma`` encoder around a classifier; called on images it is the clean
    encoder and returns logits.

    Parameters
    ----------
    network : nn.Module
        The ``[network]`` classifier; its outputs are the top pre-activations.
    num_classes : int
        Width of the top layer.
    in_features : int
        Number of input values (the width of layer 0, which ``conv_gamma`` never decodes).
    """

    def __init__(self, network: nn.Module, num_classes: int, in_features: int):
        super().__init__()
        self.sizes = [in_features, num_classes]
        self.convnet = network
        self.norm = nn.BatchNorm1d(num_classes, affine=False, eps=EPS)
        self.beta = nn.Parameter(torch.zeros(num_classes))
        self.gamma = nn.Parameter(torch.ones(num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.gamma * (self.norm(self.convnet(images)) + self.beta)

    def passes(self, noisy: list[torch.Tensor], clean: list[torch.Tensor], noise: float) -> list[Pass]:
        """As :meth:`LadderEncoder.passes`, with two layers: 0 the input, 1 the top.

        Each batch goes through the classifier on its own (so its batch norms see the
        batches apart); its dropout is active on the corrupted passes only.  The top's
        running statistics follow the clean passes; the classifier's inner ones follow all
        passes, which is harmless because the trainer re-estimates them on clean images
        before every evaluation.
        """
        dropouts = [m for m in self.convnet.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        results = []
        for index, images in enumerate([*noisy, *clean]):
            corrupted = index < len(noisy)
            for dropout in dropouts:
                dropout.train(corrupted and self.training)
            x = images + noise * torch.randn_like(images) if corrupted else images
            pre = self.convnet(x)
            mean, std = _batch_stats(pre)
            z = (pre - mean) / std
            if corrupted:
                z = z + noise * torch.randn_like(z)
                result = Pass([x, z], [0.0], [1.0])
            else:
                self.norm(pre.detach())  # keeps the running statistics current
                result = Pass([x, z], [0.0, mean], [1.0, std])
            result.top = self.gamma * (z + self.beta)
            results.append(result)
        for dropout in dropouts:
            dropout.train(self.training)
        return results


class VanillaCombinator(nn.Module):
    """g(z~, u) = (z~ - mu(u)) * v(u) + mu(u), with mu(u) = a1 sigmoid(a2 u + a3) + a4 u + a5 and
    v(u) = a6 sigmoid(a7 u + a8) + a9 u + a10: ten parameters per unit (initialised as in the
    authors' code: a2 = a7 = 1, the rest 0)."""

    def __init__(self, width: int):
        super().__init__()
        init = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        self.a = nn.Parameter(init[:, None].repeat(1, width))

    def forward(self, z_noisy: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = self.a
        mu = a[0] * torch.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * torch.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z_noisy - mu) * v + mu


class TopDownOnly(nn.Module):
    """The ``decoder_only`` variant's per-unit reconstruction from the top-down signal alone."""

    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, z_noisy: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.scale * u + self.shift


@register
class Ladder(Method):
    name = "ladder"

    @dataclass
    class Params:
        hidden: list[int] = field(default_factory=lambda: [1000, 500, 250, 250, 250])
        noise: float = 0.3  # std of the Gaussian corruption at every layer, input included (conv_gamma: input, top)
        # lambda_l for layers 0 (input) .. L (top); one per layer, len(hidden) + 2 entries
        denoising_costs: list[float] = field(default_factory=lambda: [1000.0, 10.0, 0.1, 0.1, 0.1, 0.1, 0.1])
        variant: str = "full"  # full | gamma | decoder_only | conv_gamma
        # conv_gamma's lambda_L (the authors' Conv-Small Gamma-model on MNIST-100 used 1)
        top_cost: float = 1.0

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.variant not in VARIANTS:
            raise ValueError(f"method.ladder.variant must be one of {', '.join(VARIANTS)}, got '{params.variant}'")
        if params.noise < 0:
            raise ValueError(f"method.ladder.noise must be >= 0, got {params.noise}")
        gamma = params.variant in ("gamma", "conv_gamma")
        if params.variant == "conv_gamma":
            self.network = ConvLadderEncoder(self.network, num_classes, math.prod(self.input_shape))
            self.lambdas = [0.0, params.top_cost]
        else:
            if len(params.denoising_costs) != len(params.hidden) + 2:
                raise ValueError(
                    f"method.ladder.denoising_costs needs one weight per layer, input and output included: "
                    f"{len(params.hidden) + 2} for hidden={params.hidden}, got {len(params.denoising_costs)}"
                )
            # [network] only contributes its dropout rate (extra corruption of the noisy passes).
            dropout = next((m.p for m in self.network.modules() if isinstance(m, nn.Dropout)), 0.0)
            self.network = LadderEncoder(math.prod(self.input_shape), list(params.hidden), num_classes, dropout)
            self.lambdas = list(params.denoising_costs)
        sizes = self.network.sizes
        top = len(sizes) - 1
        self.layers = [top] if gamma else list(range(top, -1, -1))
        # V_l maps layer l+1's reconstruction down to layer l (l = 0 .. L-1).
        self.decoder = nn.ModuleList() if gamma else nn.ModuleList(
            nn.Linear(sizes[layer + 1], sizes[layer], bias=False) for layer in range(top)
        )
        combinator = TopDownOnly if params.variant == "decoder_only" else VanillaCombinator
        self.combinators = nn.ModuleDict({str(layer): combinator(sizes[layer]) for layer in self.layers})

    def _decode(self, corrupted: Pass, clean: Pass) -> list[torch.Tensor]:
        """Weighted denoising cost of every decoded layer, top first."""
        sizes = self.network.sizes
        costs, reconstruction = [], None
        for layer in self.layers:
            if layer == len(sizes) - 1:
                u = _normalise(F.softmax(corrupted.top, dim=1))
            else:
                u = _normalise(self.decoder[layer](reconstruction))
            reconstruction = self.combinators[str(layer)](corrupted.z[layer], u)
            normalised = (reconstruction - clean.mean[layer]) / clean.std[layer]
            error = (normalised - clean.z[layer]).pow(2).sum(1).mean() / sizes[layer]
            costs.append(self.lambdas[layer] * error)
        return costs

    def denoising_costs(self, unlabelled: torch.Tensor) -> list[torch.Tensor]:
        """Weighted denoising costs of a batch (a corrupted and a clean pass), top layer first."""
        corrupted, clean = self.network.passes([unlabelled], [unlabelled], self.params.noise)
        return self._decode(corrupted, clean)

    def losses(self, batch: StepBatch):
        noise = self.params.noise
        terms = {}
        if len(batch.unlabelled) > 1:  # batch statistics need two samples
            labelled, corrupted, clean = self.network.passes(
                [batch.labelled, batch.unlabelled], [batch.unlabelled], noise)
            costs = self._decode(corrupted, clean)
            unsupervised = torch.stack(costs).sum()
            terms = {f"denoise_{layer}": cost.detach() for layer, cost in zip(self.layers, costs)}
        else:
            (labelled,) = self.network.passes([batch.labelled], [], noise)
            unsupervised = None
        supervised = F.cross_entropy(labelled.top, batch.labels)  # on the corrupted encoder
        if unsupervised is None:
            unsupervised = supervised.new_zeros(())
        return {"loss": supervised + unsupervised, "supervised": supervised.detach(),
                "unsupervised": unsupervised.detach(), **terms}
