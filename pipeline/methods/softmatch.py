"""SoftMatch (Chen et al. 2023): FixMatch whose pseudo-labels are weighted, not thresholded.

Every weak-view pseudo-label trains the strong view, weighted 1 where its top probability reaches
the running mean of the top probability on the pool, and below that by a Gaussian of the distance,
whose sd is ``gaussian_sd`` times the running sd (``confidence.ConfidenceAverages.soft_weights``): no
confident scan is lost to a fixed bar, and an unsure one teaches little. The paper's uniform
alignment is replaced by alignment to the pool's own estimated class mix, as in ``freematch``: a
screening pool is mostly healthy, and an even target would push it towards balance.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.methods import register
from pipeline.methods.freematch import FreeMatch


@register
class SoftMatch(FreeMatch):
    name = "softmatch"

    @dataclass
    class Params(FreeMatch.Params):
        gaussian_sd: float = 0.5  # the weighting Gaussian's sd, in running sds of the top probability

    def check_params(self, params) -> None:
        super().check_params(params)
        if params.gaussian_sd <= 0:
            raise ValueError(f"method.softmatch.gaussian_sd must be > 0, got {params.gaussian_sd}")

    def pseudo_targets(self, weak):
        confidence, targets = self.weak_probabilities(weak).max(dim=1)
        weights = self.averages.soft_weights(confidence, self.params.gaussian_sd)
        return targets, weights, {"weight_mean": weights.mean(), "mean_confidence": self.averages.top_mean.clone()}
