"""Labels from the folders scans sit in: classes (``yes/``, ``no/``), splits (``Training/glioma/``), the
unlabelled pool (``unlabelled/``), and patients (``10253/0/``, ``patient00001/``, BIDS ``sub-07/``, an
export's folder per patient); and folders of augmented copies or cross-validation folds beside the
originals, which are no scans of their own.

Ingest reads a folder without a labels file through here, and so do merging review verdicts and
score's check against a labelled folder, so an export's folders mean the same to each.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from pipeline.cases import is_view_name
from pipeline.labels import SPLIT_NAMES
from pipeline.manifest import class_key, name_words
from pipeline.sequences import file_stem

log = logging.getLogger("pipeline.folder_labels")

_BIDS_SUBJECT = re.compile(r"(?:^|/)(sub-[A-Za-z0-9]+)(?:[_/.]|$)")
# A folder named for its patient (MURA's patient00001/, case_012/, Subject 3/, a TCGA barcode as the LGG MRI
# set's TCGA_CS_4941_19960909/); never a file name.
_PATIENT_WORDS = r"(?:(?:patient|subject|case|pat|pt)[-_ ]?\d+|TCGA[-_][A-Z0-9]{2}[-_][A-Z0-9]{4}(?:[-_][A-Za-z0-9]+)*)"
_PATIENT_FOLDER = re.compile(rf"(?:^|/)({_PATIENT_WORDS})/", re.IGNORECASE)


def folder_patient(scan_id: str) -> str:
    """The patient of a scan as its path names them, or "": a BIDS subject (``sub-07/anat/sub-07_T1w.nii.gz``,
    ``sub-07_FLAIR.nii.gz``), else a folder named for a patient (``XR_WRIST/patient00001/study1_positive/``).
    The group that keeps a patient's scans on one side of the split, where neither the labels file nor
    DICOM gives one."""
    found = _BIDS_SUBJECT.search(scan_id) or _PATIENT_FOLDER.search(scan_id)
    return found[1] if found else ""


# A patient's number in a file's name (read only where several files share it): a word and a number first
# (Kermany's chest X-rays person1_bacteria_1.jpeg and person1_virus_6.jpeg), else a name ending in a
# number, an image's, after one that ends in a number, the patient's (IM-0115-0001.jpeg; OCT2017's
# CNV-1016042-1.jpeg; NIH ChestX-ray14's 00000001_000.png).
_PATIENT_WORD_IN_NAME = re.compile(r"((?:patient|person|subject|case|pat|pt)[-_ ]?\d+)[-_ ]", re.IGNORECASE)
_NUMBERED_IMAGE = re.compile(r"(.*\d)[-_ ]\d+")
_DATE = re.compile(r"(?:.*[-_ ])?(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")  # IMG_20200312_143015.jpg
MAX_NAME_GROUP_SHARE = 0.25  # one name shared by more of the scans names no patient (scan_1_1.png ... scan_1_500.png)


def name_patients(scan_ids: list[str]) -> dict[int, str]:
    """The patient each scan's file name gives, by its index in ``scan_ids``, where two or more files
    of one folder share it: ``NORMAL/IM-0115-0001.jpeg`` and ``IM-0115-0002.jpeg`` are patient
    ``NORMAL/IM-0115``, ``PNEUMONIA/person1_bacteria_1.jpeg`` and ``person1_virus_6.jpeg`` patient
    ``PNEUMONIA/person1``. A name of one number (``ISIC_0024306.jpg``), a date (a phone's
    ``IMG_20200312_143015.jpg``) or a name shared by over ``MAX_NAME_GROUP_SHARE`` of the scans
    names none. The group that keeps a patient's images on one side of the split, where nothing else
    gives one; the folder is part of it, so that two exports' numbers never meet, except a class folder
    whose name starts its files' names: OCT2017's ``train/CNV/CNV-1016042-1.jpeg`` and
    ``train/DRUSEN/DRUSEN-1016042-1.jpeg`` are both patient ``train/1016042`` (a patient's two eyes, or
    one eye's two findings, filed under two classes)."""
    keys = {}
    for index, scan in enumerate(scan_ids):
        folder, _, name = scan.rpartition("/")
        stem = file_stem(name)
        above, _, last = folder.rpartition("/")
        if last and re.match(rf"{re.escape(last)}[-_ ](?=.)", stem, re.IGNORECASE):
            folder, stem = above, stem[len(last) + 1:]
        found = _PATIENT_WORD_IN_NAME.match(stem) or _NUMBERED_IMAGE.fullmatch(stem)
        if found and not _DATE.fullmatch(found[1]):
            keys[index] = f"{folder}/{found[1]}" if folder else found[1]
    counts = Counter(keys.values())
    limit = max(2, MAX_NAME_GROUP_SHARE * len(scan_ids))
    return {index: key for index, key in keys.items() if 2 <= counts[key] <= limit}


# An export's folder per patient, named anyhow (an MRN's 4412017/, anon_0042/): five or more sibling folders
# holding a few scans each. Folders by day, by batch or by class hold more.
MIN_PATIENT_FOLDERS = 5
MAX_PATIENT_FOLDER_MEDIAN = 20


def sibling_patients(scan_ids: list[str], labels: list[str] | None = None) -> dict[int, str]:
    """The patient folder each scan lies in, by its index in ``scan_ids``, where nothing names one: the
    shallowest folders that are :data:`MIN_PATIENT_FOLDERS` or more siblings holding a median of at most
    :data:`MAX_PATIENT_FOLDER_MEDIAN` scans each (those below them included), one holding two or more
    (``4412017/1.png``, ``4412017/2.png``, ``4412018/1.png`` ...; ``anon_0042/2019-03-12/1.png``). A folder
    named for a class of ``labels`` (each scan's, "" for none), a split, a view or plane, or the unlabelled
    scans is none (the patients' may lie inside it), and siblings fewer than twice the classes their scans
    have are none (class folders named otherwise: ``0/`` to ``4/`` of grades). A class folder
    above a patient's is left out of the group, so that a patient filed under two classes
    (``normal/4412017/``, ``pneumonia/4412017/``) is one."""
    labels = labels or [""] * len(scan_ids)
    classes = {class_key(name) for name in labels} - {""}
    folders = [scan.split("/")[:-1] for scan in scan_ids]
    found: dict[int, str] = {}
    pending, depth = list(range(len(scan_ids))), 0
    while pending:
        siblings: dict[tuple[str, ...], dict[str, list[int]]] = {}
        for index in pending:
            if len(folders[index]) > depth:
                parts = folders[index]
                siblings.setdefault(tuple(parts[:depth]), {}).setdefault(parts[depth], []).append(index)
        pending = []
        for above, inside in siblings.items():
            named = {name for name in inside if class_key(name) in classes or folder_split(name)
                     or is_view_name(name) or unlabelled_folder(name)}
            pending += [index for name in named for index in inside.pop(name)]
            sizes = sorted(len(members) for members in inside.values())
            found_classes = {labels[index] for members in inside.values() for index in members} - {""}
            if (len(inside) < max(MIN_PATIENT_FOLDERS, 2 * len(found_classes))
                    or sizes[len(sizes) // 2] > MAX_PATIENT_FOLDER_MEDIAN or sizes[-1] < 2):
                pending += [index for members in inside.values() for index in members]
                continue
            kept = "/".join(name for name in above if class_key(name) not in classes)
            for name, members in inside.items():
                found.update(dict.fromkeys(members, f"{kept}/{name}" if kept else name))
        depth += 1
    return found


def folder_split(folder: str) -> str | None:
    """The split a folder's name gives (``Testing`` test, ``train_set`` and ``Training Set`` train,
    ``auto_test`` and ``test2`` test, as exports name them), or None: one split word among its
    words, a number after it allowed."""
    words = {SPLIT_NAMES.get(word.rstrip("0123456789")) for word in name_words(folder)}
    found = words - {None}
    return found.pop() if len(found) == 1 else None


def split_folders(first: list[str], problems: list) -> bool:
    """Whether the first-level folders ``first`` name splits (``Training/``, ``Testing/``), the classes
    being the folders below them, as in many public exports; a first-level folder so named among class
    folders is reported, since it would become a class."""
    first = sorted({folder for folder in first if not unlabelled_folder(folder)})
    named = [folder for folder in first if folder_split(folder)]
    if named and len(named) == len(first):
        tests = [folder for folder in named if folder_split(folder) == "test"]
        log.info("first-level folders %s name splits: the classes are the folders inside them%s", ", ".join(named),
                 f"; {', '.join(tests)} {'is' if len(tests) == 1 else 'are'} the test set" if tests else "")
        return True
    for folder in named:
        problems.append(("file", f"{folder}/", f"a folder named like a split among class folders "
                         f"({', '.join(first)}): taken as a class; move its scans into the class folders, or give "
                         "each first-level folder a split name"))
    return False


# Folders of copies made from the originals: augmented ones, and cross-validation folds (Fold1/).
COPY_WORDS = re.compile(r"^(?:augmented|augmentation|augmentations|aug|fold\d*|folds)$")
ORIGINAL_WORDS = {"original", "originals"}


def _words(name: str) -> set[str]:
    return name_words(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " "))


def copies_beside_originals(root: Path, paths: list[Path]) -> dict[Path, Path]:
    """``{scan path: the folder of copies it lies in}`` for the scans below a folder of augmented copies or
    of cross-validation folds (``AugmentedAlzheimerDataset/``, ``Augmented Images/``, ``Fold1/``) that has a
    sibling named for the originals (``OriginalDataset/``, ``Original Images/``), as some downloads ship them
    together: copies of the originals, which would put a test scan's twin in training or in the pool."""
    beside_originals: dict[Path, bool] = {}

    def has_originals(folder: Path) -> bool:
        if folder not in beside_originals:
            beside_originals[folder] = any(entry.is_dir() and _words(entry.name) & ORIGINAL_WORDS
                                           for entry in folder.parent.iterdir())
        return beside_originals[folder]

    found = {}
    for path in paths:
        parts = path.relative_to(root).parts[:-1]
        for depth, name in enumerate(parts):
            folder = root.joinpath(*parts[: depth + 1])
            if any(COPY_WORDS.match(word) for word in _words(name)) and has_originals(folder):
                found[path] = folder
                break
    return found


def meaningful_folders(root: Path, paths: list[Path], classes: Collection[str] = ()
                       ) -> dict[Path, tuple[str, ...]]:
    """``{scan path: the folders above it that can name its class or split}``: the folders below
    ``root``, less those that say nothing about the scan. A folder holding every scan (``chest_xray/``
    as a download unpacks, ``__MACOSX/`` being skipped beside it) is unwrapped; so is a first-level
    folder holding a copy of the folders beside it, as some downloads ship (``brain_tumor_dataset/yes/``
    beside ``yes/``, ``chest_xray/chest_xray/train/`` beside ``chest_xray/train/``): every scan inside
    sits in a subfolder named like another first-level folder. Taken as a class of its own, every copy
    would contradict its twin's label. A folder named as one of ``classes`` (or a part of a joined
    one, ``glioma`` of ``glioma+meningioma``) is never unwrapped: a scored folder of one class's scans."""
    known = {class_key(part) for name in classes for part in (name, *name.split("+"))}
    folders = {path: path.relative_to(root).parts[:-1] for path in paths}
    labelled = [parts for parts in folders.values() if not parts or not unlabelled_folder(parts[0])]
    while (labelled and all(len(parts) >= 2 for parts in labelled)
           and len({parts[0] for parts in labelled}) == 1 and class_key(labelled[0][0]) not in known):
        wrapper = labelled[0][0]
        log.info("every scan lies inside %s/: the folders inside it name the classes", wrapper)
        folders = {path: parts[1:] if parts[:1] == (wrapper,) else parts for path, parts in folders.items()}
        labelled = [parts[1:] for parts in labelled]
    inside: dict[str, set[str]] = {}
    loose = set()
    for parts in folders.values():
        if len(parts) >= 2:
            inside.setdefault(parts[0], set()).add(class_key(parts[1]))
        elif parts:
            loose.add(parts[0])
    first = set(inside) | loose
    copies = {folder for folder, subfolders in inside.items() if folder not in loose
              and subfolders <= {class_key(other) for other in first - {folder}}}
    if copies:
        log.warning("%s hold%s a copy of the folders beside %s: %s scans are read as if they lay there",
                    ", ".join(f"{c}/" for c in sorted(copies)), "s" if len(copies) == 1 else "",
                    "it" if len(copies) == 1 else "them", "its" if len(copies) == 1 else "their")
    return {path: parts[1:] if parts[:1] and parts[0] in copies else parts for path, parts in folders.items()}


# First-level folders beside the class folders that hold scans without a label, never a class:
# one of these words in the name (unlabelled/, Unlabeled Images/, pool_unannotated/), or a phrase.
UNLABELLED_WORDS = ("unlabelled", "unlabeled", "unannotated", "nolabel", "pred", "predict", "prediction",
                    "inference")  # Br35H's pred/: scans left for a model to predict
UNLABELLED_FOLDERS = ("no label", "not labelled", "not labeled")


def unlabelled_folder(name: str) -> bool:
    """Whether a folder's name says its scans have no label (``unlabelled``, ``Unlabeled Images``)."""
    return class_key(name) in UNLABELLED_FOLDERS or bool(name_words(name) & set(UNLABELLED_WORDS))


# A first-level folder named as a patient's id is: three or more digits (IDC's 10253/), a word for
# a patient and a number, or a BIDS subject. One or two digits are class names often (0/ to 4/).
_ID_FOLDER = re.compile(rf"^(?:\d{{3,}}|{_PATIENT_WORDS}|sub-[A-Za-z0-9]+)$", re.IGNORECASE)
_NAMED_PATIENT = re.compile(rf"^(?:{_PATIENT_WORDS}|sub-[A-Za-z0-9]+)$", re.IGNORECASE)
# A study's or a series' folder in an export (a DICOMDIR's ST000000/SE000000/), never a class
_STUDY_FOLDER = re.compile(r"^(?:st|se|study|series)[-_ ]?\d*$", re.IGNORECASE)
# A year or a day, as exports by date name their folders (2019/, 20190312/, 2019-03-12/)
_DATE_FOLDER = re.compile(r"^(?:19|20)\d\d(?:-?[01]\d-?[0-3]\d)?$")


def outer_folders(folders: Collection[tuple[str, ...]]) -> str | None:
    """What the first-level folders of ``folders`` (each scan's, from :func:`meaningful_folders`) are
    where the classes are the folders inside them: ``"date"`` where they all name years or days (an
    export by date: ``2019/normal/``), ``"patient"`` where they are named as patients' ids (the breast
    histopathology set's ``10253/0/``, ``10253/1/``); else None. Only where every scan lies in a
    subfolder of one, and each subfolder name is found under two or more of them."""
    labelled = [parts for parts in folders if not parts or not unlabelled_folder(parts[0])]
    if not labelled or any(len(parts) < 2 for parts in labelled):
        return None
    outer = {parts[0] for parts in labelled}
    holding: dict[str, set[str]] = {}
    for parts in labelled:
        holding.setdefault(class_key(parts[1]), set()).add(parts[0])
    if len(outer) < 2 or len(holding) < 2 or any(len(inside) < 2 for inside in holding.values()):
        return None
    if any(_STUDY_FOLDER.match(parts[1]) for parts in labelled):
        return None
    if all(_DATE_FOLDER.match(name) for name in outer):
        return "date"
    if all(_ID_FOLDER.match(name) for name in outer):
        return "patient"
    return None


def _inner_folders(folders) -> dict[str, set[str]]:
    inner: dict[str, set[str]] = {}
    for parts in folders:
        if parts and not unlabelled_folder(parts[0]):
            inner.setdefault(parts[0], set()).add(parts[1] if len(parts) >= 2 else "")
    return inner


def grouped_classes(folders) -> dict[str, set[str]]:
    """``{first-level folder: the class folders in it}`` where the first-level folders group the classes,
    each holding its own, else {} (LC25000's
    ``colon_image_sets/colon_aca/`` and ``lung_image_sets/lung_scc/``): every scan in a subfolder of
    one, two to ten subfolders in each, no subfolder name in two of them (shared names are splits',
    patients' or dates' class folders), and none named as a patient's, study's or series' folder
    (``tumour/patient01/`` is a class holding patients)."""
    inner = _inner_folders(folders)
    names = [class_key(name) for names in inner.values() for name in names]
    grouped = (len(inner) >= 2 and all(2 <= len(names_) <= 10 and "" not in names_ for names_ in inner.values())
               and len(set(names)) == len(names)
               and not any(_ID_FOLDER.match(name) or _STUDY_FOLDER.match(name) or _DATE_FOLDER.match(name)
                           for names_ in inner.values() for name in names_))
    return inner if grouped else {}


def folder_labels(root: Path, paths: list[Path], problems: list, classes: Collection[str] = (),
                  groups: dict[Path, str] | None = None) -> dict[Path, tuple[str, str]]:
    """``{scan path: (label, split)}`` from the folders the scans sit in (those that say something:
    :func:`meaningful_folders`): the first-level folder names the class, or, where every first-level
    folder names a split (:func:`split_folders`), the second-level one does and the first gives the
    split; where the first-level folders are patients' or dates (:func:`outer_folders`), the second-level
    one names the class and ``groups`` (when given) gets each scan's patient folder. ``classes``: those the
    labels may name, where known. Scans outside class folders are left out and reported in
    ``problems``; those in an ``unlabelled/`` folder are left out in silence."""
    if all(len(path.relative_to(root).parts) == 1 for path in paths):
        return {}  # a flat folder: nothing to say about each scan
    folders = meaningful_folders(root, paths, classes)
    outer = outer_folders(folders.values())
    first = {parts[0] for parts in folders.values() if parts and not unlabelled_folder(parts[0])}
    if not outer and first and all(_NAMED_PATIENT.match(name) for name in first):
        log.warning("the first-level folders are patients' (%s/ ...), not classes, and no labels file was given: "
                    "every scan is unlabelled; give a labels file naming each patient's folder and its label",
                    sorted(first)[0])
        return {}
    by_split = not outer and split_folders([parts[0] for parts in folders.values() if parts], problems)
    if not outer and not by_split and (groups_of_classes := grouped_classes(folders.values())):
        outer = "group"
        log.info("the first-level folders group the classes (%s): the folders inside them are the classes",
                 "; ".join(f"{group}/ holds {', '.join(sorted(inner))}" for group, inner in
                           sorted(groups_of_classes.items())))
    elif outer:
        log.info("first-level folders such as %s/ are %s: the classes are the folders inside them",
                 next(parts[0] for parts in folders.values() if parts),
                 "patients'" if outer == "patient" else "years or days")
    shortened = _shortened_classes(folders.values()) if by_split else {}
    labels = {}
    for path, parts in folders.items():
        relative = path.relative_to(root).as_posix()
        if parts and unlabelled_folder(parts[0]):
            continue  # the unlabelled pool, beside the class (or split) folders
        if outer:
            labels[path] = (parts[1], "")
            if outer == "patient" and groups is not None:
                groups[path] = parts[0]
        elif by_split and len(parts) >= 2:
            labels[path] = (shortened.get(parts[1], parts[1]), folder_split(parts[0]))
        elif by_split:
            where = f"a class subfolder of {parts[0]}/" if parts else "a split folder's class subfolder"
            problems.append(("scan", relative, f"not inside {where}; kept unlabelled"))
        elif parts:
            labels[path] = (parts[0], "")
        else:
            problems.append(("scan", relative, "not inside a class subfolder; kept unlabelled"))
    return labels


def _shortened_classes(folders) -> dict[str, str]:
    """{class folder name: the shorter name another split's folder gives the class}, where one split's
    folders name a class in full and another's by its start (the chest CT set's
    ``train/adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib/`` and ``test/adenocarcinoma/``): one class, named
    by the shorter. Never for two names found in one split (``glioma/`` and ``glioma_recurrent/``)."""
    in_split: dict[str, set[str]] = {}
    for parts in folders:
        if len(parts) >= 2 and not unlabelled_folder(parts[0]):
            in_split.setdefault(parts[1], set()).add(parts[0])
    shortened = {}
    for name, splits in in_split.items():
        starts = [other for other in in_split if len(other) < len(name) and name.startswith(other)
                  and name[len(other)] in "_-. " and not splits & in_split[other]]
        if len(starts) == 1:
            shortened[name] = starts[0]
    if shortened:
        log.info("class folders named in full in one split and by their start in another are one class: %s",
                 "; ".join(f"{name}/ as {short}/" for name, short in sorted(shortened.items())))
    return shortened
