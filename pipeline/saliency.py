"""Where the model looked: saliency heatmaps through ``monai.visualize`` and their overlays.

GradCAM on the last convolution of a CNN; occlusion sensitivity for networks without one (the
MLP). Heatmaps come out at the input's size, scaled to 0-1, so they overlay the preprocessed
scan; :func:`overlay_png` draws one over the scan as the review page's thumbnails are drawn
(three planes for a volume).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
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


def _planes(array: np.ndarray) -> np.ndarray:
    """A 2D picture of an image, or of a volume's three middle planes side by side (as thumbnails)."""
    if array.ndim == 2:
        return array
    x, y, z = (s // 2 for s in array.shape)
    planes = [array[x, :, :], array[:, y, :], array[:, :, z]]
    side = max(max(p.shape) for p in planes)
    padded = [np.pad(p, ((0, side - p.shape[0]), (0, side - p.shape[1]))) for p in planes]
    return np.concatenate([np.rot90(p) for p in padded], axis=1)


def overlay_png(image: np.ndarray, heat: np.ndarray, size: int = 96, alpha: float = 0.45) -> bytes:
    """PNG of a preprocessed scan (C, *spatial) in grey with ``heat`` (*spatial, 0-1) in red-yellow."""
    grey = _planes(np.asarray(image, dtype=np.float32)[0])
    low, high = np.percentile(grey, [1, 99]) if grey.size else (0, 1)
    grey = np.clip((grey - low) / max(high - low, 1e-6), 0, 1)
    h = np.clip(_planes(np.asarray(heat, dtype=np.float32)), 0, 1)
    colour = np.stack([np.ones_like(h), h, np.zeros_like(h)], axis=-1)  # red (weak) to yellow (strong)
    weight = (alpha * h)[..., None]
    rgb = grey[..., None] * (1 - weight) + colour * weight
    picture = Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB")
    scale = size / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
