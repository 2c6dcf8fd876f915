"""The stages chained: fetch -> ingest -> split -> plan -> train -> calibrate (what ``make train`` runs)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipeline import distributed
from pipeline.config import Config
from pipeline.data import TrainingData, build_training_data

log = logging.getLogger("pipeline")


def manifest_path(config: Config) -> Path:
    if config.data.manifest:
        return Path(config.data.manifest)
    return Path("data_manifests") / f"{Path(config.data.scans).name}.csv"


def split_path(config: Config) -> Path:
    """``data.split``, else a name that carries the draw (labels per class or fraction, seed), so
    that another draw never reuses a split file made for a different one."""
    if config.data.split:
        return Path(config.data.split)
    manifest = manifest_path(config)
    s = config.split
    labels = f"{s.labelled_fraction:g}of-labels" if s.labelled_fraction > 0 else f"{s.labels_per_class}per-class"
    return manifest.with_name(f"{manifest.stem}.{labels}.seed{s.seed}.split.csv")


def prepare_data(config: Config, progress: bool = True) -> TrainingData:
    """Make sure each earlier stage's file exists (running the stage if not), then load tensors."""
    merged, classes = prepare_split(config, progress)
    return build_training_data(matching_dimensionality(merged, len(config.preprocess.spatial_size)), classes,
                               config.preprocess, config.data.cache_dir, config.train.workers)


def matching_dimensionality(frame, dims: int):
    """The rows whose scans have ``dims`` spatial dimensions; the others (2D pictures in a folder
    of volumes, say) are left out of training with a warning, not a crash."""
    from pipeline.plan import spatial_shape_of

    keep = [len(spatial_shape_of(shape, path)[0]) == dims for shape, path in zip(frame["shape"], frame["path"])]
    dropped = frame[[not k for k in keep]]
    if len(dropped):
        log.warning("%d scans left out of training: they are not %dD like the run (first: %s)", len(dropped), dims,
                    ", ".join(dropped["scan_id"].head(5)))
    return frame[keep].reset_index(drop=True)


def prepare_split(config: Config, progress: bool = True):
    """Fetch, ingest and split as needed; return (manifest rows with a ``subset`` column, classes).

    A manifest or split file that already exists is used as it is, so a user may edit
    or supply their own; delete it to have it made again.
    """
    from pipeline.fetch import fetch, materialise_mnist
    from pipeline.ingest import ingest, load_manifest
    from pipeline.split import load_split, make_split

    data = config.data
    if data.dataset == "synth_volumes":
        from pipeline.synth import SYNTH_VOLUMES_DATASET, generate_volumes, stale_set_warning

        if not (Path(data.scans) / "labels.csv").exists():
            log.info("generating the synthetic volume set into %s", data.scans)
            generate_volumes(data.scans, progress=progress, **SYNTH_VOLUMES_DATASET)
        elif warning := stale_set_warning(data.scans):
            log.warning("%s", warning)
    elif data.dataset:
        root = Path(data.scans).parent
        fetch(data.dataset, root=root)
        if data.dataset == "mnist":
            materialise_mnist(root, out=data.scans)
    manifest = manifest_path(config)
    if not manifest.exists():
        ingest(data.scans, labels=data.labels or None, out=manifest, classes=data.classes or None,
               class_subfolders=data.class_subfolders, workers=config.train.workers)
    frame = load_manifest(manifest)
    split_file = split_path(config)
    if not split_file.exists():
        s = config.split
        make_split(
            manifest, out=split_file,
            labels_per_class=None if s.labelled_fraction > 0 else s.labels_per_class,
            labelled_fraction=s.labelled_fraction or None,
            calibration_per_class=0 if s.calibration_fraction > 0 else s.calibration_per_class,
            calibration_fraction=s.calibration_fraction or None,
            test_fraction=s.test_fraction, selection=s.selection, seed=s.seed,
        )
    merged = load_split(frame, split_file)
    classes = data.classes or sorted(set(merged["label"]) - {""})
    return merged, classes


def planned_config(path: str | Path | None = None, overrides: list[str] | None = None,
                   probe: bool = True, progress: bool = True) -> tuple[Config, dict]:
    """The plan stage: the config a run trains with, and the record written as ``plan.json``.

    Ingest and split run first when their files are missing (the plan reads their output);
    then :func:`pipeline.plan.fingerprint` and :func:`pipeline.plan.make_plan` fill every
    setting the user left unset. With ``plan = false`` in the config only the fingerprint is
    recorded and the config is used as it is.
    """
    from pipeline.config import flat_keys, load_config, user_settings
    from pipeline.plan import fingerprint, make_plan

    user = flat_keys(user_settings(path, overrides))
    first = load_config(path, overrides)
    merged, classes = prepare_split(first, progress)
    fp = fingerprint(merged, classes, seed=first.seed)
    if not first.plan:
        log.info("plan: off for this config (plan = false); its settings are used as they are")
        return first, {"fingerprint": fp, "settings": {}, "note": "plan = false: the config's settings"}
    minutes = user.get("train.minutes")
    plan = make_plan(fp, minutes=minutes or None, method=user.get("method.name"), probe=probe)
    if "train.steps" in user and "train.minutes" not in user:
        plan.set("train.minutes", 0.0, "the user gave train.steps")
    config = load_config(path, overrides, base=plan.nested())
    record = plan.record(fp, user, config)
    for key, entry in record["settings"].items():
        log.info("plan: %s = %s (%s%s)", key, entry["value"], entry["set_by"],
                 f": {entry['reason']}" if entry.get("reason") and entry["set_by"] == "plan" else "")
    return config, record


def new_run_dir(config: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.runs_dir) / f"{config.name}_{config.method_name}_{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.runs_dir) / f"{config.name}_{config.method_name}_{stamp}-{suffix}"
    return run_dir


def train_stage(config: Config, run_dir: str | Path | None = None, progress: bool = True,
                plan: dict | None = None, resume: bool = False) -> Path:
    """Train and write a run folder; ``runs/LATEST`` then names it.

    Under torchrun every process calls this: rank 0 prepares the data and writes the run
    folder, and every process returns its path (see ``pipeline.distributed``).
    """
    from pipeline.io import write_json, write_text
    from pipeline.trainer import Trainer, resolve_device

    with distributed.session(resolve_device(config.train.device)) as world:
        with distributed.main_first():
            data = prepare_data(config, progress and world.main)
        if config.method_name == "self_training" and len(data.calibration) == 0:
            raise ValueError("self_training chooses its thresholds on the calibration set, which is empty; "
                             "set split.calibration_per_class or split.calibration_fraction")
        run_dir = distributed.broadcast(Path(run_dir) if run_dir else new_run_dir(config))
        if world.main and plan is not None:
            write_json(Path(run_dir) / "plan.json", plan)
        log.info("training %s on %d labelled + %d unlabelled scans -> %s", config.method_name,
                 len(data.labelled), len(data.unlabelled), run_dir)
        summary = Trainer(config, data, run_dir, progress).fit(resume=resume)
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


def run_all(config: Config, progress: bool = True, plan: dict | None = None,
            run_dir: str | Path | None = None, resume: bool = False) -> Path:
    from pipeline.calibrate import calibrate
    from pipeline.trainer import resolve_device

    with distributed.session(resolve_device(config.train.device)) as world:
        run_dir = train_stage(config, run_dir=run_dir, progress=progress, plan=plan, resume=resume)
        if world.main:
            calibrate(run_dir)
    return run_dir


def latest_run(runs_dir: str | Path = "runs") -> Path:
    marker = Path(runs_dir) / "LATEST"
    if not marker.exists():
        raise FileNotFoundError(f"no trained model: {marker} does not exist; run 'make train' first or pass --model")
    return Path(marker.read_text().strip())
