"""Where the model looked: saliency heatmaps through ``monai.visualize``.

GradCAM on the last convolution of a CNN; occlusion sensitivity for networks without one (the
MLP). Heatmaps come out at the input's size, scaled to 0-1, so they overlay the preprocessed
scan (``pipeline.review.overlay_png`` draws them on the review page).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def last_convolution(network: nn.Module) -> str | None:
    """The name of the module after the network's last convolution's normalisation and activation:
    for a MONAI ``Convolution`` block, the block (GradCAM on the bare convolution's output, before
    batch norm, peaked at the image border)."""
    names = [name for name, module in network.named_modules() if isinstance(module, (nn.Conv2d, nn.Conv3d))]
    if not names:
        return None
    last = names[-1]
    return last.rsplit(".", 1)[0] if last.endswith(".conv") and "." in last else last


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to 0 (least evidence) .. 1 (most)."""
    flat = maps.flatten(1)
    shape = (-1, *[1] * (maps.ndim - 1))
    low, high = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
    return (maps - low) / (high - low).clamp_min(1e-8)


def saliency_maps(network: nn.Module, images: torch.Tensor, class_index: int, batch_size: int = 32) -> np.ndarray:
    """Heatmaps (N, *spatial) in [0, 1] of the evidence for ``class_index`` in each image."""
    from monai.visualize import GradCAM, OcclusionSensitivity

    was_training = network.training
    network.eval()
    layer = last_convolution(network)
    maps = []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float()
            if layer is not None:
                # MONAI's default post-processing scales each map to 1..0 (strongest evidence at 0)
                cam = GradCAM(nn_module=network, target_layers=layer, postprocessing=_unit_range)
                heat = cam(x=batch, class_idx=class_index).detach()
            else:
                sensitivity = OcclusionSensitivity(nn_module=network, mask_size=max(2, batch.shape[-1] // 6),
                                                   n_batch=64, verbose=False)
                heat = _unit_range(-sensitivity(batch)[0][:, class_index:class_index + 1].detach())
            maps.append(heat[:, 0].cpu().numpy())
    finally:
        network.train(was_training)
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[2:]), dtype=np.float32)
