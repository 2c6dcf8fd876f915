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
    names = [name for name, module in network.named_modules() if isinstance(module, (nn.Conv2d, nn.Conv3d))]
    return names[-1] if names else None


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
                cam = GradCAM(nn_module=network, target_layers=layer)
                heat = cam(x=batch, class_idx=class_index).detach()
            else:
                sensitivity = OcclusionSensitivity(nn_module=network, mask_size=max(2, batch.shape[-1] // 6),
                                                   n_batch=64, verbose=False)
                heat = -sensitivity(batch)[0][:, class_index:class_index + 1].detach()
                low = heat.flatten(1).min(1).values.view(-1, *[1] * (heat.ndim - 1))
                high = heat.flatten(1).max(1).values.view(-1, *[1] * (heat.ndim - 1))
                heat = (heat - low) / (high - low).clamp_min(1e-8)
            maps.append(heat[:, 0].cpu().numpy())
    finally:
        network.train(was_training)
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[2:]), dtype=np.float32)
