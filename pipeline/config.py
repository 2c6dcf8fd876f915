"""Run configuration: TOML file + ``section.key=value`` overrides, validated once up front.

Every section is a dataclass; an unknown section or key, or a value of the wrong
type, raises :class:`ConfigError` naming the key.  Method-specific keys live in the
``[method]`` table and are validated against the chosen method's own parameters.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pipeline.settings import ConfigError, build_dataclass

PRECISIONS = ("float32", "bfloat16")


@dataclass
class DataConfig:
    """Where the scans are and what they mean."""

    dataset: str = ""  # "mnist" (fetched), "synth_volumes" (generated when missing), or "" for user data
    scans: str = "data/mnist_scans"
    labels: str = ""  # default: <scans>/labels.csv when present
    class_subfolders: bool = False
    manifest: str = ""  # default: data_manifests/<scans folder name>.csv
    split: str = ""  # default: <manifest stem>.split.csv; used as given when it exists
    classes: list[str] = field(default_factory=list)  # default: labels found by ingest
    positive_class: str = ""  # the "abnormal" class of a screening task, if any
    # Or the healthy class: every other class is then screened as one abnormal class (positive_class
    # set to them joined by "+" once ingest has found the classes)
    healthy_class: str = ""
    # The labels file's columns where their names do not say which is which (diagnosis and target
    # could each be the label): the file, label and patient (group) columns by their names in it.
    file_column: str = ""
    label_column: str = ""
    group_column: str = ""
    # Only the scans whose path below data.scans matches this glob, case and separators ignored ("*flair*";
    # a word without wildcards matches any path holding it): one kind of file among several. Score reads a
    # new folder so.
    include: str = ""
    cache_dir: str = "cache"

    @property
    def columns(self) -> dict[str, str]:
        """The labels columns the user named, by role (``{"label": "target"}``)."""
        named = {"file": self.file_column, "label": self.label_column, "group": self.group_column}
        return {role: name for role, name in named.items() if name}


@dataclass
class SplitConfig:
    labels_per_class: int = 10
    labelled_fraction: float = 0.0  # used instead of labels_per_class when > 0
    calibration_per_class: int = 10
    calibration_fraction: float = 0.0
    test_fraction: float = 0.2  # only when the labels file has no test split
    selection: str = "first"  # "first" (file order, the MNIST-100 protocol) or "random"
    seed: int = 0


@dataclass
class PreprocessConfig:
    """MONAI preprocessing applied identically in training and scoring."""

    spatial_size: list[int] = field(default_factory=lambda: [28, 28])
    channels: int = 1  # colour images are averaged to one channel when 1
    intensity: str = "range"  # range | minmax | percentile | zscore | ct_windows | ct_window_channels (HU)
    intensity_range: list[float] = field(default_factory=lambda: [0.0, 255.0])
    intensity_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # for "percentile"
    resize: str = "pad_crop"  # pad_crop | resize
    max_file_mb: float = 2048.0  # larger files are refused with an error row (0 = no limit)
    # 3D only (2D images have no meaningful affine): reorient to these axis codes first
    # ("" = keep the file's array order), then resample to target_spacing in mm ([] = keep).
    orientation: str = "RAS"
    target_spacing: list[float] = field(default_factory=list)
    # A case's MRI sequences in files of their own, read as its channels in this order (ingest finds them,
    # the plan records them, and score reads a new folder's cases so: pipeline.sequences)
    sequences: list[str] = field(default_factory=list)


@dataclass
class NetworkConfig:
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    convs_per_stage: int = 1
    hidden: list[int] = field(default_factory=lambda: [1000, 500, 250, 250, 250])
    dropout: float = 0.0
    channels_last: bool = True
    pooling: str = "avg"  # global pooling of the cnn: avg | max | avgmax (max suits small findings)
    stem_stride: int = 1  # stride of the cnn's first convolution (2 or 4 for large inputs)
    # What the cnn's convolutional dropout drops: whole feature maps ("channel", spatial dropout)
    # or single values ("element"). Channel dropout draws a random number per map, not per value:
    # on CPU the per-value draws took 30% of a 128x128 step (benchmarks/performance.md).
    dropout_kind: str = "channel"


@dataclass
class AugmentConfig:
    """Batched random transforms; ``weak`` and ``strong`` views for consistency methods."""

    weak_translate: float = 0.1  # fraction of the image size
    weak_rotate: float = 10.0  # degrees
    weak_scale: float = 0.1
    strong_translate: float = 0.15
    strong_rotate: float = 25.0
    strong_scale: float = 0.2
    strong_shear: float = 0.25
    strong_noise: float = 0.1
    strong_cutout: float = 0.35  # side of the erased box, fraction of the image size
    # 3D only: smooth multiplicative bias field (std of its log-coefficients) and a
    # random contrast change, intensity ** exp(U(-strong_gamma, strong_gamma)).
    strong_bias_field: float = 0.2
    strong_gamma: float = 0.3


@dataclass
class TrainConfig:
    minutes: float = 0.0  # wall-clock budget of training, evaluations included; 0 = use ``steps``
    # Wall-clock budget of the whole command (``pipeline run --minutes``: ingest to calibration); the plan
    # gives training what is left (``minutes``), and training ends in time for calibration. 0 = none.
    run_minutes: float = 0.0
    steps: int = 3000
    batch_size: int = 64  # labelled batch
    unlabelled_batch_size: int = 256
    lr: float = 0.003
    weight_decay: float = 0.0005
    decay_last_fraction: float = 0.33  # linear decay to 0 over this last part of training
    eval_every: int = 250
    eval_test: bool = False  # also log test accuracy during training (benchmarks only)
    threads: int = 0  # 0 = all cores
    device: str = "auto"  # auto | cpu | cuda
    # float32 | bfloat16: forward passes under bfloat16 autocast (weights, optimiser and
    # evaluation stay float32); faster on CPUs with AVX512-BF16 or AMX and on recent GPUs.
    precision: str = "float32"
    workers: int = 2  # processes for preprocessing
    # Every preprocessed scan is held in memory: at most this many unlabelled ones are loaded, a
    # seeded random draw (0 = every one); the plan sets it where the pool would not fit
    max_unlabelled: int = 0
    checkpoint_minutes: float = 5.0  # a resumable state in the run folder this often (0 = never)


@dataclass
class CalibrateConfig:
    target_precision: float = 0.95  # pseudo-label thresholds per class
    # The methods' pseudo-labels reach target_precision at this one-sided confidence (0 = at the point
    # estimate). On the development panel's saved round starts 0.8 removed every set of calls under 80%
    # right (aneurysm calls 52-67%, adrenal-mass calls 73-76% right against 0.95) and kept
    # VesselMNIST3D's 480-690 healthy calls a round (97-98% right), of which 0.9 dropped one round's and
    # 0.95 two of three (benchmarks/prior_estimates.md).
    precision_confidence: float = 0.8
    min_support: int = 5
    ece_bins: int = 15
    # Screening tasks (data.positive_class set): decision threshold and review band.
    target_sensitivity: float = 0.95  # the decision threshold catches this share of abnormal scans
    review_sensitivity: float = 0.99  # below the band's lower edge: confidently healthy
    review_precision: float = 0.95  # above the band's upper edge: confidently abnormal
    min_positives: int = 30  # fewer abnormal calibration scans than this: a warning in the report
    bootstrap: int = 1000  # resamples for confidence intervals (0 = none)


@dataclass
class ScoreConfig:
    # At most; fewer where the first layer's output would pass 16 MiB (networks.forward_batch). On a CPU
    # larger batches run slower (benchmarks/performance.md, "Prediction batch size"); a GPU may want more.
    batch_size: int = 64
    max_saliency: int = 200  # saliency overlays on the review page, for flagged and abnormal-called scans


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    runs_dir: str = "runs"
    # false: the plan stage only records the data's fingerprint; every setting is the config's
    # (for sets whose configs were tuned by hand, such as MNIST-100).
    plan: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "supervised"})
    train: TrainConfig = field(default_factory=TrainConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    @property
    def method_name(self) -> str:
        return str(self.method.get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        table = raw
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        table[path[-1]] = value
    return raw


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_per_method(per_method: Any, raw: dict[str, Any]) -> None:
    """Every ``[per_method.<name>]`` table names a registered method and holds known keys."""
    from pipeline.methods import METHODS, validate_method_config

    if not isinstance(per_method, dict):
        raise ConfigError("config key 'per_method' must be a table of [per_method.<method name>] tables")
    for name, table in per_method.items():
        if name not in METHODS:
            raise ConfigError(f"[per_method.{name}]: '{name}' is not a registered method; "
                              f"known: {', '.join(sorted(METHODS))}")
        if not isinstance(table, dict):
            raise ConfigError(f"[per_method.{name}] must be a table")
        if "method" in table and "name" in table["method"]:
            raise ConfigError(f"[per_method.{name}] must not set method.name")
        trial = _deep_merge(raw, table)
        trial.setdefault("method", {})["name"] = name
        try:
            validate_method_config(build_dataclass(Config, trial, "").method)
        except ConfigError as error:
            raise ConfigError(f"in [per_method.{name}]: {error}") from None


def _read_toml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def user_settings(path: str | Path | None = None, overrides: list[str] | None = None,
                  default_method: str = "supervised") -> dict[str, Any]:
    """What the user set: the file, its ``[per_method.<name>]`` table for the chosen method, then
    the ``section.key=value`` overrides (later winning), as a raw nested dict.

    ``default_method`` is the method when neither the file nor an override names one (the
    plan's choice, say), so that its ``[per_method]`` table applies.
    """
    raw = _read_toml(path)
    per_method = raw.pop("per_method", {})
    chosen = apply_overrides(copy.deepcopy(raw), list(overrides or []))
    if not isinstance(chosen.setdefault("method", {}), dict):
        raise ConfigError("config key 'method' must be a table with a 'name'")
    name = chosen["method"].get("name", default_method)
    _check_per_method(per_method, raw)
    return apply_overrides(_deep_merge(raw, per_method.get(name, {})), list(overrides or []))


def flat_keys(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"minutes": 5}}`` -> ``{"train.minutes": 5}``: the leaves of a nested dict."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_keys(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """Load a TOML config (or the defaults), apply overrides and validate everything.

    Settings resolve in this order, later winning: the built-in defaults, ``base`` (the
    plan stage's settings, see ``pipeline.stages.plan``), the file, the file's
    ``[per_method.<name>]`` table for the chosen method (for example a longer budget for the
    ladder network), then the ``section.key=value`` overrides. The method's own keys are
    checked by the method registry (see ``pipeline.methods``).
    """
    base = copy.deepcopy(base or {})
    default_method = base.get("method", {}).get("name", "supervised")
    raw = _deep_merge(base, user_settings(path, overrides, default_method))
    raw.setdefault("method", {}).setdefault("name", "supervised")
    config = build_dataclass(Config, raw, "")
    if config.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{config.train.precision}'")
    if not 0.0 <= config.calibrate.precision_confidence < 1.0:
        raise ConfigError("calibrate.precision_confidence must be at least 0 (the point estimate) and below 1, "
                          f"got {config.calibrate.precision_confidence}")
    if config.data.healthy_class and config.data.positive_class and config.data.healthy_class in \
            config.data.positive_class.split("+"):
        raise ConfigError(f"data.healthy_class {config.data.healthy_class!r} is also in data.positive_class "
                          f"{config.data.positive_class!r}; give the abnormal class(es) or the healthy one")
    size = config.preprocess.spatial_size
    if len(size) not in (2, 3) or any(not isinstance(side, int) or side < 1 for side in size):
        raise ConfigError(f"preprocess.spatial_size must be 2 or 3 positive whole numbers (2D or 3D), got {size}")
    if config.train.minutes < 0 or config.train.run_minutes < 0:
        raise ConfigError("train.minutes and train.run_minutes must be at least 0 (0: no budget), got "
                          f"{config.train.minutes} and {config.train.run_minutes}")
    if config.train.batch_size < 1 or config.train.unlabelled_batch_size < 0:
        raise ConfigError("train.batch_size must be at least 1 and train.unlabelled_batch_size at least 0, got "
                          f"{config.train.batch_size} and {config.train.unlabelled_batch_size}")
    from pipeline.methods import validate_method_config

    config.method = validate_method_config(config.method)
    return config


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config saved in a checkpoint (already validated when it was written)."""
    config = build_dataclass(Config, raw, "")
    from pipeline.methods import validate_method_config

    config.method = validate_method_config(config.method)
    return config
