"""The manifest and split files: their columns, where a run finds them, and reading them back.

``pipeline ingest`` writes a manifest, ``pipeline split`` a split file; every later stage reads
them through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.reading import has_old_style_id

MANIFEST_COLUMNS = ("scan_id path label group split status error sha256 shape dtype spacing "
                    "perceptual_hash duplicate_group modality body_part study_uid series_uid label_source previous_label").split()
# label_source: what a reviewer's verdict did to the scan's label (``pipeline.verdicts``): gave a scan that
# had none its label ("review"), confirmed it, or changed it (from previous_label); "" for a label from the
# labels file or folders
ADDED_BY_REVIEW = "review"
VERDICT_SOURCES = (ADDED_BY_REVIEW, "confirmed", "relabelled")


def class_key(name: str) -> str:
    """A class name without case, extra spaces or underscores: "No_Tumour" and "no tumour" share one.

    The pipeline keeps such names apart (a label is what the user wrote); this finds the ones
    a user most likely meant as one, to say so."""
    return " ".join(name.lower().replace("_", " ").split())


def name_words(name: str) -> set[str]:
    """The words of a class or folder name, without case: "Unlabeled Images", "train_set" and
    "normal-cecum" are {"unlabeled", "images"}, {"train", "set"}, {"normal", "cecum"}."""
    return set(re.split(r"[\s\-.]+", class_key(name))) - {""}


def positive_parts(positive: str) -> list[str]:
    """The class names a positive class joins with "+" (one name where it joins none)."""
    return [part.strip() for part in positive.split("+")] if positive else []


FINDINGS_SEPARATOR = "|"  # between the findings of one scan's label, as NIH ChestX-ray14's Finding Labels write them


def findings_of(label: str) -> list[str]:
    """The findings a label lists ("Effusion|Nodule"; one where it lists none)."""
    return [part for part in (p.strip() for p in label.split(FINDINGS_SEPARATOR)) if part]


def findings_label(findings) -> str:
    """The label that lists ``findings``, each once, in name order ("Effusion|Nodule"; "" for none)."""
    return FINDINGS_SEPARATOR.join(sorted({part.strip() for part in findings if part.strip()}))


def joined_classes(positive: str, classes: list[str] | set[str]) -> list[str]:
    """The classes a positive class joins with "+" ("benign+malignant": a scan of either is abnormal), where
    each is a class of the data; else [] (the positive class is one class, or names one the data lacks).

    Training, calibration and scoring then see them as the one class ``positive``; the split was
    drawn, per class, from the classes as the labels give them (a label that is itself joined, from a
    reviewer's verdict, draws its parts with it).
    """
    parts = positive_parts(positive)
    return parts if len(parts) > 1 and all(part in classes for part in parts) else []


# Names of an abnormal class screened from many labels, whose "+" join would be a name too long to
# read in a report (VinDr-CXR's 34 finding lists, NIH's hundreds): every class but the healthy one,
# and every label that lists one finding.
ALL_BUT = "not "
LISTING = "with "
LISTING_OR = " or "


def screened_members(positive: str, classes: list[str] | set[str]) -> list[str]:
    """The classes of ``classes`` that the positive class screens as one: those ``"a+b"`` joins
    (:func:`joined_classes`), every class but ``X`` for ``"not X"`` (``X`` a class), every class
    whose findings include ``F`` for ``"with F"`` (NIH's ``Atelectasis|Effusion`` for
    ``"with Effusion"``), or one of ``F`` and ``G`` for ``"with F or G"``; else [] (``positive``
    is one class, or names none of ``classes``).

    A class named as the positive class itself (a reviewer's verdict of it) is one of them."""
    return joined_classes(positive, classes) or [name for name in classes if screens(positive, name, classes)]


def screens(positive: str, label: str, classes: list[str] | set[str]) -> bool:
    """Whether a scan labelled ``label`` is one the positive class named ``"not X"`` or ``"with F"``
    (``"with F or G"``) takes in, among the labels ``classes`` (``X`` must be one; a label other than
    ``positive`` must list ``F`` or ``G``); False for any other name."""
    if positive.startswith(ALL_BUT) and (healthy := positive[len(ALL_BUT):]) in classes:
        return label != healthy
    if positive.startswith(LISTING) and any(name != positive and lists_any(name, positive) for name in classes):
        return label == positive or lists_any(label, positive)
    return False


def listing(findings: list[str]) -> str:
    """The positive class screening every scan whose labels list one of ``findings``: ``"with F"``,
    ``"with F or G"``."""
    return LISTING + LISTING_OR.join(findings)


def lists_any(label: str, positive: str) -> bool:
    """Whether ``label`` lists one of the findings the positive class ``"with F or G"`` names."""
    return bool(set(findings_of(label)) & set(positive[len(LISTING):].split(LISTING_OR)))


# Columns added after the first release: a manifest without them still loads (as empty).
LATER_COLUMNS = ("perceptual_hash", "duplicate_group", "modality", "body_part", "study_uid", "series_uid",
                 "label_source", "previous_label")


STUDY_COLUMNS = ("scan_id", "study_uid")


def study_uids(path: str | os.PathLike) -> dict[str, str]:
    """Each scan's DICOM StudyInstanceUID ("" for none: not DICOM, or no study in its header) as the
    manifest at ``path`` records it; {} where there is no manifest there (a run folder moved without its
    data) or it predates the column, so that a caller reads the headers."""
    if not Path(path).is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda column: column in STUDY_COLUMNS)
    return dict(zip(frame["scan_id"], frame["study_uid"])) if len(frame.columns) == len(STUDY_COLUMNS) else {}


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`ingest`, every column as text ("" for empty).

    Text throughout because ids and labels such as ``00001`` or ``7`` must not become numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; run ingest first")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in LATER_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} is not a manifest: missing column(s) {', '.join(missing)}; re-create it with ingest"
        )
    old = [sid for sid, p in zip(frame["scan_id"], frame["path"]) if has_old_style_id(sid, p)]
    if old:
        raise ValueError(
            f"{path} was written by an older version whose scan ids drop the file suffix (e.g. {old[0]!r}); "
            f"scan ids now keep it. Delete {path} and the split files made from it "
            f"({path.with_suffix('')}*.split.csv) and run again to have them made anew"
        )
    return frame


SUBSETS = ("labelled", "unlabelled", "calibration", "test")


LABELLED_SUBSETS = ("labelled", "calibration", "test")


SPLIT_COLUMNS = ["scan_id", "subset", "label", "group"]


MANIFEST_FIELDS = ["scan_id", "label", "group", "status", "error"]


def validate_split(
    manifest: pd.DataFrame, split: pd.DataFrame, *, source: str = "split file"
) -> None:
    """Check a split table against its manifest; raise one ValueError listing every problem.

    Checks: required columns; every scan_id is an ``ok`` manifest scan and appears once;
    subsets are valid; labelled, calibration and test scans have a label; labels and groups
    agree with the manifest; no group is in two subsets. Problems name the line of the
    split file (the header is line 1).
    """
    missing = [column for column in ("scan_id", "subset") if column not in split.columns]
    if missing:
        raise ValueError(
            f"{source} has no {' or '.join(missing)} column (found: {', '.join(split.columns)}); "
            f"a split file needs columns {', '.join(SPLIT_COLUMNS)}"
        )
    by_id = {row["scan_id"]: row for row in manifest[MANIFEST_FIELDS].to_dict("records")}
    problems = []
    first_line: dict[str, int] = {}
    group_lines: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for line, row in enumerate(split.to_dict("records"), start=2):
        scan_id, subset = str(row["scan_id"]).strip(), str(row["subset"]).strip()
        if subset not in SUBSETS:
            problems.append(f"line {line}: subset {subset!r} is not one of {', '.join(SUBSETS)}")
        if scan_id in first_line:
            problems.append(
                f"line {line}: scan {scan_id!r} is listed again (first on line {first_line[scan_id]})"
            )
            continue
        first_line[scan_id] = line
        scan = by_id.get(scan_id)
        if scan is None:
            problems.append(f"line {line}: scan {scan_id!r} is not in the manifest")
            continue
        if scan["status"] != "ok":
            reason = f"has status {scan['status']} in the manifest ({scan['error']}); remove it"
            problems.append(f"line {line}: scan {scan_id!r} {reason}")
        if subset in LABELLED_SUBSETS and not scan["label"]:
            problems.append(
                f"line {line}: scan {scan_id!r} is in {subset} but has no label in the manifest"
            )
        for column in ("label", "group"):
            given = str(row.get(column, "") or "").strip()
            if given and given != scan[column]:
                reason = f"{column} {given!r} differs from the manifest's {scan[column]!r}"
                reason += f"; {column}s come from the labels file, fix it there and re-run ingest"
                problems.append(f"line {line}: {reason}")
        if scan["group"]:
            group_lines[scan["group"]][subset].append(line)
    for group, lines_by_subset in group_lines.items():
        if len(lines_by_subset) > 1:
            where = "; ".join(
                f"{subset} (lines {_first_few(lines)})" for subset, lines in lines_by_subset.items()
            )
            problems.append(f"group {group!r} is in more than one subset: {where}")
    if problems:
        raise ValueError(f"{source} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def _first_few(numbers: list[int], shown: int = 5) -> str:
    text = ", ".join(str(n) for n in numbers[:shown])
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def load_split(
    manifest: pd.DataFrame | str | os.PathLike, split_path: str | os.PathLike
) -> pd.DataFrame:
    """Read and validate a split file; return its manifest rows with a ``subset`` column.

    ``manifest`` is a table from :func:`pipeline.stages.ingest.load_manifest` or a manifest path.
    Rows come in manifest order.
    """
    if not isinstance(manifest, pd.DataFrame):
        manifest = load_manifest(manifest)
    split_path = Path(split_path)
    if not split_path.is_file():
        raise FileNotFoundError(
            f"split file {split_path} does not exist; create it with make_split"
        )
    split = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    split = split.apply(lambda column: column.str.strip())
    if "scan_id" in split and len(split):
        known = set(manifest["scan_id"])
        unknown = [sid for sid in split["scan_id"] if sid not in known]
        suffixed = {Path(sid).with_suffix("").as_posix(): sid for sid in known}
        if unknown and all(sid in suffixed or f"{sid}.nii.gz" in known for sid in unknown[:20]):
            raise ValueError(
                f"split file {split_path} names scans by the older ids without a file suffix (e.g. "
                f"{unknown[0]!r} for {suffixed.get(unknown[0], unknown[0] + '.nii.gz')!r}); scan ids now keep "
                "the suffix. Delete the split file and run again, or add the suffixes to its scan_id column"
            )
    validate_split(manifest, split, source=f"split file {split_path}")
    return manifest.merge(split[["scan_id", "subset"]], on="scan_id", how="inner", validate="1:1")


def manifest_classes(manifest: str | os.PathLike) -> list[str]:
    """The labels a manifest's scans carry, sorted."""
    return sorted(set(load_manifest(manifest)["label"]) - {""})


def trained_as_one(split_path: str | os.PathLike) -> dict[str, list[str]]:
    """{class: the classes trained as it} from a split's JSON record (``make_split``'s
    ``trained_as_one``: classes too small to be drawn alone, drawn together); {} without one."""
    record = Path(split_path).with_suffix(".json")
    if not record.is_file():
        return {}
    return {name: list(members) for name, members in json.loads(record.read_text()).get("trained_as_one", {}).items()}


def manifest_path(config: Config) -> Path:
    if config.data.manifest:
        return Path(config.data.manifest)
    return Path("data_manifests") / f"{Path(config.data.scans).name}.csv"


def split_path(config: Config) -> Path:
    """``data.split``, else a name that carries the draw (labels per class or fraction, seed), so
    that another draw never reuses a split file made for a different one."""
    if config.data.split:
        return Path(config.data.split)
    manifest = manifest_path(config)
    s = config.split
    labels = f"{s.labelled_fraction:g}of-labels" if s.labelled_fraction > 0 else f"{s.labels_per_class}per-class"
    data = config.data
    screening = f"healthy={data.healthy_class}" if data.healthy_class else (
        f"positive={data.positive_class}" if "+" in data.positive_class or data.positive_class.startswith((ALL_BUT, LISTING))
        else "")
    # classes screened as one are drawn together where too small alone: another draw than without
    joined = f".screen-{hashlib.sha256(screening.encode()).hexdigest()[:8]}" if screening else ""
    return manifest.with_name(f"{manifest.stem}.{labels}{joined}.seed{s.seed}.split.csv")


