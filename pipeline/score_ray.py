"""The Ray scoring engine: the local engine's rows, computed by Ray Data on worker actors.

:func:`pipeline.stages.score.score` lists the files, appends rows to the partial file and
writes the report and its side files the same way for both engines; only the middle
step differs.  Here a Ray dataset of the file paths (in the listing's order) goes
through ``map_batches`` with :class:`Scorer`, an actor that loads the run's model once
and then reads, preprocesses and predicts each batch with the local engine's code.

Ray is an optional dependency, imported only here.  Workers must see the scans and the
run folder at the same paths as the driver (one machine, or a shared file system).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import torch

INSTALL_HINT = "pip install 'ssl-screening-pipeline[ray]'"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra)
    except ImportError as error:
        raise RuntimeError(f"--engine ray needs Ray Data, which is not installed here: {INSTALL_HINT}") from error
    return ray


class Scorer:
    """A Ray Data actor: the run's model loaded once, then batches of paths -> report rows.

    Parameters
    ----------
    run_dir, scans : str
        Absolute paths; scan ids are paths relative to ``scans``, as in the local engine.
    weights_sha256 : str
        The weights the driver checked; a run folder changed since is refused.
    batch_size : int
        Scans per forward pass.
    """

    def __init__(self, run_dir: str, scans: str, weights_sha256: str, batch_size: int):
        from pipeline.data import preprocessor
        from pipeline.scoring import load_scorer, report_columns

        torch.set_num_threads(1)  # each actor holds one CPU
        self.model, _, self.temperature, self.decide, self.ood = load_scorer(Path(run_dir))
        if self.model.weights_sha256 != weights_sha256:
            raise RuntimeError(f"{run_dir} holds other weights than when scoring started; score again")
        self.scans = Path(scans)
        self.batch_size = batch_size
        self.columns = report_columns(self.model.classes)
        # One process: the actor is the unit of parallelism.  Without a pool the context
        # holds nothing to release, so it is entered once and never left.
        self.process = preprocessor(self.model.config.preprocess, 1, False).__enter__()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from pipeline.scoring import rows_frame, score_chunk

        paths = [Path(p) for p in batch["path"]]
        rows = score_chunk(paths, self.scans, self.process, self.model, self.temperature, self.decide,
                           self.batch_size, self.ood)
        return rows_frame(rows, self.columns)


def score_on_ray(todo: list[Path], scans: Path, run_dir: Path, weights_sha256: str, batch_size: int,
                 chunk_size: int, workers: int, address: str | None, progress: bool):
    """Yield frames of report rows for the files ``todo``, scored by ``workers`` Ray actors.

    Connects to the Ray cluster at ``address``, or uses the Ray instance this process
    already started, or starts a local one with ``workers`` CPUs and no dashboard (works
    offline) and shuts it down afterwards.
    """
    if not todo:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report sent from hospital machines
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the partial file in listing order, as locally
        context.enable_progress_bars = progress
        # Absolute paths, so workers (whatever their working folder) give the local engine's rows.
        paths = [str(p.absolute()) for p in todo]
        per_batch = max(1, min(chunk_size, math.ceil(len(paths) / max(1, workers))))
        dataset = ray.data.from_items([{"path": p} for p in paths],
                                      override_num_blocks=math.ceil(len(paths) / per_batch))
        rows = dataset.map_batches(
            Scorer, batch_size=per_batch, batch_format="pandas", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            fn_constructor_kwargs={"run_dir": str(run_dir.absolute()), "scans": str(scans.absolute()),
                                   "weights_sha256": weights_sha256, "batch_size": batch_size},
        )
        yield from rows.iter_batches(batch_size=None, batch_format="pandas")
    finally:
        if started:
            ray.shutdown()
