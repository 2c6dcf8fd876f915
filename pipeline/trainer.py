"""One trainer for every method: sampling, optimiser, schedule, evaluation, logging.

Data stays in memory as tensors; batches are drawn by indexing.  Methods compute
losses (``pipeline.methods``); only this module steps the optimiser.  Under torchrun
the same loop runs in every process (``pipeline.distributed``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from pipeline import distributed, ood
from pipeline.augment import BatchAugmenter
from pipeline.checkpoint import (
    RESUME_DIR,
    CheckpointError,
    build_method,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from pipeline.config import Config
from pipeline.data import SUBSETS, TrainingData
from pipeline.io import write_csv, write_json
from pipeline.methods.base import RoundContext, StepBatch
from pipeline.networks import forward_batch

log = logging.getLogger("pipeline.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


@torch.no_grad()
def predict_logits(network: nn.Module, images: torch.Tensor, device: torch.device,
                   batch_size: int | None = None) -> np.ndarray:
    """Logits of ``images`` in evaluation mode, in batches of ``batch_size`` (``forward_batch``'s by default)."""
    batch_size = batch_size or forward_batch(network, images.shape[1:])
    was_training = network.training
    network.eval()
    out = [network(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    network.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def refresh_batchnorm(network: nn.Module, images: torch.Tensor, device: torch.device,
                      batch_size: int | None = None) -> None:
    """Re-estimate batch-norm running statistics on clean images, in batches of ``batch_size``
    (``forward_batch``'s by default: the statistics are a cumulative average over batches, so small
    ones estimate them as well and run faster).

    Training sees augmented, noisy views; statistics gathered on them skew evaluation.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    batch_size = batch_size or forward_batch(network, images.shape[1:])
    was_training = network.training
    network.train()
    for i in range(0, len(images), batch_size):
        network(images[i:i + batch_size].to(device))
    network.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


REFRESH_VOXELS = 2 ** 23
REFRESH_SCANS = (256, 4096)
# What a run costs after training besides the predictions of calibration (the cache read again, a temperature
# fit, bootstrap intervals, plots) and the process's exit (1-2.5 s): 9.6 s in all on 4,000 generated 512 px
# JPEGs at 128 px, predictions of 4,100 scans about a third of it.
CALIBRATION_SECONDS = 9.0


def refresh_count(images: torch.Tensor) -> int:
    """How many scans re-estimate batch-norm statistics: about ``REFRESH_VOXELS`` voxels' worth,
    within ``REFRESH_SCANS``.

    A fixed count made volumes pay by size: at 28^3 one refresh over 1,486 scans took 3.3 s, and a
    3-minute run refreshes 8 or more times (each evaluation and round start), which left the
    Pi-model 106 of its 176 training seconds (VesselMNIST3D, draw 0 of the real panel on 2a3fef6).
    Statistics per channel pool every voxel, so a few hundred volumes estimate them as well as a
    few thousand.
    """
    low, high = REFRESH_SCANS
    return max(low, min(high, REFRESH_VOXELS // max(math.prod(images.shape[1:]), 1)))


def learning_rate_factor(progress: float, decay_last_fraction: float) -> float:
    """Constant, then linear decay to zero over the last ``decay_last_fraction`` of training."""
    if decay_last_fraction <= 0:
        return 1.0
    start = 1.0 - decay_last_fraction
    return 1.0 if progress < start else max(0.0, (1.0 - progress) / decay_last_fraction)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


def positive_auroc(logits: np.ndarray, labels: np.ndarray, positive: int) -> float:
    """AUROC of the positive class's score; NaN unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    is_positive = labels == positive
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, logits[:, positive] - np.delete(logits, positive, 1).max(1)))


@dataclass
class LoopState:
    """Where the training loop is: what a resumable state saves besides weights and random streams."""

    step: int = 0
    round_index: int = -1
    train_time: float = 0.0  # time in optimiser steps alone: samples per second are measured on it
    eval_time: float = 0.0
    slowest_eval: float = 0.0
    eval_every: int = 250
    samples: int = 0
    elapsed: float = 0.0  # wall seconds of the stage when saved
    sums: dict[str, float] = field(default_factory=dict)  # loss terms since the last evaluation
    count: int = 0


class Trainer:
    def __init__(self, config: Config, data: TrainingData, run_dir: Path, progress: bool = True):
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        self.world = distributed.world()
        self.progress = progress and self.world.main
        train = config.train
        if train.threads > 0:
            torch.set_num_threads(train.threads)
        else:  # processes on one machine share its cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world.local_size))
        torch.manual_seed(config.seed)
        self.device = resolve_device(train.device)
        if len(data.labelled) == 0:
            raise ValueError("the split has no labelled scans; training needs at least one per class")
        self.in_channels = data.images.shape[1]
        self.method = build_method(config, len(data.classes), self.in_channels).to(self.device)
        self.losses = distributed.wrap(self.method, config, len(data.labelled), self.world)
        seed = self.world.seed(config.seed)
        self.augment = BatchAugmenter(config.augment, data.spatial_dims, seed=seed)
        # One fused kernel for all parameters instead of a loop over them: the MLP ladder's optimiser
        # step at 128x128 went from 108 to 18 ms, the CNNs' from 3-9 to 2-4 (performance.md, speed levers).
        self.optimizer = torch.optim.AdamW(self.method.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.sampler = torch.Generator().manual_seed(seed + 1)
        # The same training scans re-estimate batch-norm statistics at every evaluation and round.
        pool = torch.cat([data.labelled, data.unlabelled])
        self.refresh_scans = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
                                  [:refresh_count(data.images)]]
        # a screening run's abnormal class, whose ranking of held-out scans is logged (AUROC)
        positive = config.data.positive_class
        self.positive = data.classes.index(positive) if positive in data.classes else None
        self.bfloat16 = train.precision == "bfloat16"
        self.steps_taken = 0
        self.predict_seconds = 0.0  # a scan's prediction: timed on a few at the start, then at each evaluation
        self.write_seconds = 0.0  # drawing the curves and writing the model, as the end does: timed at the start
        self.history: list[dict] = []
        self.round_log: list[dict] = []

    def subset_logits(self, subset: str) -> tuple[np.ndarray, np.ndarray]:
        index = getattr(self.data, subset)
        network = self.method.prediction_network()
        return predict_logits(network, self.data.images[index], self.device), self.data.labels[index].numpy()

    def _refresh(self) -> None:
        refresh_batchnorm(self.method.prediction_network(), self.data.images[self.refresh_scans], self.device)

    def _batch(self, progress: float) -> StepBatch:
        """This process's part of a step's batch, drawn from its own shards (all of it in one process)."""
        d, train, world = self.data, self.config.train, self.world
        labelled = distributed.shard(d.labelled, world)
        pick = labelled[torch.randint(len(labelled), (world.share(train.batch_size),), generator=self.sampler)]
        pool = self.method.unlabelled_pool()
        positions = distributed.shard(torch.arange(len(d.unlabelled)) if pool is None else pool, world)
        n_unlabelled = world.share(train.unlabelled_batch_size)
        if len(positions) and n_unlabelled > 0:
            chosen = positions[torch.randint(len(positions), (n_unlabelled,), generator=self.sampler)]
        else:
            chosen = torch.empty(0, dtype=torch.long)
        return StepBatch(
            labelled=d.images[pick].to(self.device),
            labels=d.labels[pick].to(self.device),
            unlabelled=d.images[d.unlabelled[chosen]].to(self.device),
            unlabelled_index=chosen,
            augment=self.augment,
            progress=progress,
        )

    def step(self, progress: float) -> tuple[dict[str, torch.Tensor], int]:
        """One optimiser step on a freshly drawn batch: (loss terms, samples drawn)."""
        train = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = train.lr * learning_rate_factor(progress, train.decay_last_fraction)
        batch = self._batch(progress)
        return self.step_on(batch), len(batch.labels) + len(batch.unlabelled_index)

    def step_on(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Back-propagate the method's loss on ``batch`` and step the optimiser."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            terms = self.losses(batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.steps_taken}; "
                                     "lower train.lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.method.after_step()
        self.steps_taken += 1
        return terms

    def _evaluate(self, step: int, elapsed: float, round_index: int, sums: dict, count: int) -> dict:
        """Log a row of metrics (rank 0; the other processes return ``{}``)."""
        losses = distributed.average({k: v / max(count, 1) for k, v in sums.items()})
        if not self.world.main:
            return {}
        self._refresh()
        row = {"step": step, "round": round_index, "elapsed_s": round(elapsed, 2),
               "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(losses)
        tick = time.perf_counter()
        calibration_logits, calibration_labels = self.subset_logits("calibration")
        self.predict_seconds = (time.perf_counter() - tick) / max(len(self.data.calibration), 1)
        row["calibration_accuracy"] = accuracy(calibration_logits, calibration_labels)
        if self.positive is not None:  # how well the scans are ranked, whatever the threshold
            row["calibration_auroc"] = positive_auroc(calibration_logits, calibration_labels, self.positive)
        if self.config.train.eval_test:
            test_logits, test_labels = self.subset_logits("test")
            row["test_accuracy"] = accuracy(test_logits, test_labels)
            if self.positive is not None:
                row["test_auroc"] = positive_auroc(test_logits, test_labels, self.positive)
        self.history.append(row)
        return row

    def fit(self, resume: bool = False, deadline: float | None = None) -> dict:
        """Train until ``train.steps`` or, with ``train.minutes``, until the wall-clock budget is spent.

        The budget is the wall time of the whole training stage, round starts, evaluations and the
        final writing included: before each step, training stops unless that step, the evaluation
        it may bring and the end of the run still fit (:meth:`_seconds_to_end`). Evaluations are
        spread out when they cost over a tenth of the time. Every ``train.checkpoint_minutes`` the
        run folder gets a resumable state; ``resume=True`` continues from it (same step count, same
        budget, same random streams).

        ``deadline``: the ``time.monotonic()`` by which the whole command must end (``train.run_minutes``).
        The budget is then at most the time left, and training also leaves calibration its time
        (predicting the calibration and test scans, at the last evaluation's pace, and
        :data:`CALIBRATION_SECONDS`): preprocessing, and anything else that took longer than the plan
        foresaw, comes out of training's time, not out of the user's.
        """
        train = self.config.train
        method = self.method
        # Round hooks see rank 0's predictions, so every process makes the same pseudo-labels.
        context = RoundContext(self.data, self.config.calibrate, distributed.from_main(self.subset_logits))
        budget_s = train.minutes * 60.0
        calibrating = deadline is not None and not resume
        if calibrating and budget_s <= 0:
            log.info("training for %d steps, or until calibration's time in the run's %g minutes", train.steps,
                     train.run_minutes)
        elif calibrating:
            left = distributed.broadcast(deadline - time.monotonic())
            planned, budget_s = budget_s, min(budget_s, left)
            log.info("training budget %.0f s: what is left of the run's %g minutes; training ends in time for "
                     "calibration (its predictions and %.0f s)", budget_s, train.run_minutes, CALIBRATION_SECONDS)
            if planned > 0 and budget_s < 0.5 * planned:
                log.warning("training gets %.0f s of the %.0f s the plan foresaw: preprocessing took the rest; a "
                            "second run reuses the preprocessed scans, or give more minutes", budget_s, planned)
            if budget_s <= CALIBRATION_SECONDS:
                raise ValueError(f"the run's budget of {train.run_minutes:g} minutes is spent before training "
                                 f"({max(left, 0):.0f} s left); give more minutes (--minutes)")
        loop = self.restore() if resume else LoopState(eval_every=train.eval_every)
        total = None if budget_s > 0 else train.steps
        # A budget's bar counts seconds of it, so a rate (seconds a second) would say nothing.
        bar = tqdm(total=total or int(budget_s), initial=loop.step if total else int(loop.elapsed),
                   disable=not self.progress, desc=f"train {self.config.method_name}", unit="step",
                   bar_format=None if total else "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s of the budget"
                                                 "{postfix}")
        start = time.perf_counter() - loop.elapsed
        last_save = time.perf_counter()
        save_every = train.checkpoint_minutes * 60.0
        import pipeline.plots  # noqa: F401  # matplotlib's import (seconds) would pass for a slow evaluation
        if (budget_s > 0 or calibrating) and not self.predict_seconds:
            self._time_the_end()
        while True:
            if budget_s > 0:
                elapsed = time.perf_counter() - start
                after = self._calibration_seconds() if calibrating else 0.0
                progress = min(1.0, (elapsed + self._seconds_to_end(loop) + after) / budget_s)
                # clocks differ between processes; rank 0's decides rounds and the end
                progress = distributed.broadcast(progress)
            else:
                progress = loop.step / max(train.steps, 1)
                if calibrating:  # steps the user asked for, within the run's budget
                    after = self._calibration_seconds() + self._seconds_to_end(loop)
                    if distributed.broadcast(float(time.monotonic() + after >= deadline)):
                        log.warning("stopped at step %d of %d: the rest of the run's %g minutes is calibration's",
                                    loop.step, train.steps, train.run_minutes)
                        break
            if progress >= 1.0:
                break
            wanted_round = min(int(progress * method.rounds), method.rounds - 1)
            if wanted_round != loop.round_index:
                loop.round_index = wanted_round
                self.method.eval()
                if loop.round_index > 0:
                    self._refresh()
                info = method.start_round(loop.round_index, context)
                self.method.train()
                self.round_log.append({"round": loop.round_index, "step": loop.step, **info})
                log.info("round %d: %s", loop.round_index, {k: round(v, 4) for k, v in info.items()})
            tick = time.perf_counter()
            terms, used = self.step(progress)
            loop.train_time += time.perf_counter() - tick
            loop.samples += used
            loop.step += 1
            for key, value in terms.items():
                loop.sums[key] = loop.sums.get(key, 0.0) + float(value.detach())
            loop.count += 1
            bar.update(1 if total else int(time.perf_counter() - start) - bar.n)
            if loop.step % loop.eval_every == 0:
                tick = time.perf_counter()
                row = self._evaluate(loop.step, loop.train_time, loop.round_index, loop.sums, loop.count)
                if row:
                    self._write_curves()
                spent = distributed.broadcast(time.perf_counter() - tick)
                loop.eval_time += spent
                loop.slowest_eval = max(loop.slowest_eval, spent)
                if budget_s > 0 and loop.eval_time > 0.1 * (time.perf_counter() - start):
                    loop.eval_every *= 2  # evaluation took over a tenth of the time so far: look less often
                if row:
                    ranking = {"cal_auroc": f"{row['calibration_auroc']:.3f}"} if "calibration_auroc" in row else {}
                    bar.set_postfix(loss=f"{row['loss']:.3f}", cal_acc=f"{row['calibration_accuracy']:.3f}", **ranking)
                loop.sums, loop.count = {}, 0
            if save_every > 0 and time.perf_counter() - last_save >= save_every:
                loop.elapsed = time.perf_counter() - start
                self.save_resumable(loop)
                last_save = time.perf_counter()
        bar.close()
        if loop.count or loop.step == 0:  # steps since the last row, or no row yet: the same on every process
            self._evaluate(loop.step, loop.train_time, loop.round_index, loop.sums, loop.count)
        samples = distributed.total(loop.samples)
        summary = None
        if self.world.main:
            summary = self._summary(loop.step, loop.train_time, start, samples)
            if resume:
                summary["resumed"] = True
            self._write(summary)
            summary["wall_seconds"] = round(time.perf_counter() - start, 1)
            write_json(self.run_dir / "train_summary.json", summary)
            shutil.rmtree(self.run_dir / RESUME_DIR, ignore_errors=True)  # finished: nothing to resume
        return distributed.broadcast(summary)

    def _time_the_end(self, scans: int = 16) -> None:
        """What the end of the run costs, timed before the first step: a first prediction pace, from
        a few calibration scans, until the first evaluation times it, and the writing (the curves, the
        checkpoint, into a scratch folder), which no evaluation times in full. A budget that ends
        before its first evaluation still leaves the end's and calibration's work its time (rank 0
        decides the end)."""
        if not self.world.main:
            return
        index = self.data.calibration[:scans]
        if len(index):
            tick = time.perf_counter()
            predict_logits(self.method.prediction_network(), self.data.images[index], self.device)
            self.predict_seconds = (time.perf_counter() - tick) / len(index)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".timing-", dir=self.run_dir) as scratch:
            tick = time.perf_counter()
            self._write_curves(Path(scratch))
            save_checkpoint(Path(scratch), self.method, self.config, self.data.classes, self.in_channels)
            self.write_seconds = time.perf_counter() - tick

    def _seconds_to_end(self, loop: LoopState) -> float:
        """What training costs from here if it stops after one more step: that step (at the mean
        pace) and the evaluation it brings when due, then the end of the run. Each evaluation redraws
        the curves so far, so the slowest one measures the end's last evaluation, and again its
        writing (the curves, the checkpoint: at least what they cost at the start); the summary's test
        predictions come besides.

        Counting the next step and its evaluation matters: the check comes before them, and a
        budget that left the end alone ran past it by an evaluation (3.4 s of 3 in a CI run)."""
        step = loop.train_time / max(loop.step, 1)
        # before the first evaluation, its predictions and the writing timed at the start are what is known of one
        slowest = max(loop.slowest_eval, self.predict_seconds * len(self.data.calibration) + self.write_seconds)
        evaluation = slowest if (loop.step + 1) % loop.eval_every == 0 else 0.0
        return step + evaluation + 2 * slowest + self.predict_seconds * len(self.data.test)

    def _calibration_seconds(self) -> float:
        """What calibration after training will take: predictions of the calibration and test scans and
        of the out-of-distribution bank's and calibration's features (``pipeline.ood``), at the pace
        last timed, and :data:`CALIBRATION_SECONDS` besides."""
        pool = len(self.data.labelled) + len(self.data.unlabelled)
        scans = 2 * len(self.data.calibration) + len(self.data.test) + min(pool, ood.MAX_BANK)
        return CALIBRATION_SECONDS + self.predict_seconds * scans

    # ------------------------------------------------------------------------ resuming

    def save_resumable(self, loop: LoopState) -> None:
        """Everything :meth:`restore` needs to carry on (rank 0 writes it)."""
        if not self.world.main:
            return
        optimiser = self.optimizer.state_dict()
        tensors = {f"method.{k}": v for k, v in self.method.state_dict().items()}
        for index, moments in optimiser["state"].items():
            tensors.update({f"optimizer.{index}.{k}": torch.as_tensor(v) for k, v in moments.items()})
        tensors.update({f"extra.{k}": v for k, v in self.method.resume_state().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.sampler"] = self.sampler.get_state()
        tensors["rng.augment"] = self.augment.generator.get_state()
        save_training_state(self.run_dir, tensors, {
            "loop": dataclasses.asdict(loop),
            "optimizer_param_groups": optimiser["param_groups"],
            "history": self.history,
            "round_log": self.round_log,
            "config": self.config.to_dict(),
            "subset_sizes": {name: len(getattr(self.data, name)) for name in SUBSETS},
        })

    def restore(self) -> LoopState:
        """Load the run folder's resumable state into this trainer; return the loop's state."""
        tensors, info = load_training_state(self.run_dir)
        sizes = {name: len(getattr(self.data, name)) for name in SUBSETS}
        if info["subset_sizes"] != sizes:
            raise CheckpointError(f"{self.run_dir}: the data changed since the run was saved (subset sizes "
                                  f"{info['subset_sizes']} then, {sizes} now); start the run again")

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.method.load_state_dict(part("method."))
        self.method.load_resume_state(part("extra."))
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in part("optimizer.").items():
            index, name = key.split(".", 1)
            moments.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": moments, "param_groups": info["optimizer_param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.sampler.set_state(tensors["rng.sampler"])
        self.augment.generator.set_state(tensors["rng.augment"])
        self.history, self.round_log = info["history"], info["round_log"]
        loop = LoopState(**info["loop"])
        self.steps_taken = loop.step
        log.info("resuming %s at step %d (%.0f s of wall time used)", self.run_dir, loop.step, loop.elapsed)
        return loop

    def _summary(self, step: int, train_time: float, start: float, samples: int) -> dict:
        test_logits, test_labels = self.subset_logits("test")
        return {
            "method": self.config.method_name,
            "steps": step,
            "train_seconds": round(train_time, 1),
            "wall_seconds": round(time.perf_counter() - start, 1),
            "samples_per_second": round(samples / max(train_time, 1e-9), 1),
            "calibration_accuracy": self.history[-1]["calibration_accuracy"],
            "test_accuracy": accuracy(test_logits, test_labels),
            **({"test_auroc": positive_auroc(test_logits, test_labels, self.positive)}
               if self.positive is not None else {}),
            "n_labelled": len(self.data.labelled),
            "n_unlabelled": len(self.data.unlabelled),
            "n_calibration": len(self.data.calibration),
            "n_test": len(self.data.test),
            **({"processes": self.world.size} if self.world.size > 1 else {}),
        }

    def _write_curves(self, folder: Path | None = None) -> None:
        """``metrics.csv`` and ``training_curves.png`` so far, so a long run can be watched (in the
        run folder unless ``folder`` is given)."""
        from pipeline.plots import plot_training_curves

        folder = self.run_dir if folder is None else folder
        history = pd.DataFrame(self.history)
        write_csv(folder / "metrics.csv", history)
        plot_training_curves(history, folder / "training_curves.png",
                             title=f"{self.config.name}: {self.config.method_name}")

    def _write(self, summary: dict) -> None:
        run = self.run_dir
        save_checkpoint(run, self.method, self.config, self.data.classes, self.in_channels,
                        extra={"train_summary": summary})
        self._write_curves()
        if self.round_log:
            write_csv(run / "rounds.csv", pd.DataFrame(self.round_log))
        unlabelled_ids = [self.data.scan_ids[i] for i in self.data.unlabelled.tolist()]
        for name, frame in self.method.artifacts(unlabelled_ids, self.data.classes).items():
            write_csv(run / f"{name}.csv", frame)
        write_json(run / "train_summary.json", summary)
