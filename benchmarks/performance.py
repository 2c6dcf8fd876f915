"""Regenerate benchmarks/performance.md: speed and memory against the plain alternatives.

Usage: python -m benchmarks.performance [--parts training,scoring,...] [--methods a,b] [--steps 30]
                                        [--baseline COMMIT]

Parts (each leaves ``results/performance/<part>.json``; the page is rebuilt from all present):

- training: samples per second of every method on MNIST-100, pipeline trainer against the
  source notes' loop style (``benchmarks.perf_training``); on CUDA too where there is a GPU.
- scoring: scans per second of ``pipeline score`` on 10,000 PNGs and 1,000 64^3 ``.nii.gz``
  volumes against only reading and decoding them (``benchmarks.perf_scoring``).
- scaling: scoring time and peak memory for 1,000, 10,000 and 50,000 PNGs and 1,000 and
  10,000 volumes.
- cache: files opened when the training tensors are built, built again, and trained on.
- make_train: wall time and peak memory of the README's ``make train`` (about 15 minutes).
- resolution: steps/s and samples/s of the consistency methods at 128x128, 256x256, 64^3 and
  96^3, with the network and batches the plan stage chooses (``benchmarks.perf_resolution``).
- levers: each speed lever's gain for every method at 128x128 and the Pi-model at 64^3, the
  ``--baseline`` commit measured side by side with this one (same batches), and
  ``torch.compile`` against eager.
- scoring_large: scoring 512x512 JPEGs and PNGs and 128^3 ``.nii.gz`` volumes against reading
  and decoding them, with peak memory.
- torchrun: a training run in one process against ``torchrun --nproc_per_node 2``.
- ingest: ``pipeline ingest`` of 2,000 and 10,000 distinct 512x512 JPEGs and 1,000 distinct 64^3
  ``.nii.gz`` volumes against reading and decoding them, with peak memory
  (``benchmarks.perf_ingest``).
- inference: milliseconds a scan of the trainer's predictions (round starts, evaluations,
  calibration, and scoring's forward pass) at fixed batch sizes and at ``forward_batch``'s, for the
  panel's input shapes.

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
PARTS = ("training", "scoring", "scaling", "cache", "make_train", "resolution", "levers", "scoring_large", "torchrun",
         "inference", "ingest")
# (name, input shape, network channels, stem stride, scans): the development panel's planned inputs
INFERENCE_CASES = (("28x28", (28, 28), [32, 64, 128], 1, 4000), ("128x128", (128, 128), [32, 64, 128, 192, 256], 2, 400),
                   ("24^3", (24, 24, 24), [16, 32, 64], 1, 1446), ("28^3", (28, 28, 28), [16, 32, 64], 1, 1446))
INFERENCE_BATCHES = (1024, 256, 64, 32, 16, 8)
CONSISTENCY_METHODS = ("pi_model", "mean_teacher", "fixmatch")
RESOLUTIONS = ((2, 128), (2, 256), (3, 64), (3, 96))
# The commit before issue 18's speed work: the levers part measures it beside this one.
BASELINE = "82d2f1d"
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

def planned_precision() -> str:
    """What the plan stage's probe chooses on this machine (at 128x128)."""
    from pipeline.stages.plan import _choose_precision

    fp = {"spatial_dims": 2, "colour_fraction": 0.0, "classes": ["normal", "abnormal"], "counts": {}}
    return _choose_precision(128, 2, fp, probe=True)[0]


def resolution_part(steps: int = 5) -> None:
    from benchmarks.perf_resolution import measure, planned_case

    precision = planned_precision()
    rows = []
    for dims, size in RESOLUTIONS:
        for method in CONSISTENCY_METHODS:
            row = measure(planned_case(method, dims, size, precision, steps=steps))
            print(f"{method} at {size}^{dims}: {row['seconds_per_step']:.3f} s a step, "
                  f"{row['samples_per_second']:.0f} samples/s", flush=True)
            rows.append(row)
    save("resolution", {"rows": rows, "precision": precision})


def inference_part() -> None:
    import torch

    from pipeline.config import NetworkConfig
    from pipeline.networks import forward_batch, network_factory
    from pipeline.trainer import predict_logits, refresh_batchnorm, refresh_count

    rows, refreshes = [], []
    for name, shape, channels, stem, scans in INFERENCE_CASES:
        network = network_factory(NetworkConfig(channels=channels, stem_stride=stem, dropout=0.1), 1, list(shape), 2)()
        images = torch.rand(scans, 1, *shape, generator=torch.Generator().manual_seed(0))
        chosen = forward_batch(network, images.shape[1:])
        for batch in sorted({*INFERENCE_BATCHES, chosen}, reverse=True):
            predict_logits(network, images[:batch], torch.device("cpu"), batch)  # warm-up
            tick = time.perf_counter()
            predict_logits(network, images, torch.device("cpu"), batch)
            ms = (time.perf_counter() - tick) * 1000 / scans
            print(f"inference at {name}, batch {batch}: {ms:.2f} ms a scan", flush=True)
            rows.append({"input": name, "channels": channels, "stem_stride": stem, "scans": scans, "batch": batch,
                         "chosen": batch == chosen, "ms_per_scan": ms})
        # batch-norm statistics are re-estimated at every evaluation and round start
        clean = torch.rand(refresh_count(images), 1, *shape, generator=torch.Generator().manual_seed(1))
        for batch in (256, chosen):
            refresh_batchnorm(network, clean[:batch], torch.device("cpu"), batch)  # warm-up
            tick = time.perf_counter()
            refresh_batchnorm(network, clean, torch.device("cpu"), batch)
            seconds = time.perf_counter() - tick
            print(f"batch-norm refresh at {name}, {len(clean)} scans in batches of {batch}: {seconds:.2f} s", flush=True)
            refreshes.append({"input": name, "scans": len(clean), "batch": batch, "chosen": batch == chosen,
                              "seconds": seconds})
    save("inference", {"rows": rows, "refreshes": refreshes})


def _baseline_tree(commit_id: str) -> Path:
    """A checkout of ``commit_id`` under cache/bench (made once)."""
    import subprocess

    tree = Path("cache/bench") / f"tree_{commit_id}"
    if not (tree / "pipeline").exists():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), commit_id], check=True)
    return tree.resolve()


def levers_part(baseline: str, steps_by_dims: dict[int, int] | None = None, rounds: int = 2) -> None:
    """Each lever's gain, cumulative, for every method at 128x128 and the Pi-model at 64^3, with
    the batches and network fixed per shape.

    Every case runs in a fresh process, the baseline's and this commit's alike, so that none
    inherits the memory and threads of the trainers before it; a method's cases run in turn,
    ``rounds`` times over, and each keeps its fastest round: this machine's speed drifts (the
    same mean-teacher step took 0.45 s and 0.71 s on one day), which a single pass would credit
    to whichever lever ran at the time.
    """
    import subprocess

    from benchmarks.perf_resolution import compile_speedup, measure_in, planned_case
    from pipeline.methods import METHODS

    steps_by_dims = steps_by_dims or {2: 8, 3: 3}  # a 64^3 step takes seconds, a 128x128 one a tenth of that
    tree, here = _baseline_tree(baseline), Path.cwd()
    rows = []
    shapes = [(m, 2, 128) for m in sorted(METHODS)] + [("pi_model", 3, 64)]
    for method, dims, size in shapes:
        old_arch = json.loads(subprocess.run(
            [sys.executable, "-c", f"import json; from pipeline.stages.plan import _architecture; "
                                   f"print(json.dumps(_architecture({size}, {dims})))"],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
            check=True).stdout)
        old = {**planned_case(method, dims, size, "float32", steps=steps_by_dims[dims], warmup=2),
               "channels": old_arch["channels"], "stem_stride": old_arch["stem_stride"]}
        cases = [("baseline commit", tree, old)]
        case = {**old, "dropout_kind": "element", "optimizer": "loop", "views": "affine_grid"}
        for lever, change in [("this commit, same settings", {}), ("+ channel dropout", {"dropout_kind": "channel"}),
                              ("+ bfloat16 autocast", {"precision": "bfloat16"}),
                              ("+ fused AdamW", {"optimizer": "fused"}),
                              ("+ sampling_grid views", {"views": "sampling_grid"})]:
            case = {**case, **change}
            cases.append((lever, here, case))
        new = planned_case(method, dims, size, "bfloat16", steps=steps_by_dims[dims], warmup=2)
        if (new["stem_stride"], new["channels"]) != (old["stem_stride"], old["channels"]):
            cases.append((f"+ the plan's stride-{new['stem_stride']} stem", here, new))
        timed: dict[str, list[dict]] = {lever: [] for lever, _, _ in cases}
        for _ in range(rounds):
            for lever, where, case in cases:
                timed[lever].append(measure_in(where, case))
        for lever, results in timed.items():
            fastest = min(results, key=lambda r: r["seconds_per_step"])
            each = [round(r["seconds_per_step"], 4) for r in results]
            rows.append({**fastest, "lever": lever, "round_seconds": each})
            print(f"{method} {size}^{dims} {lever}: {fastest['seconds_per_step']:.3f} s a step (rounds: {each})",
                  flush=True)
    save("levers", {"rows": rows, "baseline": baseline, "rounds": rounds, "compile": compile_speedup()})


def scoring_large_part(n: int = 1_000) -> None:
    from benchmarks.perf_scoring import scoring_against_decoding

    rows = [scoring_against_decoding(kind, n if kind != "nii128" else n // 4) for kind in ("jpeg512", "png512",
                                                                                          "nii128")]
    for r in rows:
        print(f"{r['kind']} x{r['files']}: score {r['score_per_second']:.1f}/s, decode {r['decode_per_second']:.1f}/s, "
              f"ratio {r['ratio']:.2f}, peak {r['score']['peak_pss_mb']:.0f} MiB", flush=True)
    save("scoring_large", {"rows": rows})


def ingest_part() -> None:
    from benchmarks.perf_ingest import ingest_against_decoding

    rows = [ingest_against_decoding(kind, n) for kind, n in (("jpeg512", 2_000), ("jpeg512", 10_000), ("nii64", 1_000),
                                                              ("dcm512", 2_000))]
    for r in rows:
        print(f"{r['kind']} x{r['files']}: ingest {r['ingest_per_second']:.1f}/s, decode {r['decode_per_second']:.1f}/s, "
              f"ratio {r['ratio']:.2f}, peak {r['ingest']['peak_pss_mb']:.0f} MiB", flush=True)
    save("ingest", {"rows": rows})


def torchrun_part(steps: int = 300) -> None:
    """The same short pi_model run on MNIST-100, in one process and under torchrun on 2."""
    from benchmarks.perf_scoring import run_sampled

    mnist_data()
    rows = []
    launchers = {"one process (2 threads)": [sys.executable, "-m", "pipeline"],
                 "torchrun --nproc_per_node 2 (1 thread each)": [str(Path(sys.executable).with_name("torchrun")),
                                                                 "--nproc_per_node", "2", "-m", "pipeline"]}
    for label, launcher in launchers.items():
        name = "bench_torchrun" if "torchrun" in label else "bench_single"
        runs = Path("cache/bench/runs")
        command = [*launcher, "train", "--config", "configs/mnist100.toml", "method.name=pi_model",
                   "train.minutes=0", f"train.steps={steps}", f"train.eval_every={steps}", f"runs_dir={runs}",
                   f"name={name}"]
        _, seconds, peak = run_sampled(command)
        run = sorted(runs.glob(f"{name}_*"))[-1]
        summary = json.loads((run / "train_summary.json").read_text())
        rows.append({"launcher": label, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
                     "samples_per_second": summary["samples_per_second"], "wall_seconds": seconds,
                     "peak_pss_mb": peak, "test_accuracy": summary.get("test_accuracy")})
        print(f"{label}: {summary['samples_per_second']:.0f} samples/s", flush=True)
    save("torchrun", {"rows": rows})


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


def resolution_section(result) -> str:
    rows = [{"method": r["method"], "input": f"{r['size']}^{r['dims']}" if r["dims"] == 3 else f"{r['size']}x{r['size']}",
             "network (stem stride)": f"{r['channels']} (/{r['stem_stride']})",
             "batches labelled + unlabelled": " + ".join(map(str, r["batches"])),
             "ms/step (views)": f"{r['seconds_per_step'] * 1000:.0f} ({r['view_seconds_per_step'] * 1000:.0f})",
             "steps/s": f"{r['steps_per_second']:.2f}", "samples/s": f"{r['samples_per_second']:.0f}"}
            for r in result["rows"]]
    return f"""## Training at realistic resolutions ({provenance(result)})

`Trainer.step` on random images, with the network and the full batches the plan stage chooses
for each size and the precision its probe chose here ({result['precision']}); the consistency
methods see each unlabelled scan in two views, so a step holds labelled + 2 x unlabelled images
("samples" counts each scan once). Regenerate: `make bench PARTS=resolution`.

{markdown_table(rows)}
"""


def levers_section(result) -> str:
    """One row per method and input: ms a step after each lever, with its gain over the previous
    column, and the two parts the smallest levers act on, timed within the step."""
    table: dict[tuple, dict] = {}
    for r in result["rows"]:
        key = (r["method"], r["dims"], r["size"])
        row = table.setdefault(key, {
            "method": r["method"], "input": f"{r['size']}^3" if r["dims"] == 3 else f"{r['size']}x{r['size']}",
            "batches": " + ".join(map(str, r["batches"])), "_first": r["seconds_per_step"],
            "_last": r["seconds_per_step"]})
        lever = r["lever"] if "stem" not in r["lever"] else "+ the plan's stem"
        gain = "" if lever == "baseline commit" else f" ({row['_last'] / r['seconds_per_step']:.2f}x)"
        row[lever] = f"{r['seconds_per_step'] * 1000:.0f}{gain}"
        row["_last"] = r["seconds_per_step"]
        row[f"_{lever}"] = r
    rows = []
    for row in table.values():
        def part(lever, name, row=row):
            r = row.get(f"_{lever}", {})
            return r.get(f"{name}_seconds_per_step", float("nan")) * 1000

        rows.append({**row,
                     "optimiser ms: loop → fused": f"{part('+ bfloat16 autocast', 'optimiser'):.1f} → "
                                                   f"{part('+ fused AdamW', 'optimiser'):.1f}",
                     "views ms: affine_grid → sampling_grid": f"{part('+ fused AdamW', 'view'):.0f} → "
                                                              f"{part('+ sampling_grid views', 'view'):.0f}",
                     "speed-up over the baseline": f"**{row['_first'] / row['_last']:.2f}x**"})
    columns = ["method", "input", "batches", "baseline commit", "this commit, same settings", "+ channel dropout",
               "+ bfloat16 autocast", "+ fused AdamW", "+ sampling_grid views", "+ the plan's stem",
               "optimiser ms: loop → fused", "views ms: affine_grid → sampling_grid", "speed-up over the baseline"]
    rows = [{c: row.get(c, "") for c in columns} for row in rows]
    c = result["compile"]
    return f"""## Speed levers, side by side with commit `{result['baseline']}` ({provenance(result)})

Every method's training step with the same batches, measured in one run: first the code of
commit `{result['baseline']}` (before this work) with the network its plan stage built, then this
commit with the same settings, then each lever added in turn (milliseconds a step, and in brackets
the gain over the column before). The levers: dropout of whole feature maps instead of single
values; bfloat16 autocast; AdamW's fused kernel instead of its per-parameter loop; the views'
sampling grid built by `pipeline.augment.sampling_grid` instead of `affine_grid`; for volumes, the
plan's strided stem. Each case ran in a process of its own, {result.get('rounds', 1)} rounds in
turn, and keeps its fastest round; whole steps still vary by about a fifth from run to run, so the
two smallest levers are read from the parts they change, timed within the step (the last columns
but one). Host-device copies are none on a CPU: the tensors stay where they are. Regenerate:
`make bench PARTS=levers` (`--baseline COMMIT` to compare with another commit).

{markdown_table(rows)}

`torch.compile` (inductor, C++ on CPU) was measured and is not used: the planned 128x128 network's
forward and backward pass on {c['batch']} images under bfloat16 took {c['compiled_seconds_per_step'] * 1000:.0f} ms compiled
against {c['eager_seconds_per_step'] * 1000:.0f} ms eager, after {c['compiled_warmup_seconds']:.0f} s of compilation.
"""


def scoring_large_section(result) -> str:
    names = {"jpeg512": "512x512 JPEG", "png512": "512x512 PNG", "nii128": "128^3 .nii.gz"}
    rows = [{
        "scans": f"{r['files']:,} {names[r['kind']]}",
        "model input": r.get("model_input", ""),
        "pipeline score, scans/s": f"{r['score_per_second']:.1f}",
        "read + decode only, scans/s": f"{r['decode_per_second']:.1f}",
        "ratio": f"**{r['ratio']:.2f}x**" + (" ✓" if r["ratio"] >= 0.5 else " ✗"),
        "score s": f"{r['score']['seconds']:.1f}",
        "peak memory score / decode (MiB)": f"{r['score']['peak_pss_mb']:.0f} / {r['decode']['peak_pss_mb']:.0f}",
    } for r in result["rows"]]
    stages = [{
        "scans": names[r["kind"]], "read + decode ms": f"{r['stages']['decode_ms']:.1f}",
        "preprocess ms (decode included)": f"{r['stages']['preprocess_ms']:.1f}",
        "model ms": f"{r['stages']['model_ms']:.1f}",
        "bound: 2 cores / (preprocess + model)": "{:.0f} scans/s = {:.2f}x decode".format(
            2000 / (r["stages"]["preprocess_ms"] + r["stages"]["model_ms"]),
            2 * r["stages"]["decode_ms"] / (r["stages"]["preprocess_ms"] + r["stages"]["model_ms"])),
    } for r in result["rows"] if "stages" in r]
    return f"""## Scoring realistic files ({provenance(result)})

As "Scoring throughput" above, on larger files: the model's preprocessing resizes each scan to
its input (the plan stage's size for such scans), 2 workers. Target 0.5x the read + decode
speed; peak memory of volume scoring under 1 GiB. Regenerate: `make bench PARTS=scoring_large`.

{markdown_table(rows)}

Where the time goes: each stage on its own, one process with one thread, per scan (first 100
scans). Scoring does all of a scan's work on the machine's two cores, so it cannot run faster
than two cores divided by the work per scan, whatever the overlap of workers and model.

{markdown_table(stages)}
"""


def ingest_section(result) -> str:
    names = {"jpeg512": "512x512 JPEG", "nii64": "64^3 .nii.gz", "dcm512": "512x512 DICOM radiographs"}
    rows = [{
        "scans": f"{r['files']:,} {names[r['kind']]}",
        "pipeline ingest, scans/s": f"{r['ingest_per_second']:.1f}",
        "read + decode only, scans/s": f"{r['decode_per_second']:.1f}",
        "ratio": f"**{r['ratio']:.2f}x**",
        "ingest s": f"{r['ingest']['seconds']:.1f}",
        "ok / other rows": "{:,} / {:,}".format(r["ingest"]["status"].get("ok", 0),
                                                r["ingest"]["files"] - r["ingest"]["status"].get("ok", 0)),
        "peak memory ingest / decode (MiB)": f"{r['ingest']['peak_pss_mb']:.0f} / {r['decode']['peak_pss_mb']:.0f}",
    } for r in result["rows"]]
    pictures = sorted((r for r in result["rows"] if r["kind"] == "jpeg512"), key=lambda r: r["files"])
    marginal = ""
    if len(pictures) >= 2:
        small, large = pictures[0], pictures[-1]
        extra = large["files"] - small["files"]
        seconds = large["ingest"]["seconds"] - small["ingest"]["seconds"]
        fixed = small["ingest"]["seconds"] - small["files"] * seconds / extra
        marginal = (f"\nThe {extra:,} pictures the larger folder adds took {seconds:.1f} s ({extra / seconds:.0f} scans/s), so "
                    f"about {fixed:.0f} s of each run is fixed (starting the worker processes, which import MONAI and "
                    "PyTorch); the comparison of every hash with every other does not show at this size.\n")
    if any(r["kind"] == "dcm512" for r in result["rows"]):
        marginal += ("\nDICOM files are read with pydicom alone, so their workers never import MONAI or PyTorch "
                     "(`describe_scan` of a `.dcm` leaves both unimported; of a `.jpg` it imports both): hence the "
                     "DICOM folder's lower peak memory and no fixed start.\n")
    return f"""## Ingesting a folder ({provenance(result)})

`pipeline.stages.ingest.ingest` of a folder of distinct scans in two class subfolders (each file
read whole in 2 worker processes: sha256, decoding, intensity fingerprint, a perceptual hash of
each picture; then every picture's hash against every other's for near duplicates, and the
manifest and problems list written) against only reading and decoding the same files with
nibabel / Pillow / pydicom in one process. Peak memory is the PSS of the process and its workers, summed.
Regenerate: `make bench PARTS=ingest`.

{markdown_table(rows)}
{marginal}"""


def torchrun_section(result) -> str:
    rows = [{"launcher": r["launcher"], "steps": r["steps"], "training s": f"{r['train_seconds']:.0f}",
             "samples/s": f"{r['samples_per_second']:.0f}", "whole command s": f"{r['wall_seconds']:.0f}",
             "peak memory (MiB)": f"{r['peak_pss_mb']:.0f}"} for r in result["rows"]]
    return f"""## One process against torchrun ({provenance(result)})

`pipeline train` of the Pi-model on MNIST-100 for the same number of steps, in one process with
2 threads and under `torchrun --nproc_per_node 2` (DDP over gloo, 1 thread each, each process
drawing half of every batch). Regenerate: `make bench PARTS=torchrun`.

{markdown_table(rows)}
"""


def refresh_table(result) -> str:
    rows = [{"input": r["input"], "scans": r["scans"],
             "batch": f"**{r['batch']}** (`forward_batch`)" if r["chosen"] else r["batch"],
             "seconds a refresh": f"{r['seconds']:.2f}"} for r in result["refreshes"]]
    return f"""
Batch-norm statistics are re-estimated on clean training scans (`refresh_batchnorm`, `refresh_count` of
them) at every evaluation and round start, 8 or more times in a 3-minute run:

{markdown_table(rows)}
"""


def inference_section(result) -> str:
    rows = [{"input": r["input"], "network (stem stride)": f"{r['channels']} (/{r['stem_stride']})",
             "scans": r["scans"], "batch": f"**{r['batch']}** (`forward_batch`)" if r["chosen"] else r["batch"],
             "ms a scan": f"{r['ms_per_scan']:.2f}"} for r in result["rows"]]
    return f"""## Prediction batch size ({provenance(result)})

`predict_logits` (evaluation mode, float32, no gradient) over a set of random scans of the development
panel's planned inputs, at fixed batch sizes and at the one `forward_batch` chooses (about 16 MiB of first-layer output, 1 to 64 scans). The trainer
predicts the unlabelled pool at each round start of the default method and the calibration scans at
each evaluation; scoring runs the same forward pass. Regenerate: `make bench PARTS=inference`.

{markdown_table(rows)}
{refresh_table(result)}"""


def write_report() -> None:
    sections = {"training": training_section, "scoring": scoring_section, "scaling": scaling_section,
                "cache": cache_section, "make_train": make_train_section, "resolution": resolution_section,
                "levers": levers_section, "scoring_large": scoring_large_section, "torchrun": torchrun_section,
                "inference": inference_section, "ingest": ingest_section}
    found = {part: load(part) for part in PARTS}
    body = "\n".join(sections[p](r) for p, r in found.items() if r)
    missing = [p for p, r in found.items() if not r]
    machines = "; ".join(sorted({r["machine"] for r in found.values() if r})) or "-"
    notes = HERE / "performance_notes.md"
    text = f"""# Performance

Regenerate: `make bench` (every part, about an hour, on an idle machine) or
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
    parser.add_argument("--baseline", default=BASELINE, help="the commit the levers part compares with")
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
                   "scaling": scaling_part, "cache": cache_part, "make_train": make_train_part,
                   "resolution": resolution_part, "levers": lambda: levers_part(args.baseline),
                   "scoring_large": scoring_large_part, "torchrun": torchrun_part,
                   "inference": inference_part, "ingest": ingest_part}
        for part in parts:
            actions[part]()
            write_report()
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
