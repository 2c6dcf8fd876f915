"""Score stage: a folder of scans -> a CSV report, one row per file, never a crash per scan."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.agreement import agreement, folder_truth, format_agreement
from pipeline.cases import case_rows, study_cases
from pipeline.checkpoint import INPUTS
from pipeline.data import preprocessor
from pipeline.io import write_csv, write_json, write_text
from pipeline.manifest import trained_as_one
from pipeline.masks import segmentation_masks
from pipeline.reading import included, list_files, sidecars, system_files, volume_location
from pipeline.scoring import (
    as_strings,
    load_scorer,
    memory_bounded_sizes,
    readable_paths,
    report_columns,
    rows_frame,
    score_chunk,
)
from pipeline.sequences import group_cases

log = logging.getLogger("pipeline.stages.score")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ENGINES = ("local", "ray")


def neutralise_formula(text: str) -> str:
    """Keep text from a file name from running as a spreadsheet formula (CSV injection)."""
    return "'" + text if isinstance(text, str) and text.startswith(FORMULA_PREFIXES) else text


def classes_trained_as_one(run_dir: str | Path) -> dict[str, list[str]]:
    """The classes the run's split drew, and it trained, as one (from the split its ``inputs.json``
    names, where that file is still there); {} otherwise."""
    inputs = Path(run_dir) / INPUTS
    split = json.loads(inputs.read_text()).get("split", {}).get("path") if inputs.is_file() else None
    return trained_as_one(split) if split else {}


def default_report_path(run_dir: Path, scans: Path) -> Path:
    """``reports/<run>/<folder name>.csv``; where a report of that name was made from another folder of
    the same name (each site's ``incoming/``), ``<folder name>-<hash of its path>.csv``, so that one
    never replaces the other's report, nor resumes from its rows."""
    folder = scans.resolve()
    out = Path("reports") / run_dir.name / f"{folder.name}.csv"
    made_from = report_folder(out)
    if made_from is not None and Path(made_from) != folder:
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
        out = out.with_name(f"{folder.name}-{digest}.csv")
        log.info("reports/%s/%s.csv is the report of %s: this folder's goes to %s", run_dir.name, folder.name,
                 made_from, out)
    return out


def report_folder(out: Path) -> str | None:
    """The folder the report ``out`` (or its unfinished rows) was made from, None where there is none."""
    meta = out.with_suffix(".meta.json")
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("scans")
        except (OSError, ValueError):
            return None
    partial = out.with_name(out.name + ".partial")
    if partial.is_file():
        try:
            first = pd.read_csv(partial, nrows=1, usecols=["scan_id", "path"], dtype=str)
        except (OSError, ValueError):
            return None
        if len(first):  # the path of its first row, less its scan id
            path, scan_id = first["path"].iloc[0], first["scan_id"].iloc[0].lstrip("'")
            if path.endswith(scan_id):
                return path[: -len(scan_id)].rstrip("/") or "/"
    return None


def score(scans: str | Path, run_dir: str | Path, out: str | Path | None = None,
          batch_size: int | None = None, workers: int = 2, progress: bool = True,
          resume: bool = False, chunk_size: int = 512, max_thumbnails: int = 500,
          engine: str = "local", address: str | None = None, labels: str | Path | None = None) -> Path:
    """Score every file below ``scans`` with the model in ``run_dir``; return the report path.

    Columns: scan_id, path, prediction, confidence, needs_review, status, error, one
    ``p_<class>`` per class (temperature-scaled), ``ood_score`` and ``out_of_distribution`` (a
    scan unlike the training scans, flagged for review whatever its probability).  Rows are appended to ``<out>.partial``
    as each chunk of scans finishes; with ``resume=True`` a killed run carries on from
    there.  The finished report, its ``.meta.json``, ``.summary.txt`` and ``.html`` review
    page are each replaced atomically.

    ``engine="local"`` scores in ``workers`` processes on this machine; ``engine="ray"``
    on ``workers`` Ray actors (``pipeline.score_ray``), on the cluster at ``address`` or a
    local Ray instance.  Both give the same report.

    Where the scans are labelled already (``labels``, a labels file anywhere, read as ingest reads
    one; else the folder's ``labels.csv`` or class subfolders), the report says how the predictions
    agree with those labels: an external check (``pipeline.agreement``).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown scoring engine '{engine}'; choose one of {', '.join(ENGINES)}")
    scans, run_dir = Path(scans), Path(run_dir)
    model, calibration, temperature, decide, ood = load_scorer(run_dir)
    out = Path(out) if out else default_report_path(run_dir, scans)
    columns = report_columns(model.classes)

    started = time.time()
    # a 2D model scores each slice of a DICOM series (a model trained on CT slices, as RSNA labels them)
    files = list_files(scans, series=len(model.config.preprocess.spatial_size) == 3)
    masks = segmentation_masks(files)
    metadata = sidecars(files)
    # The folder's own labels file is no scan: it is read to check the predictions against.
    labels_file = Path(labels).resolve() if labels else None
    if labels_file is not None and not labels_file.is_file():
        raise FileNotFoundError(f"labels file {labels} does not exist; give the labels file of the scans in {scans}, "
                                "or leave --labels out")
    files = [f for f in files if f not in masks and f not in metadata and f != scans / "labels.csv"
             and (labels_file is None or f.resolve() != labels_file)]
    not_included: list[Path] = []
    if include := model.config.data.include:  # the kind of file the model was trained on (data.include)
        files, not_included = included(files, scans, include)
    other_sequences: dict[Path, Path] = {}
    if sequences := model.config.preprocess.sequences:  # each case's sequences as one scan, as trained
        files, _, other_sequences = group_cases(files, sequences, volume_location)
    # Read before scoring: a labels file the user named that cannot be read fails now, not after the scans.
    found = folder_truth(scans, [f.relative_to(scans).as_posix() for f in files], model.classes,
                         model.config.data.columns, trained_as_one=classes_trained_as_one(run_dir),
                         labels_file=labels_file)
    partial = out.with_name(out.name + ".partial")
    done = _finished_rows(partial, columns) if resume else set()
    if not resume and partial.exists():
        partial.unlink()
    todo = [f for f in files if f.relative_to(scans).as_posix() not in done]
    if done:
        log.info("resuming: %d of %d files already scored in %s", len(files) - len(todo), len(files), partial)
    batch_size, chunk_size = memory_bounded_sizes(model, batch_size or model.config.score.batch_size,
                                                  chunk_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if engine == "ray":
        from pipeline.score_ray import score_on_ray

        chunks = score_on_ray(todo, scans, run_dir, model.weights_sha256, batch_size, chunk_size, workers,
                              address, progress)
    else:
        chunks = _score_locally(todo, scans, model, temperature, decide, ood, batch_size, chunk_size, workers,
                                progress)
    with open(partial, "a") as sink:
        if sink.tell() == 0:
            sink.write(",".join(columns) + "\n")
        for rows in chunks:
            # One write per chunk, flushed to disk: a killed run loses at most the chunk in flight.
            sink.write(rows_frame(rows, columns).to_csv(index=False, header=False))
            sink.flush()
            os.fsync(sink.fileno())
    report = _read_rows(partial, columns)
    order = {f.relative_to(scans).as_posix(): i for i, f in enumerate(files)}
    report = report[report["scan_id"].isin(order)].drop_duplicates("scan_id", keep="last")
    report = report.sort_values("scan_id", key=lambda ids: ids.map(order)).reset_index(drop=True)
    against = None
    if found is not None:
        truth, source, unnamed = found
        screening = calibration.get("screening")
        against = {"source": source, "labels_naming_no_class": unnamed,
                   **agreement(report, truth, model.classes, screening["positive_class"] if screening else None)}
        report["folder_label"] = report["scan_id"].map(truth).fillna("")  # beside each prediction, to compare
    for column in ("scan_id", "path", "error"):
        report[column] = report[column].map(neutralise_formula)
    write_csv(out, report)
    partial.unlink()
    summary = summarise(report, model.classes)
    screening = calibration.get("screening")
    if screening:
        positive = screening["positive_class"]
        cases = case_rows(report, positive, study_cases(scans, report.loc[report["status"] == "ok", "scan_id"]),
                          decision=screening.get("cases", {}).get("decision"))
        if len(cases):
            cases["case"] = cases["case"].map(neutralise_formula)
            write_csv(out.with_suffix(".cases.csv"), cases)
            summary["cases"] = {"file": str(out.with_suffix(".cases.csv")), "n": int(len(cases)),
                                "positive": positive, "called_positive": int((cases["prediction"] == positive).sum()),
                                "rule": "case" if "cases" in screening else "any view"}
    summary["skipped_system_files"] = len(system_files(scans))
    summary["skipped_masks"] = len(masks)
    summary["skipped_sidecars"] = len(metadata)
    if sequences:
        summary["skipped_other_sequences"] = len(other_sequences)
    if include:
        summary["not_included"] = {"pattern": include, "n": len(not_included)}
    if against:
        summary["against_labels"] = against
    _write_review(out, report, model, calibration, summary, workers, max_thumbnails, batch_size, chunk_size,
                  folder=str(scans.resolve()))
    write_json(out.with_suffix(".meta.json"), {
        "command": sys.argv,
        "scans": str(scans.resolve()),
        "model": str(run_dir.resolve()),
        "weights_sha256": model.weights_sha256,
        "trained_on": json.loads((run_dir / INPUTS).read_text()) if (run_dir / INPUTS).is_file() else None,
        "calibration": calibration,
        "config": model.config.to_dict(),
        "seconds": round(time.time() - started, 2),
        "resumed_from": len(done),
        "engine": engine,
        "summary": summary,
    })
    write_text(out.with_suffix(".summary.txt"), format_summary(summary, out))
    log.info("\n%s", format_summary(summary, out))
    return out


def _read_rows(partial: Path, columns: list[str]) -> pd.DataFrame:
    text = {c: str for c in ("scan_id", "path", "prediction", "status", "error")}
    frame = pd.read_csv(partial, dtype=text, keep_default_na=False, na_values={"confidence": [""]},
                        on_bad_lines="skip")
    frame = frame.reindex(columns=columns)
    # A row cut short by a kill has an unknown status or missing probabilities: score it again.
    probabilities = frame[[c for c in columns if c.startswith("p_")]].apply(pd.to_numeric, errors="coerce")
    complete = (frame["status"] == "error") | ((frame["status"] == "ok") & probabilities.notna().all(axis=1))
    frame = frame[complete].copy()
    frame[probabilities.columns] = probabilities[complete]
    frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce")
    frame["needs_review"] = frame["needs_review"].astype(str) == "True"
    frame["ood_score"] = pd.to_numeric(frame["ood_score"], errors="coerce")
    frame["out_of_distribution"] = frame["out_of_distribution"].astype(str) == "True"
    return frame


def _finished_rows(partial: Path, columns: list[str]) -> set[str]:
    """Scan ids already scored in ``partial``; a last line cut off by a kill is removed
    first, so that rows appended next start on a line of their own."""
    if not partial.exists() or partial.stat().st_size == 0:
        return set()
    data = partial.read_bytes()
    os.truncate(partial, data.rfind(b"\n") + 1)
    if partial.stat().st_size == 0:
        return set()
    return set(_read_rows(partial, columns)["scan_id"])


def _write_review(out, report, model, calibration, summary, workers, max_thumbnails, batch_size,
                  chunk_size, folder: str = "") -> None:
    """The HTML page; thumbnails for the first ``max_thumbnails`` scans in review order, and saliency
    overlays for the flagged and abnormal-called ones among them (at most ``score.max_saliency``; the
    first ``MAX_SLICE_STACKS`` volumes among those, a case counting as its sequences, also get slices to
    page through). Scans are preprocessed a chunk at a time, so memory stays that of one chunk."""
    from pipeline.review import (
        MAX_SLICE_STACKS,
        overlay_png,
        review_order,
        slice_stack,
        stack_cost,
        thumbnail_png,
        write_review_page,
    )
    from pipeline.saliency import saliency_maps

    screening = calibration.get("screening")
    positive = screening["positive_class"] if screening else None
    ordered = review_order(report, positive)
    shown = ordered[ordered["status"] == "ok"].head(max_thumbnails)
    thumbnails, overlays, stacks = {}, {}, {}
    saliency_seconds, left, stacked = 0.0, model.config.score.max_saliency, 0
    if len(shown):
        with preprocessor(model.config.preprocess, workers if len(shown) >= 64 else 1, False) as process:
            for start in range(0, len(shown), chunk_size):
                part = shown.iloc[start:start + chunk_size]
                arrays, _ = process(list(part["path"]))
                thumbnails.update({sid: thumbnail_png(a) for sid, a in zip(part["scan_id"], arrays) if a is not None})
                wanted = part["needs_review"].astype(bool) | (part["prediction"] == positive if positive else False)
                picked = [(sid, a, pred) for sid, a, pred, want in zip(part["scan_id"], arrays, part["prediction"],
                                                                       wanted) if want and a is not None][:left]
                left -= len(picked)
                tick = time.perf_counter()
                for target in sorted({positive or pred for _, _, pred in picked}):
                    group = [(sid, a) for sid, a, pred in picked if (positive or pred) == target]
                    heat = saliency_maps(model.network, torch.from_numpy(np.stack([a for _, a in group])),
                                         model.classes.index(target), batch_size=min(32, batch_size))
                    overlays.update({sid: overlay_png(a, h) for (sid, a), h in zip(group, heat)})
                saliency_seconds += time.perf_counter() - tick
                for sid, a, _ in picked:
                    cost = stack_cost(a)
                    if stacked + cost > MAX_SLICE_STACKS:
                        break
                    stacks[sid], stacked = slice_stack(a), stacked + cost
        summary["saliency_maps"] = len(overlays)
        summary["saliency_seconds"] = round(saliency_seconds, 2)
    write_review_page(out.with_suffix(".html"), report, thumbnails, summary, calibration, model.classes,
                      title=f"Screening report: {out.stem} ({model.run_dir.name})",
                      key=f"{model.weights_sha256[:16]}:{out.resolve()}", overlays=overlays, stacks=stacks,
                      folder=folder)


def _score_locally(todo, scans, model, temperature, decide, ood, batch_size, chunk_size, workers, progress):
    """The local engine: chunks of report rows, scored in ``workers`` processes on this machine.

    The workers preprocess the next chunk while this process runs the model on the current one.
    """
    chunks = [todo[begin:begin + chunk_size] for begin in range(0, len(todo), chunk_size)]
    with preprocessor(model.config.preprocess, workers, progress) as process:
        pending = process.start(as_strings(readable_paths(chunks[0]))) if chunks else None
        for index, chunk in enumerate(tqdm(chunks, disable=not progress or len(chunks) <= 1, desc="score",
                                           unit="chunk")):
            ready = pending
            if index + 1 < len(chunks):
                pending = process.start(as_strings(readable_paths(chunks[index + 1])))
            # The chunk's readable scans are already in the workers: hand score_chunk their result.
            yield score_chunk(chunk, scans, lambda _paths, ready=ready: ready(), model, temperature, decide,
                              batch_size, ood)


def summarise(report: pd.DataFrame, classes: list[str]) -> dict:
    ok = report[report["status"] == "ok"]
    return {
        "files": int(len(report)),
        "scored": int(len(ok)),
        "errors": int((report["status"] == "error").sum()),
        "needs_review": int(ok["needs_review"].sum()),
        "out_of_distribution": int(ok["out_of_distribution"].sum()) if "out_of_distribution" in ok else 0,
        "predicted": {c: int((ok["prediction"] == c).sum()) for c in classes},
    }


def format_summary(summary: dict, out: Path) -> str:
    lines = [
        f"report: {out}",
        f"files: {summary['files']}  scored: {summary['scored']}  errors: {summary['errors']}  "
        f"needs review: {summary['needs_review']}  out of distribution: {summary.get('out_of_distribution', 0)}",
        "predicted: " + ", ".join(f"{c}={n}" for c, n in summary["predicted"].items()),
    ]
    if summary.get("saliency_maps"):
        lines.append(f"saliency: {summary['saliency_maps']} maps in {summary['saliency_seconds']:.1f} s")
    if summary.get("skipped_system_files"):
        lines.append(f"skipped: {summary['skipped_system_files']} system files (.DS_Store, Thumbs.db, "
                     "__MACOSX/, hidden folders)")
    if cases := summary.get("cases"):
        lines.append(f"cases seen in several views (planes, sequences, a study's series): {cases['n']}, {cases['called_positive']} "
                     f"called {cases['positive']} ("
                     + ("its most probable view at the operating point calibrated on cases" if cases.get("rule") == "case"
                        else "any view so called") + f"): {cases['file']}")
    if check := summary.get("against_labels"):
        lines.append(format_agreement(check, check["source"], check["labels_naming_no_class"]))
    if summary.get("skipped_masks"):
        lines.append(f"skipped: {summary['skipped_masks']} segmentation masks named after their scans "
                     "(x_mask.png beside x.png, masks/x.png beside images/x.png)")
    if summary.get("skipped_sidecars"):
        lines.append(f"skipped: {summary['skipped_sidecars']} metadata files beside their scans (x.json, x.bval, "
                     "x.bvec beside x.nii.gz)")
    if left := summary.get("not_included"):
        lines.append(f"left out: {left['n']} files not matching {left['pattern']!r}, the run's data.include (the "
                     "scans it was trained on)")
    if summary.get("skipped_other_sequences"):
        lines.append(f"skipped: {summary['skipped_other_sequences']} volumes in cases of none of the sequences "
                     "the model reads as a case's channels (a localiser, a sequence not trained on)")
    return "\n".join(lines) + "\n"
