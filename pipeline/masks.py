"""Segmentation masks shipped beside the scans they outline.

Public sets made for segmentation and reused for screening keep each lesion mask next to
its scan: ``benign (3).png`` and ``benign (3)_mask.png`` (breast ultrasound), ``case_7.nii.gz``
and ``case_7_seg.nii.gz``, or ``images/x.png`` and ``masks/x.png``. Taken as scans, the masks
would join the training set under their scan's class (and give the class away by their
shape) or fill the unlabelled pool with pictures that are not scans. Ingest and score leave
them out and say so.

Only names are read: a mask's content (binary, or a few label values) cannot tell it from a
scan that is itself a mask, as in AdrenalMNIST3D, so a file counts as a mask only where the
scan it belongs to is there too.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.reading import scan_suffix

MASK_WORDS = ("mask", "seg", "segmentation", "label", "labelmap", "gt", "roi")
MASK_FOLDERS = frozenset({"mask", "masks", "seg", "segs", "segmentation", "segmentations", "gt",
                          "groundtruth", "ground_truth", "ground truth", "ground-truth",
                          "labelstr", "labelsts"})  # the Medical Segmentation Decathlon's and nnU-Net's


def is_mask_folder(name: str) -> bool:
    """Whether a folder so named holds masks: one of ``MASK_FOLDERS``, or a name with the word mask
    among others (COVID-QU-Ex's ``lung masks/`` and ``infection masks/`` beside ``images/``). Other
    mask words do not count among others: "Lung Segmentation Data" and "Dataset_BUSI_with_GT" name sets."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()  # Montgomery's leftMask/ inside ManualMask/
    return name.replace(" ", "") in MASK_FOLDERS or bool({"mask", "masks"} & set(re.split(r"[ _.\-]+", name)))


# ``<scan>`` + separator + mask word (+ s) + optional number: benign (3)_mask_1, case_7_seg, x-label.
_MASKED_NAME = re.compile(
    r"^(?P<scan>.+?)[ _.\-]+(?:" + "|".join(MASK_WORDS) + r")s?(?:[ _.\-]*\d+)?$", re.IGNORECASE
)


def _stem(path: Path) -> str:
    suffix = scan_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _case_prefixes(stem: str) -> list[str]:
    """``case_001`` and ``case`` for ``case_001_t1``: the stem cut at each separator."""
    return [stem[:index] for index, char in enumerate(stem) if char in " _.-" and index]


def segmentation_masks(paths: list[Path]) -> dict[Path, Path]:
    """The files among ``paths`` that are segmentation masks of other files among them.

    A mask is named as its scan with a mask word after it (``x_mask.png``, ``x_mask_1.png``,
    ``x_seg.nii.gz``, ``x-label.png``) in the scan's folder; or by a mask word alone beside a case's
    scan (KiTS' ``case_00000/segmentation.nii.gz`` beside ``imaging.nii.gz``); or as a case whose scans
    are named with the case first (``case_001_seg.nii.gz`` beside ``case_001_t1.nii.gz``); or lies in a
    folder named for masks (``masks/``, ``segmentations/``, ``gt/``, ``lung masks/``, ``labelsTr/``)
    under the name, with or without a mask word, of a scan in a sibling folder (``masks/x.png`` for
    ``images/x.png``); or is named as a mask of a scan in a sibling folder (ISIC 2018's
    ``..._GroundTruth/ISIC_0000000_segmentation.png`` for ``..._Input/ISIC_0000000.jpg``).

    Returns
    -------
    dict
        ``{mask path: the scan it outlines}``; scans themselves are never keys.
    """
    in_folder = {(path.parent, _stem(path).lower()): path for path in paths}
    beside = {(path.parent.parent, _stem(path).lower()): path
              for path in paths if not is_mask_folder(path.parent.name)}
    # A case's sequences beside its mask: case_001_t1, case_001_flair and case_001_seg (BraTS).
    sequences: dict[tuple[Path, str], Path] = {}
    for path in sorted(paths):
        if not _MASKED_NAME.match(_stem(path)):
            for case in _case_prefixes(_stem(path).lower()):
                sequences.setdefault((path.parent, case), path)
    # A case's folder holding its scan and a file named only by a mask word (KiTS' case_00000/imaging.nii.gz
    # and segmentation.nii.gz): the mask of the folder's first other scan.
    first_in_folder: dict[Path, Path] = {}
    for path in sorted(paths):
        if _stem(path).lower().rstrip("s") not in MASK_WORDS and not _MASKED_NAME.match(_stem(path)):
            first_in_folder.setdefault(path.parent, path)
    masks = {}
    for path in paths:
        stem = _stem(path)
        named = _MASKED_NAME.match(stem)
        scan = first_in_folder.get(path.parent) if stem.lower().rstrip("s") in MASK_WORDS else None
        if named and scan is None:
            key = (path.parent, named["scan"].lower())
            scan = in_folder.get(key) or sequences.get(key)
        # in a folder named for masks, or named as a mask (ISIC 2018's ..._GroundTruth/ISIC_0000000_segmentation.png
        # beside ..._Input/ISIC_0000000.jpg)
        if scan is None and (is_mask_folder(path.parent.name) or named):
            bases = {stem.lower(), named["scan"].lower()} if named else {stem.lower()}
            bases |= {base + "_0000" for base in bases}  # nnU-Net's imagesTr/case_0000.nii.gz for labelsTr/case.nii.gz
            # beside the mask's folder, or beside the outermost of the mask folders it lies in (Montgomery's
            # ManualMask/leftMask/x.png for CXR_png/x.png)
            folders = [path.parent]
            while folders[-1].parent != folders[-1] and is_mask_folder(folders[-1].parent.name):
                folders.append(folders[-1].parent)
            scan = next((beside[key] for folder in folders for base in sorted(bases)
                         if (key := (folder.parent, base)) in beside), None)
        if scan is not None and scan != path:
            masks[path] = scan
    return masks
