"""Reviewed labels back into training: a review page's verdict export merged into the labels file.

The review page exports ``file,label,verdict,reviewed_at`` (``file`` relative to the scored
folder). :func:`merge_verdicts` checks every row at once (unknown files, unknown labels,
repeats, each named by its line), then writes a new labels file: every label already there kept,
verdicts added or applied, and each row's provenance (``label_source``: labels file, confirmed
or review; the reviewer's ``verdict`` and ``reviewed_at``; ``previous_label`` where a verdict changed a label). The original
labels file is never modified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from pipeline.io import sha256_file, write_csv
from pipeline.reading import list_files

MERGED_COLUMNS = ["file", "label", "split", "group", "label_source", "verdict", "reviewed_at", "previous_label"]


def _base_labels(scans: Path, labels: Path | None) -> pd.DataFrame:
    """The labels as they stand, keyed by real path: the labels file, or class subfolders."""
    if labels is not None:
        table = pd.read_csv(labels, dtype=str, keep_default_na=False)
        table.columns = [str(c).strip().lower() for c in table.columns]
        for column in ("split", "group"):
            if column not in table.columns:
                table[column] = ""
        base = labels.absolute().parent
        table["key"] = [os.path.realpath(base / f.strip()) for f in table["file"]]
        return table[["key", "label", "split", "group"]]
    rows = [{"key": os.path.realpath(p), "label": p.relative_to(scans).parts[0], "split": "", "group": ""}
            for p in list_files(scans) if len(p.relative_to(scans).parts) > 1]
    return pd.DataFrame(rows, columns=["key", "label", "split", "group"])


def merge_verdicts(scans: str | os.PathLike, verdicts: str | os.PathLike, out_dir: str | os.PathLike,
                   labels: str | os.PathLike | None = None, classes: list[str] | None = None) -> Path:
    """Write ``<out_dir>/<scans name>.reviewed-<hash>.labels.csv`` and return its path.

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
    table = pd.read_csv(verdicts, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("file", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"verdicts file {verdicts} has no {' or '.join(missing)} column; export it from the "
                         "review page (columns file,label,verdict,reviewed_at)")
    base = _base_labels(scans, labels)
    known = list(classes) if classes else sorted(set(base["label"]) - {""})
    problems, seen, merged_rows = [], {}, []
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{verdicts.name} line {line}"
        file, label = str(row["file"]).strip(), str(row["label"]).strip()
        key = os.path.realpath(scans / file)
        if not file or not os.path.exists(key) or not key.startswith(str(scans.resolve()) + os.sep):
            problems.append(f"{where}: {file!r} is not a scan in {scans}")
            continue
        if label not in known:
            problems.append(f"{where}: label {label!r} is not one of the classes {', '.join(known)}")
        if key in seen:
            problems.append(f"{where}: {file!r} is listed again (first on line {seen[key]})")
        seen[key] = line
        merged_rows.append((key, label, str(row.get("verdict", "") or ""), str(row.get("reviewed_at", "") or "")))
    if problems:
        raise ValueError(f"{verdicts} has {len(problems)} problem(s); nothing was merged:\n  " + "\n  ".join(problems))
    current = {r.key: r for r in base.itertuples(index=False)}
    out = {key: {"file": key, "label": r.label, "split": r.split, "group": r.group, "label_source": "labels file",
                 "verdict": "", "reviewed_at": "", "previous_label": ""} for key, r in current.items()}
    for key, label, verdict, when in merged_rows:
        entry = out.setdefault(key, {"file": key, "label": "", "split": "", "group": "", "previous_label": ""})
        before = entry["label"]
        entry.update(label=label, verdict=verdict, reviewed_at=when,
                     label_source="confirmed" if before == label else "review",
                     previous_label=before if before and before != label else "")
    frame = pd.DataFrame(list(out.values()), columns=MERGED_COLUMNS)
    digest = hashlib.sha256((sha256_file(verdicts) + (sha256_file(labels) if labels else "")).encode()).hexdigest()
    path = Path(out_dir) / f"{scans.name}.reviewed-{digest[:10]}.labels.csv"
    return write_csv(path, frame)
