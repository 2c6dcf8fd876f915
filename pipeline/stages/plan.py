"""Plan stage: a fingerprint of the ingested data becomes the settings a run trains with.

As nnU-Net's experiment planner does for segmentation, the rules here turn what the data is
(2D or 3D, sizes and spacings, colour, intensity kind, class counts) into preprocessing,
network, batch sizes, augmentation, method and budget, each with its reason, so that a user
brings a folder and a labels file and no config. A short timing probe on this machine decides
how large the inputs may be for enough steps to fit the time budget. Whatever the user set in
a config or on the command line wins and is marked as theirs; ``plan.json`` records it all.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import PreprocessConfig
from pipeline.data import input_channels
from pipeline.fingerprint import (
    EIGHT_BIT,
    PERCENTILE_KINDS,
    planned_channels,
    planned_input_channels,
)

log = logging.getLogger("pipeline.stages.plan")

SIZES_2D = (28, 32, 48, 64, 96, 128, 160, 192, 224, 256)
SIZES_3D = (24, 28, 32, 48, 64, 96)
TARGET_STEPS = 1500  # the consistency methods were still gaining at 1,000 steps on every panel set
MIN_STEPS = 600
DEFAULT_MINUTES = 10.0
MIN_UNLABELLED_FOR_SSL = 100
# The default SSL method, trained where the pool is large enough except on 2D pictures: virtual
# adversarial training, level with the Pi-model (the default before it) where that gained, and level
# with supervised on covid_cxr, where the Pi-model's consistency term lost to it
# (benchmarks/real_variants.md, "Virtual adversarial training"). On the panel's 2D pictures the
# supervised baseline with mixup read level with it or ahead ("Mixup for the supervised baseline"),
# so the plan trains that there. The probe times it whatever trains, so that every method trains on
# the same inputs.
DEFAULT_METHOD = "vat"
# The parameters each consistency method was measured with on the panel, set wherever it trains
# (chosen by the plan or by the user): entropy minimisation sharpens decisions on the unlabelled
# scans, and the prior-alignment term holds the unlabelled predictions at the pool's own
# estimated class mix (not the labelled one), so a pool with another mix is not pushed to it.
TESTED_PARAMS = {
    "vat": {"consistency_weight": 1.0, "epsilon": 0.2, "entropy_weight": 0.3, "alignment_weight": 1.0},
    "pi_model": {"consistency_weight": 30.0, "entropy_weight": 0.3, "alignment_weight": 1.0},
}
# The supervised baseline mixes its labelled scans (mixup) on 2D pictures, where that lifted it by
# +0.013 test AUROC on PneumoniaMNIST and +0.041 on covid_cxr's radiographs; not on masks or volumes,
# where it read level on AdrenalMNIST3D and 0.02 lower on VesselMNIST3D (benchmarks/real_variants.md,
# "Mixup for the supervised baseline"). VAT does not mix: with it, level on PneumoniaMNIST and
# +0.02 on covid_cxr, still behind this baseline on both, which the plan trains on 2D pictures instead.
BASELINE_MIXUP_ALPHA = 0.75
DEFAULT_METHOD_PARAMS = TESTED_PARAMS[DEFAULT_METHOD]
# Where fewer than TARGET_STEPS Pi-model steps fit, the first quarter of the budget trains on the
# labelled scans alone: a Pi-model step costs several labelled ones, and in a few hundred steps the
# network never fits its labelled scans (+0.022 test AUROC over 6 such 3D draws). Where enough steps
# fit, the warm-up cost up to 0.04 (benchmarks/real_variants.md). Measured for the Pi-model only:
# VAT gained as much on AdrenalMNIST3D's draws of under 1,500 steps without one.
SHORT_RUN_WARMUP = 0.25
WARMUP_METHOD = "pi_model"


# ---------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Planned settings (``section.key`` -> value) with a reason for each."""

    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    probe: list[dict[str, Any]] = field(default_factory=list)  # steps timed per size and batch
    precision_probe: list[dict[str, Any]] = field(default_factory=list)  # a step in each precision
    preprocess_seconds: float | None = None  # foreseen before training, where the budget includes it

    def set(self, key: str, value: Any, reason: str) -> None:
        self.settings[key] = value
        self.reasons[key] = reason

    def nested(self) -> dict[str, Any]:
        """The settings as a nested dict, the form ``load_config(base=...)`` takes."""
        out: dict[str, Any] = {}
        for key, value in self.settings.items():
            table = out
            *parents, leaf = key.split(".")
            for part in parents:
                table = table.setdefault(part, {})
            table[leaf] = value
        return out

    def record(self, fingerprint: dict[str, Any], user: dict[str, Any], config) -> dict[str, Any]:
        """JSON for ``plan.json``: every planned or user-set value, with who set it and why."""
        from pipeline.config import flat_keys

        resolved = flat_keys(config.to_dict())
        entries = {}
        for key in sorted(set(self.settings) | set(user)):
            if key in user:
                entries[key] = {"value": user[key], "set_by": "user",
                                "planned": self.settings.get(key), "reason": self.reasons.get(key, "")}
            else:
                entries[key] = {"value": resolved.get(key, self.settings[key]), "set_by": "plan",
                                "reason": self.reasons[key]}
        return {"fingerprint": fingerprint, "settings": entries, "probe": self.probe,
                "precision_probe": self.precision_probe, "preprocess_seconds_foreseen": self.preprocess_seconds}


def _fmt(size) -> str:
    return "x".join(str(int(v)) for v in size)


def make_plan(fp: dict[str, Any], minutes: float | None = None, method: str | None = None,
              probe: bool = True, fixed: dict[str, Any] | None = None,
              preprocessing: Callable[[dict[str, Any]], float] | None = None) -> Plan:
    """Rules from fingerprint to settings.

    Parameters
    ----------
    fp
        :func:`pipeline.fingerprint.fingerprint` of the data.
    minutes
        The user's training budget (wall time); None plans the default.
    method
        The user's method, if they chose one. The default method's settings are planned only where
        it is the method that trains; the probe times the default method whatever the choice, so
        that every method trains on the same inputs.
    probe
        Time training steps on this machine to choose the input size (off: the size rules
        alone, for tests and dry runs).
    fixed
        Settings the user set (flat keys). Where their input size, batch sizes or precision
        differ from the plan's, a step of the run they will train is timed too, and what depends
        on the steps that fit (the warm-up, how often to evaluate) is planned from it.
    preprocessing
        Where ``minutes`` must also pay for preprocessing the scans (a whole command's budget): the
        seconds foreseen for it, given preprocessing settings (``PreprocessConfig`` fields). It is
        asked once, for the largest input size considered (resampling costs most there), and the
        steps are planned for what is left.
    """
    plan = Plan()
    dims = fp["spatial_dims"]
    median = fp["size"]["median"]
    kind = fp["intensity"]["kind"]
    pictures = dims == 2 and kind != "binary_mask"  # where the panel's evidence differs from masks and volumes
    if minutes is None:
        minutes = DEFAULT_MINUTES
        plan.set("train.minutes", minutes, f"{minutes:g} minutes: the default budget of a planned run")

    # ---- intensity and channels
    if kind == "binary_mask":
        plan.set("preprocess.intensity", "minmax", "binary masks: scaled to 0-1 as they are")
    elif kind == "8bit_picture":
        plan.set("preprocess.intensity", "range", "8-bit pictures: the fixed 0-255 range keeps brightness "
                 "comparable between scans")
        plan.set("preprocess.intensity_range", [0.0, 255.0], "8-bit pictures")
    elif kind == "ct_like":
        plan.set("preprocess.intensity", "ct_window_channels", "CT-like intensities (Hounsfield units): the brain, "
                 "soft-tissue, lung and bone windows, a channel each, so that tissues tens of HU apart (blood and "
                 "brain) stay apart and no range is flattened")
    else:
        stored = fp.get("stored_dtypes") or {}
        mixed = (f"; the scans are stored as {', '.join(f'{n} {dtype}' for dtype, n in sorted(stored.items()))}: "
                 "no one range fits them all" if len(stored) > 1 and set(stored) & set(EIGHT_BIT) else "")
        plan.set("preprocess.intensity", "percentile", f"{PERCENTILE_KINDS.get(kind, kind)}: each scan's "
                 f"0.5-99.5th percentiles map to 0-1{mixed}")
        plan.set("preprocess.intensity_percentiles", [0.5, 99.5], "robust to a few extreme voxels")
    if dims == 3:
        volumes = planned_channels(fp)
        reason = ("one volume a file" if volumes == 1 else
                  f"{volumes} volumes a file (sequences of one region): a channel each, each scaled on its own")
        if sequences := fp.get("sequences"):
            plan.set("preprocess.sequences", sequences, f"each case's {', '.join(sequences)} volumes, as "
                     "ingest found them, read as one scan in this order; score reads a new folder's cases so")
            reason = (f"{volumes} sequences a case (each in a file or series of its own): a channel each, each "
                      f"scaled on its own, resampled onto the finest sequence's voxel grid")
        if len(fp["channels"]) > 1:
            counts = sorted(fp["channels"].items(), key=lambda item: -item[1])
            reason += ("; files holding another number are left out (" +
                       ", ".join(f"{n} of {k} volumes" for k, n in counts) + ")")
        plan.set("preprocess.channels", volumes, reason)
    else:
        colour = planned_channels(fp) == 3
        plan.set("preprocess.channels", 3 if colour else 1,
                 f"{fp['colour_fraction']:.0%} of sampled scans have colour" +
                 ("" if colour else ("; grey or grey stored as RGB: one channel" if fp["channels"].get("3") or
                                     fp["channels"].get("4") else "")))

    # ---- geometry
    finest = None  # the median voxel side, when volumes' spacings vary and they are resampled
    if dims == 3:
        spacing = fp.get("spacing")
        if spacing and np.allclose(spacing["min"], spacing["max"], rtol=0.01):
            plan.set("preprocess.target_spacing", [], f"every volume has spacing {_fmt_mm(spacing['median'])}: "
                     "no resampling")
            extent = median
        elif spacing:
            finest = float(np.median(spacing["median"]))  # the median voxel side
            extent = [m * s / finest for m, s in zip(median, spacing["median"])]
        else:
            extent = median
        plan.set("preprocess.orientation", "RAS", "volumes reoriented by their affine so that every scan "
                 "has the same axis order")
        # No larger than the fewest voxels of a side, even for a few thick slices of one spacing: sized
        # by their field of view instead, generated MRI slabs (192 x 192 x 20) were planned 64^3 and
        # lost to 24^3 on all 3 draws (benchmarks/real_variants.md, "Thick-slice volumes").
        candidates = [s for s in SIZES_3D if s <= max(min(extent), SIZES_3D[0])]
    else:
        candidates = [s for s in SIZES_2D if s <= max(min(median), SIZES_2D[0])]
    user_sides = _user_sides(fixed or {}, dims)
    if user_sides:
        # The user's size is the size: the network, batches and steps are planned for it (timed at its
        # longest side, so the estimate never gives more steps than the run gets).
        candidates = [max(user_sides)]
    uniform = fp["all_same_size"]
    # Timed with the default method whatever the user chose, so that runs of different methods on
    # the same data (a supervised baseline, say) train on the same inputs and network.
    ordered = _ordered_sizes(candidates, dims)
    if preprocessing is not None:
        largest = user_sides or [ordered[0]] * dims
        trial = {key.split(".", 1)[1]: value for key, value in plan.settings.items() if key.startswith("preprocess.")}
        trial.update(spatial_size=largest, resize="resize")
        if finest is not None:
            trial["target_spacing"] = [_resampled_side(fp, median, finest, max(largest))] * 3
        plan.preprocess_seconds = round(preprocessing(trial), 1)
        # Steps are planned for what preprocessing leaves; a tenth at least, where it would leave
        # nothing: the trainer, not the plan, refuses a run with no time left.
        minutes = max(minutes - plan.preprocess_seconds / 60, minutes / 10)
    precision, precision_reason, precision_probe = _choose_precision(ordered[0], dims, fp, probe)
    plan.set("train.precision", precision, precision_reason)
    chosen, (batch_scale, batches), probes = _choose_size(candidates, dims, kind, fp, minutes, probe, precision)
    plan.probe, plan.precision_probe = probes, precision_probe
    if finest is not None:
        # Resampled straight to the resolution the network sees: the median field of view's
        # shortest side across the input. Resampling to the median voxel and resizing after made
        # finer volumes than the input needs (162 ms a scan for 128^3 heads, most of scoring).
        spacing = fp["spacing"]
        view = [m * s for m, s in zip(median, spacing["median"])]
        side = _resampled_side(fp, median, finest, chosen)
        plan.set("preprocess.target_spacing", [side] * 3, f"spacings vary ({_fmt_mm(spacing['min'])} to "
                 f"{_fmt_mm(spacing['max'])}): resampled to {_fmt_mm([side] * 3)}, the median scan's "
                 f"{_fmt_mm(view)} field of view across {chosen} voxels (the median voxel: {finest:.3g} mm)")
    size = user_sides or [chosen] * dims
    arch = _architecture(min(size), dims)  # an anisotropic input's shortest side sets the depth
    exact = uniform and [int(v) for v in median] == size
    plan.set("preprocess.spatial_size", size, "the user's size; network, batches and steps planned for it"
             if user_sides else _size_reason(size, median, chosen, batches, candidates, probes, minutes,
                                             plan.preprocess_seconds))
    plan.set("preprocess.resize", "pad_crop" if exact else "resize",
             "every scan already has this size" if exact else
             f"scans of {'one size' if uniform else 'different sizes'} ({_fmt(fp['size']['min'])} to "
             f"{_fmt(fp['size']['max'])}) resized to it")
    plan.set("network.channels", arch["channels"], arch["reason"])
    plan.set("network.stem_stride", arch["stem_stride"], arch["stem_reason"])
    plan.set("network.dropout", 0.1, "dropout in every method: a few hundred labels overfit without it")
    labelled, unlabelled = batches
    smaller = f", scaled by {batch_scale:g} so that more steps fit the budget" if batch_scale < 1 else ""
    capped = labelled < _scaled(_batch_sizes(chosen, dims, None), batch_scale)[0]
    plan.set("train.batch_size", labelled, f"labelled batch for {_fmt(size)} inputs{smaller}" + (
        f" (at most a 512th of the {_scans_in(fp, 'labelled'):,} labelled scans, a power of two, at least "
        f"{MIN_BATCH}: larger batches cost supervised 0.007-0.028 test AUROC on PneumoniaMNIST with 100 to 1,200 "
        "labels and gained nothing with 3,124)" if capped else ""))
    plan.set("train.unlabelled_batch_size", unlabelled, "twice the labelled batch: the unlabelled scans are "
             f"the larger pool{smaller}" if unlabelled else "no unlabelled scans")

    # ---- memory: every preprocessed scan is held in memory, as float32
    _cap_pool(plan, fp, size, input_channels(PreprocessConfig(channels=plan.settings["preprocess.channels"],
                                                              intensity=plan.settings["preprocess.intensity"])))

    # ---- augmentation
    if kind == "binary_mask":
        for key in ("strong_bias_field", "strong_gamma", "strong_noise"):
            plan.set(f"augment.{key}", 0.0, "binary masks: no MRI-like intensity changes or noise")
    if pictures:
        plan.set("augment.strong_bias_field", 0.0, "2D pictures: a bias field is an MRI volume artefact")

    # ---- method
    step_s = next((p["seconds_per_step"] for p in probes
                   if p["size"] == chosen and p["batches"] == list(batches)), None)
    user_run = _user_run(fixed or {}, chosen, batches, precision)
    if step_s and user_run is not None:
        run_size, run_batches, run_precision, run_network = user_run
        step_s = time_step(run_size, dims, fp, DEFAULT_METHOD, run_batches, precision=run_precision,
                           network=run_network)
        probes.append({"size": run_size, "batches": list(run_batches), "precision": run_precision, "set_by": "user",
                       "seconds_per_step": round(step_s, 4), "steps_in_budget": _steps_in_budget(minutes, step_s)})
    expected = _steps_in_budget(minutes, step_s) if step_s else None
    n_unlabelled = _scans_in(fp, "unlabelled")
    if n_unlabelled < MIN_UNLABELLED_FOR_SSL:
        plan.set("method.name", "supervised", f"only {n_unlabelled:,} unlabelled scans (under "
                 f"{MIN_UNLABELLED_FOR_SSL:,}): semi-supervised terms would have too little to learn from")
    elif pictures:
        plan.set("method.name", "supervised", f"2D pictures: supervised with its labelled scans mixed (mixup) read "
                 f"level with {DEFAULT_METHOD} on PneumoniaMNIST (+0.002 test AUROC [-0.022, +0.026]) and ahead of it "
                 "on covid_cxr's radiographs (+0.043 [+0.007, +0.079], 15 draws), at a fraction of a step's cost "
                 f"(benchmarks/real_variants.md); the {n_unlabelled:,} unlabelled scans are still ranked by "
                 f"`suggest` for labelling. `method.name={DEFAULT_METHOD}` trains on them")
    else:
        plan.set("method.name", DEFAULT_METHOD, f"{n_unlabelled:,} unlabelled scans: virtual adversarial training "
                 "with entropy minimisation (once the pool's prior is estimated) and prior alignment: ahead of "
                 "supervised on AdrenalMNIST3D's masks (+0.08 test AUROC) and level on VesselMNIST3D's "
                 "(benchmarks/real.md)")
    # A consistency method's tested settings go with it, whoever chose it: a user who asks for the
    # default (or the Pi-model) on a small pool gets the tested one, and another method's plan holds none.
    trained = method or plan.settings["method.name"]
    for key, value in TESTED_PARAMS.get(trained, {}).items():
        plan.set(f"method.{trained}.{key}", value, "the method's tested default on the development panel")
    if trained == "supervised":
        if pictures:
            alpha = BASELINE_MIXUP_ALPHA
            plan.set("method.supervised.mixup_alpha", alpha, f"2D pictures: labelled scans mixed with each other "
                     f"(mixup, Beta({alpha}, {alpha})): +0.013 test AUROC for supervised on PneumoniaMNIST and "
                     "+0.041 on covid_cxr's radiographs (benchmarks/real_variants.md)")
        else:
            plan.set("method.supervised.mixup_alpha", 0.0, f"{'masks' if kind == 'binary_mask' else 'volumes'}: "
                     "labelled scans not mixed (mixup read level on AdrenalMNIST3D's masks and 0.02 lower on "
                     "VesselMNIST3D's; not measured on intensity volumes)")
    if trained == WARMUP_METHOD and expected is not None:
        steps = f"~{expected:,} steps of {DEFAULT_METHOD} fit"  # the probe's method: the default
        if expected < TARGET_STEPS:
            plan.set(f"method.{WARMUP_METHOD}.warmup", SHORT_RUN_WARMUP, f"{steps} (under {TARGET_STEPS:,}): the "
                     "first quarter trains on the labelled scans alone, so that the network fits them before the "
                     "consistency term starts")
        else:
            plan.set(f"method.{WARMUP_METHOD}.warmup", 0.0, f"{steps}: no warm-up (with {TARGET_STEPS:,} or more "
                     "steps it cost up to 0.04 test AUROC on the panel)")
    if expected is not None:
        other = (f"; {trained} evaluates at the same interval, and its steps, cheaper or dearer, make more or "
                 "fewer evaluations" if trained != DEFAULT_METHOD else "")
        plan.set("train.eval_every", max(25, expected // 8),
                 f"about 8 evaluations in the ~{expected:,} steps of {DEFAULT_METHOD} expected{other}")
    return plan


def _steps_in_budget(minutes: float, seconds_per_step: float) -> int:
    """Training steps that fit ``minutes`` at ``seconds_per_step``, with 10% of the budget kept in hand."""
    return int(minutes * 60 * 0.9 / seconds_per_step)


def _user_sides(fixed: dict[str, Any], dims: int) -> list[int] | None:
    """The input size the user set (``preprocess.spatial_size``, one side or one per axis), or None."""
    if "preprocess.spatial_size" not in fixed:
        return None
    side = fixed["preprocess.spatial_size"]
    return [int(v) for v in side] if isinstance(side, (list, tuple)) else [int(side)] * dims


def _user_run(fixed: dict[str, Any], size: int, batches: tuple[int, int], precision: str
              ) -> tuple[int, tuple[int, int], str, dict[str, Any]] | None:
    """(size, batches, precision, network) of the run the user's settings make, or None where it is the plan's.

    A user's input size is already the plan's ``size`` (``_user_sides``); their batches, precision
    and network may still differ from the plan's."""
    labelled = int(fixed.get("train.batch_size", batches[0]))
    # the unlabelled batch follows a user's labelled one as the plan's follows its own: twice it
    unlabelled = 2 * labelled if "train.batch_size" in fixed and batches[1] else batches[1]
    network = {key: fixed[f"network.{key}"] for key in ("channels", "stem_stride") if f"network.{key}" in fixed}
    run = (size, (labelled, int(fixed.get("train.unlabelled_batch_size", unlabelled))),
           str(fixed.get("train.precision", precision)))
    return None if run == (size, tuple(batches), precision) and not network else (*run, network)


def _resampled_side(fp: dict[str, Any], median, finest: float, size: int) -> float:
    """The voxel side (mm) at which the median scan's field of view spans ``size`` voxels across its
    shortest side, never finer than the median voxel ``finest``."""
    view = [m * s for m, s in zip(median, fp["spacing"]["median"])]
    return round(max(finest, min(view) / size), 3)


def _fmt_mm(values) -> str:
    return "x".join(f"{v:.3g}" for v in values) + " mm"


def _architecture(size: int, dims: int) -> dict[str, Any]:
    # Volumes downsample earlier: a full-resolution first stage at 64^3 made a step 13x slower
    # than a stride-2 stem (benchmarks/performance.md).
    stem = (1 if size < 96 else 2 if size < 192 else 4) if dims == 2 else (1 if size < 48 else 2 if size < 128 else 4)
    # Stages until the feature map is about 4 wide at the last one (pooling halves each stage).
    stages = max(3, min(5, int(math.log2(max(size // stem, 8) / 4)) + 1))
    # In 3 minutes twice these widths cost VAT two thirds of its steps and 0.007 test AUROC at 28 px,
    # and half them gained nothing (benchmarks/real_variants.md, "The network's width").
    widths = ([16, 32, 64, 128, 128] if dims == 3 else [32, 64, 128, 192, 256])[:stages]
    return {"channels": widths, "stem_stride": stem,
            "reason": f"{stages} stages for {size}-wide inputs: the last sees a map about "
                      f"{max(size // stem // 2 ** (stages - 1), 1)} wide",
            "stem_reason": ("no early downsampling at this size" if stem == 1 else
                            f"a stride-{stem} first convolution: {size}-wide inputs shrink before the costly stages")}


def _scans_in(fp: dict[str, Any], subset: str) -> int:
    return sum(fp["counts"].get(subset, {}).values())


def _batch_sizes(size: int, dims: int, fp: dict[str, Any] | None) -> tuple[int, int]:
    labelled = (64 if size <= 32 else 32) if dims == 2 else (32 if size <= 32 else 16)
    if fp is not None:
        if n_labelled := _scans_in(fp, "labelled"):
            labelled = min(labelled, few_labels_batch(n_labelled))
        if not _scans_in(fp, "unlabelled"):
            return labelled, 0
    return labelled, 2 * labelled


def _size_reason(size, median, chosen, batches, candidates, probes, minutes, preprocess_seconds=None) -> str:
    text = f"spatial_size {_fmt(size)}: median scan {_fmt(median)}"
    row = next((p for p in probes if p["size"] == chosen and p["batches"] == list(batches)), None)
    if row:
        after = f" (what is left after ~{preprocess_seconds:.0f} s to preprocess the scans)" if preprocess_seconds else ""
        text += f"; {row['steps_in_budget']:,} steps fit {minutes:.3g} minutes{after} at this size with batches " \
                f"{row['batches'][0]} + {row['batches'][1]} (probe: {row['seconds_per_step']:.3f} s a step)"
        larger = [p["size"] for p in probes if p["size"] > chosen]
        if larger:
            steps = max(p["steps_in_budget"] for p in probes if p["size"] == min(larger))
            text += f", at most {steps:,} at {min(larger)}"
    elif chosen < max(candidates, default=chosen):
        text += "; downsampled"
    return text


# The preprocessed scans may take this share of the machine's memory: stacking them doubles it for a
# moment, and training, evaluation and the worker processes need the rest.
MEMORY_SHARE = 0.25


def machine_memory() -> int:
    """Bytes of memory this process may use: the physical memory, or a container's (cgroup) limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _cap_pool(plan: Plan, fp: dict[str, Any], size: list[int], channels: int) -> None:
    """Where the scans at the planned size would not fit in memory, load a part of the unlabelled pool."""
    per_scan = channels * math.prod(size) * 4
    counts = {subset: sum(by_class.values()) for subset, by_class in fp["counts"].items()}
    pool, total = counts.get("unlabelled", 0), sum(counts.values())
    memory = machine_memory()
    budget = int(memory * MEMORY_SHARE)
    if total * per_scan <= budget:
        return
    others = total - pool
    cap = max(0, budget // per_scan - others)
    gib = 2**30
    plan.set("train.max_unlabelled", cap, f"{total:,} scans of {_fmt(size)} would take {total * per_scan / gib:.1f} GiB "
             f"in memory; {cap:,} of the {pool:,} unlabelled ones (a seeded draw) with the {others:,} labelled, "
             f"calibration and test scans fit {budget / gib:.1f} GiB, a quarter of this machine's "
             f"{memory / gib:.0f} GiB")
    if cap == 0:
        log.warning("plan: the %d labelled, calibration and test scans alone take %.1f GiB at %s, over a quarter of "
                    "this machine's memory; set a smaller preprocess.spatial_size", others, others * per_scan / gib,
                    _fmt(size))


BATCH_SCALES = (1.0, 0.5, 0.25)  # tried in turn at each size when too few steps fit
MIN_BATCH = 8
LABELLED_SHARE_A_BATCH = 1 / 512


def few_labels_batch(n_labelled: int) -> int:
    """The largest labelled batch for ``n_labelled`` labelled scans: at most a five-hundred-and-
    twelfth of them (a power of two), never under ``MIN_BATCH``: 8 up to 8,191 labels, then doubling
    as the labels double.

    With few labels, in a budget of minutes, the smallest batch made the best supervised model on
    PneumoniaMNIST at every label count measured (5 draws unless said): with 100 labels 8 + 16 beat
    64 + 128 by 0.028 (the Pi-model was level), with 400 labels 8 beat 32 by +0.009 [+0.003, +0.015]
    (VAT level, -0.002), with 1,200 labels 8 beat 16 by +0.007 and 16 beat 64 by 0.012 (3 draws, in
    as many steps at 8 as at 16: the gain is the noisier gradient, not more steps), and with 3,124
    labels 8, 16, 32 and 64 read within 0.004 of each other, 8 highest (3 draws). On the same pictures as a
    folder of photos at 128 px, 32 against 8 read -0.008 [-0.024, +0.007] with 100 labels
    (``benchmarks/real_variants.md``). Larger inputs, whose steps cost more, are scaled down further
    by the budget's probe.
    """
    return max(MIN_BATCH, 2 ** int(math.log2(max(n_labelled * LABELLED_SHARE_A_BATCH, 1))))


def _scaled(batches: tuple[int, int], scale: float) -> tuple[int, int]:
    labelled, unlabelled = batches
    smaller = max(MIN_BATCH, int(labelled * scale))
    return smaller, unlabelled * smaller // labelled


def _batch_options(full: tuple[int, int]) -> list[tuple[float, tuple[int, int]]]:
    """(scale, batches) to try in turn at one size, the most scans first: ``full`` scaled by each of
    ``BATCH_SCALES``, without repeats (scaling stops at a labelled batch of ``MIN_BATCH``).

    The unlabelled batch stays twice the labelled one. Cutting it to the labelled one's size
    when too few steps fit (8 + 8 against 8 + 16 for volumes) gained nothing back to back: 3 of
    6 paired draws on the two 3D panel sets (``benchmarks/real_variants.md``).
    """
    options: list[tuple[float, tuple[int, int]]] = []
    for scale in BATCH_SCALES:
        batches = _scaled(full, scale)
        if not options or batches != options[-1][1]:
            options.append((scale, batches))
    return options


def _ordered_sizes(candidates, dims) -> list[int]:
    """Candidate sizes to probe, largest first: at most 128 in 2D, 64 in 3D."""
    cap = 128 if dims == 2 else 64
    return sorted((s for s in candidates if s <= cap), reverse=True) or [min(candidates or [28])]


BFLOAT16_MIN_SPEEDUP = 1.2  # below it float32's extra precision is worth the time
PRECISION_REPEATS = 8


def _choose_precision(size, dims, fp, probe) -> tuple[str, str, list[dict[str, Any]]]:
    """bfloat16 autocast where this machine runs the default method's step at ``size`` at least
    ``BFLOAT16_MIN_SPEEDUP`` times faster in it (CPUs with AVX512-BF16 or AMX; without them
    bfloat16 is emulated and slower); returns (precision, reason, probe rows).

    Timed at the smallest batches ``_choose_size`` tries at ``size`` (where a budget is short of
    steps), over ``PRECISION_REPEATS`` steps. Three steps of the full batches, as before, put
    bfloat16's speedup at 28^3 anywhere from 1.12x to 1.39x on one machine within an hour, so two
    of ten VesselMNIST3D plans trained in float32 with about 60% of the steps; over eight steps it was 1.39x
    there, 1.42x at the smallest batches and 1.27x to 2.2x at every other panel size.
    """
    from pipeline.config import PRECISIONS

    if not probe:
        return "float32", "float32: no timing probe to show that bfloat16 is faster here", []
    smallest = _batch_options(_batch_sizes(size, dims, fp))[-1][1]
    seconds = {p: time_step(size, dims, fp, DEFAULT_METHOD, smallest, repeats=PRECISION_REPEATS, precision=p)
               for p in PRECISIONS}
    rows = [{"size": size, "batches": list(smallest), "precision": p, "seconds_per_step": round(t, 4)}
            for p, t in seconds.items()]
    speedup = seconds["float32"] / max(seconds["bfloat16"], 1e-9)
    timing = (f"a step of {smallest[0]} + {smallest[1]} scans at {size} took {seconds['bfloat16']:.3f} s in bfloat16, "
              f"{seconds['float32']:.3f} s in float32")
    if speedup >= BFLOAT16_MIN_SPEEDUP:
        return "bfloat16", f"bfloat16 autocast ({speedup:.1f}x faster here: {timing})", rows
    return "float32", f"float32 ({timing}: bfloat16 is not {BFLOAT16_MIN_SPEEDUP:g}x faster here)", rows


def _choose_size(candidates, dims, kind, fp, minutes, probe, precision: str = "float32"
                 ) -> tuple[int, tuple[float, tuple[int, int]], list[dict[str, Any]]]:
    """The largest candidate size (see ``_ordered_sizes``), with the largest batches (see
    ``_batch_options``), at which ``TARGET_STEPS`` fit the budget; returns (size, (batch scale,
    batches), probe rows). Where none does: the largest size at which ``MIN_STEPS`` fit, with the
    batches that give it the most steps.

    Every batch option is timed, not predicted from the full batches: a step's time is not
    proportional to the scans in it (at 24^3 the full batches' time, scaled down, put a step of
    8 + 8 at 0.095 s; training ran it in 0.045 s). The smallest batches are timed first, and where
    even they miss the target the larger ones of that size are not timed (a step of more scans is
    not faster): the probe's time comes out of the run's budget. Without a probe, the size rules alone.
    """
    ordered = _ordered_sizes(candidates, dims)
    if not probe:
        full = _batch_sizes(ordered[0], dims, fp)
        return ordered[0], (1.0, full), []
    results = []

    def timed(size: int, scale: float, batches: tuple[int, int]) -> dict[str, Any]:
        seconds = time_step(size, dims, fp, DEFAULT_METHOD, batches, precision=precision)
        steps = _steps_in_budget(minutes, seconds)
        results.append({"size": size, "batch_scale": scale, "batches": list(batches),
                        "seconds_per_step": round(seconds, 4), "steps_in_budget": steps})
        log.info("plan probe: %s at %d, batches %s: %.3f s a step, %s steps in %g minutes",
                 DEFAULT_METHOD, size, batches, seconds, f"{steps:,}", minutes)
        return results[-1]

    for size in ordered:
        options = _batch_options(_batch_sizes(size, dims, fp))
        if timed(size, *options[-1])["steps_in_budget"] < TARGET_STEPS:
            continue
        for scale, batches in options[:-1]:
            if timed(size, scale, batches)["steps_in_budget"] >= TARGET_STEPS:
                return size, (scale, batches), results
        return size, options[-1], results
    enough = [r for r in results if r["steps_in_budget"] >= MIN_STEPS]
    if enough:
        best = max((r for r in enough if r["size"] == enough[0]["size"]), key=lambda r: r["steps_in_budget"])
    else:
        best = min(results, key=lambda r: r["seconds_per_step"])
    return best["size"], (best["batch_scale"], tuple(best["batches"])), results


def time_step(size: int, dims: int, fp: dict[str, Any], method: str, batches: tuple[int, int] | None = None,
              repeats: int = 3, precision: str = "float32", network: dict[str, Any] | None = None) -> float:
    """Seconds of one training step of ``method`` at ``size`` on random inputs of the planned shape.

    ``network`` (``channels``, ``stem_stride``) replaces the planned architecture's values where given.
    """
    from pipeline.augment import BatchAugmenter
    from pipeline.config import AugmentConfig, NetworkConfig
    from pipeline.methods import StepBatch, get_method, method_params
    from pipeline.networks import network_factory

    arch = {**_architecture(size, dims), **(network or {})}
    labelled, unlabelled = batches or _batch_sizes(size, dims, fp)
    channels = planned_input_channels(fp)
    shape = [size] * dims
    build = network_factory(NetworkConfig(channels=arch["channels"], stem_stride=arch["stem_stride"],
                                          dropout=0.1), channels, shape, len(fp["classes"]) or 2)
    cls = get_method(method)
    params = method_params({"name": method, **({method: TESTED_PARAMS[method]} if method in TESTED_PARAMS else {})})
    model = cls(params, build, max(len(fp["classes"]), 2), (channels, *shape))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = StepBatch(labelled=torch.rand(labelled, channels, *shape, generator=generator),
                      labels=torch.randint(2, (labelled,), generator=generator),
                      unlabelled=torch.rand(unlabelled, channels, *shape, generator=generator),
                      unlabelled_index=torch.arange(unlabelled), augment=BatchAugmenter(AugmentConfig(), dims),
                      progress=0.5)
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators and kernels
        tick = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = model.losses(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - tick)
    return float(np.median(times[1:]))
