"""Tiny synthetic image tasks for fast tests: classes are shapes, not positions,
so the label survives the augmentations (shifts, rotations, noise)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data import TrainingData


def toy_images(n: int, size: int = 16, dims: int = 2, classes: int = 3, seed: int = 0):
    """Images (n, 1, size^dims) in [0, 1] and labels: 0 = bar along axis 0, 1 = bar along
    axis 1, 2 = a filled square (bars are long, so rotations of a few tens of degrees keep them)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.random((n, 1) + (size,) * dims).astype(np.float32) * 0.2
    centre, half, long = size // 2, max(1, size // 8), size // 3
    for i, label in enumerate(labels):
        jitter = rng.integers(-1, 2, dims)
        c = [centre + j for j in jitter]
        if label == 2:
            region = tuple(slice(x - 2 * half, x + 2 * half) for x in c)
        else:
            region = [slice(x - half, x + half) for x in c]
            region[label] = slice(c[label] - long, c[label] + long)
            region = tuple(region)
        images[(i, 0) + region] += 0.8
    return torch.from_numpy(np.clip(images, 0, 1)), torch.from_numpy(labels).long()


def toy_training_data(n: int = 600, size: int = 16, dims: int = 2, n_labelled: int = 15,
                      n_calibration: int = 60, n_test: int = 90, seed: int = 0) -> TrainingData:
    images, labels = toy_images(n, size, dims, seed=seed)
    index = torch.arange(n)
    unlabelled_end = n - n_calibration - n_test
    return TrainingData(
        images=images, labels=labels, scan_ids=[f"scan{i:04d}" for i in range(n)], classes=["a", "b", "c"],
        labelled=index[:n_labelled], unlabelled=index[n_labelled:unlabelled_end],
        calibration=index[unlabelled_end:n - n_test], test=index[n - n_test:],
    )


def calibrated_toy_run(folder, overrides: list[str]):
    """Train a toy model with config ``overrides`` into ``folder`` and calibrate it; return the folder."""
    from pipeline.config import load_config
    from pipeline.stages.calibrate import calibrate
    from pipeline.trainer import Trainer

    data = toy_training_data()
    Trainer(load_config(None, overrides), data, folder, progress=False).fit()
    calibrate(folder, data=data)
    return folder
