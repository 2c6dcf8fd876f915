"""Classifier networks for 2D and 3D scans, built from MONAI blocks.

Every network maps (B, C, *spatial) to class logits and takes ``dropout``, so any
method can use dropout.  Networks are rebuilt from their config when a checkpoint is
loaded, so a checkpoint holds weights only (no pickled code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers import Pool
from torch import nn

if TYPE_CHECKING:  # annotations only: the config module imports the method registry
    from pipeline.config import NetworkConfig



class ConvNet(nn.Module):
    """Conv-BN-ReLU stages with max pooling, global pooling and a linear head.

    Dropout follows every stage's first convolution but the first stage's (whole feature maps
    with ``dropout_kind="channel"``, single values with ``"element"``) and precedes the head.

    ``pooling`` is the global pooling: ``avg`` suits whole-image classes (digits),
    ``max`` or ``avgmax`` (both, concatenated) suit detection, where one small finding
    anywhere in a scan decides the class and an average would dilute it.
    """

    def __init__(self, spatial_dims, in_channels, num_classes, channels, dropout, convs_per_stage=1,
                 channels_last=False, pooling="avg", stem_stride=1, dropout_kind="channel"):
        super().__init__()
        # Channels-last convolutions run markedly faster on CPUs (oneDNN); weights and
        # inputs both take that layout, the outputs and the saved weights do not change.
        self.memory_format = ({2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims]
                              if channels_last else torch.contiguous_format)
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(channels):
            for repeat in range(convs_per_stage):
                layers.append(
                    Convolution(
                        spatial_dims, previous, width, kernel_size=3, act="relu", norm="batch",
                        # a strided first convolution: large inputs shrink before the costly stages
                        strides=stem_stride if index == 0 and repeat == 0 else 1,
                        dropout=dropout if repeat == 0 and index > 0 else None,
                        dropout_dim=spatial_dims if dropout_kind == "channel" else 1,
                    )
                )
                previous = width
            if index < len(channels) - 1:
                layers.append(Pool[Pool.MAX, spatial_dims](2))
        self.features = nn.Sequential(*layers)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown network.pooling '{pooling}'; known: {', '.join(POOLINGS)}")
        kinds = {"avg": [Pool.ADAPTIVEAVG], "max": [Pool.ADAPTIVEMAX], "avgmax": [Pool.ADAPTIVEAVG, Pool.ADAPTIVEMAX]}
        self.pools = nn.ModuleList(Pool[kind, spatial_dims](1) for kind in kinds[pooling])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous * len(self.pools), num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images.contiguous(memory_format=self.memory_format))
        pooled = torch.cat([pool(features).flatten(1) for pool in self.pools], dim=1)
        return self.head(self.dropout(pooled))


class MLP(nn.Module):
    """Permutation-invariant multilayer perceptron with batch norm (the ladder's encoder shape)."""

    def __init__(self, in_features, num_classes, hidden, dropout):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


FORWARD_BYTES = 16 * 2**20  # the first layer's output for one batch of a forward pass without gradient
FORWARD_SCANS = (1, 64)


def first_layer_values(network: nn.Module, scan_shape: Sequence[int]) -> int:
    """How many values the first convolution (or linear layer) of ``network`` outputs for one scan
    of ``scan_shape`` (channels first, then the spatial size)."""
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            spatial = [math.ceil(size / stride) for size, stride in zip(scan_shape[1:], module.stride)]
            return module.out_channels * math.prod(spatial)
        if isinstance(module, nn.Linear):
            return module.out_features
    return math.prod(scan_shape)


def forward_batch(network: nn.Module, scan_shape: Sequence[int], most: int = FORWARD_SCANS[1]) -> int:
    """Scans per forward pass without gradient (prediction, calibration, scoring): the first layer's
    output about ``FORWARD_BYTES``, between ``FORWARD_SCANS[0]`` and ``most``.

    Once a batch's activations outgrow the processor's caches each scan costs several times more;
    on the 2-core machine of ``benchmarks/performance.md`` ("Prediction batch size", 28b6d46) a 28^3
    volume took 3.40 ms in batches of 1,024 and 0.75 ms in batches of 11, a 128x128 picture (stem
    stride 2) 1.87 ms and 0.51 ms in batches of 32, a 28x28 one 0.19 ms and 0.07 ms in batches of
    64: the fast batches of every input hold about 16 MiB of first-layer output. The same bound
    keeps scoring's memory flat at any input size.
    """
    values = first_layer_values(network, scan_shape)
    return max(FORWARD_SCANS[0], min(most, FORWARD_BYTES // max(4 * values, 1)))


NETWORKS = ("cnn", "mlp")
POOLINGS = ("avg", "max", "avgmax")
DROPOUT_KINDS = ("channel", "element")


def network_factory(
    config: NetworkConfig, in_channels: int, spatial_size: list[int], num_classes: int
) -> Callable[[], nn.Module]:
    """Return a function that builds a fresh network (methods with two networks call it twice)."""
    spatial_dims = len(spatial_size)
    if spatial_dims not in (2, 3):
        raise ValueError(f"preprocess.spatial_size must have 2 or 3 entries, got {spatial_size}")
    if config.stem_stride not in (1, 2, 4):
        raise ValueError(f"network.stem_stride must be 1, 2 or 4, got {config.stem_stride}")
    if config.dropout_kind not in DROPOUT_KINDS:
        raise ValueError(f"unknown network.dropout_kind '{config.dropout_kind}'; known: {', '.join(DROPOUT_KINDS)}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"network.dropout must be in [0, 1), got {config.dropout}")

    if config.name == "cnn":
        side = math.ceil(min(spatial_size) / config.stem_stride)
        for stage in range(1, len(config.channels)):
            side //= 2  # each stage after the first starts with a 2x max pooling
            if side < 1:
                raise ValueError(
                    f"network.channels has {len(config.channels)} stages and network.stem_stride is "
                    f"{config.stem_stride}: a {'x'.join(map(str, spatial_size))} input (preprocess.spatial_size) "
                    f"pools away to nothing before stage {stage + 1}; use fewer stages, a smaller stem stride "
                    "or a larger input")

    def build() -> nn.Module:
        if config.name == "cnn":
            net = ConvNet(
                spatial_dims, in_channels, num_classes, config.channels, config.dropout,
                config.convs_per_stage, config.channels_last, config.pooling, config.stem_stride,
                config.dropout_kind,
            )
            net = net.to(memory_format=net.memory_format)
        elif config.name == "mlp":
            net = MLP(in_channels * math.prod(spatial_size), num_classes, config.hidden, config.dropout)
        else:
            raise ValueError(f"unknown network.name '{config.name}'; known: {', '.join(NETWORKS)}")
        return net

    build()  # fail on a bad config now, not deep inside training
    return build
