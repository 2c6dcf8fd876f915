"""Co-teaching (Han et al. 2018) over calibrated pseudo-labels.

Two networks see the same batches.  On each batch every network ranks the
pseudo-labelled scans by its own loss and keeps the small-loss fraction
``1 - R(t)``; those scans update the OTHER network, so each filters label noise for
its peer.  The forget rate follows Han et al.: ``R(t) = forget_rate * min(t / T_k, 1)``
with t and ``T_k = forget_ramp`` as fractions of training.  Labelled scans (trusted)
always train both networks.  Pseudo-labels come in rounds, as in self-training, from
the calibrated predictions of the ensemble (mean probability of the two networks),
which is also the network used for calibration and scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import CalibratedPseudoLabelRounds, Ensemble, PseudoLabels


def forget_rate(progress: float, tau: float, ramp: float) -> float:
    """Han et al.'s schedule ``R(t) = tau * min(t / T_k, 1)``; ``ramp`` = T_k as a fraction of training."""
    return tau if ramp <= 0 else tau * min(progress / ramp, 1.0)


@register
class CoTeaching(CalibratedPseudoLabelRounds, Method):
    name = "co_teaching"

    @dataclass
    class Params:
        rounds: int = 5
        target_precision: float = 0.0  # 0 = use calibrate.target_precision
        forget_rate: float = 0.1  # tau: fraction of pseudo-labelled scans dropped once ramped up
        forget_ramp: float = 0.2  # T_k: fraction of training over which the forget rate grows
        unlabelled_weight: float = 1.0
        pseudo_view: str = "strong"  # view of pseudo-labelled scans: weak | strong

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.rounds < 1:
            raise ValueError(f"method.co_teaching.rounds must be >= 1, got {params.rounds}")
        if not 0.0 <= params.forget_rate < 1.0:
            raise ValueError(f"method.co_teaching.forget_rate must be in [0, 1), got {params.forget_rate}")
        if params.pseudo_view not in ("weak", "strong"):
            raise ValueError(f"method.co_teaching.pseudo_view must be weak or strong, got '{params.pseudo_view}'")
        self.rounds = params.rounds
        self.partner = build_network()
        self.ensemble = Ensemble([self.network, self.partner])
        self.pseudo = PseudoLabels()

    def prediction_network(self):
        return self.ensemble

    def losses(self, batch: StepBatch):
        """Cross-entropy on labelled scans for both networks, plus cross-update on small-loss pseudo-labels.

        Returns
        -------
        dict
            ``loss``, ``supervised`` and ``unsupervised`` (means over the two networks),
            ``forget_rate`` R(t) and ``kept_fraction`` (pseudo-labelled scans each network kept).
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled_index)
        parts = [batch.augment.weak(batch.labelled)]
        if n_unlabelled:
            view = batch.augment.strong if self.params.pseudo_view == "strong" else batch.augment.weak
            parts.append(view(batch.unlabelled))
        images = torch.cat(parts)
        logits = [network(images) for network in self.ensemble.members]
        supervised = [F.cross_entropy(out[:n_labelled], batch.labels) for out in logits]
        loss = supervised[0] + supervised[1]
        terms = {"supervised": (supervised[0] + supervised[1]).detach() / 2}
        if n_unlabelled:
            targets = self.pseudo.labels[batch.unlabelled_index].to(batch.labels.device)
            per_sample = [F.cross_entropy(out[n_labelled:], targets, reduction="none") for out in logits]
            rate = forget_rate(batch.progress, self.params.forget_rate, self.params.forget_ramp)
            keep = max(1, int(round((1.0 - rate) * n_unlabelled)))
            # Each network's small-loss picks train its peer.
            chosen = [torch.argsort(losses.detach())[:keep] for losses in per_sample]
            cross = [per_sample[0][chosen[1]].mean(), per_sample[1][chosen[0]].mean()]
            loss = loss + self.params.unlabelled_weight * (cross[0] + cross[1])
            terms["unsupervised"] = (cross[0] + cross[1]).detach() / 2
            terms["forget_rate"] = torch.tensor(rate)
            terms["kept_fraction"] = torch.tensor(keep / n_unlabelled)
        terms["loss"] = loss
        return terms

    def artifacts(self, scan_ids, classes):
        if self.pseudo.labels.numel() == 0:
            return {}
        return {"pseudo_labels": self.pseudo.table(scan_ids, classes)}
