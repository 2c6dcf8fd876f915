"""Training throughput: the pipeline's trainer against the training-loop style of the source notes.

Both sides train the same method (same networks, losses and optimiser step, through
``Trainer.step_on``) from the same MNIST-100 tensors; only the data path differs.

- pipeline: images held as one tensor, each step's batch drawn by indexing, views made by
  ``BatchAugmenter`` on the whole batch at once (``Trainer.step``).
- notes style: a ``Dataset`` that hands out one image at a time as torchvision's MNIST does
  (uint8 array -> PIL image -> float tensor), a ``DataLoader`` per subset with default
  settings (no worker processes), the labelled and unlabelled loaders zipped, and the random
  views made per image by MONAI's array transforms, as a per-item transform pipeline does.

Methods that pseudo-label in rounds (self_training, co_training, co_teaching) are timed in
a round in which every unlabelled image carries a pseudo-label, their heaviest step; the
labels come from the truth because only the cost of a step is measured here.
"""

from __future__ import annotations

import math
import tempfile
import time

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandCoarseDropout,
    RandGaussianNoise,
)
from monai.utils import convert_to_tensor
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.config import AugmentConfig, Config
from pipeline.data import TrainingData
from pipeline.methods.base import StepBatch
from pipeline.methods.shared import Proposal, PseudoLabels
from pipeline.trainer import Trainer

# Ramp-ups are mid-way, so every unsupervised term is switched on in the timed steps.
PROGRESS = 0.5


class TorchvisionStyleImages(Dataset):
    """uint8 images handed out one at a time as float tensors, with label and position."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, positions: np.ndarray):
        self.pixels, self.labels, self.positions = pixels, labels, positions

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.pixels[i])
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return tensor, int(self.labels[i]), int(self.positions[i])


class PerItemAugmenter:
    """The weak and strong view families of ``BatchAugmenter``, made image by image by MONAI."""

    def __init__(self, config: AugmentConfig, spatial_size: tuple[int, ...], seed: int = 0):
        dims = len(spatial_size)

        def affine(rotate, scale, shear, translate):
            angle = math.radians(rotate)
            return RandAffine(prob=1.0, rotate_range=(angle,) * (1 if dims == 2 else 3),
                              scale_range=(scale,) * dims, shear_range=(shear,) * (2 if dims == 2 else 6),
                              translate_range=[translate * s for s in spatial_size], padding_mode="zeros")

        c = config
        self._weak = affine(c.weak_rotate, c.weak_scale, 0.0, c.weak_translate)
        strong = [affine(c.strong_rotate, c.strong_scale, c.strong_shear, c.strong_translate)]
        if dims == 3 and c.strong_bias_field > 0:
            strong.append(RandBiasField(coeff_range=(0.0, c.strong_bias_field), prob=1.0))
        if dims == 3 and c.strong_gamma > 0:
            strong.append(RandAdjustContrast(gamma=(math.exp(-c.strong_gamma), math.exp(c.strong_gamma)), prob=1.0))
        if c.strong_noise > 0:
            strong.append(RandGaussianNoise(prob=1.0, std=c.strong_noise))
        if c.strong_cutout > 0:
            box = [max(1, round(s * c.strong_cutout)) for s in spatial_size]
            strong.append(RandCoarseDropout(holes=1, spatial_size=box, fill_value=0.0, prob=1.0))
        self._strong = Compose(strong)
        self._weak.set_random_state(seed)
        self._strong.set_random_state(seed + 1)

    def weak(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([convert_to_tensor(self._weak(x), track_meta=False) for x in images])

    def strong(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([convert_to_tensor(self._strong(x), track_meta=False) for x in images])


class TimedViews:
    """Wraps an augmenter, adding up the seconds spent making views."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def _timed(self, view, images):
        tick = time.perf_counter()
        out = view(images)
        self.seconds += time.perf_counter() - tick
        return out

    def weak(self, images):
        return self._timed(self.inner.weak, images)

    def strong(self, images):
        return self._timed(self.inner.strong, images)


def pseudo_label_everything(method, data: TrainingData) -> None:
    """Give every unlabelled image its true class as pseudo-label in each of the method's books."""
    books = getattr(method, "pseudo", None)
    if books is None:
        return
    truth = data.labels[data.unlabelled].numpy()
    everything = Proposal(predicted=truth, confidence=np.ones(len(truth)), accepted=np.ones(len(truth), bool),
                          truth=truth, temperature=1.0, thresholds=np.zeros(len(data.classes)))
    for book in books if isinstance(books, (list, tuple)) else [books]:
        if isinstance(book, PseudoLabels):
            book.ensure(len(truth), truth)
            book.update(everything, 1)


def _trainer(config: Config, data: TrainingData, folder: str) -> Trainer:
    trainer = Trainer(config, data, folder, progress=False)
    trainer.method.train()
    pseudo_label_everything(trainer.method, data)
    return trainer


def notes_style_batches(trainer: Trainer, data: TrainingData, pixels: np.ndarray):
    """Endless (labelled images, labels, unlabelled images, positions) from zipped per-item loaders."""
    train = trainer.config.train
    labels = data.labels.numpy()
    labelled = TorchvisionStyleImages(pixels[data.labelled], labels[data.labelled], data.labelled.numpy())
    pool = trainer.method.unlabelled_pool()
    positions = np.arange(len(data.unlabelled)) if pool is None else pool.numpy()
    unlabelled = TorchvisionStyleImages(pixels[data.unlabelled[positions]], labels[data.unlabelled[positions]],
                                        positions)
    use_unlabelled = len(positions) > 0 and train.unlabelled_batch_size > 0
    while True:  # the notes start both loaders again whenever the shorter one runs out
        loaders = [DataLoader(labelled, batch_size=train.batch_size, shuffle=True)]
        if use_unlabelled:
            loaders.append(DataLoader(unlabelled, batch_size=train.unlabelled_batch_size, shuffle=True))
        for parts in zip(*loaders):
            (images, targets, _), *rest = parts
            if rest:
                unlabelled_images, _, unlabelled_positions = rest[0]
            else:
                unlabelled_images = torch.empty((0, *images.shape[1:]))
                unlabelled_positions = torch.empty(0, dtype=torch.long)
            yield images, targets, unlabelled_images, unlabelled_positions


def _breakdown(seconds: float, samples: int, steps: int, data_seconds: float, view_seconds: float) -> dict:
    return {"samples_per_second": samples / seconds, "seconds_per_step": seconds / steps,
            "data_seconds_per_step": data_seconds / steps, "view_seconds_per_step": view_seconds / steps,
            "compute_seconds_per_step": (seconds - data_seconds - view_seconds) / steps}


def time_pipeline(config: Config, data: TrainingData, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(config, data, folder)
        trainer.augment = views = TimedViews(trainer.augment)
        draw, data_seconds = trainer._batch, [0.0]

        def timed_draw(progress):
            tick = time.perf_counter()
            batch = draw(progress)
            data_seconds[0] += time.perf_counter() - tick
            return batch

        trainer._batch = timed_draw
        samples = 0
        for index in range(warmup + steps):
            if index == warmup:
                samples, data_seconds[0], views.seconds, start = 0, 0.0, 0.0, time.perf_counter()
            samples += trainer.step(PROGRESS)[1]
        seconds = time.perf_counter() - start
    return _breakdown(seconds, samples, steps, data_seconds[0], views.seconds)


def time_notes_loop(config: Config, data: TrainingData, pixels: np.ndarray, steps: int, warmup: int) -> dict:
    previous = get_track_meta()
    set_track_meta(False)  # spares the baseline MONAI's metadata bookkeeping: a conservative ratio
    try:
        with tempfile.TemporaryDirectory() as folder:
            trainer = _trainer(config, data, folder)
            views = TimedViews(PerItemAugmenter(config.augment, tuple(data.images.shape[2:]), seed=config.seed))
            batches = notes_style_batches(trainer, data, pixels)
            samples, data_seconds = 0, 0.0
            for index in range(warmup + steps):
                if index == warmup:
                    samples, data_seconds, views.seconds, start = 0, 0.0, 0.0, time.perf_counter()
                tick = time.perf_counter()
                images, targets, unlabelled, positions = next(batches)
                data_seconds += time.perf_counter() - tick
                device = trainer.device
                batch = StepBatch(labelled=images.to(device), labels=targets.to(device),
                                  unlabelled=unlabelled.to(device), unlabelled_index=positions,
                                  augment=views, progress=PROGRESS)
                trainer.step_on(batch)
                samples += len(targets) + len(positions)
            seconds = time.perf_counter() - start
    finally:
        set_track_meta(previous)
    return _breakdown(seconds, samples, steps, data_seconds, views.seconds)


def training_throughput(config: Config, data: TrainingData, steps: int = 30, warmup: int = 5) -> dict:
    """Samples per second of the pipeline and of the notes-style loop for ``config``'s method."""
    pixels = (data.images[:, 0] * 255).round().to(torch.uint8).numpy()  # MNIST's bytes, exactly
    pipeline = time_pipeline(config, data, steps, warmup)
    notes = time_notes_loop(config, data, pixels, steps, warmup)
    return {"method": config.method_name, "device": str(config.train.device), "steps": steps,
            "pipeline": pipeline, "notes_loop": notes,
            "ratio": pipeline["samples_per_second"] / notes["samples_per_second"]}
