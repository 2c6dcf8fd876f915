"""Ingest a scan folder: read every scan once, record what it is, and list every problem.

The manifest written here is the one list of scans that later stages use. Unreadable
scans and bad label rows do not stop the run: they are all collected, written to a
problems file and logged together, so a user can fix everything in one pass.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.cases import case_of
from pipeline.dicom import opaque_id
from pipeline.folder_labels import (
    copies_beside_originals,
    folder_labels,
    folder_patient,
    name_patients,
    sibling_patients,
)
from pipeline.io import sha256_file, write_csv
from pipeline.labels import (
    DICOM_KEY,
    DICOM_KEY_TAGS,
    LabelRow,
    groups_on_one_side,
    header_keys,
    labels_key,
    read_labels,
)
from pipeline.manifest import MANIFEST_COLUMNS, class_key
from pipeline.masks import segmentation_masks
from pipeline.processes import worker_pool
from pipeline.reading import (
    BIDS_ASIDE_FOLDERS,
    SCAN_FORMATS,
    SCAN_SUFFIXES,
    ScanReadError,
    case_members,
    find_scans,
    included,
    is_scan_file,
    is_system_file,
    list_files,
    load_scan,
    names_a_scan,
    scan_exists,
    scan_files,
    scan_id,
    series_location,
    series_slices,
    sidecars,
    system_files,
    volume_location,
)
from pipeline.sequences import (
    case_location,
    group_cases,
    member_name,
    recurring_sequences,
    sequence_kind,
    sequence_name,
)
from pipeline.similarity import (
    MAX_GROUP,
    connected_groups,
    near_duplicate_groups,
    perceptual_hashes,
)

log = logging.getLogger("pipeline.stages.ingest")

PROBLEM_COLUMNS = ["source", "item", "reason"]
PROBLEMS_LOGGED = 20
# A labels row naming a folder of at most this many scans, and no group, makes them one group: a subject's
# or a study's runs, sequences or views. A row naming a larger folder (a class's) groups nothing.
CASE_FOLDER_SCANS = 20


@dataclass
class IngestResult:
    """What :func:`ingest` wrote, and the same tables in memory."""

    manifest_path: Path
    problems_path: Path
    manifest: pd.DataFrame
    problems: pd.DataFrame
    classes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- reading scans


def describe_scan(path: str | os.PathLike) -> dict[str, str]:
    """Read one scan and return its manifest fields: status, error, sha256, shape, dtype, spacing,
    perceptual_hash (and ``fine_hash``, which confirms a near duplicate and is not kept)."""
    fields = {"status": "ok", "error": "", "sha256": "", "shape": "", "dtype": "", "spacing": "",
              "perceptual_hash": "", "modality": "", "body_part": "", "study_uid": "", "series_uid": "",
              "patient_group": "", "accession_group": "", "fine_hash": ""}
    try:
        fields["sha256"] = sha256_scan(path)
        scan = load_scan(path)
    except ScanReadError as error:
        return {**fields, "status": "error", "error": error.reason}
    except OSError as error:  # e.g. no read permission
        return {
            **fields,
            "status": "error",
            "error": f"cannot read file: {error.strerror or error}",
        }
    try:
        return _describe_pixels(scan, fields)
    except Exception as error:  # one scan's surprise is its error row; the others' rows are kept
        return {**fields, "status": "error", "error": f"cannot describe its pixels: {type(error).__name__}: {error}"}


def _describe_pixels(scan, fields: dict[str, str]) -> dict[str, str]:
    values = np.asarray(scan.array)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return {**fields, "status": "error", "error": "contains NaN or infinite values"}
    if values.min() == values.max():  # nothing to screen; training would refuse it later
        return {**fields, "status": "error", "error": f"constant image (every value is {values.min():g})"}
    fields["shape"] = "x".join(str(size) for size in scan.shape)
    fields["dtype"] = scan.source_dtype
    fields["spacing"] = "x".join(f"{value:g}" for value in scan.spacing) if scan.spacing else ""
    fields["perceptual_hash"], fields["fine_hash"] = perceptual_hashes(scan.array, scan.is_volume)
    fields.update({k: v for k, v in scan.info.items() if k in fields})
    return fields


def sha256_scan(path: str | os.PathLike) -> str:
    """sha256 of a scan file; of a two-file volume, of its header's and voxel file's hashes (headers
    alike in all but their voxels are common); of a DICOM series, of its slices' hashes in file-name
    order (only that series' slices where a folder holds several, such as a study's T1 and T2); of a
    case's sequences, of theirs."""
    if case_location(path) is not None:  # a case's sequences: their hashes in the case's order
        digest = hashlib.sha256()
        for file in case_members(path):
            digest.update(sha256_scan(file).encode())
        return digest.hexdigest()
    location = series_location(path)
    if location is None:
        files = scan_files(path)
        if len(files) == 1:
            return sha256_file(path)
    else:
        files = [header.path for header in series_slices(*location)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def _describe_chunk(paths: list[str]) -> list[dict[str, str]]:
    return [describe_scan(path) for path in paths]


def _map_chunks(function: Callable, chunks: list, workers: int) -> Iterator:
    if workers <= 1:
        yield from map(function, chunks)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(function, chunks)


def describe_scans(paths: list[str], workers: int = 2) -> list[dict[str, str]]:
    """:func:`describe_scan` for every path, in order, on ``workers`` processes."""
    # A few chunks per worker keeps the progress bar moving without per-file IPC.
    size = max(1, min(500, math.ceil(len(paths) / (4 * max(1, workers)))))
    chunks = [paths[start : start + size] for start in range(0, len(paths), size)]
    described: list[dict[str, str]] = []
    with tqdm(total=len(paths), desc="ingest", unit="scan") as progress:
        for result in _map_chunks(_describe_chunk, chunks, workers):
            described.extend(result)
            progress.update(len(result))
    return described


# ---------------------------------------------------------------------------- ingest


def ingest(
    scans: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    name: str | None = None,
    classes: Iterable[str] | None = None,
    class_subfolders: bool = False,
    manifest_dir: str | os.PathLike = "data_manifests",
    workers: int = 2,
    columns: Mapping[str, str] | None = None,
    include: str = "",
) -> IngestResult:
    """Read every scan under ``scans`` and write a manifest and a problems list.

    Parameters
    ----------
    scans
        Folder searched recursively for DICOM and the files of ``reading.SCAN_SUFFIXES``.
    labels
        CSV with columns ``file,label`` and optional ``split``, ``group``; ``file`` is relative
        to the CSV's folder or absolute. Default: ``<scans>/labels.csv`` if it exists.
    out
        Manifest path; default ``<manifest_dir>/<name>.csv``. Problems go beside it as
        ``<stem>.problems.csv``.
    name
        Data set name; default the scan folder's name.
    classes
        Allowed labels; other labels are reported and the scan kept unlabelled.
        Default: every label found.
    class_subfolders
        Take each scan's label from its first-level subfolder instead of a labels file.
    workers
        Processes reading scans.
    columns
        The labels file's column for a role where its usual names do not settle it, by role
        (``file``, ``label``, ``group``, ``split``): ``{"label": "target"}``.
    include
        Only the scans whose path below ``scans`` matches this glob (``reading.included``), as a run's
        ``data.include``: the others are skipped and listed, and label rows naming them left alone.

    Returns
    -------
    IngestResult
        Paths written, the manifest and problems tables, and the classes.
    """
    if labels is not None and class_subfolders:
        raise ValueError("give either a labels file or class_subfolders=True, not both")
    root = Path(os.path.abspath(scans))
    name = name or root.name
    if os.sep in name or "/" in name:
        raise ValueError(f"name {name!r} must be a plain name, not a path; use out= for a path")
    manifest_path = Path(out) if out is not None else Path(manifest_dir) / f"{name}.csv"
    problems_path = manifest_path.with_name(f"{manifest_path.stem}.problems.csv")
    if labels is None and not class_subfolders and (root / "labels.csv").is_file():
        labels = root / "labels.csv"
        log.info("using labels file %s", labels)

    if labels is None and columns and any(columns.values()):
        named = ", ".join(f"{role}={name!r}" for role, name in columns.items() if name)
        raise ValueError(f"labels columns were named ({named}) but there is no labels file: give it with --labels, "
                         f"or leave the column options out where the class subfolders of {root} are the labels")
    if not root.is_dir():
        raise ValueError(f"no scans (DICOM, or files ending {', '.join(SCAN_SUFFIXES)}) found under {root}")
    label_rows, problems = read_labels(labels, root, columns) if labels is not None else ({}, [])
    # a series whose slices the labels name one by one is that many scans
    everything = list_files(root, slices_alone=label_rows.keys())
    paths = [path for path in everything if is_scan_file(path)]
    if not paths:
        raise ValueError(f"no scans (DICOM, or files ending {', '.join(SCAN_SUFFIXES)}) found under {root}"
                         + _set_aside_scans(root))
    left_out: list[Path] = []
    if include:
        paths, left_out = included(paths, root, include)
        if not paths:
            raise ValueError(f"no scan below {root} matches --include {include!r} (data.include), of "
                             f"{len(left_out)} (e.g. {left_out[0].relative_to(root).as_posix()}); give a pattern of "
                             "the paths to keep, such as '*flair*'")
        for path in left_out:  # the user's choice, not a row naming no scan
            label_rows.pop(os.path.realpath(path), None)
    # A mask the labels file names in a row of its own is the user's call; the rest are not scans, those a
    # row names with their scan too (by the start of their names: LGG's TCGA_CS_4941 for TCGA_CS_4941_..._1.tif
    # and _1_mask.tif) included.
    def named_alone(mask: Path, scan: Path) -> bool:
        row = label_rows.get(os.path.realpath(mask))
        return row is not None and getattr(label_rows.get(os.path.realpath(scan)), "where", None) != row.where

    masks = {mask: scan for mask, scan in segmentation_masks(paths).items() if not named_alone(mask, scan)}
    for mask in masks:
        label_rows.pop(os.path.realpath(mask), None)  # a row naming a scan and its masks together labels the scan
    paths = [path for path in paths if path not in masks]
    copies = copies_beside_originals(root, paths)
    for folder, count in Counter(copies.values()).items():
        problems.append(("file", f"{folder.relative_to(root).as_posix()}/", f"{count} copies (augmented, or a "
                         "cross-validation fold's) beside the originals' folder: not ingested (a test scan's twin "
                         "would be trained on); ingest the folder alone to use them"))
    paths = [path for path in paths if path not in copies]
    paths = _sequences_as_cases(root, paths, label_rows, problems)
    # Files that are not scans are not ingested, but they are named, never silently dropped.
    labels_file = Path(os.path.abspath(labels)) if labels is not None else None
    metadata = sidecars(everything)
    problems += [
        ("file", other.relative_to(root).as_posix(), f"not a scan file ({SCAN_FORMATS}); not ingested")
        # the folder's own labels.csv, when another file labels it (labels merged with verdicts), is no news
        for other in everything
        if not is_scan_file(other) and other not in (labels_file, root / "labels.csv") and other not in metadata
    ]
    problems += [("skipped", other.relative_to(root).as_posix(), f"metadata of {scan_id(scan.relative_to(root))} "
                  "(a converter's sidecar: acquisition parameters, b-values); skipped")
                 for other, scan in metadata.items()]
    problems += [("skipped", path.relative_to(root).as_posix(), f"{NOT_INCLUDED} ({include!r}); skipped")
                 for path in left_out]
    problems += [("skipped", name, "system file (operating-system metadata, a hidden folder, a DICOM export's "
                  "DICOMDIR index, or a BIDS dataset's metadata, derivatives/ or sourcedata/); skipped")
                 for name in system_files(root)]
    classes = None if classes is None else [str(name) for name in classes]  # read twice below
    rows, label_where, case_groups = _manifest_rows(root, paths, label_rows, class_subfolders, problems, classes or [])
    by_header = {key: row for key, row in label_rows.items() if key.startswith(DICOM_KEY)}
    matched: set[str] = set()
    by_patient_id = []
    for index, (row, fields) in enumerate(zip(rows, describe_scans([row["path"] for row in rows], workers))):
        patient, accession = fields.pop("patient_group"), fields.pop("accession_group")
        row.update(fields)
        if by_header and not row["label"]:
            _label_by_header(index, row, patient, accession, by_header, matched, label_where)
        if not row["group"] and patient:
            row["group"] = patient  # DICOM PatientID, hashed: a patient's scans stay on one side
            by_patient_id.append(index)
    placeholders = _placeholder_patients(rows, by_patient_id)
    for index, row in enumerate(rows):
        if not row["group"]:
            # a subject's T1w and FLAIR, a patient's studies; else the subject's or study's folder a labels row named
            row["group"] = folder_patient(row["scan_id"]) or case_groups.get(index, "")
    # else the case whose views scans are (a patient's two eyes, 10_left.jpeg and 10_right.jpeg)
    cases = {index: found[0] for index, row in enumerate(rows) if not row["group"] and (found := case_of(row["scan_id"]))}
    views = Counter(cases.values())
    for index, case in cases.items():
        if views[case] > 1:
            rows[index]["group"] = case
    # else the folder of a patient's own an export gives (4412017/1.png, 4412017/2.png, 4412018/1.png ...)
    _group_ungrouped(rows, sibling_patients, "the patient folder they sit in")
    # else the patient a file name numbers (Kermany's IM-0115-0001.jpeg and IM-0115-0002.jpeg)
    _group_ungrouped(rows, lambda scan_ids, _: name_patients(scan_ids), "the patient their file names number")
    for index in placeholders:  # else the study, which an anonymiser keeps apart
        if not rows[index]["group"] and rows[index]["study_uid"]:
            rows[index]["group"] = opaque_id("study", rows[index]["study_uid"])
    _warn_of_recurring_series(rows)
    problems += _unmatched_header_rows(by_header, matched, labels, rows)
    classes = _check_classes(rows, classes, label_where, problems)
    problems += _mark_duplicates(rows)
    problems += _mark_near_duplicates(rows)
    problems += [("scan", row["scan_id"], row["error"]) for row in rows if row["status"] != "ok"]
    # Last, so that a folder of masks does not push the other problems out of the log.
    problems += [("mask", scan_id(mask.relative_to(root)), f"segmentation mask of {scan_id(scan.relative_to(root))} "
                  "(by its name); not ingested, a mask is not a scan") for mask, scan in masks.items()]
    if masks:
        log.warning("left out %d segmentation masks named after their scans (e.g. %s)", len(masks),
                    scan_id(next(iter(masks)).relative_to(root)))

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    problem_table = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    write_csv(manifest_path, manifest)
    write_csv(problems_path, problem_table)
    _log_summary(root, manifest, problem_table, classes, manifest_path, problems_path)
    return IngestResult(manifest_path, problems_path, manifest, problem_table, classes)


def folder_changes(scans: str | os.PathLike, manifest_file: str | os.PathLike, include: str = "") -> str | None:
    """What changed in the scan folder since ``manifest_file`` was ingested from it (scans added, or
    gone, or a manifest listing each file of cases that ingest now reads as one scan), said as a
    warning; None where nothing did. A manifest is used as it is (a user may have edited it), so new
    scans are not seen until it is made again."""
    from pipeline.manifest import load_manifest

    root = Path(os.path.abspath(scans))
    if not root.is_dir():
        return None
    listed = set(load_manifest(manifest_file)["path"])
    found = find_scans(root, slices_alone={os.path.realpath(path) for path in listed})
    masks = segmentation_masks(found)
    found = [path for path in found if path not in masks]
    if include:  # as ingest read the folder
        found = included(found, root, include)[0]
    if sequences := next((case.sequences for path in listed if (case := case_location(path)) is not None), None):
        found = group_cases(found, sequences, volume_location)[0]
    elif sequences := recurring_sequences(found, volume_location):
        return (f"{manifest_file} lists each file of {root}'s cases as a scan of its own; ingest now reads "
                f"each case's {', '.join(sequences)} volumes as one scan, its sequences the channels: delete the "
                "manifest, and the split files named after it, to ingest the folder again so")
    added = sorted(str(path) for path in found if str(path) not in listed)
    gone = sorted(path for path in listed if not scan_exists(path))
    if not added and not gone:
        return None
    example = os.path.relpath((added or gone)[0], root)
    return (f"{root} has changed since {manifest_file} was made from it: {len(added)} scans added, {len(gone)} gone "
            f"(e.g. {example}); the manifest is used as it is: delete it, and the split files named after it, to "
            "ingest the folder again")


def _set_aside_scans(root: Path) -> str:
    """Where a BIDS dataset's scans lie only in the folders BIDS keeps apart from its raw scans (processed
    copies in ``derivatives/<pipeline>/``), the folder to give instead; else ""."""
    aside = [Path(relative) for relative in system_files(root) if Path(relative).parts[0].lower() in
             BIDS_ASIDE_FOLDERS and is_scan_file(root / relative)]
    if not aside:
        return ""
    first = aside[0].parts
    folder = root.joinpath(*first[:2]) if len(first) > 2 else root / first[0]
    return (f"; {len(aside)} lie in {first[0]}/ (e.g. {aside[0].as_posix()}), which a BIDS dataset (it has "
            f"dataset_description.json) keeps apart from its raw scans and ingest passes over: to read them, "
            f"give --scans {folder}")


OTHER_SEQUENCE = "a volume of none of the sequences read as a case's channels"
NOT_INCLUDED = "not matching --include (data.include)"


def _sequences_as_cases(root: Path, paths: list[Path], label_rows: dict[str, LabelRow], problems: list
                        ) -> list[Path]:
    """``paths`` with each case's sequences one scan (``pipeline.sequences``) where most cases
    hold the same sequences by name; their label rows as one (a row naming each file of a case, alike, labels
    the case); the volumes of none of those sequences in a case's folder skipped, named in ``problems``."""
    sequences = recurring_sequences(paths, volume_location)
    if not sequences:
        return paths
    paths, grouped, others = group_cases(paths, sequences, volume_location)
    members: dict[Path, list[Path]] = {}
    for member, case in grouped.items():
        members.setdefault(case, []).append(member)
    for case, files in members.items():
        named = {file: row for file in files if (row := label_rows.pop(os.path.realpath(file), None)) is not None}
        if len({row.label for row in named.values()}) == 1:
            label_rows.setdefault(os.path.realpath(case), next(iter(named.values())))
        elif named:
            problems.append(("label", scan_id(case.relative_to(root)), "its sequences' files are labelled "
                             "differently (" + ", ".join(f"{file.name}: {row.label}" for file, row in named.items())
                             + "): one label a case is read; the case is left unlabelled"))
        if os.path.realpath(case) in label_rows and not case_location(case).prefix:
            # a row naming the case itself (a reviewer's verdict) supersedes its folder's, which names no other scan
            label_rows.pop(os.path.realpath(case.parent), None)
    problems += [("skipped", other.relative_to(root).as_posix(), f"{OTHER_SEQUENCE} ({', '.join(sequences)}); "
                  "skipped") for other in others]
    example = scan_id(next(iter(members)).relative_to(root))

    def known_as(volume: Path, case: Path) -> str:  # the sequence name a case's volume goes by
        return member_name(case_location(case), volume_location(volume)[1]) or ""

    by_kind = sorted({name for member, case in grouped.items() if (name := known_as(member, case)) not in sequences})
    how = f"by kind, under {len(by_kind)} other names (e.g. {', '.join(by_kind[:3])})" if by_kind else "by name"
    not_read = Counter((sequence_kind(name) if by_kind else name) or "unnamed"
                       for name in (known_as(other, case) for other, case in others.items()))
    log.info("%d cases (a folder, or files sharing the start of their names) hold the same %d MRI sequences (%s) "
             "%s: each case is one scan, its sequences its channels (e.g. %s)%s", len(members), len(sequences),
             ", ".join(sequences), how, example, "; not read: " + ", ".join(
                 f"{n} {name}" for name, n in not_read.most_common()) if not_read else "")
    return paths


# An anonymiser may write one PatientID for every scan ("ANONYMOUS", "0000"): a patient holding over half of
# the scans, and this many, is no patient, and keeping it on one side of the split leaves nothing on the other.
MIN_PLACEHOLDER_SCANS = 20


def _placeholder_patients(rows: list[dict], by_patient_id: list[int]) -> list[int]:
    """The rows (of ``by_patient_id``, grouped by their DICOM PatientID) whose PatientID over half of the scans
    share: their group is cleared, for the other rules and then their study to give one."""
    counts = Counter(rows[index]["group"] for index in by_patient_id)
    placeholders = []
    for patient, count in counts.items():
        if count >= MIN_PLACEHOLDER_SCANS and count > len(rows) / 2:
            log.warning("%d of %d scans share one DICOM PatientID (%s, hashed): an anonymiser's placeholder, not a "
                        "patient; each scan's study is its group instead, unless its folder or name gives a patient "
                        "(give a labels file with a group column to keep a patient's studies together)",
                        count, len(rows), patient)
            placeholders += [index for index in by_patient_id if rows[index]["group"] == patient]
    for index in placeholders:
        rows[index]["group"] = ""
    return placeholders


MIN_RECURRING_CASES = 5


def _warn_of_recurring_series(rows: list[dict]) -> None:
    """Say so where most groups of two or more scans (a patient's folder, a case) hold the same kinds of file
    by name (each patient's t1_mprage_tra, t2_tse_tra, ...), not named as views of a case: each is a scan of its
    own, so one model learns every kind as one kind of picture, and no case is called from them."""
    kinds_of: dict[str, set[str]] = {}
    for row in rows:
        # views named so (a knee's axial/, BraTS' _flair) are a case's, which score calls as one (pipeline.cases)
        if row["group"] and row["status"] == "ok" and not case_of(row["scan_id"]):
            folder, _, name = f"/{row['scan_id']}".rpartition("/")
            kind = sequence_name(folder.rpartition("/")[2], name)
            kinds_of.setdefault(row["group"], set()).add(kind)
    several = [frozenset(kinds) for kinds in kinds_of.values() if len(kinds) > 1 and "" not in kinds]
    if not several:
        return
    kinds, cases = Counter(several).most_common(1)[0]
    if cases >= MIN_RECURRING_CASES and cases >= len(kinds_of) / 2:
        log.warning("%d of %d patients or cases hold the same %d kinds of scan by name (%s): each file is a scan of "
                    "its own, so one model learns them all as one kind of picture; to train on one kind, keep its "
                    "files with --include (make: INCLUDE=), such as --include '*%s*'",
                    cases, len(kinds_of), len(kinds), ", ".join(sorted(kinds)), sorted(kinds)[0])


def _group_ungrouped(rows: list[dict], patients_of: Callable[[list[str], list[str]], dict[int, str]], by: str) -> None:
    """Give the rows with no group the patient ``patients_of`` finds from their scan ids and labels, except
    patients with test scans and other scans (the split the data came with), which keep that split."""
    ungrouped = [index for index, row in enumerate(rows) if not row["group"]]
    found = patients_of([rows[index]["scan_id"] for index in ungrouped], [rows[index]["label"] for index in ungrouped])
    patients, given_up = groups_on_one_side(pd.Series([found.get(p, "") for p in range(len(ungrouped))], dtype=str),
                                            pd.Series([rows[index]["split"] == "test" for index in ungrouped]))
    if given_up:
        log.warning("%d patients (by %s) have test scans and other scans (the split the data came with): they "
                    "keep that split and no group", given_up, by)
    grouped = [(index, patient) for index, patient in zip(ungrouped, patients) if patient]
    for index, patient in grouped:
        rows[index]["group"] = patient
    if grouped:
        log.info("%d scans in %d groups by %s (%s: %s); a group stays on one side of the split", len(grouped),
                 len({patient for _, patient in grouped}), by, rows[grouped[0][0]]["scan_id"], grouped[0][1])


def _manifest_rows(
    root: Path,
    paths: list[Path],
    label_rows: dict[str, LabelRow],
    class_subfolders: bool,
    problems: list,
    classes: list[str],
) -> tuple[list[dict[str, str]], dict[int, str], dict[int, str]]:
    """One manifest row per scan with id and labels (reading fills in the rest).

    Also returns where each row's label came from (labels file line), for messages, and the group of each
    row labelled by a labels row naming a case's folder (where nothing else gives one).
    """
    rows, label_where = [], {}
    label_rows = dict(label_rows)
    patients: dict[Path, str] = {}
    from_folders = folder_labels(root, paths, problems, classes, patients) if class_subfolders else {}
    if class_subfolders and all(len(path.relative_to(root).parts) == 1 for path in paths):
        log.warning("no labels file and no subfolders under %s: every scan is unlabelled", root)
    used = {}  # labels row key -> whether it names a folder (a patient's, a study's) whose scans take it
    in_folder: dict[str, list[int]] = {}  # rows labelled by a folder's row, without a group
    for index, path in enumerate(paths):
        row = dict.fromkeys(MANIFEST_COLUMNS, "")
        row.update(scan_id=scan_id(path.relative_to(root)), path=str(path))
        if path in from_folders:
            row["label"], row["split"] = from_folders[path]
            row["group"] = patients.get(path, "")
        elif (key := labels_key(real := os.path.realpath(path), label_rows)) in label_rows:
            label_row = label_rows[key]
            used[key] = key != real
            row.update(label=label_row.label, group=label_row.group, split=label_row.split,
                       label_source=label_row.verdict, previous_label=label_row.previous)
            label_where[index] = label_row.where
            if key != real and not row["group"]:
                in_folder.setdefault(key, []).append(index)
        rows.append(row)
    case_groups = {}
    for folder, members in in_folder.items():
        if len(members) <= CASE_FOLDER_SCANS:
            # a row naming a subject's or a study's folder (OASIS's OAS1_0001_MR1, holding its MPRAGE runs) is one
            # case: its scans stay on one side of the split; the folder's path is in their ids already
            relative = Path(os.path.relpath(folder, os.path.realpath(root))).as_posix()
            case_groups.update(dict.fromkeys(members, relative))
    folder_rows = []  # the rows of folders whose scans took their label
    for key, names_a_folder in used.items():
        where = label_rows.pop(key).where
        if names_a_folder:
            folder_rows.append(where)
    if folder_rows:
        file, _ = folder_rows[0].rsplit(" line ", 1)
        numbers = ", ".join(where.rsplit(" ", 1)[-1] for where in folder_rows[:3])
        more = f" and {len(folder_rows) - 3} more" if len(folder_rows) > 3 else ""
        log.info("%s line%s %s%s: each names a folder, and its label is each of the scans in it", file,
                 "s" if len(folder_rows) > 1 else "", numbers, more)
    # Rows left over name existing files that are not among the scans found.
    reviewed_elsewhere = []
    for key, label_row in label_rows.items():
        if key.startswith(DICOM_KEY):
            continue  # matched to the scans' headers once they are read
        inside = key.startswith(str(root) + os.sep)
        if label_row.reviewed and not inside and names_a_scan(key):
            # A reviewer's verdict on a scan of a folder scored outside this one: trained on where it lies,
            # its id the path from here ("../incoming/x.png"), so no other scan can share it.
            row = dict.fromkeys(MANIFEST_COLUMNS, "")
            row.update(scan_id=scan_id(os.path.relpath(key, root)), path=key, label=label_row.label,
                       group=label_row.group, split=label_row.split,
                       label_source=label_row.verdict, previous_label=label_row.previous)
            label_where[len(rows)] = label_row.where
            rows.append(row)
            reviewed_elsewhere.append(key)
            continue
        if inside and is_system_file(os.path.relpath(key, root)):
            reason = f"{key} is a system file (operating-system metadata or in a hidden folder), never a scan"
        else:
            reason = f"{key} is not a scan under {root} (other folder, or not a scan type)"
        problems.append(("labels", label_row.where, reason + "; fix the path or delete the row"))
    if reviewed_elsewhere:
        log.info("%d reviewed scans outside %s are ingested where they lie (e.g. %s)", len(reviewed_elsewhere), root,
                 reviewed_elsewhere[0])
    return rows, label_where, case_groups


def _label_by_header(index: int, row: dict[str, str], patient: str, accession: str, by_header: dict[str, LabelRow],
                     matched: set[str], label_where: dict[int, str]) -> None:
    """Label a DICOM scan from the labels row its header's patient, accession number or study names."""
    for key in header_keys(patient, accession, row["study_uid"]):
        if key in by_header:
            found = by_header[key]
            row.update(label=found.label, split=found.split, group=row["group"] or found.group)
            label_where[index] = found.where
            matched.add(key)
            return


def _unmatched_header_rows(by_header: dict[str, LabelRow], matched: set[str], labels, rows) -> list:
    """A problem for each labels row keyed by a header value that no scan has.

    Raises
    ------
    ValueError
        No row matched and no scan is DICOM: the key column names neither files nor headers here.
    """
    if not by_header:
        return []
    if not matched and not any(row["modality"] or row["study_uid"] for row in rows):
        raise ValueError(f"labels file {labels}: no 'file' column, and its patient, accession or study values are "
                         "not file names either, nor found in a DICOM scan's header (there is none here); it needs "
                         "columns file,label and may have split,group: name the file column with --file-column "
                         "(make: FILE_COLUMN=), or rename it")
    return [("labels", found.where, f"no DICOM scan here has this row's {DICOM_KEY_TAGS[key.split(':')[1]]}; "
             "fix the value or delete the row") for key, found in by_header.items() if key not in matched]


def _check_classes(
    rows: list[dict[str, str]],
    classes: Iterable[str] | None,
    label_where: dict[int, str],
    problems: list,
) -> list[str]:
    """Report and blank labels outside ``classes``; return the class list."""
    if classes is None:
        found = sorted({row["label"] for row in rows if row["label"]})
        # "Tumour" and "tumour" are two classes to the pipeline, and a screening run would count one as healthy
        alike: dict[str, list[str]] = {}
        for name in found:
            alike.setdefault(class_key(name), []).append(name)
        for names in (names for names in alike.values() if len(names) > 1):
            counts = ", ".join(f"{name!r} ({sum(row['label'] == name for row in rows)} scans)" for name in names)
            problems.append(("labels", " / ".join(names), f"classes {counts} differ only in case, spaces or "
                             "underscores: they are kept apart; if they are one class, write it one way"))
        return found
    classes = [str(name) for name in classes]
    for index, row in enumerate(rows):
        if row["label"] and row["label"] not in classes:
            reason = f"label {row['label']!r} is not one of the classes {', '.join(classes)}"
            reason += "; the scan is kept unlabelled, fix the label or add the class"
            problems.append(("labels", label_where.get(index, row["scan_id"]), reason))
            row["label"] = ""
    return classes


def _mark_duplicates(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """Mark readable scans whose bytes equal an earlier readable scan as ``duplicate``; the first
    copy is kept. Return a problem row for each kept scan whose copies were labelled differently.

    The kept copy's label is the copies' one label: taken from a copy where the kept one has none,
    and blanked where they disagree, since one scan cannot be both and nothing says which is right.
    """
    copies: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        if row["sha256"] in copies:
            row.update(status="duplicate", error=f"same content (sha256) as {copies[row['sha256']][0]['scan_id']}")
        copies.setdefault(row["sha256"], []).append(row)
    problems = []
    for kept, *others in copies.values():
        labels = sorted({row["label"] for row in (kept, *others) if row["label"]})
        if len(labels) > 1:
            named = ", ".join(f"{row['scan_id']} ({row['label'] or 'unlabelled'})" for row in (kept, *others))
            problems.append(("labels", kept["scan_id"], f"identical copies labelled differently: {named}; the scan is "
                             "kept unlabelled, fix the labels or delete the wrong copy"))
            kept["label"] = ""
        elif labels and not kept["label"]:
            kept["label"] = labels[0]
    return problems


def _mark_near_duplicates(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """Give readable scans that look alike (re-saved or resized copies) one ``duplicate_group``,
    which split keeps on one side; return a problem row for each such scan."""
    ok = [row for row in rows if row["status"] == "ok"]
    pairs = near_duplicate_groups([row["perceptual_hash"] for row in ok],
                                  fine=[row.get("fine_hash", "") for row in ok])
    if not pairs:
        return []
    root = connected_groups(len(ok), pairs)
    sizes = Counter(root)
    large = {r for r, n in sizes.items() if n > MAX_GROUP}
    if large:
        log.warning("%d scans look alike in chains of over %d (e.g. %s); not treated as copies of one another",
                    sum(sizes[r] for r in large), MAX_GROUP, ok[min(large)]["scan_id"])
        pairs = [(i, j, d) for i, j, d in pairs if root[i] not in large]
    closest: dict[int, tuple[int, int]] = {}
    for i, j, distance in pairs:
        for a, b in ((i, j), (j, i)):
            if a not in closest or distance < closest[a][1]:
                closest[a] = (b, distance)
    problems = []
    for index, row in enumerate(ok):
        if index in closest:
            other, distance = closest[index]
            row["duplicate_group"] = ok[root[index]]["scan_id"]
            theirs = ok[other]["label"]
            differ = (f"; labelled {row['label']!r} here and {theirs!r} there: if they are one scan, one label is "
                      "wrong" if row["label"] and theirs and row["label"] != theirs else "")
            problems.append(("near-duplicate", row["scan_id"],
                             f"looks like {ok[other]['scan_id']} (perceptual hashes {distance} of 256 bits apart: "
                             f"a re-saved or resized copy?); split keeps them on one side{differ}"))
    log.info("%d scans in %d near-duplicate groups", len(closest), len({root[i] for i in closest}))
    return problems


def _log_summary(root, manifest, problems, classes, manifest_path, problems_path) -> None:
    counts = manifest["status"].value_counts()
    # Files left out as no scans of their own (a converter's sidecars, system files, masks) are listed with the
    # problems but logged as one line each kind, after them: a sidecar beside every volume would hide the rest.
    aside = problems["source"].isin(["mask", "skipped"])
    shown = problems[~aside]
    log.info(
        "ingested %d scans from %s: %d ok, %d error, %d duplicate; %d labelled in %d classes; "
        "%d problems%s. Manifest: %s",
        len(manifest),
        root,
        counts.get("ok", 0),
        counts.get("error", 0),
        counts.get("duplicate", 0),
        int((manifest["label"] != "").sum()),
        len(classes),
        len(shown),
        f", {int(aside.sum())} files left out as no scans of their own" if aside.any() else "",
        manifest_path,
    )
    for source, item, reason in shown.head(PROBLEMS_LOGGED).itertuples(index=False):
        log.warning("%s %s: %s", source, item, reason)
    if len(shown) > PROBLEMS_LOGGED:
        log.warning("... %d problems in all, every one listed in %s", len(shown), problems_path)
    skipped = problems[problems["source"] == "skipped"]
    sidecar = skipped["reason"].str.startswith("metadata of")
    sequence = skipped["reason"].str.startswith(OTHER_SEQUENCE)
    excluded = skipped["reason"].str.startswith(NOT_INCLUDED)
    for kind, rows in (("converters' sidecars (acquisition parameters beside a volume)", skipped[sidecar]),
                       ("volumes in cases of none of the sequences read as channels", skipped[sequence]),
                       ("scans not matching --include", skipped[excluded]),
                       ("system files (operating-system metadata, DICOMDIR, BIDS metadata and derivatives)",
                        skipped[~sidecar & ~sequence & ~excluded])):
        if len(rows):
            log.info("skipped %d %s, e.g. %s; listed in %s", len(rows), kind, rows["item"].iloc[0], problems_path)


