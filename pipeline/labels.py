"""Where a scan's label comes from when a labels file gives it (from the folders the scans sit in:
``pipeline.folder_labels``): the scans its rows name (which column is which: ``pipeline.label_columns``).

Ingest reads labels through here, and so do merging review verdicts (``pipeline.verdicts``) and
score's check against a labelled folder, so a labels file that names ``ISIC_001`` for
``ISIC_001.jpg`` means the same to each.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.cases import views_of_one_case
from pipeline.dicom import opaque_id
from pipeline.io import read_table
from pipeline.label_columns import (
    COLUMN_NAMES,
    DICOM_KEY_NAMES,
    ROLE_NAMES,
    encoded_masks,
    findings_of_columns,
    listed_findings,
    log_column_labels,
    name_columns,
)
from pipeline.manifest import ADDED_BY_REVIEW, findings_label, findings_of
from pipeline.masks import segmentation_masks
from pipeline.reading import SCAN_SUFFIXES, is_system_file, scan_exists, scan_suffix, volume_header

log = logging.getLogger("pipeline.labels")

# A merged labels file's label_source for rows a reviewer's verdict made (``pipeline.verdicts``).
REVIEWED_SOURCES = ("review", "confirmed")
KNOWN_SPLITS = ("train", "val", "test")
# Names of the splits in labels files and in exports' first-level folders (Training/glioma/x.jpg), as
# public sets write them (MIMIC-CXR's split file: train, validate, test)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "validate": "val", "tune": "val", "tuning": "val", "test": "test", "testing": "test",
               "holdout": "test", "hold-out": "test", "hold_out": "test"}


@dataclass
class LabelRow:
    label: str
    group: str
    split: str
    where: str  # "labels.csv line 7", for messages
    # what a reviewer's verdict (a merged labels file's label_source) did to the label (manifest.VERDICT_SOURCES:
    # "review" gave a scan that had none its label, "confirmed", "relabelled"), "" for none: a reviewed scan
    # trains (see split), and may lie outside the scans
    verdict: str = ""
    previous: str = ""  # the label a verdict changed

    @property
    def reviewed(self) -> bool:
        return bool(self.verdict)


DICOM_KEY = "dicom:"  # a key of read_labels' rows that is a header value, not a path
DICOM_KEY_TAGS = {"patient": "patient (PatientID)", "accession": "accession number (AccessionNumber)",
                  "study": "study (StudyInstanceUID)"}


_PSEUDONYM = re.compile(r"^patient-[0-9a-f]{12}$")


def patient_pseudonym(group: str) -> str:
    """A labels file's group (a patient's id) as the manifest keeps it: hashed as a DICOM PatientID is
    (:func:`pipeline.dicom.opaque_id`), so that the id stays in the labels file and a labels file's
    patient and the same patient's DICOM header share a group; "" and an id hashed already kept."""
    return group if not group or _PSEUDONYM.match(group) else opaque_id("patient", group)


TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx")
MAX_TABLE_BYTES = 64 * 2**20  # a metadata table, not a dump of every scan's header
BESIDE_SHARE = 0.9  # a table of the same scans names nearly all of them; another labels file some


def groups_beside(table: pd.DataFrame, labels_path: Path) -> pd.Series | None:
    """Each row's patient (or lesion) from a table beside the labels file, where the labels file gives
    none: ISIC 2019's ``ISIC_2019_Training_Metadata.csv`` (``image, ..., lesion_id``) beside its
    ``ISIC_2019_Training_GroundTruth.csv``, ISIC 2018's ``ISIC2018_Task3_Training_LesionGroupings.csv``.
    A table counts where a column has a group's name (:data:`COLUMN_NAMES`, a patient's before a
    lesion's) and another column holds ``BESIDE_SHARE`` of the labels file's names; else None."""
    files = table["file"].str.strip()
    wanted = set(files) - {""}
    names = COLUMN_NAMES["group"]
    for other in sorted(labels_path.parent.iterdir()) if wanted else []:
        if (other == labels_path or other.suffix.lower() not in TABLE_SUFFIXES or not other.is_file()
                or other.stat().st_size > MAX_TABLE_BYTES or is_system_file(other.name)):
            continue
        try:
            with other.open("rb") as head:
                first = head.read(4096).split(b"\n", 1)[0].decode("utf-8", "replace").lower()
            if other.suffix.lower() != ".xlsx" and not any(name in re.sub(r"[ -]", "_", first) for name in names):
                continue  # read only a table whose header may name a group
            found = read_table(other, "table beside the labels file", "file,group")
        except (OSError, ValueError):
            continue  # a table this could not read (damaged, not ours to read) only might have held groups
        normalised = {column: re.sub(r"[ -]", "_", column) for column in found.columns}
        groups = [column for column in found.columns if normalised[column] in names]
        if not groups:
            continue
        group = min(groups, key=lambda column: names.index(normalised[column]))
        for column in found.columns:
            values = found[column].str.strip()
            if column in groups or values.isin(wanted).sum() < BESIDE_SHARE * len(wanted):
                continue
            given = dict(zip(values, found[group].str.strip()))
            beside = files.map(given).fillna("")
            log.info("labels file %s gives no group: %d of its %d rows take column %r of %s beside it as the "
                     "group (a %s's scans stay on one side of the split)", labels_path.name,
                     int((beside != "").sum()), len(files), found.attrs.get("written_columns", {}).get(group, group),
                     other.name, group.split("_")[0])
            return beside
    return None


def groups_on_one_side(groups: pd.Series, is_test: pd.Series) -> tuple[pd.Series, int]:
    """``groups`` with "" for each group that has test rows and other rows: a group read from names or
    from a table beside the labels file gives way to the split the data came with (which split would
    otherwise refuse); returns (groups, how many were given up)."""
    named = groups != ""
    mixed = is_test[named].groupby(groups[named]).nunique() > 1
    given_up = set(mixed[mixed].index)
    return groups.where(~groups.isin(given_up), ""), len(given_up)


def _verdict(source: str, previous: str) -> str:
    """A merged labels file's row's ``label_source`` and ``previous_label`` as the manifest's ``label_source``."""
    if source not in REVIEWED_SOURCES:
        return ""
    return "confirmed" if source == "confirmed" else "relabelled" if previous else ADDED_BY_REVIEW


def dicom_key(kind: str, value: str) -> str:
    """The key of a labels row matched to DICOM scans by their ``kind`` of header value (identifying
    values hashed as the scans' headers are: :func:`pipeline.dicom.opaque_id`)."""
    return f"{DICOM_KEY}{kind}:{value.strip() if kind == 'study' else opaque_id(kind, value)}"


def header_keys(patient_group: str, accession_group: str, study_uid: str) -> list[str]:
    """The keys of labels rows (:func:`dicom_key`) that may label a DICOM scan with these header values
    (the patient's and accession number's already hashed, as ``pipeline.dicom`` reads them), in the
    order tried: its patient's, accession number's and study's; none for a value it lacks."""
    return [f"{DICOM_KEY}{kind}:{value}" for kind, value in
            (("patient", patient_group), ("accession", accession_group), ("study", study_uid)) if value]


def read_labels(
    labels_path: str | os.PathLike,
    scans: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
) -> tuple[dict[str, LabelRow], list[tuple[str, str, str]]]:
    """Read a labels CSV into ``{real path of the file: label row}`` and a list of problems.

    A relative ``file`` is looked for from the labels file's folder, then from ``scans``: a
    labels file kept beside the scan folder often names files as they sit inside it.
    ``columns`` names the file's columns for roles the usual names do not settle
    (``{"label": "target"}`` where ``diagnosis`` and ``target`` could each be the label).

    Raises
    ------
    ValueError
        The file is empty, not CSV, or lacks a required column (``file``, ``label``). Comma,
        semicolon and tab separators and UTF-8 or Windows-1252 text are read (``read_table``).
    """
    labels_path = Path(labels_path)
    if not labels_path.is_file():
        raise FileNotFoundError(f"labels file {labels_path} does not exist")
    base = labels_path.absolute().parent
    bases = [base] + ([Path(os.path.abspath(scans))] if scans is not None else [])
    table = read_table(labels_path, "labels file", "file,label")
    # the scan folder's files by name and path, walked once and only where a row needs it
    scan_index = functools.cache(lambda: files_by_name(scans))
    columns = dict(columns or {})
    found = _files_in_header(table, bases, columns, scan_index)
    headerless = found is not None
    if headerless:
        # no header line (MURA's "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1",
        # COVIDx's "3 ARDSSevere.png pneumonia cohen"): its first line is data, its columns numbered
        table = read_table(labels_path, "labels file", "file,label", header=False)
        columns = _headerless_columns(table, labels_path, found, columns)
        log.info("labels file %s has no header line: column %s read as the files, column %s as the labels",
                 labels_path.name, columns["file"], columns["label"])
    elif not columns and (per_scan := _rows_per_finding(table, bases, scan_index, labels_path.name)) is not None:
        table = per_scan
    elif not columns.get("file") and (named := _file_column_by_values(table, bases, scan_index)):
        log.info("labels file %s: no column is named for the files; column %r names them", labels_path.name,
                 table.attrs["written_columns"].get(named, named))
        attrs, table = table.attrs, table.rename(columns={named: "file"})
        table.attrs = attrs
    table = name_columns(table, labels_path, columns)
    table["label"] = listed_findings(table["label"], labels_path.name)
    table["label"] = encoded_masks(table["label"], labels_path.name)
    if "group" not in table.columns and not table.attrs.get("file_from"):
        beside = groups_beside(table, labels_path)
        if beside is not None and "split" in table.columns:
            is_test = table["split"].str.strip().str.lower().map(SPLIT_NAMES).eq("test")
            beside, given_up = groups_on_one_side(beside, is_test)
            if given_up:
                log.warning("labels file %s: %d groups of the table beside it have test rows and other rows; "
                            "those scans keep the file's split and no group", labels_path.name, given_up)
        if beside is not None:
            table["group"] = beside
    for optional in ("split", "group", "label_source", "previous_label"):
        if optional not in table.columns:
            table[optional] = ""
    column, keyed = table.attrs.get("file_from"), None
    written = table.attrs.get("written_columns", {}).get(column, column)
    if column and not any(locate(file, bases)[0] or _named_in(scan_index(), file)[0] for file in table["file"].head(20)):
        keyed = table.attrs["file_from_kind"]  # ingest matches the rows to DICOM scans' headers
        if keyed == "patient" and "group" in table.columns and table["group"].equals(table["file"]):
            table["group"] = ""  # the scans' PatientID gives the group, hashed: the values stay in this file
        log.info("labels file %s: no file column, and the %r values are not file names: each row labels the DICOM "
                 "scans of its %s", labels_path.name, written, DICOM_KEY_TAGS[keyed])
    elif column:
        log.info("labels file %s: no file column; column %r taken as the file name (and the group)",
                 labels_path.name, written)
    rows: dict[str, LabelRow] = {}
    problems = []
    from_scans = repeats = deeper = elsewhere = 0
    example = None
    findings: dict[str, list[str]] = {}  # a scan's labels where rows naming it give several
    conflicts = []  # the rows that give them
    columns = (table[name].str.strip() for name in ("file", "label", "split", "group", "label_source", "previous_label"))
    # Line numbers as an editor shows them: the header, where there is one, is line 1.
    for line, (file, label, split, group, source, previous) in enumerate(zip(*columns), start=1 if headerless else 2):
        where = f"{labels_path.name} line {line}"
        group = patient_pseudonym(group)
        if not file:
            problems.append(("labels", where, "no file name; fill it in or delete the row"))
            continue
        if keyed or file.startswith(DICOM_KEY):  # a header value, or its key as a merged labels file keeps it
            key, trouble = (dicom_key(keyed, file) if keyed else file), ""
        else:
            key, trouble = locate(file, bases)
        keys = [key]
        if key is None and scans is not None:
            # HAM10000 names ISIC_0027419 for HAM10000_images_part_2/ISIC_0027419.jpg, ADNI an image or subject
            # by its folder (I45108, 002_S_0295), INbreast 22678622 for 22678622_d71fc3e8_MG_L_CC_ANON.dcm; a
            # labels file made where file names ignore case names Images/IMG_1.JPG for images/img_1.jpg
            found, by_start = _named_in(scan_index(), posixpath.normpath(file.replace("\\", "/")))
            views = len(found) > 1 and views_of_one_case(found)
            if len(found) == 1 or (found and by_start) or views:
                keys, deeper = found, deeper + len(found)  # a study's sequences (10000_1000000_t2w, _adc) alike
                if len(found) > 1 and not group:
                    # a case's files (MRNet's 0000: a knee's planes; PI-CAI's 10000_1000000: a study's sequences)
                    # stay on one side of the split
                    group = patient_pseudonym(file)
            elif found:
                kind = "files" if all(os.path.isfile(f) for f in found) else "files or folders"
                trouble = (f"file {file!r} is not beside the labels file and {len(found)} {kind} of that name lie "
                           f"below the scan folder ({', '.join(os.path.relpath(f, scans) for f in found[:3])}); "
                           "write its path")
        if keys == [None] and "/" in file.replace("\\", "/") and (key := locate_by_tail(file, bases)):
            keys, elsewhere = [key], elsewhere + 1
            example = example or (file, key)
        if keys == [None]:
            problems.append(("labels", where, trouble))
            continue
        if split and split.lower() not in SPLIT_NAMES:
            reason = (f"split {split!r} is not one of {', '.join(KNOWN_SPLITS)} (or training, valid, validation, "
                      "testing); treated as no split")
            problems.append(("labels", where, reason))
            split = ""
        for key in keys:
            from_scans += (not key.startswith(DICOM_KEY) and not key.startswith(os.path.realpath(base) + os.sep)
                           and not os.path.isabs(file))
            first = rows.get(key)
            if first and (first.label, first.split, first.group) == (label, SPLIT_NAMES.get(split.lower(), ""), group):
                repeats += 1  # a row per finding box, as RSNA's labels give them: the same label again
                continue
            if key in rows:
                reason = f"file {file!r} is listed again (first on {rows[key].where}); the first entry is used"
                if (first.split, first.group) == (SPLIT_NAMES.get(split.lower(), ""), group):
                    # Another label: a row per finding or per reader (VinDr-CXR, CBIS-DDSM's lesions), or a
                    # mistake; which, the whole file tells (below).
                    findings.setdefault(key, findings_of(first.label))
                    findings[key] += [part for part in findings_of(label) if part not in findings[key]]
                    conflicts.append(("labels", where, reason + ", delete the repeat or correct its label"))
                    continue
                problems.append(("labels", where, reason + ", delete the repeat"))
                continue
            verdict = _verdict(source, previous)
            rows[key] = LabelRow(label=label, group=group, split=SPLIT_NAMES.get(split.lower(), ""), where=where,
                                 verdict=verdict, previous=previous if verdict == "relabelled" else "")
    if len(findings) >= max(MIN_FINDINGS_LISTS, FINDINGS_LISTS_SHARE * len(rows)):
        for key, parts in findings.items():
            rows[key].label = findings_label(parts)
        key = next(iter(findings))
        log.info("%s: %d scans are named by rows of different labels (a row per finding or per reader): each scan's "
                 "labels are joined, as %r for %s; --positive with one of them counts every scan that has it, "
                 "--healthy every scan with another", labels_path.name, len(findings), rows[key].label,
                 rows[key].where)
    else:
        problems += conflicts
    if elsewhere:
        log.info("%s: %d files written as paths of another machine or folder were found by the end of their path "
                 "(%s as %s)", labels_path.name, elsewhere, *example)
    if deeper:
        log.info("%s: %d files or folders found below the scan folder %s by name (or the start of their name, "
                 "or a folder's number: s50414267 for 50414267), or by path written in another case",
                 labels_path.name, deeper, scans)
    if repeats:
        log.info("%s: %d rows repeat an earlier row's file and label (a row per finding, as some sets give them); "
                 "read once", labels_path.name, repeats)
    if from_scans:
        log.info("%s: %d files found in the scan folder %s, not beside the labels file", labels_path.name,
                 from_scans, bases[-1])
    return rows, problems


# A row per scan and finding names the scan and the finding in one value (RSNA's intracranial haemorrhage
# labels: ID_63eb1e259_epidural,0 for ID_63eb1e259.dcm): of this many findings at most.
MAX_FINDINGS_PER_SCAN = 30
_ZERO_ONE = ("0", "1", "0.0", "1.0")


def _split_at_last_underscore(values: pd.Series) -> tuple[pd.Series, pd.Series] | None:
    """(what comes before the last ``_`` of each value, what comes after), or None where a value has no
    ``_`` with something on each side, or the ends have more than ``MAX_FINDINGS_PER_SCAN`` lengths.
    Sliced a length of end at a time: a string method a value is many times slower on millions of rows."""
    cut = values.str.rfind("_")
    end_length = values.str.len() - cut - 1
    if cut.le(0).any() or end_length.eq(0).any() or end_length.nunique() > MAX_FINDINGS_PER_SCAN:
        return None
    before, after = np.empty(len(values), dtype=object), np.empty(len(values), dtype=object)
    for length in end_length.unique():
        rows = end_length.eq(length).to_numpy()
        before[rows], after[rows] = values[rows].str[: -length - 1], values[rows].str[-length:]
    return pd.Series(before, index=values.index), pd.Series(after, index=values.index)


def _rows_per_finding(table, bases: list[Path], scan_index: Callable[[], ScanNames], file_name: str):
    """A labels file that gives a row per scan and finding, the two in one value (RSNA intracranial
    haemorrhage's ``ID,Label``: ``ID_63eb1e259_epidural,0``, ``ID_63eb1e259_any,1`` for
    ``ID_63eb1e259.dcm``), as a table of ``file,label``: each scan's findings read as CheXpert's columns
    are (:func:`findings_of_columns`). A finding that is, in every row, whether any other holds (RSNA's
    ``any``) names none of its own: it is left out, so that a scan with none is ``NO_FINDING``. None
    where the file is not so: two columns, one of 0s and 1s, the other's values each ending in ``_``
    and one of 2 to ``MAX_FINDINGS_PER_SCAN`` words, its first values naming no scan and, without that
    end, naming some."""
    if len(table.columns) != 2 or table.empty:
        return None
    text = table.apply(lambda column: column.str.strip())
    flags = [column for column in table.columns if text[column].isin(_ZERO_ONE).all()]
    if len(flags) != 1:
        return None
    named = next(column for column in table.columns if column != flags[0])
    split = _split_at_last_underscore(text[named])
    if split is None:
        return None
    scans, findings = split
    kinds = findings.unique()
    if not 2 <= len(kinds) <= MAX_FINDINGS_PER_SCAN or {kind.lower() for kind in kinds} & {"file", *COLUMN_NAMES}:
        return None

    def names_scan(value: str) -> bool:
        return locate(value, bases)[0] is not None or bool(_named_in(scan_index(), value)[0])

    if any(map(names_scan, text[named].head(20))) or not any(map(names_scan, scans.head(200).unique()[:20])):
        return None
    # a scan by a finding: the highest value given (RSNA repeats a few rows, 1s written last), -1 where none is
    scan_codes, scan_names = pd.factorize(scans)
    kind_codes, kind_names = pd.factorize(findings)
    values = text[flags[0]].isin(_ZERO_ONE[1::2]).to_numpy(dtype=int)
    order = np.argsort(values, kind="stable")
    grid = np.full((len(scan_names), len(kind_names)), -1)
    grid[scan_codes[order], kind_codes[order]] = values[order]
    wide = pd.DataFrame(grid, index=scan_names, columns=kind_names)
    summaries = [kind for kind in wide.columns if len(wide.columns) > 2 and wide[kind].eq(1).any()
                 and wide[kind].eq(wide.drop(columns=kind).max(axis=1)).all()]
    # a finding of its own that is alone in a set may look like it too: RSNA writes "any" after the findings
    found = findings_of_columns(wide.drop(columns=summaries[-1:]).replace(-1, np.nan))
    per_scan = pd.DataFrame({"file": wide.index, "label": found.labels.to_numpy()})
    log.info("labels file %s: a row per scan and finding (%r): read as %d scans with a finding each of %s%s",
             file_name, text[named].iloc[0], len(per_scan), ", ".join(map(repr, sorted(found.columns))),
             f"; {summaries[-1]!r} is whether any other is, so no finding of its own: left out" if summaries else "")
    log_column_labels(file_name, found)
    return per_scan


# Rows of different labels for one scan list its findings where at least this many scans, and this
# share of those labelled, have them (VinDr-CXR: a third of its scans); where fewer do they are
# taken for mistakes, each a problem, the first row's label used.
MIN_FINDINGS_LISTS = 3
FINDINGS_LISTS_SHARE = 0.05


def labels_key(real_path: str, rows: dict[str, LabelRow]) -> str:
    """The key of ``rows`` (from :func:`read_labels`) that labels the scan at ``real_path``: the path
    itself where it has a row of its own, else the nearest folder above it that has one (a patient's
    or a study's row labels each of its series, however deep the export nests them: ``P7/study/T1/``)."""
    if real_path in rows:
        return real_path
    return next((str(folder) for folder in Path(real_path).parents if str(folder) in rows), real_path)


# Tried after a ``file`` without a scan suffix that does not exist as written: many public labels files
# give an image id (``ISIC_0024306``, a patient id) where the file is ``ISIC_0024306.jpg`` or ``.dcm``.
GUESSED_SUFFIXES = tuple(dict.fromkeys(s for suffix in (*SCAN_SUFFIXES, ".dcm") for s in (suffix, suffix.upper())))


def _files_in_header(table, bases: list[Path], columns: dict[str, str],
                     scan_index: Callable[[], ScanNames]) -> int | None:
    """The number (from 1) of the first column whose header cell names an existing file or folder as
    a path does (a separator or a scan suffix in it), or names scan files by their name as the values
    under it do (MRNet's ``0000,1``), where no header cell is a column's name: the file has no header
    line. None where it has one."""
    named = {name.strip().lower() for name in columns.values() if name and not name.strip().isdigit()}
    if set(table.columns) & ({"file", *COLUMN_NAMES["file"]} | named):
        return None
    def names_files(value: str) -> bool:
        return any(os.path.isfile(path) for path in _named_in(scan_index(), value.strip())[0])

    for number, (column, cell) in enumerate(table.attrs["written_columns"].items(), start=1):
        path_like = "/" in cell or "\\" in cell or scan_suffix(cell) or cell.lower().endswith(".dcm")
        if path_like and locate(cell, bases)[0] is not None:
            return number
        # a name with a digit and no space (0000, ISIC_0024306): a column's name is words, and the folder is
        # walked only where a cell may be a scan's
        id_like = bool(re.fullmatch(r"[\w.-]*\d[\w.-]*", cell))
        if not path_like and id_like and column not in ROLE_NAMES and len(table) and names_files(cell):
            first = table[column].head(20)
            if sum(map(names_files, first)) >= max(1, len(first) // 2):
                return number
    return None


def _file_column_by_values(table, bases: list[Path], scan_index: Callable[[], ScanNames]) -> str | None:
    """Where no column has a file column's name: the one column, of those without another role's name
    or a DICOM key's (a patient id keys its rows itself), whose first values name a different scan or
    folder a row (as written, or by name in ``scan_index()``, :func:`files_by_name`), as HyperKvasir's
    ``Video file`` and ADNI's ``Image Data ID`` do; else None."""
    normalised = {column: column.replace(" ", "_").replace("-", "_") for column in table.columns}
    keys = {name for names in (*DICOM_KEY_NAMES.values(), *COLUMN_NAMES.values()) for name in names}
    keys |= set(COLUMN_NAMES)  # a column named for another role (Finding: the label) keeps it
    if set(normalised.values()) & (set(COLUMN_NAMES["file"]) | {"file"}) or table.empty:
        return None

    def names_scans(values) -> bool:
        values = [value.strip() for value in values if value.strip()]
        if len(set(values)) < 0.8 * len(values):
            return False  # a file column names a scan a row; a class column names its class folders again and again
        found = sum(1 for value in values if locate(value, bases)[0] is not None
                    or len(_named_in(scan_index(), value)[0]) == 1)
        return bool(values) and found >= max(1, len(values) // 2)

    found = [column for column in table.columns
             if normalised[column] not in keys and names_scans(table[column].head(20))]
    return found[0] if len(found) == 1 else None


def _headerless_columns(table, labels_path: Path, files: int, columns: dict[str, str]) -> dict[str, str]:
    """The roles' column numbers of a labels file without a header line: the user's, else the column
    naming files (``files``) and, of two columns, the other one as the labels.

    Raises
    ------
    ValueError
        Of three or more columns, which one holds the labels is not said (``--label-column N``).
    """
    numbers = [str(number) for number in range(1, len(table.columns) + 1)]
    chosen = {"file": str(files), **{role: name.strip() for role, name in columns.items() if name}}
    others = [number for number in numbers if number not in chosen.values()]
    if "label" not in chosen and len(numbers) == 2:
        chosen["label"] = others[0]
    if "label" not in chosen:
        first = table.iloc[0]
        shown = ", ".join(f"column {number} ({first[number]!r})" for number in others)
        raise ValueError(f"labels file {labels_path} has no header line (column {files} of its first line names a "
                         f"file) and {len(numbers)} columns: say which holds the labels with --label-column N "
                         f"(make: LABEL_COLUMN=N), N one of {shown}")
    return chosen


def locate(file: str, bases: list[Path]) -> tuple[str | None, str]:
    """(real path, "") of a labels row's ``file``, looked for from each of ``bases`` in turn (an absolute
    ``file`` replaces them), with a scan suffix added where it has none; or (None, the problem). A
    ``file`` that starts with a base's own name is also looked for from above it: MURA's labels file
    in ``MURA-v1.1/`` names ``MURA-v1.1/train/...``."""
    written = [os.path.realpath(start / file) for folder in bases
               for start in ((folder, folder.parent) if Path(file).parts[:1] == (folder.name,) else (folder,))]
    if "\\" in file and not any(os.path.exists(path) for path in written):
        # written on Windows (images\x.png): the separators of this machine
        return locate(file.replace("\\", "/"), bases)
    for path in written:
        if os.path.exists(path):
            header = volume_header(path)  # OASIS names its Analyze volumes by their voxel files (x.img)
            return (os.path.realpath(header) if header else path), ""
        if scan_exists(path):
            return path, ""  # a series' or volume's scan id (SE3/@b1000), as score and verdicts name it
    if scan_suffix(file) is None:
        for path in written:
            # keyed by inode: a case-insensitive file system finds one file under .png and .PNG
            matches = list({os.stat(path + suffix).st_ino: path + suffix for suffix in GUESSED_SUFFIXES
                            if os.path.isfile(path + suffix)}.values())
            if len(matches) == 1:
                return matches[0], ""
            if matches:
                names = ", ".join(os.path.basename(m) for m in matches)
                return None, f"file {file!r} has no suffix and matches {names}; write the file name in full"
    looked = " or ".join(dict.fromkeys(written))
    also = ", also with a scan suffix added" if scan_suffix(file) is None else ""
    return None, f"file {file!r} does not exist (looked for {looked}{also}); fix the path or delete the row"


def locate_by_tail(file: str, bases: list[Path]) -> str | None:
    """The real path of a labels row's ``file`` written for another machine or folder
    (``/kaggle/input/chest-xray/chest_xray/train/NORMAL/x.jpeg``, ``C:\\data\\images\\x.png``): the
    longest end of its path found below one of ``bases``, or None."""
    parts = Path(file.replace("\\", "/")).parts
    if parts[:1] == ("/",) or re.match(r"^[A-Za-z]:$", parts[0] if parts else ""):
        parts = parts[1:]
    for start in range(1, len(parts)):  # the whole relative path was looked for already
        tail = Path(*parts[start:])
        for base in bases:
            if os.path.isfile(base / tail):
                return os.path.realpath(base / tail)
    return None


def _named_in(index: ScanNames, written: str) -> tuple[list[str], bool]:
    """(the files or folders of ``index`` under the name or path ``written``, as written, else lower-cased,
    False); failing those, (the files whose names start with ``written`` and a separator, True); failing
    those, (the folders named by a letter and the number ``written``, False)."""
    for names, by_start in ((index.names, False), (index.starts, True), (index.lettered, False)):
        if found := names.get(written, []) or names.get(written.lower(), []):
            return found, by_start
    return [], False


class ScanNames(NamedTuple):
    """The names a labels file may give the scans below a folder (:func:`files_by_name`)."""

    names: dict[str, list[str]]  # each file and folder by name and path
    starts: dict[str, list[str]]  # each file by the starts of its name that end at a separator
    lettered: dict[str, list[str]]  # each folder named by a letter and a number, or a zero-padded number, by the number


_NAME_SEPARATOR = re.compile(r"[_\-. ]")
# MIMIC-CXR's p10000032/s50414267/ for subject 10000032's study 50414267, which its labels name by number
_LETTERED_FOLDER = re.compile(r"[A-Za-z](\d{5,})")
# RSNA-MICCAI brain tumour's 00002/ for case 2, which its labels name without the zeros
_ZERO_PADDED = re.compile(r"0+(\d+)")


def files_by_name(scans: str | os.PathLike | None) -> ScanNames:
    """The files below ``scans`` by name: each under its name and, where it has a scan suffix (or
    ``.dcm``), its name without it, both as written and lower-cased, and under its path from ``scans``
    (and from above it, the folder's name first) lower-cased; each folder under its name and path; and
    each file under each start of its name that ends at a separator (``22678622`` for
    ``22678622_d71fc3e8_MG_L_CC_ANON.dcm``); each folder named by a letter and a number of five digits or
    more under that number (MIMIC-CXR's ``s50414267`` for study 50414267), and each folder named by a
    number with leading zeros under the number without them (``00002`` for case 2). System files are
    skipped."""
    names: dict[str, list[str]] = {}
    starts: dict[str, list[str]] = {}
    lettered: dict[str, list[str]] = {}
    if scans is None:
        return ScanNames(names, starts, lettered)
    top = Path(scans).name

    def add(index: dict[str, list[str]], keys: set[str], path: str) -> None:
        for key in keys | {key.lower() for key in keys}:
            index.setdefault(key, []).append(path)

    scan_files: list[Path] = []
    for root, folders, files in os.walk(scans):
        # a folder is a system one (__MACOSX, .ipynb_checkpoints) where whatever lies in it is a system file
        folders[:] = sorted(name for name in folders if not is_system_file(f"{name}/x"))
        for name in folders:
            relative = Path(os.path.relpath(os.path.join(root, name), scans)).as_posix()
            add(names, {name, relative, f"{top}/{relative}"}, os.path.realpath(os.path.join(root, name)))
            if number := _LETTERED_FOLDER.fullmatch(name) or _ZERO_PADDED.fullmatch(name):
                add(lettered, {number.group(1)}, os.path.realpath(os.path.join(root, name)))
        for name in sorted(files):
            path = os.path.join(root, name)
            relative = Path(os.path.relpath(path, scans)).as_posix()
            if is_system_file(relative):
                continue
            suffix = scan_suffix(name) or (".dcm" if name.lower().endswith(".dcm") else "")
            stem = name[: len(name) - len(suffix)]
            keys = {name, stem, relative, f"{top}/{relative}"}
            real = os.path.realpath(volume_header(path) or path)  # a voxel file (x.img) stands for its header
            add(names, keys, real)
            add(starts, {stem[: cut.start()] for cut in _NAME_SEPARATOR.finditer(stem) if cut.start()}, real)
            if suffix:
                scan_files.append(Path(path))
    # A name both a scan and its mask have (png_images/0_train_1_.png, png_masks/0_train_1_.png) names the scan.
    masks = {os.path.realpath(mask) for mask in segmentation_masks(scan_files)}
    for index in (names, starts):
        for key, found in index.items():
            if len(kept := [path for path in found if path not in masks]) < len(found) and kept:
                index[key] = kept
    return ScanNames(names, starts, lettered)
