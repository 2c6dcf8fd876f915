"""Which column of a labels file is which: the file, label, group and split columns under the names
public sets give them (``Image Index``, ``diagnosis``, ``patient_id``), columns the user named, and
classes or findings written as columns of 0s and 1s (ISIC's ``MEL,NV``, CheXpert's ``Edema``), as
lists (PadChest's ``['pleural effusion']``) or as run-length encoded masks (SIIM-ACR's pneumothoraces).
``pipeline.labels`` reads a labels file through here.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from pipeline.manifest import FINDINGS_SEPARATOR, findings_label

log = logging.getLogger("pipeline.labels")  # what users read is labels' reading, whichever module says it

LABELS_REQUIRED_COLUMNS = ("file", "label")

# Column names public labels files use for what the pipeline calls file, label, group and split,
# compared with spaces and hyphens as underscores: "Image Index", "Finding Labels", "Patient ID".
COLUMN_NAMES = {
    "file": ("filename", "file_name", "filepath", "file_path", "path", "image", "image_id", "image_name",
             "image_path", "image_file", "image_index", "img", "img_name", "img_path", "scan", "scan_id", "fname"),
    "label": ("class", "class_name", "classname", "labels", "label_name", "diagnosis", "diagnostic", "dx", "target",
              "finding", "findings", "finding_labels", "category", "outcome", "pathology"),
    "group": ("patient", "patient_id", "patientid", "subject", "subject_id", "case_id", "lesion_id"),
    "split": ("set", "subset", "partition"),
}
# Columns of a DICOM header value that may key a labels file's rows where no column names the file,
# as a hospital's labels come (by patient, accession number or study; the files named by UIDs).
DICOM_KEY_NAMES = {"patient": COLUMN_NAMES["group"],
                   "accession": ("accession", "accession_number", "accessionnumber", "accession_no", "acc_no"),
                   "study": ("study_uid", "studyinstanceuid", "study_instance_uid", "studyuid")}


# Taken only where no name above fits: names that often mean something else ("id" a row number).
FALLBACK_COLUMN_NAMES = {"file": ("id", "id_code", "uid", "image_uid", "name"),
                         "label": ("level", "grade", "severity", "y")}
GRADE_WORDS = ("level", "grade", "severity")  # a column name ending in one is a grade (adjudicated_dr_grade)
# Every column name that gives a role: a header cell so named is a header's, and a column so named is no
# other role's.
ROLE_NAMES = {*COLUMN_NAMES, *(name for names in (*COLUMN_NAMES.values(), *FALLBACK_COLUMN_NAMES.values())
                                for name in names)}


COLUMN_OPTIONS = {role: f"--{role}-column" for role in COLUMN_NAMES}


def name_columns(table, labels_path: str | os.PathLike, columns: Mapping[str, str] | None = None):
    """``table`` with its file, label, group and split columns under those names: a column the user
    named for a role (``columns``, ``{"label": "target"}``) is taken first; else a column of another
    usual name (``image_id``, ``diagnosis``, ``patient_id``; ``id_code`` or ``level`` where nothing
    else fits) where it is the only one. Classes given as one-hot columns (``image,MEL,NV``, a 1 in
    one of them a row) become the label column.

    Raises
    ------
    ValueError
        A column named in ``columns`` is not in the file; no column, or more than one, could be the
        file or the label column.
    """
    table = _user_columns(table, labels_path, columns or {})
    normalised = {column: column.replace(" ", "_").replace("-", "_") for column in table.columns}
    renames, trouble = {}, []
    for role, names in COLUMN_NAMES.items():
        if role in table.columns:
            continue
        found = [column for column, name in normalised.items() if name in names]
        if not found:
            found = [column for column, name in normalised.items() if name in FALLBACK_COLUMN_NAMES.get(role, ())]
        if not found and role == "label":
            # Messidor-2's adjudicated_dr_grade, a knee set's kl_grade: a grade is the label where nothing else is
            found = [column for column, name in normalised.items()
                     if name.lower().rsplit("_", 1)[-1] in GRADE_WORDS and column not in renames]
        if role == "group" and len(found) > 1:
            # ISIC 2020's and PAD-UFES-20's patient_id and lesion_id: a patient's lesions stay together
            found = [min(found, key=lambda column: names.index(normalised[column].lower())
                         if normalised[column].lower() in names else len(names))]
        if len(found) == 1:
            renames[found[0]] = role
        elif role == "label" and not found and (hot := column_labels(table.rename(columns=renames))) is not None:
            table = table.assign(label=hot.labels)
            log_column_labels(Path(labels_path).name, hot)
        elif role == "label" and not found and (masks := _mask_column(table, renames)):
            renames[masks] = role  # SIIM-ACR's ImageId, EncodedPixels: read by encoded_masks
        elif role == "label" and not found and (other := _only_class_column(table, normalised, renames)):
            renames[other] = role  # RSNA-MICCAI brain tumour's BraTS21ID,MGMT_value
        elif role == "file" and not found and (key := _key_column(normalised)):
            # RSNA's labels give patientId for <patientId>.dcm: the id names the file (and the patient);
            # else read_labels matches the rows to DICOM scans by that header value
            table = table.assign(file=table[key[0]])
            table.attrs["file_from"], table.attrs["file_from_kind"] = key
        elif role in LABELS_REQUIRED_COLUMNS:
            trouble.append((role, f"columns {', '.join(found)} could each be the {role}" if found
                            else f"no {role!r} column"))
    if trouble:
        roles = [role for role, _ in trouble]
        written = table.attrs.get("written_columns", {})
        found_columns = list(written.values()) or list(table.columns)  # as written, none of those added here
        raise ValueError(f"labels file {labels_path}: {'; '.join(text for _, text in trouble)} (found: "
                         f"{', '.join(found_columns)}); it needs columns file,label and "
                         f"may have split,group: name the columns to use with "
                         f"{' and '.join(COLUMN_OPTIONS[role] for role in roles)} (make: "
                         f"{' '.join(f'{role.upper()}_COLUMN=' for role in roles)}), or rename them")
    if renames:
        log.info("labels file %s: %s", Path(labels_path).name,
                 ", ".join(f"column {table.attrs.get('written_columns', {}).get(column, column)!r} taken as {role}"
                           for column, role in renames.items()))
    return table.rename(columns=renames)


def _only_class_column(table, normalised: dict[str, str], renames: dict[str, str]) -> str | None:
    """Beside the file column, the one other column, where no column has a label column's name, and
    only where its values are a few classes (at most 20, and each given to two rows on average): a
    file,age table still needs its label column named."""
    if "file" not in table.columns and "file" not in renames.values():
        return None
    others = [column for column in table.columns if column not in renames and column not in ROLE_NAMES
              and normalised.get(column) not in ROLE_NAMES and column != table.attrs.get("file_from")]
    if len(others) > 1:  # ids (a UID a row, as SIIM-ACR's ImageId beside new_filename and has_pneumo) are no class
        others = [column for column in others if table[column].nunique() < len(table)]
    if len(others) != 1:
        return None
    values = table[others[0]].str.strip()
    values = values[values != ""]
    distinct = values.nunique()
    return others[0] if 2 <= distinct <= 20 and distinct * 2 <= len(values) else None


def _mask_column(table, renames: dict[str, str]) -> str | None:
    """The one column whose values are run-length encoded masks or -1 (see :func:`encoded_masks`)."""
    found = [column for column in table.columns if column not in renames and column not in ("file", "group", "split")
             and _encoded(table[column].str.strip()) is not None]
    return found[0] if len(found) == 1 else None


def _encoded(text: pd.Series) -> pd.Series | None:
    """Which of ``text`` are run-length encoded masks, where each is one or -1 (or blank) and one is; else None."""
    encoded = text.map(lambda value: bool(_RUN_LENGTHS.fullmatch(value)) and len(value.split()) % 2 == 0)
    return encoded if encoded.any() and (encoded | text.isin(["-1", ""])).all() else None


def _key_column(normalised: dict[str, str]) -> tuple[str, str] | None:
    """(column, kind) of the one column of the most specific kind of DICOM key (a study UID, else an
    accession number, else a patient id) a labels file without a file column has, or None."""
    for kind in ("study", "accession", "patient"):
        columns = [column for column, name in normalised.items() if name in DICOM_KEY_NAMES[kind]]
        if len(columns) == 1:
            return columns[0], kind
        if columns:
            return None
    return None


def _user_columns(table, labels_path: str | os.PathLike, columns: Mapping[str, str]):
    """``table`` with each column the user named for a role under that role's name (a column that
    already had the name is left out: the user chose another)."""
    unknown = sorted(set(columns) - set(COLUMN_NAMES))
    if unknown:
        raise ValueError(f"labels columns: {unknown[0]!r} is not a column role; the roles are "
                         f"{', '.join(COLUMN_NAMES)}")
    written = table.attrs.get("written_columns", {})
    renames = {}
    for role, name in columns.items():
        if not name:
            continue
        column = name.strip().lower()
        if column not in table.columns and column.isdigit() and 1 <= int(column) <= len(table.columns):
            column = table.columns[int(column) - 1]  # a column given by its number, from 1
        if column not in table.columns:
            raise ValueError(f"labels file {labels_path} has no column {name!r} ({COLUMN_OPTIONS[role]}); "
                             f"its columns: {', '.join(written.get(c, c) for c in table.columns)}")
        if column in renames:
            raise ValueError(f"labels file {labels_path}: column {name!r} is named for both {renames[column]} "
                             f"and {role}; each role needs its own column")
        renames[column] = role
    if renames:
        log.info("labels file %s: %s", Path(labels_path).name,
                 ", ".join(f"column {written.get(c, c)!r} taken as {role} (as you named it)" for c, role in renames.items()))
    replaced = [role for role in renames.values() if role in table.columns and role not in renames]
    kept = table.drop(columns=replaced).rename(columns=renames)
    kept.attrs = dict(table.attrs)
    return kept


NO_FINDING = "no finding"  # the label of a row of 0s in every finding column


class ColumnLabels(NamedTuple):
    """Labels read from columns of 0s and 1s (:func:`column_labels`)."""

    labels: pd.Series
    columns: list[str]  # as written
    several: int  # rows holding 1 in several columns: their findings joined
    uncertain: int  # cells of -1 (CheXpert's "uncertain"), read as not the finding
    unlabelled: int  # rows holding 1 in none, with a blank or -1 among them
    none_found: int  # rows holding 0 in every column: labelled NO_FINDING


def column_labels(table) -> ColumnLabels | None:
    """Each row's label where a labels file gives classes or findings as columns of 0s and 1s.

    ISIC's ``image,MEL,NV,...`` hold one 1 a row: the label is that column's name, as written.
    CheXpert's and VinDr-CXR's image labels (``Path,...,No Finding,Edema,...``) hold a 1 in each of a
    scan's findings: their names are joined as NIH's Finding Labels list them (``Edema|Pneumonia``),
    so that ``--positive Edema`` and ``--healthy "No Finding"`` read them as they read NIH's. A blank,
    a 0 and CheXpert's -1 (uncertain) are not the finding. A row of 0s in every column is
    ``NO_FINDING`` (a hospital's ``file,pneumothorax,effusion`` export lists its healthy scans so); a
    row with no 1 but a blank or -1 is unlabelled (CheXpert's report left those unmentioned or
    uncertain). None where fewer than two columns of such values hold a 1.
    """
    candidates = [column for column in table.columns if column not in ("file", "group", "split")]
    text = table[candidates].apply(lambda column: column.str.strip())
    numbers = text.apply(lambda column: pd.to_numeric(column, errors="coerce"))
    # a column of 1s on every row (Messidor-2's adjudicated_gradable) tells no scan from another: no finding
    hot = [column for column in candidates
           if (numbers[column].isin([0, 1, -1]) | text[column].eq("")).all() and numbers[column].eq(1).any()
           and not numbers[column].eq(1).all()]
    if len(hot) < 2:
        return None
    written = table.attrs.get("written_columns", {})
    return findings_of_columns(numbers[hot].rename(columns=lambda column: written.get(column, column)))


def findings_of_columns(numbers: pd.DataFrame) -> ColumnLabels:
    """Each row's label from ``numbers``, a column of 1s (the finding), 0s, -1s and blanks (NaN) per
    finding, named by its columns: as :func:`column_labels` reads them."""
    ones = numbers.eq(1)
    in_order = sorted(numbers.columns)
    # each row's findings joined in name order, by a product of booleans and strings (224,000 CheXpert rows in
    # a fraction of a second), the last separator cut
    labels = ones[in_order].astype(object).dot(pd.Series([name + FINDINGS_SEPARATOR for name in in_order],
                                                          index=in_order, dtype=object)).str[:-1]
    none_found = numbers.eq(0).all(axis=1)
    return ColumnLabels(labels=labels.mask(none_found, NO_FINDING), columns=list(numbers.columns),
                        several=int((ones.sum(axis=1) > 1).sum()), uncertain=int(numbers.eq(-1).sum().sum()),
                        unlabelled=int((~ones.any(axis=1) & ~none_found).sum()), none_found=int(none_found.sum()))


def log_column_labels(file_name: str, hot: ColumnLabels) -> None:
    if not (hot.several or hot.uncertain or hot.unlabelled or hot.none_found):
        log.info("labels file %s: the label is the name of the one-hot column holding 1 (%s)",
                 file_name, ", ".join(sorted(set(hot.labels))))
        return
    log.info("labels file %s: findings read from %d columns of 1s and 0s (%s): a scan's label lists the columns "
             "holding 1 (%d rows list several)%s%s%s", file_name, len(hot.columns), ", ".join(hot.columns), hot.several,
             f"; {hot.uncertain} cells of -1 (uncertain) read as not the finding" if hot.uncertain else "",
             f"; {hot.unlabelled} rows with no 1 left unlabelled" if hot.unlabelled else "",
             f"; {hot.none_found} rows of 0s labelled {NO_FINDING!r}" if hot.none_found else "")


def listed_findings(labels: pd.Series, file_name: str) -> pd.Series:
    """Labels written as lists (PadChest's ``['pleural effusion', 'cardiomegaly']``, JSON's ``["a"]``) as
    NIH's Finding Labels list them (``cardiomegaly|pleural effusion``); an empty list is no label."""
    def listed(text: str) -> str | None:
        if not (text.startswith("[") and text.endswith("]")):
            return None
        try:
            items = ast.literal_eval(text)  # literals only: nothing in the file runs
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            return None
        return findings_label(items)

    found = labels.map(lambda text: listed(text.strip()))
    lists = found.notna()
    if not lists.any():
        return labels
    example = labels[lists].iloc[found[lists].str.len().argmax()]
    log.info("labels file %s: %d labels are written as lists of findings: read as NIH's Finding Labels list them "
             "(%s as %r)%s", file_name, int(lists.sum()), example, found[labels == example].iloc[0],
             f"; {int(found[lists].eq('').sum())} empty lists left unlabelled" if found[lists].eq("").any() else "")
    return found.where(lists, labels)


FINDING = "finding"  # the label of a scan whose labels row outlines a finding as a run-length encoded mask
_RUN_LENGTHS = re.compile(r"\d+(?:\s+\d+)+")  # start and length pairs: 387620 23 996 33


def encoded_masks(labels: pd.Series, file_name: str) -> pd.Series:
    """Labels that are run-length encoded masks of a finding, as SIIM-ACR's pneumothorax set gives them
    (``ImageId, EncodedPixels``: a mask's start and length pairs, ``-1`` for none): each of thousands of
    masks would be a class of its own. A mask is ``FINDING``, ``-1`` ``NO_FINDING``; labels otherwise
    as they are."""
    text = labels.str.strip()
    if (encoded := _encoded(text)) is None:
        return labels
    log.info("labels file %s: the labels are run-length encoded masks: a scan with a mask is labelled %r, one of -1 "
             "%r (%d and %d rows)", file_name, FINDING, NO_FINDING, int(encoded.sum()), int(text.eq("-1").sum()))
    return text.mask(encoded, FINDING).mask(text.eq("-1"), NO_FINDING)
