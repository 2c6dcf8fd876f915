"""A clock for tests of time budgets, moved only by what the test says each part of a run costs.

Speed is measured in benchmarks, not in timed tests: on the real clock a budget test passes or
fails with how busy the machine is (CI once read 3.4 s of a 3 s budget). On this clock it tests
the arithmetic itself (what training leaves for its end, its evaluations and calibration), and
can be held to the budget exactly.
"""

from __future__ import annotations

import types

import pipeline.cli
import pipeline.stages.run
import pipeline.trainer
from pipeline.trainer import Trainer


class RunClock:
    """Stands in for ``time`` where a command, the run stage and the trainer read it.

    Parameters
    ----------
    monkeypatch
        pytest's fixture; everything is undone after the test.
    step, scan, figure, checkpoint
        Seconds an optimiser step, one scan's prediction (the trainer's: evaluations, the summary's
        test scans, its first timing), drawing the curves, and writing the model cost on this
        clock. Anything else costs nothing unless :meth:`charge` says so.
    """

    def __init__(self, monkeypatch, step: float = 0.05, scan: float = 0.001, figure: float = 0.1,
                 checkpoint: float = 0.1):
        self.now = 1000.0
        self.monkeypatch = monkeypatch
        reading = types.SimpleNamespace(perf_counter=self.read, monotonic=self.read)
        for module in (pipeline.cli, pipeline.stages.run, pipeline.trainer):
            monkeypatch.setattr(module, "time", reading)
        self.charge(Trainer, "step", lambda *args: step)
        self.charge(pipeline.trainer, "predict_logits", lambda network, images, *args, **kwargs: scan * len(images))
        self.charge(Trainer, "_write_curves", lambda *args: figure)
        self.charge(pipeline.trainer, "save_checkpoint", lambda *args, **kwargs: checkpoint)

    def read(self) -> float:
        return self.now

    def charge(self, owner, name: str, cost) -> None:
        """Make ``owner.name`` move the clock by ``cost(*its arguments)`` seconds each call."""
        original = getattr(owner, name)

        def charged(*args, **kwargs):
            result = original(*args, **kwargs)
            self.now += cost(*args, **kwargs)
            return result

        self.monkeypatch.setattr(owner, name, charged)
