"""Split a manifest into labelled, unlabelled, calibration and test subsets.

Splits are group-aware: scans that share a ``group`` (a patient) always land in the
same subset, so no patient is seen in training and again in calibration or test.
A labelled scan that is not picked for labelled, calibration or test joins the
unlabelled pool with its label kept, so pseudo-label accuracy can be measured later
(training does not read labels of the unlabelled subset).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipeline.io import sha256_file, write_csv, write_json
from pipeline.manifest import (
    ADDED_BY_REVIEW,
    LABELLED_SUBSETS,
    SPLIT_COLUMNS,
    VERDICT_SOURCES,
    joined_classes,
    load_manifest,
    validate_split,
)
from pipeline.similarity import connected_groups

log = logging.getLogger("pipeline.stages.split")

SELECTIONS = ("first", "random")
def make_split(
    manifest: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    labels_per_class: int | None = None,
    labelled_fraction: float | None = None,
    calibration_per_class: int = 0,
    calibration_fraction: float | None = None,
    test_fraction: float = 0.2,
    selection: str = "first",
    seed: int = 0,
    screened_as_one: Collection[str] = (),
    screened_apart: Collection[str] = (),
) -> Path:
    """Write a split file for the ``ok`` scans of ``manifest``.

    Order of drawing: test, then labelled, then calibration from what is left; the rest
    is unlabelled. Rows whose manifest ``split`` is ``test`` form the test set; only if
    there are none is ``test_fraction`` of the labelled scans drawn (per class, seeded).
    Other manifest split values (``train``, ``val``) do not constrain the draw.

    Parameters
    ----------
    manifest
        Manifest CSV written by ``ingest``.
    out
        Split CSV; default ``<manifest stem>.split.csv`` beside the manifest. A JSON
        record of the parameters and counts is written beside it.
    labels_per_class, labelled_fraction
        Size of the labelled subset per class; give exactly one.
    calibration_per_class, calibration_fraction
        Size of the calibration subset per class: a count, or a share of the class's
        labelled scans left after the labelled draw. Default: no calibration subset.
    test_fraction
        Share of each class drawn for test when the manifest names no test rows.
    selection
        ``"first"``: the first scans of each class in manifest order (MNIST-100 takes the
        first 10 per class this way); ``"random"``: a seeded random draw.
    seed
        Seed for every random draw.
    screened_as_one
        Classes the run screens as one abnormal class (``--healthy``'s other classes, a joined
        ``--positive``): those too small to be drawn alone (an NIH-style file's rare combinations of
        findings) are drawn together, as :data:`RARE_STRATUM`, instead of being left out or refused.
    screened_apart
        Classes a screening run counts as not abnormal, each a class of its own (every class but a
        ``--positive`` one): where two or more are too small to be drawn alone (NIH's other finding
        combinations, screening one finding), they are drawn together and trained as one class,
        :data:`OTHER_CLASSES` (the JSON record names them under ``trained_as_one``).

    Returns
    -------
    Path
        The split file.

    Raises
    ------
    ValueError
        A parameter is invalid, a class has too few scans for the request, or a group
        has both test and non-test rows in the manifest.
    """
    parameters = {
        "labels_per_class": labels_per_class,
        "labelled_fraction": labelled_fraction,
        "calibration_per_class": calibration_per_class,
        "calibration_fraction": calibration_fraction,
        "test_fraction": test_fraction,
        "selection": selection,
        "seed": seed,
    }
    _check_parameters(**parameters)
    manifest = Path(manifest)
    rows = load_manifest(manifest)
    rows = rows[rows["status"] == "ok"].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{manifest} has no scans with status ok; nothing to split")
    # Units are drawn whole: a patient's scans (group) together with near duplicates of any of them.
    rows["unit"], merged = _units(rows)
    if merged:
        log.info("split: %d near-duplicate groups kept on one side each (with their patients' other scans)",
                 merged)
    # Scans a reviewer gave a verdict (chosen by suggest, flagged by score) are no random sample, so they train
    # and never measure. Each is drawn with the label it had before (none, or the one a verdict changed), which
    # repeats the split drawn before the verdicts; every reviewed scan the draw leaves in the pool is labelled
    # after. Those of a folder scored outside this one were in no earlier draw.
    rows["reviewed"] = rows["label_source"].isin(VERDICT_SOURCES)
    added = rows["label_source"] == ADDED_BY_REVIEW
    outside = added & rows["scan_id"].str.startswith("../")
    rows_outside, rows = rows[outside], rows[~outside].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    before = rows["label"].where(rows["label_source"] != ADDED_BY_REVIEW, "")
    before = before.where(rows["previous_label"] == "", rows["previous_label"])
    labels, rows["label"] = rows["label"], _strata(before)

    test = _test_units(rows, test_fraction, rng)
    pool = rows[~rows["unit"].isin(test)]
    rare = _rare(pool, set(screened_as_one), labels_per_class, calibration_per_class, labelled_fraction,
                 calibration_fraction)
    alone: set[str] = set()
    if len(rare) == 1:  # no more drawable together: left out below, as by fractions
        alone, rare = rare, set()
    if rare:
        log.info("split: %d classes screened as one abnormal class are too small to be drawn alone (%s%s); drawn "
                 "together", len(rare), ", ".join(repr(c) for c in sorted(rare)[:5]), " ..." if len(rare) > 5 else "")
        rows["label"] = rows["label"].where(~rows["label"].isin(rare), RARE_STRATUM)
        pool = rows[~rows["unit"].isin(test)]
    others = _rare(pool, set(screened_apart), labels_per_class, calibration_per_class, labelled_fraction,
                   calibration_fraction)
    if len(others) > 1:
        log.info("split: %d classes not screened as abnormal are too small to be drawn alone (%s%s); drawn together "
                 "and trained as one class, %r", len(others), ", ".join(repr(c) for c in sorted(others)[:5]),
                 " ..." if len(others) > 5 else "", OTHER_CLASSES)
        rows["label"] = rows["label"].where(~rows["label"].isin(others), OTHER_CLASSES)
        pool = rows[~rows["unit"].isin(test)]
    else:
        others = set()
    left_out = _too_small(pool, labelled_fraction, calibration_fraction)
    if labels_per_class is not None:
        # screened as one, so the model needs no class of their own: left out, not refused
        left_out.update({label: int((pool["label"] == label).sum()) for label in alone})
        for stratum, members in ((RARE_STRATUM, rare), (OTHER_CLASSES, others)):
            together = int((pool["label"] == stratum).sum())
            if members and together < labels_per_class + calibration_per_class:
                left_out[stratum] = together
    if left_out:
        named = ", ".join(f"{c!r} ({n} outside the test set)" for c, n in list(left_out.items())[:10])
        more = f" and {len(left_out) - 10} more (the split's JSON names each)" if len(left_out) > 10 else ""
        request = (f"labelled_fraction={labelled_fraction}" if labelled_fraction is not None
                   else f"labels_per_class={labels_per_class} and calibration_per_class={calibration_per_class}")
        log.warning("classes with too few scans for a labelled and a calibration scan at %s: %s%s; left out of the "
                    "split, so the model will not know them: label more of their scans, or relabel them", request,
                    named, more)
        kept = ~rows["label"].isin(left_out)
        rows, labels = rows[kept].reset_index(drop=True), labels[kept].reset_index(drop=True)
        pool = rows[~rows["unit"].isin(test)]
    _check_two_classes(pool, left_out, rows)
    _warn_untested(rows, pool, test)
    quotas = _quotas(
        pool, labels_per_class, labelled_fraction, "labels_per_class", "labelled_fraction"
    )
    labelled = _take_units(pool, quotas, _order(pool, selection, rng), "labelled")
    if calibration_fraction:
        labelled = _spare_for_calibration(pool, labelled)
    pool = pool[~pool["unit"].isin(labelled)]
    calibration: set[str] = set()
    if calibration_per_class or calibration_fraction:
        quotas = _quotas(
            pool,
            calibration_per_class or None,
            calibration_fraction,
            "calibration_per_class",
            "calibration_fraction",
            classes=list(quotas),
            lenient=calibration_fraction is not None,
        )
        calibration = _take_units(pool, quotas, _order(pool, selection, rng), "calibration")

    rows["label"] = labels
    rows["subset"] = "unlabelled"
    for subset, units in (("test", test), ("labelled", labelled), ("calibration", calibration)):
        rows.loc[rows["unit"].isin(units), "subset"] = subset
    rows, reviewed_labelled = _reviewed_labelled(rows, rows_outside, left_out)
    # Unlabelled scans of a patient picked for a labelled subset can be used nowhere.
    unusable = rows["subset"].isin(LABELLED_SUBSETS) & (rows["label"] == "")
    if unusable.any():
        log.warning(
            "%d unlabelled scans left out of the split: their group is in labelled, calibration "
            "or test, which need labels (first: %s)",
            int(unusable.sum()),
            ", ".join(rows.loc[unusable, "scan_id"].head(5)),
        )
    split = rows.loc[~unusable, SPLIT_COLUMNS].reset_index(drop=True)
    validate_split(load_manifest(manifest), split, source="the generated split")  # against the file, not rows

    out = Path(out) if out is not None else manifest.with_name(f"{manifest.stem}.split.csv")
    write_csv(out, split)
    # A record beside the split: what it was made from and how, to reproduce or audit it.
    counts = {
        subset: {label: int(n) for label, n in members["label"].value_counts().sort_index().items()}
        for subset, members in split.groupby("subset")
    }
    record = {
        "manifest": str(manifest),
        "manifest_sha256": sha256_file(manifest),
        "parameters": parameters,
        "test_from_manifest_split": bool((rows["split"] == "test").any()),
        "counts_per_subset_and_label": counts,
        "reviewed_labelled": reviewed_labelled,
        "unlabelled_left_out": int(unusable.sum()),
        # so that a later run tells these from scans ingested after the split was drawn
        "unlabelled_left_out_scans": sorted(rows.loc[unusable, "scan_id"]),
        "classes_left_out": left_out,
        "trained_as_one": {OTHER_CLASSES: sorted(others)} if others and OTHER_CLASSES not in left_out else {},
    }
    write_json(out.with_suffix(".json"), record)
    log.info(
        "split %s: %s",
        out,
        ", ".join(f"{s} {n}" for s, n in split["subset"].value_counts().items()),
    )
    return out


# ---------------------------------------------------------------------------- drawing


# The stratum of the classes screened as one that are too small to be drawn alone (see make_split).
RARE_STRATUM = "(rare classes screened as one)"
# The class of those not screened as abnormal that are too small to be drawn alone: drawn, and trained, as one.
OTHER_CLASSES = "(other rare classes)"


def _rare(pool: pd.DataFrame, screened: set[str], labels_per_class: int | None, calibration_per_class: int,
          labelled_fraction: float | None, calibration_fraction: float | None) -> set[str]:
    """The classes of ``screened`` with too few scans in ``pool`` (outside the test set) for their own
    labelled and calibration draw."""
    if len(screened) < 2:
        return set()
    counts = pool.loc[pool["label"].isin(screened), "label"].value_counts()
    if labels_per_class is not None:
        rare = {str(label) for label, n in counts.items() if n < labels_per_class + calibration_per_class}
    else:
        rare = set(_too_small(pool[pool["label"].isin(screened)], labelled_fraction, calibration_fraction))
    return rare


def _strata(labels: pd.Series) -> pd.Series:
    """The class each scan is drawn as: its label, except that a label joined in another
    ("glioma" where a reviewer's verdict gave some scans "glioma+meningioma", the class a model
    screening the two as one offers) is drawn with that class, which may hold too few scans to
    be drawn from alone."""
    found = set(labels) - {""}
    joined = {part: name for name in sorted(found) for part in joined_classes(name, found)}
    return labels.map(lambda label: joined.get(label, label))


def _units(rows: pd.DataFrame) -> tuple[list[str], int]:
    """A unit per row: rows sharing a patient group or a near-duplicate group, transitively, share
    one. Returns (units, number of near-duplicate groups that joined rows)."""
    links = []
    for column in ("group", "duplicate_group"):
        for _, members in rows[rows[column] != ""].groupby(column).groups.items():
            members = list(members)
            links += [(members[0], other, 0) for other in members[1:]]
    root = connected_groups(len(rows), links)
    ids = rows["scan_id"].tolist()
    units = [f"unit:{ids[r]}" for r in root]
    merged = int(rows.loc[rows["duplicate_group"] != "", "duplicate_group"].value_counts().gt(1).sum())
    return units, merged


def _test_units(rows: pd.DataFrame, test_fraction: float, rng: np.random.Generator) -> set[str]:
    """The units of the manifest's own test rows, or a stratified draw of ``test_fraction``.

    A near duplicate of a test scan joins the test set (a copy in training would leak); a patient
    group with test and non-test rows in the labels file is refused.
    """
    is_test = rows["split"] == "test"
    if is_test.any():
        test = set(rows.loc[is_test, "unit"])
        spans = rows[rows["group"] != ""].groupby("group")["split"].agg(lambda s: (s == "test").nunique() > 1)
        mixed = sorted(spans[spans].index)
        joined = rows[~is_test & rows["unit"].isin(test)]
        if len(joined) and not mixed:
            log.warning("%d scans join the test set as near duplicates of test scans (first: %s)",
                        len(joined), ", ".join(joined["scan_id"].head(5)))
        if mixed:
            def sides(group: str) -> str:
                members = rows[rows["group"] == group]
                return "; ".join(f"{side}: {', '.join(members.loc[mask, 'scan_id'].head(3))}"
                                 for side, mask in (("test", members["split"] == "test"),
                                                    ("not test", members["split"] != "test")))
            raise ValueError(
                f"groups {', '.join(f'{g} ({sides(g)})' for g in mixed[:3])}{' ...' if len(mixed) > 3 else ''} "
                "have scans with split 'test' and scans without (a group is a patient or a case: the labels "
                "file's group column, else the DICOM PatientID, a folder named for a patient or a BIDS subject "
                "(patient00001/, sub-07/), or the views of one case (10_left.jpeg and 10_right.jpeg)); put all of "
                "a group's scans on one side (the labels file's split column, or the split folders) and re-run "
                "ingest"
            )
        return test
    if test_fraction == 0:
        return set()
    counts = rows.loc[rows["label"] != "", "label"].value_counts()
    quotas = {label: round(test_fraction * n) for label, n in counts.items()}
    return _take_units(rows, quotas, rng.permutation(len(rows)), "test")


def _reviewed_labelled(rows: pd.DataFrame, outside: pd.DataFrame, left_out: dict) -> tuple[pd.DataFrame, int]:
    """``rows`` with the units of the scans a reviewer gave a verdict (``rows["reviewed"]``) in the labelled
    subset, where the draw left them unlabelled (a unit drawn for test or calibration keeps them: a
    patient stays on one side), and the reviewed scans of folders outside (``outside``) added, each in its
    unit's subset or labelled; how many are labelled so. A reviewed scan of a class the split left out
    stays unlabelled."""
    known = ~rows["label"].isin(left_out) & ~_strata(rows["label"]).isin(left_out)
    chosen = rows["reviewed"] & (rows["subset"] == "unlabelled") & known
    rows.loc[rows["unit"].isin(set(rows.loc[chosen, "unit"])), "subset"] = "labelled"
    if len(outside):
        subsets = dict(zip(rows["unit"], rows["subset"]))
        outside = outside.assign(subset=[subsets.get(unit, "labelled") for unit in outside["unit"]])
        outside.loc[outside["label"].isin(left_out), "subset"] = "unlabelled"
        rows = pd.concat([rows, outside], ignore_index=True)
    added = int(chosen.sum()) + int((outside["subset"] == "labelled").sum() if len(outside) else 0)
    if added:
        log.info("split: %d scans a reviewer gave a verdict train (labelled subset) beyond the draw: chosen for "
                 "review, they are no random sample to measure on", added)
    return rows, added


def _too_small(pool: pd.DataFrame, labelled_fraction: float | None, calibration_fraction: float | None
               ) -> dict[str, int]:
    """{class: its scans in ``pool``} for the classes whose share would round to no labelled scan, or
    (with ``calibration_fraction``) leave none for calibration: a stray class folder of two scans,
    a finding one scan has. Only for fractions; a count per class is the user's explicit request."""
    if labelled_fraction is None:
        return {}
    counts = pool.loc[pool["label"] != "", "label"].value_counts()
    small = {}
    for label, n in counts.items():
        labelled = round(labelled_fraction * n)
        calibration = round(calibration_fraction * (n - labelled)) if calibration_fraction is not None else 1
        if labelled == 0 or calibration == 0:
            small[str(label)] = int(n)
    return small


def _warn_untested(rows: pd.DataFrame, pool: pd.DataFrame, test: set[str]) -> None:
    """Warn of classes the model learns but the test set has no scan of: no test metric can be
    measured for them (a screening AUROC needs both sides)."""
    tested = set(rows.loc[rows["unit"].isin(test), "label"])
    untested = sorted(set(pool.loc[pool["label"] != "", "label"]) - tested)
    if test and untested:
        why = ("the labels file's split column gives them none" if (rows["split"] == "test").any()
               else "too few of their scans to draw one")
        log.warning("no test scans of class %s (%s): their test metrics, and a screening AUROC where one is the "
                    "abnormal class, cannot be measured; mark some of their scans split=test", ", ".join(map(repr, untested)),
                    why)


def _check_two_classes(pool: pd.DataFrame, left_out: dict[str, int], rows: pd.DataFrame) -> None:
    """Refuse a split no model can learn from: labelled scans of fewer than two classes outside the
    test set (a folder holding one subfolder, ``images/``, is one class), ``left_out`` (too small)
    named, and a group holding most of the labelled ``rows`` (which the test set took whole) named."""
    counts = pool.loc[pool["label"] != "", "label"].value_counts()
    labelled = rows[rows["label"] != ""]
    groups = labelled.loc[labelled["group"] != "", "group"].value_counts()
    if len(counts) < 2 and labelled["label"].nunique() >= 2 and len(groups) and groups.iloc[0] > len(labelled) / 2:
        raise ValueError(f"one group, {groups.index[0]!r}, holds {groups.iloc[0]} of the {len(labelled)} labelled "
                         "scans, and a group stays on one side of the split, so too few are left outside the test "
                         "set to learn from: a group is a patient (the labels file's group column, else the DICOM "
                         "PatientID, a patient's folder or file name); give a group column that names patients")
    how = ("a labels file (columns file,label: --labels, LABELS=) or a subfolder per class (normal/ and "
           "abnormal/, say)")
    if len(counts) < 2 and left_out:
        kept = f"only {counts.index[0]!r} is left" if len(counts) else "none is left"
        raise ValueError(f"too few labelled scans to train: {kept} once the classes too small for a labelled and "
                         f"a calibration scan are left out ({', '.join(f'{c!r}: {n}' for c, n in left_out.items())} "
                         "outside the test set); label more scans of each class, or give --labels-per-class 1")
    if len(counts) == 0:
        raise ValueError(f"no scan outside the test set is labelled; nothing to learn from: give labels in {how}"
                         + _classes_in_names(pool["scan_id"]))
    if len(counts) == 1:
        raise ValueError(f"every labelled scan outside the test set is of one class, {counts.index[0]!r} "
                         f"({counts.iloc[0]} scans), and a model needs two or more: give labels of each class in "
                         f"{how}" + _classes_in_names(pool["scan_id"]))


def _classes_in_names(scan_ids: pd.Series) -> str:
    """A hint where the scans' names end in one of a few codes, as Shenzhen's and Montgomery's chest X-rays
    give tuberculosis (``CHNCXR_0001_0.png``, ``..._1.png``): "" where they do not."""
    names = scan_ids.map(lambda scan_id: re.sub(r"\.[^.]*$", "", PurePosixPath(scan_id).name))
    parts = names.str.rsplit("_", n=1)
    if len(names) < 4 or not parts.map(len).eq(2).all():
        return ""
    codes = parts.str[1].value_counts()
    if not 2 <= len(codes) <= 5 or codes.min() < 2 or parts.str[0].nunique() < len(names) / 2:
        return ""
    example = scan_ids.iloc[0]
    return (f". The scans' names end in one of {', '.join('_' + code for code in sorted(codes.index))}: if that is "
            f"each scan's class, a labels file of columns file,label saying so ({example},{parts.iloc[0][1]}) gives them")


def _quotas(
    pool: pd.DataFrame,
    per_class: int | None,
    fraction: float | None,
    per_class_name: str,
    fraction_name: str,
    classes: list[str] | None = None,
    lenient: bool = False,
) -> dict[str, int]:
    """Rows wanted per class: ``per_class`` each, or ``fraction`` of what each class has. ``lenient``:
    a class whose share rounds to 0 (its patients' scans all drawn already) is warned of, not refused."""
    available = pool.loc[pool["label"] != "", "label"].value_counts()
    classes = classes if classes is not None else sorted(available.index)
    if not classes:
        raise ValueError(
            "the manifest has no labelled scans outside the test set; nothing to label"
        )
    if per_class is not None:
        quotas = dict.fromkeys(classes, per_class)
        request = f"{per_class_name}={per_class}"
    else:
        quotas = {label: round(fraction * available.get(label, 0)) for label in classes}
        request = f"{fraction_name}={fraction}"
    short = [
        f"class {label!r} has {available.get(label, 0)} available, {request} needs {quotas[label]}"
        for label in classes
        if available.get(label, 0) < quotas[label]
    ]
    none = [f"class {label!r}: {request} of its {available.get(label, 0)} scans rounds to 0"
            for label in classes if quotas[label] == 0]
    if lenient and none:
        log.warning("%s: whole patients' scans drawn before left none; the class gets no %s scans",
                    "; ".join(none), fraction_name.removesuffix("_fraction"))
    elif none:
        short += [f"{reason}; raise {fraction_name}" for reason in none]
    if short:
        raise ValueError("too few labelled scans: " + "; ".join(short))
    return quotas


def _spare_for_calibration(pool: pd.DataFrame, labelled: set[str]) -> set[str]:
    """``labelled`` less, for each class whose whole patients drawn for training took every scan (a share
    of a class of few patients), its smallest patient of that class alone, where it has two or more: the
    operating point is chosen on calibration scans of every class, and a run that has none of one stops
    only after training."""
    rows = pool[pool["label"] != ""]
    drawn = rows[rows["unit"].isin(labelled)]
    for label in sorted(set(drawn["label"])):
        if (rows.loc[~rows["unit"].isin(labelled), "label"] == label).any():
            continue
        units = drawn[drawn["label"] == label]["unit"].unique()
        members = drawn[drawn["unit"].isin(units)].groupby("unit")["label"]
        alone = members.nunique() == 1  # the class's alone: sparing them takes no other class from training
        spare = sorted(alone[alone].index, key=lambda unit: ((drawn["unit"] == unit).sum(), unit))
        if len(units) > 1 and spare:
            labelled = labelled - {spare[0]}
            scans = drawn.loc[drawn["unit"] == spare[0], "scan_id"]
            log.warning("calibration: class %r had none left (whole patients drawn for training took them all); "
                        "one patient's %d scans (%s) are kept for calibration instead", label, len(scans),
                        ", ".join(scans.head(3)))
    return labelled


def _order(pool: pd.DataFrame, selection: str, rng: np.random.Generator) -> np.ndarray:
    return np.arange(len(pool)) if selection == "first" else rng.permutation(len(pool))


def _take_units(
    pool: pd.DataFrame, quotas: dict[str, int], order: np.ndarray, subset: str
) -> set[str]:
    """Take whole units in ``order`` while the class of the row reached still needs rows.

    Without groups this takes exactly ``quotas`` rows per class; a group's other labelled
    scans come along and may push a class past its quota.
    """
    labelled = pool[pool["label"] != ""]
    labels_in_unit = defaultdict(list)
    for unit, label in zip(labelled["unit"], labelled["label"]):
        labels_in_unit[unit].append(label)
    counts = defaultdict(int)
    taken: set[str] = set()
    for label, unit in zip(pool["label"].to_numpy()[order], pool["unit"].to_numpy()[order]):
        if label and unit not in taken and counts[label] < quotas.get(label, 0):
            taken.add(unit)
            for member_label in labels_in_unit[unit]:
                counts[member_label] += 1
    over = {label: counts[label] for label, wanted in quotas.items() if counts[label] > wanted}
    if over:
        log.info("%s: whole groups push some classes past their quota: %s", subset, over)
    return taken


def _check_parameters(
    labels_per_class,
    labelled_fraction,
    calibration_per_class,
    calibration_fraction,
    test_fraction,
    selection,
    seed,
) -> None:
    """Raise one ValueError naming every bad parameter."""
    problems = []
    if (labels_per_class is None) == (labelled_fraction is None):
        problems.append("give exactly one of labels_per_class and labelled_fraction")
    if labels_per_class is not None and not _is_count(labels_per_class, minimum=1):
        problems.append(f"labels_per_class must be a whole number >= 1, got {labels_per_class!r}")
    if labelled_fraction is not None and not _is_fraction(labelled_fraction, allow_one=True):
        problems.append(f"labelled_fraction must be in (0, 1], got {labelled_fraction!r}")
    if not _is_count(calibration_per_class, minimum=0):
        problems.append(
            f"calibration_per_class must be a whole number >= 0, got {calibration_per_class!r}"
        )
    if calibration_fraction is not None:
        if not _is_fraction(calibration_fraction):
            problems.append(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")
        if calibration_per_class:
            problems.append("give calibration_per_class or calibration_fraction, not both")
    if not (test_fraction == 0 or _is_fraction(test_fraction)):
        problems.append(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if selection not in SELECTIONS:
        problems.append(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if not _is_count(seed, minimum=0):
        problems.append(f"seed must be a whole number >= 0, got {seed!r}")
    if problems:
        raise ValueError("invalid split parameters: " + "; ".join(problems))


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def _is_fraction(value, allow_one: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        return False
    return math.isfinite(value) and 0 < value and (value < 1 or (allow_one and value == 1))


# ---------------------------------------------------------------------------- checking


