"""Training steps at realistic resolutions, and what each speed lever buys.

A step is ``Trainer.step`` on random images of the given shape: drawing the batch, making the
views, the forward and backward passes, the optimiser step. The network is the one the plan
stage builds for that size (``pipeline.stages.plan._architecture``), the batches its full
batches (``_batch_sizes``). Ramp-ups are mid-way, so every unsupervised term is on.

This file runs in two ways:

- imported by ``benchmarks.performance`` (the ``resolution`` and ``levers`` parts);
- as a script, ``python benchmarks/perf_resolution.py --measure JSON``, from the root of another
  checkout (``PYTHONPATH`` set to it): it then times that checkout's code, so that an older commit
  and this one are measured side by side in one run, on one machine, with the same batches.
  For that reason it imports nothing but ``pipeline`` and the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRESS = 0.5


def measure(case: dict) -> dict:
    """The median time of ``case['steps']`` training steps (after ``case['warmup']``) of one configuration.

    ``case`` keys: method, dims, size, channels, stem_stride, batches ([labelled, unlabelled]),
    precision, and optionally dropout_kind (left out for commits that predate it), steps, warmup,
    and the levers' "before" for this commit's code: ``optimizer: "loop"`` (AdamW's default
    per-parameter loop, not one fused kernel) and ``views: "affine_grid"`` (MONAI's
    ``AffineTransform``, which builds the grid with ``affine_grid``, not ``sampling_grid``).
    """
    import torch

    from pipeline.config import load_config
    from pipeline.data import TrainingData
    from pipeline.trainer import Trainer

    n = 200
    shape = [case["size"]] * case["dims"]
    generator = torch.Generator().manual_seed(0)
    index = torch.arange(n)
    data = TrainingData(images=torch.rand(n, 1, *shape, generator=generator),
                        labels=torch.randint(2, (n,), generator=generator), scan_ids=[str(i) for i in range(n)],
                        classes=["normal", "abnormal"], labelled=index[:40], unlabelled=index[40:160],
                        calibration=index[160:180], test=index[180:])
    labelled, unlabelled = case["batches"]
    overrides = [f"method.name={case['method']}", f"preprocess.spatial_size={shape}",
                 f"network.channels={case['channels']}", f"network.stem_stride={case['stem_stride']}",
                 "network.dropout=0.1", f"train.batch_size={labelled}", f"train.unlabelled_batch_size={unlabelled}",
                 f"train.precision={case['precision']}", "train.threads=0"]
    if case.get("dropout_kind"):
        overrides.append(f"network.dropout_kind={case['dropout_kind']}")
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, data, Path(folder), progress=False)
        if case.get("optimizer") == "loop":
            trainer.optimizer = torch.optim.AdamW(trainer.method.parameters(), lr=config.train.lr,
                                                  weight_decay=config.train.weight_decay, foreach=False)
        if case.get("views") == "affine_grid":
            _warp_with_monai(trainer.augment)
        spent = {"views": 0.0, "optimiser": 0.0}  # the parts two levers act on, timed within the step

        def timed(call, part):
            def wrapper(*args, **kwargs):
                tick = time.perf_counter()
                out = call(*args, **kwargs)
                spent[part] += time.perf_counter() - tick
                return out
            return wrapper

        trainer.augment.weak = timed(trainer.augment.weak, "views")
        trainer.augment.strong = timed(trainer.augment.strong, "views")
        trainer.optimizer.step = timed(trainer.optimizer.step, "optimiser")
        for _ in range(case.get("warmup", 2)):
            trainer.step(PROGRESS)
        spent.update(views=0.0, optimiser=0.0)
        samples, times = 0, []
        steps = case.get("steps", 5)
        for _ in range(steps):
            tick = time.perf_counter()
            samples += trainer.step(PROGRESS)[1]
            times.append(time.perf_counter() - tick)
        seconds = statistics.median(times)  # a step slowed by something else on the machine does not count
    return {**case, "seconds_per_step": seconds, "view_seconds_per_step": spent["views"] / steps,
            "optimiser_seconds_per_step": spent["optimiser"] / steps,
            "steps_per_second": 1 / seconds, "samples_per_second": samples / steps / seconds}


def _warp_with_monai(augmenter) -> None:
    """Make ``augmenter`` warp through MONAI's ``AffineTransform``, as before ``sampling_grid``."""
    from monai.networks.layers import AffineTransform

    from pipeline.augment import random_affine_matrices

    warp = AffineTransform(normalized=True, padding_mode="zeros", align_corners=False)

    def affine(images, rotate, scale, shear, translate):
        theta = random_affine_matrices(images.shape[0], augmenter.spatial_dims, rotate, scale, shear, translate,
                                       augmenter.generator).to(images.device, images.dtype)
        return warp(images, theta)

    augmenter._affine = affine


def measure_in(tree: Path, case: dict) -> dict:
    """``measure(case)`` in a fresh process on the code of the checkout at ``tree``."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(case)],
                         cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def planned_case(method: str, dims: int, size: int, precision: str, **extra) -> dict:
    """The plan stage's network and full batches for ``size``."""
    from pipeline.stages.plan import _architecture, _batch_sizes

    arch = _architecture(size, dims)
    return {"method": method, "dims": dims, "size": size, "channels": arch["channels"],
            "stem_stride": arch["stem_stride"], "batches": list(_batch_sizes(size, dims, None)),
            "precision": precision, **extra}


def compile_speedup(size: int = 128, batch: int = 160, steps: int = 5) -> dict:
    """The planned 128x128 network's forward and backward pass, eager against ``torch.compile``
    (bfloat16 autocast on both): the compiled time leaves out its first calls (compilation)."""
    import torch

    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory
    from pipeline.stages.plan import _architecture

    arch = _architecture(size, 2)
    images = torch.rand(batch, 1, size, size)
    labels = torch.randint(2, (batch,))
    result = {"size": size, "batch": batch}
    for kind in ("eager", "compiled"):
        torch.manual_seed(0)
        network = network_factory(NetworkConfig(channels=arch["channels"], stem_stride=arch["stem_stride"],
                                                dropout=0.1), 1, [size, size], 2)()
        optimiser = torch.optim.AdamW(network.parameters(), 1e-3)
        if kind == "compiled":
            network.compile()

        def step(network=network, optimiser=optimiser):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(network(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        tick = time.perf_counter()
        for _ in range(3):
            step()
        result[f"{kind}_warmup_seconds"] = time.perf_counter() - tick
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        result[f"{kind}_seconds_per_step"] = (time.perf_counter() - tick) / steps
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="time one training configuration (see the module docstring)")
    parser.add_argument("--measure", required=True, help="the case, as JSON")
    print(json.dumps(measure(json.loads(parser.parse_args().measure))))
