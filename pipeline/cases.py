"""Cases seen in several views: a knee's axial, coronal and sagittal planes (MRNet's ``axial/0000.npy``),
a patient's two eyes (EyePACS' ``10_left.jpeg`` and ``10_right.jpeg``), a brain's sequences
(``00000/FLAIR/``, ``case_001_t1.nii.gz`` beside ``case_001_flair.nii.gz``), a prostate study's
``10000_1000000_t2w.mha`` and ``_adc.mha``.

Each view is trained and scored as a scan of its own, with its case's label; a reader decides on
the case. :func:`case_of` names the case a scan is a view of by its name, :func:`study_cases` a DICOM
scan's by its study, and :func:`case_rows` gives score's report a row per case: abnormal where any of
its views is called so, at the highest probability of its views, as a study is abnormal where any of
its series shows the finding.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipeline.sequences import PLANE_NAMES, SEQUENCE_NAMES, file_stem

# Names of planes and sequences (case, '-', '_' and spaces ignored): a folder or a name's last part so
# named is one view of a case, not a class and not a case.
VIEW_NAMES = {*PLANE_NAMES, *SEQUENCE_NAMES, "frontal", "lateral",
              "left", "right"}  # a patient's two eyes in fundus sets (EyePACS' 10_left.jpeg, ODIR's 0_right.jpg)


def is_view_name(name: str) -> bool:
    return re.sub(r"[-_ ]", "", name.lower()) in VIEW_NAMES


def views_of_one_case(paths: list[str]) -> bool:
    """Whether ``paths`` are one case's planes or sequences: files of one name in sibling folders each
    named for a plane or sequence (``train/axial/0000.npy``, ``train/coronal/0000.npy``)."""
    found = [Path(path) for path in paths]
    folders = [path.parent for path in found]
    return (len({path.name for path in found}) == 1 and len({folder.parent for folder in folders}) == 1
            and len(set(folders)) == len(found) and all(path.is_file() for path in found)
            and all(is_view_name(folder.name) for folder in folders))


_VIEW_INDEX = re.compile(r"view\d*", re.IGNORECASE)


def case_of(scan_id: str) -> tuple[str, str] | None:
    """(case, view) of a scan id where its path names a view of a case, else None: a series or file
    named for a view (``00000/FLAIR``: case ``00000``), a file in a folder named for one
    (``axial/0000.npy``: case ``0000``), or a file name ending in one (``case_001_flair.nii.gz``:
    case ``case_001``; CheXpert's ``study1/view1_frontal.jpg``: case ``study1``)."""
    path = PurePosixPath(scan_id)
    stem = file_stem(path.name)
    parent = path.parent.as_posix()
    if is_view_name(stem) and parent != ".":
        return parent, stem
    if is_view_name(path.parent.name):
        above = path.parent.parent.as_posix()
        return (stem if above == "." else f"{above}/{stem}"), path.parent.name
    head, _, tail = stem.rpartition("_")
    if head and is_view_name(tail):
        if _VIEW_INDEX.fullmatch(head) and parent != ".":
            return parent, tail  # CheXpert's study1/view1_frontal.jpg and view2_lateral.jpg: the study is the case
        return (head if parent == "." else f"{parent}/{head}"), tail
    return None


def study_cases(root: str | Path, scan_ids: list[str], known: Mapping[str, str] | None = None
                ) -> dict[str, tuple[str, str]]:
    """(case, view) of the DICOM scans below ``root`` that :func:`case_of` names no case of, by their
    study (StudyInstanceUID): a hospital export's ``patient/study/SE0002`` and ``SE0003`` series, a
    chest study's frontal and lateral images. A case is named by the folder its scans share below
    ``root`` where no other study's scans share that folder, else by an opaque hash of its study; a
    view by its path below the folder that names it. A study of one scan is no case (a folder of
    radiographs, a study each, is as many scans, not one case of them all).

    ``known``: the study uid ("" for none) of scans whose headers were read already (the manifest's
    ``study_uid``, :func:`pipeline.manifest.study_uids`); only the others' headers are read (a series'
    headers took 6 ms to read for 12 slices, 9 s for a pool of 1,500 series)."""
    from pipeline import dicom

    studies: dict[str, list[str]] = {}
    for scan_id in scan_ids:
        if case_of(scan_id) is not None:
            continue
        uid = known[scan_id] if known and scan_id in known else _study_uid(Path(root) / scan_id)
        if uid:
            studies.setdefault(uid, []).append(scan_id)
    named = {}
    for uid, members in studies.items():
        if len(members) < 2:  # a study of one scan (a radiograph a study) is no case of views
            continue
        parts = [PurePosixPath(scan_id).parts for scan_id in members]
        shared = 0
        while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
            shared += 1
        named[uid] = (shared, members, parts)
    # a folder holding two studies' scans names neither (an export's studies side by side in one folder)
    folders = Counter("/".join(parts[0][:shared]) for shared, _, parts in named.values())
    found = {}
    for uid, (shared, members, parts) in named.items():
        folder = "/".join(parts[0][:shared])
        if not shared or folders[folder] > 1:
            case, shared = dicom.opaque_id("study", uid), 0
        else:
            case = folder
        found.update({scan_id: (case, "/".join(p[shared:])) for scan_id, p in zip(members, parts)})
    return found


def _study_uid(path: Path) -> str:
    """The StudyInstanceUID of the DICOM scan (a file, a series folder or one volume of it) at
    ``path``; "" for none."""
    from pipeline import dicom
    from pipeline.reading import series_location, series_slices

    try:
        if (location := series_location(path)) is not None:
            header = next(iter(series_slices(*location)), None)
        else:
            header = dicom.read_header(path) if path.is_file() and dicom.is_dicom_file(path) else None
    except dicom.DicomError:
        return ""
    return header.study_uid if header is not None else ""


def case_keys(root: str | Path, scan_ids: list[str], known: Mapping[str, str] | None = None) -> list[str | None]:
    """The case each scan is a view of (by its name, else by its DICOM study, from ``known`` study
    uids where given: :func:`study_cases`), None for none."""
    studies = study_cases(root, scan_ids, known)
    return [(case_of(scan_id) or studies.get(scan_id) or (None,))[0] for scan_id in scan_ids]


# Fewest cases of two or more views among the calibration scans for an operating point of their own
MIN_CASES = 10


def case_scores(cases: list[str | None], p_positive: np.ndarray, is_positive: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """(each case's highest view probability, whether the case is abnormal: any view labelled so) over
    the cases of two or more views among ``cases`` (one per scan), or None where fewer than
    ``MIN_CASES`` have both."""
    frame = pd.DataFrame({"case": cases, "p": p_positive, "y": is_positive}).dropna(subset=["case"])
    grouped = frame.groupby("case")
    kept = grouped.size() >= 2
    if kept.sum() < MIN_CASES:
        return None
    return grouped["p"].max()[kept].to_numpy(), grouped["y"].any()[kept].to_numpy()


def case_rows(report: pd.DataFrame, positive: str, studies: dict[str, tuple[str, str]] | None = None,
              decision: float | None = None) -> pd.DataFrame:
    """A row per case of two or more scored views in ``report`` (score's rows): case, views, view
    names, the highest ``p_<positive>`` of its views, the prediction of that view (``positive`` where
    any view is so called: the call is a threshold on that probability), and whether any view needs
    review or is out of distribution. Empty where no case has two views. A scan whose name names no
    case is a view of its study's case where ``studies`` (:func:`study_cases`) has it. With a case
    ``decision`` (calibrated on cases, ``screening.cases``), a case is ``positive`` where its highest
    probability reaches it, else its top view's most probable other class."""
    scored = report[report["status"] == "ok"]
    found = scored["scan_id"].map(lambda scan_id: case_of(scan_id) or (studies or {}).get(scan_id))
    scored = scored[found.notna()].assign(case=found[found.notna()].str[0], view=found[found.notna()].str[1])
    columns = ["case", "views", "view_names", f"p_{positive}", "prediction", "needs_review", "out_of_distribution"]
    if scored.empty:
        return pd.DataFrame(columns=columns)
    flags = [column for column in ("needs_review", "out_of_distribution") if column in scored]
    scored = scored.assign(**{column: scored[column].astype(str).str.lower() == "true" for column in flags})
    grouped = scored.sort_values(f"p_{positive}", ascending=False, kind="stable").groupby("case", sort=True)
    rows = pd.DataFrame({
        "views": grouped.size(),
        "view_names": grouped["view"].agg(lambda views: "|".join(sorted(views))),
        f"p_{positive}": grouped[f"p_{positive}"].first(),
        "prediction": grouped["prediction"].first(),
        **{column: grouped[column].any() for column in flags},
    }).reset_index()
    if decision is not None:
        others = [column for column in scored if column.startswith("p_") and column != f"p_{positive}"]
        top = grouped[others].first() if others else None
        rows["prediction"] = [positive if p >= decision else (top.loc[case].astype(float).idxmax()[2:] if others
                                                              else f"not {positive}")
                              for case, p in zip(rows["case"], rows[f"p_{positive}"])]
    return rows[rows["views"] >= 2].reindex(columns=columns).reset_index(drop=True)
