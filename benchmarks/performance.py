"""Regenerate benchmarks/performance.md: speed and memory against the plain alternatives.

Usage: python -m benchmarks.performance [--parts training,scoring,scaling,cache,make_train]
                                        [--methods a,b] [--steps 30]

Parts (each leaves ``results/performance/<part>.json``; the page is rebuilt from all present):

- training: samples per second of every method on MNIST-100, pipeline trainer against the
  source notes' loop style (``benchmarks.perf_training``); on CUDA too where there is a GPU.
- scoring: scans per second of ``pipeline score`` on 10,000 PNGs and 1,000 64^3 ``.nii.gz``
  volumes against only reading and decoding them (``benchmarks.perf_scoring``).
- scaling: scoring time and peak memory for 1,000, 10,000 and 50,000 PNGs and 1,000 and
  10,000 volumes.
- cache: files opened when the training tensors are built, built again, and trained on.
- make_train: wall time and peak memory of the README's ``make train`` (about 15 minutes).

Run it on an otherwise idle machine: every figure is a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import HERE, RESULTS, commit, machine, markdown_table
from pipeline.io import write_json, write_text

SUITE = "performance"
PARTS = ("training", "scoring", "scaling", "cache", "make_train")
TARGETS = {"training": 3.0, "scoring": 0.8}


def save(part: str, payload: dict) -> None:
    write_json(RESULTS / SUITE / f"{part}.json", {
        "part": part, "machine": machine(), "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_load_at_end": round(os.getloadavg()[0], 2), **payload})


def mnist_data():
    from pipeline.config import load_config
    from pipeline.stages.run import prepare_data

    return prepare_data(load_config("configs/mnist100.toml"), progress=False)


def training_part(methods: list[str], steps: int) -> None:
    import torch

    from benchmarks.perf_training import training_throughput
    from pipeline.config import load_config

    data = mnist_data()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for name in methods:
            config = load_config("configs/mnist100.toml", [f"method.name={name}", f"train.device={device}"])
            row = training_throughput(config, data, steps=steps)
            print(f"{device} {name}: pipeline {row['pipeline']['samples_per_second']:.0f} samples/s, notes loop "
                  f"{row['notes_loop']['samples_per_second']:.0f}, ratio {row['ratio']:.2f}", flush=True)
            rows.append(row)
    save("training", {"rows": rows})


def scoring_part() -> None:
    from benchmarks.perf_scoring import scoring_against_decoding

    rows = [scoring_against_decoding("png", 10_000), scoring_against_decoding("volumes", 1_000)]
    for r in rows:
        print(f"{r['kind']} x{r['files']}: score {r['score_per_second']:.0f}/s, decode {r['decode_per_second']:.0f}/s, "
              f"ratio {r['ratio']:.2f}", flush=True)
    save("scoring", {"rows": rows})


def scaling_part(png_sizes=(1_000, 10_000, 50_000), volume_sizes=(1_000, 10_000)) -> None:
    from benchmarks.perf_scoring import (
        measured,
        mnist_png_folder,
        png_model,
        volume_folder,
        volume_model,
    )

    rows = []
    for kind, sizes, folder_of, run in (("png", png_sizes, mnist_png_folder, png_model()),
                                        ("volumes", volume_sizes, volume_folder, volume_model())):
        for n in sizes:
            folder = folder_of(n)
            result = measured("score", str(folder), str(run), str(Path("cache/bench/reports") / f"{folder.name}.csv"),
                              "2")
            rows.append({"kind": kind, "files": n, **result})
            print(f"score {kind} {n}: {result['seconds']:.1f} s, peak {result['peak_pss_mb']} MiB", flush=True)
    save("scaling", {"rows": rows})


def cache_part() -> None:
    """Count the files opened for reading while tensors are built, rebuilt and trained on."""
    from pipeline.config import load_config
    from pipeline.data import build_training_data
    from pipeline.manifest import load_manifest, load_split, manifest_path, split_path
    from pipeline.trainer import Trainer

    config = load_config("configs/mnist100.toml", ["method.name=fixmatch", "train.steps=24", "train.eval_every=1000"])
    mnist_data()  # makes sure the scans, manifest and split exist
    merged = load_split(load_manifest(manifest_path(config)), split_path(config))
    keep = merged["subset"].isin(["labelled", "calibration"]) | (merged.groupby("subset").cumcount() < 1800)
    frame = merged[keep].reset_index(drop=True)
    scans = str(Path(config.data.scans).resolve())
    opened: list[str] = []
    counting = [False]

    def hook(event, args):
        if counting[0] and event == "open" and isinstance(args[0], (str, Path)):
            mode = args[1] or "r"
            if "r" in str(mode) and "+" not in str(mode):
                opened.append(str(Path(args[0]).resolve()))

    sys.addaudithook(hook)
    # safetensors memory-maps the cache from Rust, unseen by the audit hook: count its loads.
    import pipeline.data as data_module

    load_file, cache_loads = data_module.load_file, []

    def counted_load_file(path, *args, **kwargs):
        cache_loads.append(str(path))
        return load_file(path, *args, **kwargs)

    def count(action):
        opened.clear()
        cache_loads.clear()
        counting[0] = True
        data_module.load_file = counted_load_file
        try:
            result = action()
        finally:
            counting[0] = False
            data_module.load_file = load_file
        return result, [p for p in opened if p.startswith(scans)], list(cache_loads)

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as run_dir:
        def build():
            return build_training_data(frame, config.data.classes, config.preprocess, cache, workers=1)

        data, first_scans, _ = count(build)
        data, second_scans, second_cache = count(build)
        per_epoch = len(data.unlabelled) / config.train.unlabelled_batch_size
        trainer = Trainer(config, data, run_dir, progress=False)
        _, training_scans, training_cache = count(lambda: [trainer.step(0.5) for _ in range(config.train.steps)])
    rows = [
        {"stage": "first build (preprocess every scan, write the cache)", "scan files opened": len(first_scans),
         "cache loads": 0},
        {"stage": "second build (same manifest rows and preprocessing)", "scan files opened": len(second_scans),
         "cache loads": len(second_cache)},
        {"stage": f"{config.train.steps} training steps ({config.train.steps / per_epoch:.1f} epochs of the "
                  f"unlabelled images)", "scan files opened": len(training_scans),
         "cache loads": len(training_cache)},
    ]
    for r in rows:
        print(r, flush=True)
    save("cache", {"scans": len(frame), "rows": rows})


def make_train_part() -> None:
    from benchmarks.perf_scoring import run_sampled

    output, seconds, peak = run_sampled(["make", "train"])
    runs = Path("runs/LATEST").read_text().strip()
    summary = json.loads((Path(runs) / "train_summary.json").read_text())
    save("make_train", {"seconds": round(seconds, 1), "peak_pss_mb": peak, "run": runs,
                        "test_accuracy": summary["test_accuracy"], "method": summary["method"]})


# ----- the page ------------------------------------------------------------------------------------

def load(part: str) -> dict | None:
    path = RESULTS / SUITE / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def provenance(result: dict) -> str:
    return f"{result['date']}, commit `{result['commit']}`, load at end {result['cpu_load_at_end']}"


def _split_ms(side: dict) -> str:
    parts = (side["seconds_per_step"], side["data_seconds_per_step"], side["view_seconds_per_step"],
             side["compute_seconds_per_step"])
    return "{:.0f} = {:.1f} + {:.0f} + {:.0f}".format(*(1000 * v for v in parts))


def training_section(result) -> str:
    rows = [{
        "method": r["method"], "device": r["device"],
        "pipeline samples/s": f"{r['pipeline']['samples_per_second']:.0f}",
        "notes loop samples/s": f"{r['notes_loop']['samples_per_second']:.0f}",
        "ratio": f"**{r['ratio']:.2f}x**" + (" ✓" if r["ratio"] >= TARGETS["training"] else " ✗"),
        "pipeline ms/step = data + views + compute": _split_ms(r["pipeline"]),
        "notes ms/step = data + views + compute": _split_ms(r["notes_loop"]),
        "ratio if the pipeline's data and views were free": "{:.2f}x".format(
            r["notes_loop"]["seconds_per_step"] / r["pipeline"]["compute_seconds_per_step"]),
    } for r in result["rows"]]
    return f"""## Training throughput on MNIST-100 ({provenance(result)})

Samples per second (labelled + unlabelled) over {result['rows'][0]['steps']} timed steps after 5 warm-up steps, the same
method, network and optimiser step on both sides; target {TARGETS['training']:.0f}x the notes' loop
(`benchmarks/perf_training.py` says exactly what each side does). Each step's time is split into
drawing the batch ("data"), making the random views ("views") and the rest: forward passes,
losses, backward pass and optimiser step ("compute", the same work on both sides).

{markdown_table(rows)}
"""


def scoring_section(result) -> str:
    rows = [{
        "scans": f"{r['files']:,} {'PNG (28x28)' if r['kind'] == 'png' else '64^3 .nii.gz'}",
        "pipeline score, scans/s": f"{r['score_per_second']:.0f}",
        "read + decode only, scans/s": f"{r['decode_per_second']:.0f}",
        "ratio": f"**{r['ratio']:.2f}x**" + (" ✓" if r["ratio"] >= TARGETS["scoring"] else " ✗"),
        "score s": f"{r['score']['seconds']:.1f}",
        "workers": r["workers"],
        "peak memory score / decode (MiB)": f"{r['score']['peak_pss_mb']:.0f} / {r['decode']['peak_pss_mb']:.0f}",
    } for r in result["rows"]]
    return f"""## Scoring throughput ({provenance(result)})

`pipeline.stages.score.score` on a folder (preprocessing in worker processes, the model, the CSV report,
summary and review page) against only reading and decoding the same files with nibabel / Pillow
in one process. Target {TARGETS['scoring']}x. Peak memory is the PSS of the process and its workers, summed.

{markdown_table(rows)}
"""


def scaling_section(result) -> str:
    table = []
    for kind in ("png", "volumes"):
        rows = [r for r in result["rows"] if r.get("kind", "png") == kind]
        if not rows:
            continue
        base = rows[0]
        table += [{
            "scans": f"{r['files']:,} {'PNG' if kind == 'png' else '64^3 .nii.gz'}", "score s": f"{r['seconds']:.1f}",
            "s per 1,000 scans": f"{r['seconds'] / r['files'] * 1000:.2f}",
            "time per scan / at 1,000": f"{(r['seconds'] / r['files']) / (base['seconds'] / base['files']):.2f}",
            "peak memory (MiB)": f"{r['peak_pss_mb']:.0f}",
        } for r in rows]
    return f"""## Scoring scales linearly ({provenance(result)})

The same model per kind, 2 workers. PNGs are distinct MNIST images; the volume folders repeat 50
distinct generated volumes through hard links (the 64^3 generator takes seconds a volume). Linear
scaling means a flat "s per 1,000 scans"; flat memory means peak memory that does not grow with
the folder.

{markdown_table(table)}
"""


def cache_section(result) -> str:
    return f"""## Preprocessing cache ({provenance(result)})

Scan files opened for reading (counted with a Python audit hook on `open`) and loads of the
tensor cache (a safetensors file) while the training tensors
of {result['scans']:,} MNIST scans are built (preprocessing in this process), built again, and
trained on for more than one epoch.

{markdown_table(result['rows'])}
"""


def make_train_section(result) -> str:
    return f"""## `make train` ({provenance(result)})

The README's default command ({result['method']}, data stages cached): {result['seconds'] / 60:.1f} min wall,
peak memory {result['peak_pss_mb']:.0f} MiB (PSS of make, the pipeline and its workers, summed),
test accuracy {result['test_accuracy'] * 100:.2f}%.
"""


def write_report() -> None:
    sections = {"training": training_section, "scoring": scoring_section, "scaling": scaling_section,
                "cache": cache_section, "make_train": make_train_section}
    found = {part: load(part) for part in PARTS}
    body = "\n".join(sections[p](r) for p, r in found.items() if r)
    missing = [p for p, r in found.items() if not r]
    machines = "; ".join(sorted({r["machine"] for r in found.values() if r})) or "-"
    notes = HERE / "performance_notes.md"
    text = f"""# Performance

Regenerate: `make bench` (every part, about 25 minutes, on an idle machine) or
`make bench PARTS=training,scoring`. Results accumulate in `benchmarks/results/performance/`.

Machine: {machines}. No CUDA GPU was available when these figures were taken; where one is,
the training part measures it too and its rows appear with device `cuda`.
{('Not yet measured: ' + ', '.join(missing) + '.') if missing else ''}

{body}
{notes.read_text() if notes.exists() else ''}"""
    write_text(HERE / "performance.md", text)


def main() -> int:
    from pipeline.methods import METHODS

    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--methods", default=",".join(sorted(METHODS)))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; registered: {', '.join(sorted(METHODS))}")
    if not args.report_only:
        actions = {"training": lambda: training_part(methods, args.steps), "scoring": scoring_part,
                   "scaling": scaling_part, "cache": cache_part, "make_train": make_train_part}
        for part in parts:
            actions[part]()
            write_report()
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
