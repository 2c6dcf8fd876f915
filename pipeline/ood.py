"""Out-of-distribution score: how unlike the training scans a scan is, from the network's features.

The score is the cosine distance from a scan's penultimate features (the input of the network's
last linear layer) to its k-th nearest neighbour among the training scans' features (Sun et al.
2022, "Out-of-distribution detection with deep nearest neighbors"). It needs no labels and no
outlier examples; the calibrate stage stores the training features (``ood.safetensors``) and
sets the threshold at the 95th percentile of the calibration scans' scores, so about one in
twenty in-distribution scans is flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.io import atomic_path
from pipeline.networks import forward_batch

BANK = "ood.safetensors"
NEIGHBOURS = 10
MAX_BANK = 4096
PERCENTILE = 95.0


def last_linear(network: nn.Module) -> nn.Linear | None:
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@torch.no_grad()
def logits_and_features(network: nn.Module, images: torch.Tensor, batch_size: int | None = None,
                        device: torch.device | str = "cpu") -> tuple[torch.Tensor, np.ndarray | None]:
    """One forward pass without gradients, in batches of ``batch_size`` (``forward_batch``'s by
    default): the logits, and the input of the network's last linear layer for each image,
    L2-normalised (None when the network has no linear layer). Scoring takes both from the same
    pass, so the out-of-distribution score costs no second forward pass."""
    batch_size = batch_size or forward_batch(network, images.shape[1:])
    head = last_linear(network)
    captured: list[torch.Tensor] = []
    hook = None
    if head is not None:
        hook = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].detach().float().cpu()))
    was_training = network.training
    network.eval()
    try:
        logits = [network(images[start:start + batch_size].to(device)).float().cpu()
                  for start in range(0, len(images), batch_size)]
    finally:
        if hook is not None:
            hook.remove()
        network.train(was_training)
    logits = torch.cat(logits) if logits else torch.zeros(0)
    if head is None:
        return logits, None
    if not captured:
        return logits, np.zeros((0, head.in_features), dtype=np.float32)
    features = torch.cat(captured).flatten(1)
    return logits, torch.nn.functional.normalize(features, dim=1).numpy()


def penultimate_features(network: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                         batch_size: int | None = None) -> np.ndarray | None:
    """The input of the network's last linear layer for each image, L2-normalised; None when the
    network has no linear layer."""
    return logits_and_features(network, images, batch_size, device)[1]


def knn_scores(features: np.ndarray, bank: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Cosine distance to the k-th nearest bank feature (features and bank L2-normalised)."""
    if len(features) == 0:
        return np.zeros(0, dtype=np.float32)
    k = min(k, len(bank))
    similarity = features @ bank.T
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return (1.0 - kth).astype(np.float32)


def fit(network: nn.Module, data, device: torch.device | str = "cpu", seed: int = 0
        ) -> tuple[np.ndarray, float] | None:
    """(bank, threshold) for a run's ``TrainingData``: the features of its labelled scans and up to
    ``MAX_BANK`` unlabelled ones, and the ``PERCENTILE``-th percentile of its calibration scans'
    scores against them; None for a network without a linear layer."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([data.labelled.numpy(), rng.permutation(data.unlabelled.numpy())])[:MAX_BANK]
    bank = penultimate_features(network, data.images[pool], device)
    if bank is None or len(bank) == 0:
        return None
    scores = knn_scores(penultimate_features(network, data.images[data.calibration], device), bank)
    return bank, float(np.percentile(scores, PERCENTILE))


def save_bank(run_dir: Path, bank: np.ndarray) -> Path:
    path = Path(run_dir) / BANK
    with atomic_path(path) as tmp:
        save_file({"features": torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))}, str(tmp))
    return path


def load_bank(run_dir: Path) -> np.ndarray | None:
    path = Path(run_dir) / BANK
    return load_file(str(path))["features"].numpy() if path.exists() else None


class OODScorer:
    """``scores(features) -> (scores, flags)`` of a calibrated run, for penultimate features (see
    ``logits_and_features``; flags: score above the threshold)."""

    def __init__(self, bank: np.ndarray, threshold: float, k: int = NEIGHBOURS):
        self.bank, self.threshold, self.k = bank, threshold, k

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = knn_scores(features, self.bank, self.k)
        return values, values > self.threshold
