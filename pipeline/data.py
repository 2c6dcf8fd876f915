"""Preprocessing (MONAI dictionary transforms keyed on "image") and the tensor cache.

Training, calibration and scoring all preprocess through :func:`build_preprocess`.
Preprocessed images are cached as one tensor per (manifest rows, preprocessing) so
epochs index into memory instead of re-reading files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Spacingd,
)
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pipeline.config import Config, PreprocessConfig
from pipeline.io import atomic_path, write_json
from pipeline.manifest import (
    SUBSETS,
    load_manifest,
    load_split,
    manifest_path,
    screened_members,
    split_path,
    trained_as_one,
)
from pipeline.processes import worker_pool
from pipeline.reading import ScanReadError, load_scan, spatial_shapes

log = logging.getLogger("pipeline.data")
# 2: pictures with an EXIF orientation are read turned as viewers show them
# 3: palette, CMYK and grey-with-alpha pictures read as their intensities; a NIfTI of one slice is 2D
CACHE_VERSION = 3


class LoadScand(MapTransform):
    """Read ``d[key]`` (a path) with :func:`pipeline.reading.load_scan`, channel first.

    Colour images become channel-first (alpha dropped), averaged for a grey model; a grey picture
    given to a colour model is grey in each colour; a volume file holding several volumes on a
    fourth axis (a multi-sequence MRI) gives a channel each.  A scan whose dimensionality or number
    of volumes does not match the model's raises :class:`ScanReadError` naming the file.
    """

    def __init__(self, keys, spatial_dims: int, channels: int, max_bytes: int | None = None):
        super().__init__(keys)
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.max_bytes = max_bytes

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            scan = load_scan(path, self.max_bytes)
            array = np.asarray(scan.array, dtype=np.float32)
            if self.spatial_dims == 2:
                if array.ndim == 3 and array.shape[-1] in (3, 4) and not scan.is_volume:
                    array = np.moveaxis(array[..., :3], -1, 0)
                elif array.ndim == 2:
                    array = array[None]
                else:
                    raise ScanReadError(path, f"expected a 2D image, got an array of shape {array.shape} "
                                        "(is this a 3D volume given to a 2D model?)")
            else:
                if array.ndim == 3 and not scan.is_volume:  # a colour picture's (rows, columns, 3) is no volume
                    raise ScanReadError(path, f"expected a 3D volume, got a 2D colour picture of shape "
                                        f"{array.shape}: this is a model of volumes (a screenshot or photo among the scans?)")
                if array.ndim == 3:
                    array = array[None]
                elif array.ndim == 4 and scan.is_volume:  # a multi-sequence MRI's volumes are its channels
                    array = np.moveaxis(array, -1, 0)
                    if array.shape[0] != self.channels:  # never averaged, as a colour picture's are
                        raise ScanReadError(path, f"{array.shape[0]} volumes in one file (channels); this model takes "
                                            f"{self.channels} a scan: a set's multi-sequence files should all hold the "
                                            "same sequences")
                else:
                    raise ScanReadError(path, f"expected a 3D volume, got an array of shape {array.shape} "
                                        "(a 2D image given to a 3D model?)")
            if not np.isfinite(array).all():
                raise ScanReadError(path, "contains NaN or infinite values")
            if array.min() == array.max():
                # Nothing to screen, and intensity normalisation would divide by zero.
                raise ScanReadError(path, f"constant image (every value is {array.min():g})")
            if array.shape[0] != self.channels:
                if self.channels == 1:
                    array = array.mean(axis=0, keepdims=True)
                elif array.shape[0] == 1 and self.spatial_dims == 2:  # a grey picture among colour ones
                    array = np.repeat(array, self.channels, axis=0)
                else:
                    raise ScanReadError(path, f"has {array.shape[0]} channels, the model expects {self.channels}"
                                        + (" (a file of that many volumes: its sequences as channels)"
                                           if self.spatial_dims == 3 else ""))
            affine = scan.affine if scan.affine is not None else np.eye(4)
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.as_tensor(affine))
        return d


class PercentileScaled(MapTransform):
    """Map the ``lower``-``upper`` percentiles of ``d[key]`` to [0, 1], clipping outside.

    The same as MONAI's ``ScaleIntensityRangePercentilesd(lower, upper, 0, 1, clip=True)``
    (linear interpolation between order statistics), but the percentiles come from numpy's
    selection algorithm: MONAI takes them with ``torch.quantile``, which sorts the whole
    volume and was two thirds of the preprocessing time of a 64^3 volume.
    """

    def __init__(self, keys, lower: float, upper: float, channel_wise: bool = False):
        super().__init__(keys)
        self.lower, self.upper, self.channel_wise = lower, upper, channel_wise

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            values = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            if self.channel_wise and len(values) > 1:
                d[key] = torch.stack([self._scaled(channel, part) for channel, part in zip(image, values)])
            else:
                d[key] = self._scaled(image, values)
        return d

    def _scaled(self, image, values):
        low, high = np.percentile(values, [self.lower, self.upper])
        return ScaleIntensityRange(a_min=float(low), a_max=float(high), b_min=0.0, b_max=1.0, clip=True)(image)


# Display windows (centre, width in Hounsfield units) a radiologist reads CT through: brain, soft tissue,
# lung and bone. Averaged, they map HU to 0-1 with most of the range spent where tissues differ by tens
# of HU (blood against brain), yet nothing from -1350 to 1300 HU is flattened.
CT_WINDOWS = ((40.0, 80.0), (40.0, 400.0), (-600.0, 1500.0), (400.0, 1800.0))


class CtWindowsd(MapTransform):
    """Map Hounsfield units to [0, 1] through ``CT_WINDOWS``, each clipped to its range: their mean, or
    with ``as_channels`` each window a channel (brain, soft tissue, lung, bone), as radiologists page
    through them.

    Scaled per scan by percentiles, a head CT's -1500 to 1400 HU puts blood 40 HU above brain 1.4% of
    the range apart; averaged windows put it 16% apart, and the lung, soft-tissue and bone ranges each
    keep a slope of their own; as channels, the brain window alone puts it half its range apart."""

    def __init__(self, keys, as_channels: bool = False):
        super().__init__(keys)
        self.as_channels = as_channels

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            windows = [ScaleIntensityRange(a_min=centre - width / 2, a_max=centre + width / 2, b_min=0.0,
                                           b_max=1.0 if self.as_channels else 1.0 / len(CT_WINDOWS),
                                           clip=True)(image) for centre, width in CT_WINDOWS]
            d[key] = torch.cat([torch.as_tensor(w) for w in windows]) if self.as_channels else sum(windows)
        return d


def input_channels(config: PreprocessConfig) -> int:
    """The channels of a preprocessed scan, the model's input: the file's (colours, sequences), each
    as many times as there are ``CT_WINDOWS`` where the windows are channels."""
    return config.channels * (len(CT_WINDOWS) if config.intensity == "ct_window_channels" else 1)


class PadOrCropd(ResizeWithPadOrCropd):
    """MONAI's ``ResizeWithPadOrCropd``, skipped for images already of the target shape
    (most 2D data sets): its bookkeeping was half the preprocessing time of a 28x28 PNG."""

    def __init__(self, keys, spatial_size):
        super().__init__(keys, spatial_size)
        self.target_shape = tuple(spatial_size)

    def __call__(self, data, lazy=None):
        if all(tuple(data[key].shape[1:]) == self.target_shape for key in self.key_iterator(data)):
            return dict(data)
        return super().__call__(data, lazy=lazy)


def build_preprocess(config: PreprocessConfig) -> Compose:
    """The MONAI preprocessing chain for one scan path -> float tensor (C, *spatial_size).

    One chain serves 2D and 3D.  For volumes, ``orientation`` (e.g. "RAS") reorients the
    array by its affine and ``target_spacing`` resamples it to that voxel size in mm, so
    files stored in different orientations or spacings give alike tensors; both are
    skipped for 2D images, whose files carry no affine.
    """
    spatial_dims = len(config.spatial_size)
    max_bytes = int(config.max_file_mb * 1e6) if config.max_file_mb > 0 else None
    steps = [LoadScand("image", spatial_dims, config.channels, max_bytes)]
    if spatial_dims == 3:
        if config.orientation:
            # nibabel affines map to RAS+ world coordinates
            steps.append(Orientationd("image", axcodes=config.orientation,
                                      labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        if config.target_spacing:
            if len(config.target_spacing) != 3 or min(config.target_spacing) <= 0:
                raise ValueError("preprocess.target_spacing must be 3 positive numbers (mm) or [], "
                                 f"got {config.target_spacing}")
            steps.append(Spacingd("image", pixdim=config.target_spacing, mode="bilinear",
                                  padding_mode="border"))
    # A volume's channels are sequences of their own intensities (FLAIR, T1, ADC); a picture's are colours,
    # scaled together so that their balance is kept.
    per_channel = spatial_dims == 3
    if config.intensity == "range":
        low, high = config.intensity_range
        steps.append(ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    elif config.intensity == "minmax":
        steps.append(ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=per_channel))
    elif config.intensity == "percentile":
        low, high = config.intensity_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"preprocess.intensity_percentiles must be 0 <= low < high <= 100, got {[low, high]}")
        steps.append(PercentileScaled("image", low, high, channel_wise=per_channel))
    elif config.intensity == "zscore":
        steps.append(NormalizeIntensityd("image", channel_wise=per_channel))
    elif config.intensity in ("ct_windows", "ct_window_channels"):
        steps.append(CtWindowsd("image", as_channels=config.intensity == "ct_window_channels"))
    else:
        raise ValueError(f"preprocess.intensity must be range|minmax|percentile|zscore|ct_windows|ct_window_channels, got "
                         f"'{config.intensity}'")
    if config.resize == "pad_crop":
        steps.append(PadOrCropd("image", config.spatial_size))
    elif config.resize == "resize":
        steps.append(Resized("image", config.spatial_size))
    else:
        raise ValueError(f"preprocess.resize must be pad_crop|resize, got '{config.resize}'")
    steps.append(EnsureTyped("image", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def effective_preprocess(config: PreprocessConfig) -> dict:
    """The preprocessing settings that change the result, for cache keys.

    Keys added after the first release are left out where they have no effect (the 3D
    ones for 2D images) or hold their default, so caches made before them stay valid.
    """
    settings = asdict(config)
    settings.pop("max_file_mb", None)  # refuses files, never changes a tensor
    settings.pop("sequences", None)  # a case's sequences are in its scan's path, which the cache key holds
    if len(config.spatial_size) != 3:
        settings.pop("orientation")
        settings.pop("target_spacing")
    if config.intensity != "percentile" or config.intensity_percentiles == [0.5, 99.5]:
        settings.pop("intensity_percentiles")
    return settings


_worker_transform = None


def _init_worker(config_dict):
    global _worker_transform
    torch.set_num_threads(1)
    _worker_transform = build_preprocess(PreprocessConfig(**config_dict))


def _preprocess_one(path):
    try:
        return _worker_transform({"image": path})["image"].numpy(), None
    except Exception as error:
        # MONAI's Compose wraps a transform's error; report the root cause and the transform.
        root = error
        while root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, ScanReadError):
            return None, root.reason
        where = f" ({error})" if root is not error else ""
        return None, f"preprocessing failed: {type(root).__name__}: {root}{where}"


class Preprocessor:
    """``process(paths) -> (arrays, errors)``, in a pool of worker processes when there is one.

    ``start(paths)`` hands the paths to the workers at once and returns a function that
    waits for the result, so the caller can work (run a model) meanwhile.
    """

    def __init__(self, pool: ProcessPoolExecutor | None, workers: int, progress: bool):
        self.pool, self.workers, self.progress = pool, workers, progress

    def start(self, paths: list[str]) -> Callable[[], tuple[list[np.ndarray | None], list[str | None]]]:
        bar = dict(total=len(paths), disable=not self.progress, desc="preprocess", leave=False)
        if self.pool is None:
            results = [_preprocess_one(p) for p in tqdm(paths, **bar)]
            return lambda: _unzip(results)
        chunk = 1 if len(paths) < 64 else max(1, min(512, len(paths) // (4 * self.workers)))
        pending = self.pool.map(_preprocess_one, paths, chunksize=chunk)  # submits every task now
        return lambda: _unzip(list(tqdm(pending, **bar)))

    def __call__(self, paths: list[str]) -> tuple[list[np.ndarray | None], list[str | None]]:
        return self.start(paths)()


def _unzip(results):
    return [r[0] for r in results], [r[1] for r in results]


@contextlib.contextmanager
def preprocessor(config: PreprocessConfig, workers: int = 2, progress: bool = True):
    """Yield a :class:`Preprocessor` backed by one pool of worker processes.

    Starting workers costs seconds (each imports MONAI), so callers that process many
    batches (scoring a large folder) keep one pool for all of them.
    """
    pool = None
    if workers > 1:
        pool = worker_pool(workers, _init_worker, (asdict(config),))
    else:
        _init_worker(asdict(config))
    try:
        yield Preprocessor(pool, workers, progress)
    finally:
        if pool is not None:
            pool.shutdown()


def preprocess_paths(
    paths: list[str], config: PreprocessConfig, workers: int = 2, progress: bool = True
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Preprocess many files in worker processes; returns (arrays, errors) aligned with paths."""
    with preprocessor(config, workers if len(paths) >= 64 else 1, progress) as process:
        return process(paths)


# Seconds a pool of workers takes to start: forked from a process that has imported MONAI, little.
POOL_START_SECONDS = 0.5


def seconds_to_preprocess(sample: list[str], n_scans: int, config: PreprocessConfig, workers: int = 2,
                          max_seconds: float = 2.0) -> float:
    """Foreseen wall seconds for :func:`preprocess_paths` to preprocess ``n_scans`` scans like ``sample``.

    Each scan of ``sample`` (paths) is preprocessed with ``config`` in this process on one thread,
    as a worker does, until ``max_seconds`` have gone (the time is the user's); the first, which
    warms the transforms up, is not counted where others are. Scans that fail are not counted.
    Returns 0 where none could be preprocessed.
    """
    transform = build_preprocess(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds: list[float] = []
    try:
        started = time.perf_counter()
        for path in sample:
            tick = time.perf_counter()
            try:
                transform({"image": path})
            except Exception:  # noqa: BLE001 -- a scan that fails here is an error row at preprocessing
                continue
            seconds.append(time.perf_counter() - tick)
            if time.perf_counter() - started > max_seconds:
                break
    finally:
        torch.set_num_threads(threads)
    if not seconds:
        return 0.0
    per_scan = float(np.mean(seconds[1:] or seconds))
    if n_scans < 64:  # preprocess_paths runs fewer scans in this process
        return n_scans * per_scan
    return POOL_START_SECONDS + n_scans * per_scan / workers


def cache_key(frame: pd.DataFrame, config: PreprocessConfig) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "preprocess": effective_preprocess(config)},
                             sort_keys=True).encode())
    for scan_id, sha in zip(frame["scan_id"], frame["sha256"]):
        digest.update(f"{scan_id}\0{sha}\n".encode())
    return digest.hexdigest()[:24]


def load_images(frame: pd.DataFrame, config: PreprocessConfig, cache_dir: str | Path, workers: int = 2) -> torch.Tensor:
    """Preprocessed images (N, C, *spatial) for the manifest rows in ``frame``, cached on disk."""
    cache_path = Path(cache_dir) / f"images-{cache_key(frame, config)}.safetensors"
    if cache_path.exists():
        log.info("using preprocessed cache %s", cache_path)
        return load_file(cache_path)["images"]
    arrays, errors = preprocess_paths(list(frame["path"]), config, workers)
    failed = [f"{sid}: {err}" for sid, err in zip(frame["scan_id"], errors) if err]
    if failed:
        raise ScanReadError(
            failed[0].split(":")[0],
            f"{len(failed)} scan(s) that ingest accepted failed preprocessing; re-run ingest or fix them:\n  "
            + "\n  ".join(failed[:20]),
        )
    images = torch.from_numpy(np.stack(arrays))
    with atomic_path(cache_path) as tmp:
        save_file({"images": images}, str(tmp))
    write_json(cache_path.with_suffix(".json"), {"scan_ids": list(frame["scan_id"]), "preprocess": asdict(config)})
    return images


@dataclass
class TrainingData:
    """All preprocessed images in memory plus the index of each subset.

    ``labels`` holds the class index of every scan with a known label (-1 otherwise);
    methods read labels only at ``labelled`` indices.  Labels of unlabelled scans are
    kept so that pseudo-label accuracy can be reported, never used for training.
    """

    images: torch.Tensor
    labels: torch.Tensor
    scan_ids: list[str]
    classes: list[str]
    labelled: torch.Tensor
    unlabelled: torch.Tensor
    calibration: torch.Tensor
    test: torch.Tensor

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2


def build_training_data(split_frame: pd.DataFrame, classes: list[str], config: PreprocessConfig,
                        cache_dir: str | Path, workers: int = 2) -> TrainingData:
    """``split_frame``: manifest rows merged with a ``subset`` column (see pipeline.stages.split)."""
    frame = split_frame.reset_index(drop=True)
    unknown = sorted(set(frame["label"][frame["label"] != ""]) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among data.classes {classes}; add them to the config")
    images = load_images(frame, config, cache_dir, workers)
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([index.get(label, -1) for label in frame["label"]], dtype=torch.long)
    subsets = {name: torch.as_tensor(np.flatnonzero(frame["subset"].to_numpy() == name), dtype=torch.long)
               for name in SUBSETS}
    return TrainingData(images, labels, list(frame["scan_id"]), list(classes), **subsets)


def split_frame(config: Config):
    """(the manifest's rows with their ``subset`` from the split file, classes) of a config whose
    manifest and split exist (``pipeline run`` makes them first)."""
    split = split_path(config)
    merged = load_split(load_manifest(manifest_path(config)), split)
    if not config.data.classes:  # classes the user lists are trained as listed
        for name, members in trained_as_one(split).items():
            merged["label"] = merged["label"].where(~merged["label"].isin(members), name)
    classes = config.data.classes or sorted(set(merged["label"]) - {""})
    positive = config.data.positive_class
    members = screened_members(positive, classes)
    if members:
        merged["label"] = merged["label"].where(~merged["label"].isin(members), positive)
        classes = sorted((set(classes) - set(members)) | {positive})
        said = (positive, tuple(classes))
        if said not in _SCREENINGS_SAID:  # a run reads its split at each stage; once is enough to say so
            _SCREENINGS_SAID.add(said)
            named = " and ".join(members) if len(members) <= 4 else f"{len(members)} classes ({', '.join(members[:3])}, ...)"
            log.info("screening %s as one class %r: classes %s", named, positive, ", ".join(classes))
    return merged, classes


_SCREENINGS_SAID: set[tuple[str, tuple[str, ...]]] = set()


def load_training_data(config: Config, frame: pd.DataFrame | None = None, classes: list[str] | None = None
                       ) -> TrainingData:
    """The tensors of a config's split (``frame`` and ``classes`` when already read); scans of
    another dimensionality or number of volumes than the run's are left out (see :func:`matching_scans`)."""
    if frame is None:
        frame, classes = split_frame(config)
    frame = matching_scans(frame, config.preprocess)
    frame = capped_pool(frame, config.train.max_unlabelled, config.seed)
    return build_training_data(frame, classes, config.preprocess, config.data.cache_dir, config.train.workers)


def capped_pool(frame: pd.DataFrame, max_unlabelled: int, seed: int) -> pd.DataFrame:
    """``frame`` with at most ``max_unlabelled`` of its unlabelled rows (a draw seeded by ``seed``;
    0 keeps every one): the rest are never read, so a pool larger than memory trains on a part."""
    pool = np.flatnonzero(frame["subset"].to_numpy() == "unlabelled")
    if not max_unlabelled or len(pool) <= max_unlabelled:
        return frame
    kept = np.random.default_rng(seed).choice(pool, max_unlabelled, replace=False)
    log.info("loading %d of the %d unlabelled scans (train.max_unlabelled, a draw seeded by %d; the plan sets it "
             "where the pool would not fit in memory)", max_unlabelled, len(pool), seed)
    keep = np.ones(len(frame), bool)
    keep[pool] = False
    keep[kept] = True
    return frame[keep].reset_index(drop=True)


def matching_scans(frame: pd.DataFrame, config: PreprocessConfig) -> pd.DataFrame:
    """The rows whose scans the model of ``config`` takes; the others (2D pictures in a folder of
    volumes, a file of two sequences among files of four) are left out of training with a warning,
    not a crash."""
    dims = len(config.spatial_size)
    shapes = spatial_shapes(frame)
    keep = np.array([len(spatial) == dims for spatial, _ in shapes], dtype=bool)
    if not keep.all():
        dropped = frame[~keep]
        log.warning("%d scans left out of training: they are not %dD like the run (first: %s)", len(dropped), dims,
                    ", ".join(dropped["scan_id"].head(5)))
    if dims == 3:  # a picture's colours are averaged or repeated; a volume's sequences are never made up
        other = keep & np.array([channels != config.channels for _, channels in shapes], dtype=bool)
        if other.any():
            log.warning("%d scans left out of training: they hold another number of volumes than the %d a file "
                        "the run takes (first: %s)", int(other.sum()), config.channels,
                        ", ".join(frame["scan_id"][other].head(5)))
            keep &= ~other
    return frame[keep].reset_index(drop=True)
