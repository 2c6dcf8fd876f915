"""Reviewed labels back into training: a review page's verdict export merged into the labels file.

The review page exports ``file,label,verdict,reviewed_at,folder`` (``file`` relative to the scored
folder, ``folder``; a scored folder inside the training folder, such as its ``incoming/``, merges as
well as the training folder itself, and so does one outside it, whose reviewed scans ingest then
reads where they lie). :func:`merge_verdicts` checks every row at once (unknown files, unknown labels,
repeats, each named by its line), then writes a new labels file: every label already there kept,
verdicts added or applied, and each row's provenance (``label_source``: labels file, confirmed
or review; the reviewer's ``verdict`` and ``reviewed_at``; ``previous_label`` where a verdict changed a label). The original
labels file is never modified.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.folder_labels import folder_labels
from pipeline.io import read_table, sha256_file, write_csv
from pipeline.labels import read_labels
from pipeline.manifest import screened_members
from pipeline.masks import segmentation_masks
from pipeline.reading import is_scan_file, list_files, names_a_scan, scan_exists

log = logging.getLogger("pipeline.verdicts")

MERGED_COLUMNS = ["file", "label", "split", "group", "label_source", "verdict", "reviewed_at", "previous_label"]


def _base_labels(scans: Path, labels: Path | None, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The labels as ingest reads them, keyed by real path: the labels file (rows whose file is not
    found are left out, as ingest leaves them), or class subfolders (within split folders where the
    first-level folders name splits; segmentation masks left out)."""
    if labels is not None:
        rows, problems = read_labels(labels, scans, columns)
        if problems:
            log.warning("%d rows of %s are not carried into the merged labels (ingest names each): e.g. %s",
                        len(problems), labels, "; ".join(f"{item}: {reason}" for _, item, reason in problems[:2]))
        table = [{"key": key, "label": r.label, "split": r.split, "group": r.group} for key, r in rows.items()]
        return pd.DataFrame(table, columns=["key", "label", "split", "group"])
    paths = [path for path in list_files(scans) if is_scan_file(path)]
    masks = segmentation_masks(paths)
    found = folder_labels(scans, [path for path in paths if path not in masks], [])
    table = [{"key": os.path.realpath(path), "label": label, "split": split, "group": ""}
             for path, (label, split) in found.items()]
    return pd.DataFrame(table, columns=["key", "label", "split", "group"])


def merge_verdicts(scans: str | os.PathLike, verdicts: str | os.PathLike, out_dir: str | os.PathLike,
                   labels: str | os.PathLike | None = None, classes: list[str] | None = None,
                   columns: Mapping[str, str] | None = None) -> Path:
    """Write ``<out_dir>/<scans name>.reviewed-<hash>.labels.csv`` and return its path.

    ``columns`` names the labels file's columns as ingest was told them (``{"label": "target"}``);
    the merged file has the usual ones.

    Raises
    ------
    ValueError
        Naming every bad verdict row: a file that is not in ``scans``, a label outside the classes
        (``classes``, else those already in the labels), a file listed twice, a missing column.
    """
    scans, verdicts = Path(scans).absolute(), Path(verdicts)
    labels = Path(labels) if labels else (scans / "labels.csv" if (scans / "labels.csv").is_file() else None)
    if not verdicts.is_file():
        raise FileNotFoundError(f"verdicts file {verdicts} does not exist")
    table = read_table(verdicts, "verdicts file", "file,label,verdict,reviewed_at")
    missing = [c for c in ("file", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"verdicts file {verdicts} has no {' or '.join(missing)} column; export it from the "
                         "review page (columns file,label,verdict,reviewed_at,folder)")
    base = _base_labels(scans, labels, columns)
    known = list(classes) if classes else sorted(set(base["label"]) - {""})
    problems, seen, merged_rows, elsewhere = [], {}, [], set()
    root = str(scans.resolve()) + os.sep
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{verdicts.name} line {line}"
        file, label = str(row["file"]).strip(), str(row["label"]).strip()
        key = os.path.realpath(scans / file)
        # A page's `file` is relative to the folder it scored (its `folder` column), inside `scans` or not:
        # there first, as a hospital's exports name files alike (I00001) in every folder.
        folder = str(row.get("folder", "") or "").strip()
        if file and folder and scan_exists(os.path.join(folder, file)):
            key = os.path.realpath(os.path.join(folder, file))
        inside = key.startswith(root)
        # A scan of a folder scored outside `scans` is trained on where it lies (ingest reads reviewed rows there).
        if not file or not scan_exists(key) or not (inside or names_a_scan(key)):
            problems.append(f"{where}: {file!r} is not a scan in {scans}" + (f" or in {folder}" if folder else ""))
            continue
        if not inside:
            elsewhere.add(os.path.dirname(key))
        # A review page of a model that screens classes as one ("glioma+meningioma", "not normal") offers that class.
        if label not in known and not screened_members(label, known):
            problems.append(f"{where}: label {label!r} is not one of the classes {', '.join(known)}")
        if key in seen:
            problems.append(f"{where}: {file!r} is listed again (first on line {seen[key]})")
        seen[key] = line
        merged_rows.append((key, label, str(row.get("verdict", "") or ""), str(row.get("reviewed_at", "") or "")))
    if problems:
        raise ValueError(f"{verdicts} has {len(problems)} problem(s); nothing was merged:\n  " + "\n  ".join(problems))
    if elsewhere:
        log.info("verdicts name scans outside %s (in %s): they are trained on where they lie, so keep them there",
                 scans, ", ".join(sorted(elsewhere)[:3]))
    if labels is None:  # labels from class subfolders: a scored folder inside is new scans, not a class
        scored = {os.path.realpath(f) for f in table.get("folder", pd.Series(dtype=str)).str.strip() if f}
        scored = [f for f in scored if f.startswith(root)]
        new = base["key"].map(lambda key: any(key.startswith(f + os.sep) for f in scored))
        if new.any():
            log.info("%d scans of the scored folder(s) %s are new scans, not a class: only their verdicts label them",
                     int(new.sum()), ", ".join(scored))
            base = base[~new]
    current = {r.key: r for r in base.itertuples(index=False)}
    out = {key: {"file": key, "label": r.label, "split": r.split, "group": r.group, "label_source": "labels file",
                 "verdict": "", "reviewed_at": "", "previous_label": ""} for key, r in current.items()}
    for key, label, verdict, when in merged_rows:
        entry = out.setdefault(key, {"file": key, "label": "", "split": "", "group": "", "previous_label": ""})
        before = entry["label"]
        if before in screened_members(label, known):
            label = before  # "abnormal" confirmed: the class the labels gave says which abnormality
        entry.update(label=label, verdict=verdict, reviewed_at=when,
                     label_source="confirmed" if before == label else "review",
                     previous_label=before if before and before != label else "")
    frame = pd.DataFrame(list(out.values()), columns=MERGED_COLUMNS)
    chosen = ",".join(f"{role}={name}" for role, name in sorted((columns or {}).items()) if name)
    digest = hashlib.sha256((sha256_file(verdicts) + (sha256_file(labels) if labels else "") + chosen).encode()
                            ).hexdigest()
    path = Path(out_dir) / f"{scans.name}.reviewed-{digest[:10]}.labels.csv"
    return write_csv(path, frame)
