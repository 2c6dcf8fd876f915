"""Checkpoints that carry their own config and load without executing code.

A run folder holds ``model.safetensors`` (weights only) and ``checkpoint.json`` (the
resolved config, class names, preprocessing and the weights' sha256).  Loading
rebuilds the network from the config and refuses weights whose hash does not match.

``method.safetensors`` additionally holds the whole method's state (decoders, teachers,
second networks), with its own sha256, for stages that need more than the prediction
network (``pipeline sample`` decodes with a generative method's decoder):
:func:`load_method` rebuilds the method and loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.config import Config, config_from_dict
from pipeline.io import atomic_path, sha256_file, write_json, write_text

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
METHOD_WEIGHTS = "method.safetensors"
METADATA = "checkpoint.json"
CALIBRATION = "calibration.json"  # written by the calibrate stage
INPUTS = "inputs.json"  # the manifest and split file a run trained on, written by the train stage


class CheckpointError(RuntimeError):
    """A run folder's checkpoint is missing, tampered with, or of an unknown format."""


def build_method(config: Config, num_classes: int, in_channels: int):
    from pipeline.methods import get_method, method_params
    from pipeline.networks import network_factory

    factory = network_factory(config.network, in_channels, config.preprocess.spatial_size, num_classes)
    cls = get_method(config.method_name)
    input_shape = (in_channels, *config.preprocess.spatial_size)
    return cls(method_params(config.method), factory, num_classes, input_shape)


def save_checkpoint(run_dir: Path, method, config: Config, classes: list[str], in_channels: int,
                    extra: dict | None = None) -> str:
    """Write the prediction network's weights and metadata; return the weights' sha256."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in method.prediction_network().state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    digest = sha256_file(run_dir / WEIGHTS)
    # The whole method too (decoders, teachers, second networks); clones, because
    # safetensors refuses tensors that share memory (one network under two names).
    full = {k: v.detach().cpu().clone().contiguous() for k, v in method.state_dict().items()}
    with atomic_path(run_dir / METHOD_WEIGHTS) as tmp:
        save_file(full, str(tmp))
    # The resolved config as TOML: 'pipeline train --config <run>/config.toml' repeats the run.
    write_text(run_dir / "config.toml", tomli_w.dumps(config.to_dict()))
    write_json(run_dir / METADATA, {
        "format_version": FORMAT_VERSION,
        "weights": WEIGHTS,
        "weights_sha256": digest,
        "method_weights": METHOD_WEIGHTS,
        "method_weights_sha256": sha256_file(run_dir / METHOD_WEIGHTS),
        "classes": list(classes),
        "positive_class": config.data.positive_class,
        "in_channels": in_channels,
        "config": config.to_dict(),
        **(extra or {}),
    })
    return digest


@dataclass
class LoadedModel:
    network: nn.Module
    config: Config
    classes: list[str]
    weights_sha256: str
    metadata: dict
    run_dir: Path


def read_metadata(run_dir: Path) -> dict:
    """A run folder's ``checkpoint.json``, checked for its format version."""
    meta_path = run_dir / METADATA
    if run_dir.name == "LATEST" and run_dir.is_file():
        raise CheckpointError(f"{run_dir} is the file naming the newest run, {run_dir.read_text().strip()}: pass "
                              "that folder, or leave the run out for the newest")
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path} not found: is {run_dir} a run folder written by 'pipeline train'?")
    metadata = json.loads(meta_path.read_text())
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unknown checkpoint format {metadata.get('format_version')!r}")
    return metadata


def _verified(run_dir: Path, name: str, expected: str, listed_in: str = METADATA) -> tuple[Path, str]:
    path = run_dir / name
    if not path.is_file():
        raise CheckpointError(f"{path} not found; the run folder is incomplete")
    digest = sha256_file(path)
    if digest != expected:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}... does not match {run_dir / listed_in} "
            f"({expected[:12]}...); the weights were changed or corrupted, refusing to load"
        )
    return path, digest


def load_checkpoint(run_dir: str | Path, device: str = "cpu") -> LoadedModel:
    run_dir = Path(run_dir)
    metadata = read_metadata(run_dir)
    weights_path, digest = _verified(run_dir, metadata["weights"], metadata["weights_sha256"])
    config = config_from_dict(metadata["config"])
    method = build_method(config, len(metadata["classes"]), metadata["in_channels"])
    network = method.prediction_network()
    network.load_state_dict(load_file(str(weights_path)))
    network.to(device).eval()
    return LoadedModel(network, config, metadata["classes"], digest, metadata, run_dir)


@dataclass
class LoadedMethod:
    method: nn.Module  # the whole method (a pipeline.methods.base.Method), in eval mode
    config: Config
    classes: list[str]
    metadata: dict
    run_dir: Path


def load_method(run_dir: str | Path, device: str = "cpu") -> LoadedMethod:
    """Rebuild the run's method from its config and load its full state (``method.safetensors``)."""
    run_dir = Path(run_dir)
    metadata = read_metadata(run_dir)
    if "method_weights" not in metadata:
        raise CheckpointError(
            f"{run_dir} holds only the prediction network (trained before {METHOD_WEIGHTS} was written); "
            "train again to get the full method"
        )
    path, _ = _verified(run_dir, metadata["method_weights"], metadata["method_weights_sha256"])
    config = config_from_dict(metadata["config"])
    method = build_method(config, len(metadata["classes"]), metadata["in_channels"])
    method.load_state_dict(load_file(str(path)))
    method.to(device).eval()
    return LoadedMethod(method, config, metadata["classes"], metadata, run_dir)


# ---------------------------------------------------------------------------- resumable training state

RESUME_DIR = "resume"
RESUME_STATE = "state.json"


def save_training_state(run_dir: Path, tensors: dict, info: dict) -> Path:
    """Write a resumable training state into ``<run>/resume/``: tensors (weights, optimiser moments,
    random states, method books) as safetensors, everything else as JSON, nothing pickled.

    The tensors go to a new file named by step, then the JSON that names it and its sha256
    replaces the old JSON atomically, then older tensor files are removed: a kill at any moment
    leaves one complete, consistent state.
    """
    folder = Path(run_dir) / RESUME_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"state-{int(info['loop']['step']):09d}.safetensors"
    with atomic_path(folder / name) as tmp:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp))
    write_json(folder / RESUME_STATE, {"format_version": FORMAT_VERSION, "tensors": name,
                                        "tensors_sha256": sha256_file(folder / name), **info})
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder / RESUME_STATE


def load_training_state(run_dir: str | Path) -> tuple[dict, dict]:
    """(tensors, info) of the run's resumable state; CheckpointError when there is none or it is damaged."""
    folder = Path(run_dir) / RESUME_DIR
    state = folder / RESUME_STATE
    if not state.is_file():
        raise CheckpointError(
            f"{run_dir} has no resumable training state ({state} is missing): the run ended, or was stopped "
            "before its first save (train.checkpoint_minutes); start it again"
        )
    info = json.loads(state.read_text())
    path, _ = _verified(folder, info["tensors"], info["tensors_sha256"], RESUME_STATE)
    return load_file(str(path)), info


def latest_run(runs_dir: str | Path = "runs") -> Path:
    marker = Path(runs_dir) / "LATEST"
    if not marker.exists():
        raise FileNotFoundError(f"no trained model: {marker} does not exist; run 'make train' first or pass --model")
    return Path(marker.read_text().strip())
