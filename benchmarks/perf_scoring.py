"""Scoring speed and memory, against only reading and decoding the same files.

Every measurement runs in a fresh Python process (``python -m benchmarks.perf_scoring
decode|score ...``) so that its peak memory is its own; the parent samples the proportional
set size (PSS) of that process and its worker processes, summed, so pages the workers share
with their parent are not counted twice.  Scoring time is that of ``pipeline.stages.score.score``
(report, summary and review page included), without interpreter start-up and imports.

The folders and the short model runs this needs are made once under ``cache/bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORK = Path("cache/bench")


# ----- the folders and models the measurements use ------------------------------------------------

def link_folder(sources: list[Path], out: Path, n: int, suffix: str) -> Path:
    """``out`` holding ``n`` hard links (copies across file systems) cycling through ``sources``."""
    marker = out / ".complete"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = out / f"scan_{i:05d}{suffix}"
        if not target.exists():
            try:
                os.link(sources[i % len(sources)], target)
            except OSError:
                target.write_bytes(sources[i % len(sources)].read_bytes())
    marker.write_text(f"{n} files from {len(sources)} distinct sources\n")
    return out


def mnist_png_folder(n: int) -> Path:
    """``n`` distinct MNIST training PNGs (n <= 60,000), as the mnist100 config writes them."""
    from pipeline.config import load_config
    from pipeline.stages.run import prepare_data

    config = load_config("configs/mnist100.toml")
    train = Path(config.data.scans) / "train"
    if not train.exists():
        prepare_data(config)
    sources = sorted(train.glob("*.png"))[:n]
    if len(sources) < n:
        raise RuntimeError(f"only {len(sources)} PNGs in {train}; need {n}")
    return link_folder(sources, WORK / f"png_{n}", n, ".png")


def volume_folder(n: int, distinct: int = 50) -> Path:
    """``n`` synthetic 64^3 ``.nii.gz`` volumes, ``distinct`` of them different (the generator
    takes seconds per volume at 64^3, so larger folders repeat files)."""
    from pipeline.synth import generate_volumes

    source = WORK / f"volumes64_distinct{distinct}"
    if not (source / "labels.csv").exists():
        generate_volumes(source, n=distinct, size=64, seed=1, progress=True)
    return link_folder(sorted(source.glob("*.nii.gz")), WORK / f"volumes64_{n}", n, ".nii.gz")


def _picture(rng, size: int, abnormal: bool):
    """A grey radiograph-like picture: smooth anatomy-sized structure, film grain, and for
    ``abnormal`` a bright round opacity; 8-bit, so JPEG and PNG compress it as they would a scan."""
    import numpy as np
    from PIL import Image

    coarse = Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    picture = np.asarray(coarse, dtype=np.float32) * 0.6 + 50 + rng.normal(0, 6, (size, size))
    if abnormal:
        y, x = np.ogrid[:size, :size]
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 10]
        picture += 70 * ((y - cy) ** 2 + (x - cx) ** 2 < r * r)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))


def picture_folder(kind: str, n: int, distinct: int = 50) -> Path:
    """``n`` 512x512 grey pictures (``kind`` jpeg512 or png512), ``distinct`` of them different."""
    import numpy as np

    suffix = ".jpg" if kind == "jpeg512" else ".png"
    source = WORK / f"{kind}_distinct{distinct}"
    if not (source / ".complete").exists():
        source.mkdir(parents=True, exist_ok=True)
        for i in range(distinct):
            _picture(np.random.default_rng(i), 512, abnormal=i % 2 == 1).save(source / f"pic_{i:03d}{suffix}",
                                                                              quality=90)
        (source / ".complete").write_text("done\n")
    return link_folder(sorted(source.glob(f"*{suffix}")), WORK / f"{kind}_{n}", n, suffix)


def volume128_folder(n: int, distinct: int = 40) -> Path:
    """``n`` 128^3 int16 ``.nii.gz`` volumes: the 64^3 synthetic heads at twice the resolution."""
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import zoom

    source = WORK / f"volumes128_distinct{distinct}"
    if not (source / ".complete").exists():
        volume_folder(distinct, distinct)  # generates the distinct 64^3 volumes with their labels.csv
        small = WORK / f"volumes64_distinct{distinct}"
        source.mkdir(parents=True, exist_ok=True)
        for path in sorted(small.glob("*.nii.gz")):
            image = nib.load(path)
            data = zoom(np.asarray(image.dataobj, dtype=np.float32), 2, order=1)
            data = (data - data.min()) / max(float(np.ptp(data)), 1e-6) * 4000
            affine = image.affine.copy()
            affine[:3, :3] /= 2
            nib.save(nib.Nifti1Image(data.astype(np.int16), affine), source / path.name)
        (source / "labels.csv").write_text((small / "labels.csv").read_text())
        (source / ".complete").write_text("done\n")
    return link_folder(sorted(source.glob("*.nii.gz")), WORK / f"volumes128_{n}", n, ".nii.gz")


def planned_model(kind: str) -> Path:
    """A model the way a user makes one: ``pipeline run --scans`` on a small labelled folder of
    this kind of file, with no config, trained for a few seconds (scoring cost does not depend on
    what it learned), at the input size and network the plan stage picks for a default budget."""
    marker = WORK / f"model_{kind}.txt"
    if marker.exists() and (Path(marker.read_text().strip()) / "calibration.json").exists():
        return Path(marker.read_text().strip())
    if kind == "nii128":
        volume128_folder(40)
        scans = WORK / "volumes128_distinct40"  # with the generator's labels.csv
    else:
        scans = WORK / f"{kind}_distinct50"
        # class subfolders: the generator made odd-numbered pictures abnormal
        picture_folder(kind, 50)
        labelled = WORK / f"{kind}_labelled"
        for i, path in enumerate(sorted(scans.glob("pic_*"))):
            target = labelled / ("abnormal" if i % 2 else "normal") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(path, target)
        scans = labelled
    # The input size and network the plan stage chooses for such scans with its default budget
    # (the largest it allows: 128 wide in 2D, 64 in 3D); the few seconds of training here would
    # otherwise make it plan a smaller input.
    from pipeline.stages.plan import _architecture

    dims, size = (3, 64) if kind == "nii128" else (2, 128)
    arch = _architecture(size, dims)
    command = [sys.executable, "-m", "pipeline", "run", "--scans", str(scans), "--positive", "abnormal",
               "train.minutes=0.3", "--labels-per-class", "5", "--quiet", "split.calibration_per_class=5",
               f"preprocess.spatial_size={[size] * dims}", f"network.channels={arch['channels']}",
               f"network.stem_stride={arch['stem_stride']}",
               f"runs_dir={WORK / 'runs'}",
               f"name=bench_{kind}", f"data.manifest={WORK / f'{kind}.csv'}",
               f"data.split={WORK / f'{kind}.split.csv'}", f"data.cache_dir={WORK / 'cache'}"]
    subprocess.run(command, check=True)
    run = sorted((WORK / "runs").glob(f"bench_{kind}_*"))[-1]
    marker.write_text(str(run) + "\n")
    return run


def quick_model(name: str, config_path: str, overrides: list[str]) -> Path:
    """A calibrated run trained for a few steps: scoring cost does not depend on what it learned."""
    from pipeline.config import load_config
    from pipeline.stages.run import run_all

    marker = WORK / f"model_{name}.txt"
    if marker.exists() and (Path(marker.read_text().strip()) / "calibration.json").exists():
        return Path(marker.read_text().strip())
    config = load_config(config_path, [f"runs_dir={WORK / 'runs'}", f"name=bench_{name}", *overrides])
    run = run_all(config, progress=False)
    marker.write_text(str(run) + "\n")
    return run


def png_model() -> Path:
    return quick_model("png", "configs/mnist100.toml", ["method.name=supervised", "train.steps=100",
                                                        "train.eval_every=100"])


def volume_model() -> Path:
    from pipeline.synth import generate_volumes

    scans = WORK / "volume_model_scans"
    if not (scans / "labels.csv").exists():
        generate_volumes(scans, n=48, size=32, seed=2, test_fraction=0.25, progress=False)
    return quick_model("volumes", "configs/volumes.toml", [
        "method.name=supervised", "train.steps=20", "train.eval_every=20", f"data.scans={scans}",
        f"data.manifest={WORK / 'volume_model.csv'}", f"data.split={WORK / 'volume_model.split.csv'}",
        "split.labels_per_class=8", "split.calibration_per_class=8"])


# ----- measuring a child process ------------------------------------------------------------------

def run_sampled(command: list[str]) -> tuple[str, float, float]:
    """Run ``command``; return its stdout, wall seconds and the peak PSS (MiB) of it and its children."""
    import psutil

    start = time.perf_counter()
    child = psutil.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        total = 0
        for process in [child, *child.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        peak = max(peak, total)
        time.sleep(0.1)
    output = child.stdout.read()
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}")
    return output, time.perf_counter() - start, round(peak / 2**20, 1)


def measured(*args: str) -> dict:
    """Run ``python -m benchmarks.perf_scoring *args``; its JSON result plus ``peak_pss_mb``."""
    output, _, peak = run_sampled([sys.executable, "-m", "benchmarks.perf_scoring", *args])
    return {**json.loads(output.strip().splitlines()[-1]), "peak_pss_mb": peak}


def decode_all(folder: Path) -> dict:
    """Only read and decode every scan file, in this process: the floor scoring is compared to."""
    from pipeline.reading import find_scans

    files = find_scans(folder)
    return {"files": len(files), "seconds": decode_all_files(files)}


def score_all(folder: Path, run: Path, out: Path, workers: int) -> dict:
    from pipeline.reading import find_scans
    from pipeline.stages.score import score

    files = len(find_scans(folder))
    start = time.perf_counter()
    score(folder, run, out=out, workers=workers, progress=False)
    return {"files": files, "seconds": time.perf_counter() - start, "workers": workers}


def stage_costs(folder: Path, run: Path, n: int = 100) -> dict:
    """Milliseconds per scan of each scoring stage, one process and one thread each, on the first
    ``n`` scans: reading and decoding alone, preprocessing (decoding included: the MONAI chain of
    the run), the model (logits and out-of-distribution features in one pass)."""
    import numpy as np
    import torch

    from pipeline.data import preprocess_paths
    from pipeline.ood import logits_and_features
    from pipeline.reading import find_scans
    from pipeline.scoring import load_scorer, memory_bounded_sizes

    torch.set_num_threads(1)
    files = [str(p) for p in find_scans(folder)[:n]]
    decode = decode_all_files([Path(f) for f in files])
    model = load_scorer(run)[0]
    tick = time.perf_counter()
    arrays, _ = preprocess_paths(files, model.config.preprocess, workers=1, progress=False)
    preprocess = time.perf_counter() - tick
    images = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
    batch, _ = memory_bounded_sizes(model, model.config.score.batch_size, 512)
    logits_and_features(model.network, images[:batch], batch)  # warm-up
    tick = time.perf_counter()
    logits_and_features(model.network, images, batch)
    forward = time.perf_counter() - tick
    return {"scans": len(files), "decode_ms": 1000 * decode / len(files), "preprocess_ms": 1000 * preprocess / len(files),
            "model_ms": 1000 * forward / len(images)}


def decode_all_files(files: list[Path]) -> float:
    """Seconds to read and decode ``files`` (as ``decode_all``)."""
    import nibabel as nib
    import numpy as np
    import pydicom
    from PIL import Image

    start = time.perf_counter()
    for path in files:
        if path.name.endswith((".nii", ".nii.gz")):
            np.asanyarray(nib.load(path).dataobj)
        elif path.name.endswith(".dcm"):
            np.asarray(pydicom.dcmread(path).pixel_array)
        else:
            with Image.open(path) as image:
                np.asarray(image)
    return time.perf_counter() - start


def scoring_against_decoding(kind: str, n: int, workers: int = 2) -> dict:
    """``kind``: png (MNIST), volumes (64^3), jpeg512, png512 or nii128."""
    folder = {"png": mnist_png_folder, "volumes": volume_folder, "jpeg512": lambda n: picture_folder("jpeg512", n),
              "png512": lambda n: picture_folder("png512", n), "nii128": volume128_folder}[kind](n)
    run = {"png": png_model, "volumes": volume_model}.get(kind, lambda: planned_model(kind))()
    decoded = measured("decode", str(folder))
    scored = measured("score", str(folder), str(run), str(WORK / "reports" / f"{folder.name}.csv"), str(workers))
    model_input = json.loads((run / "checkpoint.json").read_text())["config"]["preprocess"]["spatial_size"]
    stages = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.perf_scoring", "stages", str(folder), str(run)],
                                       capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    return {"kind": kind, "files": n, "workers": workers, "model_input": "x".join(map(str, model_input)),
            "stages": stages,
            "decode": decoded, "score": scored,
            "decode_per_second": decoded["files"] / decoded["seconds"],
            "score_per_second": scored["files"] / scored["seconds"],
            "ratio": (scored["files"] / scored["seconds"]) / (decoded["files"] / decoded["seconds"])}


def main() -> int:
    parser = argparse.ArgumentParser(description="one measurement, run by benchmarks.performance")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("decode").add_argument("folder", type=Path)
    stages = sub.add_parser("stages")
    stages.add_argument("folder", type=Path)
    stages.add_argument("run", type=Path)
    scoring = sub.add_parser("score")
    for name in ("folder", "run", "out"):
        scoring.add_argument(name, type=Path)
    scoring.add_argument("workers", type=int)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.what == "decode":
        result = decode_all(args.folder)
    elif args.what == "stages":
        result = stage_costs(args.folder, args.run)
    else:
        result = score_all(args.folder, args.run, args.out, args.workers)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
