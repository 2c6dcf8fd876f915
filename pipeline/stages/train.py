"""Train stage: a config (and the data its earlier stages wrote) in, a run folder out.

The run folder holds the model (``model.safetensors``, ``checkpoint.json``), ``plan.json``,
``config.toml``, ``inputs.json`` (the manifest and split file trained on, with their sha256),
``metrics.csv`` and the training curves; ``runs/LATEST`` names the newest.
While training, ``resume/`` holds a resumable state (see ``pipeline.trainer``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import distributed
from pipeline.config import Config
from pipeline.data import load_training_data

log = logging.getLogger("pipeline")


def data_files(config: Config) -> dict:
    """The manifest and split file a run trains on, each with its sha256: the config names them only
    where the user did (a split's name is otherwise derived), and either may be edited or made again."""
    from pipeline.io import sha256_file
    from pipeline.manifest import manifest_path, split_path

    return {name: {"path": str(path.resolve()), "sha256": sha256_file(path)}
            for name, path in (("manifest", manifest_path(config)), ("split", split_path(config)))}


def new_run_dir(config: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.runs_dir) / f"{config.name}_{config.method_name}_{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.runs_dir) / f"{config.name}_{config.method_name}_{stamp}-{suffix}"
    return run_dir


def train_stage(config: Config, run_dir: str | Path | None = None, progress: bool = True,
                plan: dict | None = None, resume: bool = False, prepare: Callable[[], object] | None = None,
                deadline: float | None = None) -> Path:
    """Train and write a run folder; ``runs/LATEST`` then names it.

    Under torchrun every process calls this: rank 0 prepares the data and writes the run
    folder, and every process returns its path (see ``pipeline.distributed``).
    """
    from pipeline.io import write_json, write_text
    from pipeline.trainer import Trainer, resolve_device

    with distributed.session(resolve_device(config.train.device)) as world:
        with distributed.main_first():
            if prepare is not None:  # the earlier stages, when their files are missing
                prepare()
            data = load_training_data(config)
        if config.method_name == "self_training" and len(data.calibration) == 0:
            raise ValueError("self_training chooses its thresholds on the calibration set, which is empty; "
                             "set split.calibration_per_class or split.calibration_fraction")
        _check_calibration_for_screening(config, data)
        run_dir = distributed.broadcast(Path(run_dir) if run_dir else new_run_dir(config))
        if world.main and plan is not None:
            write_json(Path(run_dir) / "plan.json", plan)
        if world.main:
            from pipeline.checkpoint import INPUTS

            write_json(Path(run_dir) / INPUTS, data_files(config))
        log.info("training %s on %d labelled + %d unlabelled scans -> %s", config.method_name,
                 len(data.labelled), len(data.unlabelled), run_dir)
        summary = Trainer(config, data, run_dir, progress).fit(resume=resume, deadline=deadline)
        if world.main:
            write_text(Path(config.runs_dir) / "LATEST", str(run_dir) + "\n")
    log.info("test accuracy %.4f (%d test scans), %.0f s training", summary["test_accuracy"],
             summary["n_test"], summary["train_seconds"])
    return run_dir


def resumable_config(run_dir: str | Path) -> Config:
    """The resolved config a stopped run was training with (from its resumable state)."""
    from pipeline.checkpoint import RESUME_DIR, RESUME_STATE, CheckpointError
    from pipeline.config import config_from_dict

    state = Path(run_dir) / RESUME_DIR / RESUME_STATE
    if not state.is_file():
        raise CheckpointError(f"{run_dir} has no resumable training state ({state} is missing): the run "
                              "finished, or was stopped before its first save (train.checkpoint_minutes)")
    return config_from_dict(json.loads(state.read_text())["config"])


def _check_calibration_for_screening(config: Config, data) -> None:
    """Refuse, before training rather than after it, a screening run whose calibration scans lack the
    abnormal or every other class: calibrate chooses the operating point on both."""
    from pipeline.manifest import split_path

    positive = config.data.positive_class
    if not positive or positive not in data.classes or len(data.calibration) == 0:
        return
    is_positive = data.labels[data.calibration] == data.classes.index(positive)
    lacking = [name for name, present in ((repr(positive), bool(is_positive.any())),
                                          ("other", bool((~is_positive).any()))) if not present]
    if lacking:
        raise ValueError(f"the calibration subset of {split_path(config)} holds no {lacking[0]} scan (of "
                         f"{len(data.calibration)}), and the screening operating point is chosen on both: label more "
                         "scans of that class (a patient's scans are drawn whole), or delete the split file to "
                         "draw it again")
