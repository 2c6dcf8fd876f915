"""The interface every method implements.

A method owns its networks and computes losses; it never steps the optimiser (the
trainer does).  Optional hooks cover what the other SSL families need: outer rounds
(self-training, co-training), a pool of unlabelled indices to draw from, updates
after each optimiser step (EMA teachers), several networks and decoders (as
submodules, so their parameters are trained and saved).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.augment import BatchAugmenter

if TYPE_CHECKING:
    from pipeline.config import CalibrateConfig
    from pipeline.data import TrainingData


@dataclass
class RoundContext:
    """What a method may use at the start of a round."""

    data: TrainingData
    calibrate: CalibrateConfig
    predict_subset: Callable[[str], tuple[np.ndarray, np.ndarray]]  # subset -> (logits, labels)


@dataclass
class StepBatch:
    """One training step's data, unaugmented; methods draw their own views."""

    labelled: torch.Tensor  # (B, C, *spatial)
    labels: torch.Tensor  # (B,)
    unlabelled: torch.Tensor  # (U, C, *spatial); U may be 0
    unlabelled_index: torch.Tensor  # (U,) positions within TrainingData.unlabelled
    augment: BatchAugmenter
    progress: float  # fraction of the training budget used, in [0, 1)


class Method(nn.Module):
    """Base class: a supervised learner that subclasses extend with unsupervised terms."""

    name: ClassVar[str] = ""

    @dataclass
    class Params:
        pass

    rounds: int = 1

    def __init__(self, params: Any, build_network: Callable[[], nn.Module], num_classes: int,
                 input_shape: tuple[int, ...]):
        """``build_network()`` returns a fresh classifier from ``[network]``; ``input_shape`` is
        (channels, *spatial) for methods that build networks of their own (ladder, VAE)."""
        super().__init__()
        self.params = params
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.network = build_network()

    def prediction_network(self) -> nn.Module:
        """The network that calibration and scoring use (saved in the checkpoint)."""
        return self.network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prediction_network()(images)

    def losses(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Loss terms; ``loss`` is the total the trainer back-propagates."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. to update an EMA teacher)."""

    def start_round(self, round_index: int, context: RoundContext) -> dict[str, float]:
        """Called when training enters round ``round_index``; returns numbers to log."""
        return {}

    def unlabelled_pool(self) -> torch.Tensor | None:
        """Positions within the unlabelled set to sample from; None means all of them."""
        return None

    def resume_state(self) -> dict[str, torch.Tensor]:
        """State outside the modules' weights that a resumed run needs: pseudo-label books
        (``self.pseudo``, one or a list) and an estimated pool prior (``self.pool_prior``)."""
        out: dict[str, torch.Tensor] = {}
        for index, book in enumerate(self._pseudo_books()):
            out.update({f"pseudo.{index}.{k}": v for k, v in book.state().items()})
        if getattr(self, "pool_prior", None) is not None:
            out["pool_prior"] = self.pool_prior
        return out

    def load_resume_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`resume_state` saved."""
        for index, book in enumerate(self._pseudo_books()):
            prefix = f"pseudo.{index}."
            book.load({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        if "pool_prior" in tensors:
            self.pool_prior = tensors["pool_prior"]

    def _pseudo_books(self) -> list:
        books = getattr(self, "pseudo", None)
        return books if isinstance(books, list) else [books] if books is not None else []

    def artifacts(self, scan_ids: list[str], classes: list[str]) -> dict[str, pd.DataFrame]:
        """Tables to write into the run folder (name -> frame); ``scan_ids`` are the unlabelled scans'."""
        return {}
