"""How a scored folder's predictions agree with labels the folder already carries.

A team checking a model on scans from another hospital or scanner scores a folder that is labelled
already: a ``labels.csv`` in it, or class subfolders. The score stage then reports, beside the
predictions, how they agree with those labels (an external check on scans the model never saw),
read the way ingest reads labels (:mod:`pipeline.labels`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.folder_labels import folder_labels
from pipeline.labels import DICOM_KEY, header_keys, labels_key, read_labels
from pipeline.manifest import class_key, positive_parts, screens
from pipeline.reading import ScanReadError, case_members, series_location, series_slices
from pipeline.sequences import case_location

log = logging.getLogger("pipeline.agreement")


def model_class(label: str, classes: list[str], trained_as_one: Mapping[str, list[str]] | None = None
                ) -> str | None:
    """The model's class a label names: itself, the same name in another case or spacing, the
    joined class it is part of (``benign`` for a model screening ``benign+malignant``), the class it
    was trained as (``trained_as_one``: the split's small classes drawn together), or the screened
    class that takes it in (``Effusion|Hernia`` for ``with Effusion``, any label but ``No Finding``
    for ``not No Finding``: see :func:`pipeline.manifest.screens`); else None."""
    key = class_key(label)
    for name in classes:
        if class_key(name) == key:
            return name
    for name in classes:
        parts = [*positive_parts(name), *(trained_as_one or {}).get(name, [])]
        if any(class_key(part) == key for part in parts) or screens(name, label, [*classes, label]):
            return name
    return None


def folder_truth(scans: str | os.PathLike, scan_ids: list[str], classes: list[str],
                 columns: Mapping[str, str] | None = None, trained_as_one: Mapping[str, list[str]] | None = None,
                 labels_file: str | os.PathLike | None = None) -> tuple[dict[str, str], str, int] | None:
    """({scan id: the model's class its label names}, where the labels came from, how many labels
    name no class of the model) for the scored scans, or None where the folder has no labels (no
    ``labels.csv``, no subfolders) or none of them names a class of the model (folders by date).
    ``columns``: those the training labels were read with (``{"label": "target"}``), tried first;
    ``trained_as_one``: see :func:`model_class`; ``labels_file``: the user's labels file (CheXpert's
    ``valid.csv`` beside ``valid/``), read in place of the folder's own, its errors raised.

    Raises
    ------
    ValueError
        ``labels_file`` cannot be read as labels, or none of its labels names a class of the model.
    """
    scans = Path(scans)
    given = labels_file is not None
    labels_file = Path(labels_file) if given else scans / "labels.csv"
    if labels_file.is_file():
        rows = error = None
        for tried in ([columns, None] if columns else [None]):  # the training run's column names, else as it is
            try:
                rows, _ = read_labels(labels_file, scans, tried)
                break
            except ValueError as failed:
                error = error or failed
        if rows is None:
            if given:
                raise error
            log.warning("%s not used to check the predictions: %s", labels_file, error)
            return None
        found = {sid: rows[key].label for sid in scan_ids if (key := labels_key(os.path.realpath(scans / sid), rows)) in rows}
        if any(key.startswith(DICOM_KEY) for key in rows):  # a hospital's labels by patient, accession or study
            for sid in [sid for sid in scan_ids if sid not in found]:
                if key := next((key for key in _header_keys(scans / sid) if key in rows), None):
                    found[sid] = rows[key].label
        source = labels_file.name
    else:
        paths = [scans / sid for sid in scan_ids]
        found = {path.relative_to(scans).as_posix(): label for path, (label, _) in folder_labels(scans, paths, [], classes).items()}
        source = "class subfolders"
    named = {sid: cls for sid, label in found.items()
             if label and (cls := model_class(label, classes, trained_as_one))}
    if not named:
        if given and not any(found.values()):
            raise ValueError(f"labels file {labels_file}: none of its rows labels a scan in {scans}; give the labels "
                             "file of these scans (its files named from its own folder or from the scanned one)")
        if given:
            listed = sorted({label for label in found.values() if label})
            raise ValueError(f"labels file {labels_file}: none of its labels of scans in {scans} names a class of the "
                             f"model ({', '.join(classes)}); its labels: {', '.join(listed[:5])}"
                             f"{' ...' if len(listed) > 5 else ''}")
        return None
    return named, source, sum(1 for label in found.values() if label) - len(named)


def _header_keys(path: Path) -> list[str]:
    """The keys by which a labels file keyed by DICOM header values labels the scan at ``path``, as
    ingest matches them (:func:`pipeline.labels.header_keys`); [] for a scan that is not DICOM."""
    from pipeline import dicom

    if case_location(path) is not None:  # a case's sequences: one study's, as its first one's header says
        try:
            path = case_members(path)[0]
        except ScanReadError:
            return []
    location = series_location(path)
    try:
        if location is not None:
            header = next(iter(series_slices(*location)), None)
        else:
            header = dicom.read_header(path) if path.is_file() and dicom.is_dicom_file(path) else None
    except dicom.DicomError:
        return []
    if header is None:
        return []
    return header_keys(header.patient_group, header.accession_group, header.study_uid)


def agreement(report: pd.DataFrame, truth: dict[str, str], classes: list[str], positive: str | None) -> dict:
    """Accuracy of the predictions against ``truth``; for a screening model also the test AUROC of
    the positive class's probability and the sensitivity and specificity at the calibrated decision."""
    scored = report[(report["status"] == "ok") & report["scan_id"].isin(truth)]
    label = scored["scan_id"].map(truth)
    result = {"n": int(len(scored)), "per_class": {c: int((label == c).sum()) for c in classes},
              "accuracy": round(float((scored["prediction"] == label).mean()), 4) if len(scored) else None}
    if positive and len(scored):
        abnormal = (label == positive).to_numpy()
        called = (scored["prediction"] == positive).to_numpy()
        probability = scored[f"p_{positive}"].astype(float).to_numpy()
        result.update(
            positive_class=positive,
            auroc=round(float(roc_auc_score(abnormal, probability)), 4) if 0 < abnormal.sum() < len(abnormal) else None,
            sensitivity=_rate(called, abnormal), specificity=_rate(~called, ~abnormal),
            abnormal_not_flagged=int((abnormal & ~called & ~scored["needs_review"].astype(bool).to_numpy()).sum()),
        )
    return result


def _rate(hit: np.ndarray, among: np.ndarray) -> dict | None:
    return {"rate": round(float(hit[among].mean()), 4), "of": int(among.sum())} if among.any() else None


def format_agreement(check: dict, source: str, unnamed: int) -> str:
    """One line for the score summary."""
    if not check["n"]:  # a labels file naming none of the scans scored
        return f"against the folder's labels ({source}): none of the scans scored is labelled there"
    text = f"against the folder's labels ({source}, {check['n']} scans): accuracy {check['accuracy']:.3f}"
    if check.get("positive_class"):
        if check["auroc"] is not None:
            text += f", AUROC {check['auroc']:.3f}"
        for name in ("sensitivity", "specificity"):
            if check[name]:
                text += f", {name} {check[name]['rate']:.2f} of {check[name]['of']}"
        text += f"; abnormal, called healthy and not flagged: {check['abnormal_not_flagged']}"
    if unnamed:
        text += f" ({unnamed} labels name no class of the model: left out)"
    return text
