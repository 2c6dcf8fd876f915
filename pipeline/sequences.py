"""A case's MRI sequences in files of their own, read as the channels of one scan.

MRI exports keep each sequence of a case in a file or series of its own in the case's folder:
dcm2niix writes ``7100000/t1_mprage_tra_4.nii.gz`` beside ``t2_tse_tra_5.nii.gz``, BraTS 2021
``BraTS2021_00000/BraTS2021_00000_flair.nii.gz`` beside ``..._t1.nii.gz``, RSNA-MICCAI's brain tumours
``00000/FLAIR/`` beside ``00000/T1w/`` (DICOM series). Trained as scans of their own, one model learns
every sequence as one kind of picture: near chance on ``benchmarks/multi_sequence.md``'s heads, where the
same heads with their sequences as channels of one scan reach 0.85-0.89. So where most cases hold the
same sequences by name (:func:`recurring_sequences`), each case is one scan (:func:`group_cases`) whose
path is its folder and its sequences in order, ``7100000/{t1_mprage_tra,t2_tse_tra}``; where several
cases share a folder (nnU-Net's flat ``imagesTr/BRATS_001_0000.nii.gz``), the start of their files' names
comes before the sequences, ``imagesTr/BRATS_001_{0000,0001}``; a PACS export's series named by number
(``S0000/SE0002/``) are known by the sequence words of their descriptions (:func:`description_words`,
``pipeline.reading.volume_location``). Where sites name one sequence differently (``AX FLAIR``,
``t2_tirm_tra_dark-fluid``), the sequences are the kinds the names say (:func:`sequence_kind`: ``flair``)
where more cases agree on those than on the names. ``pipeline.reading`` reads a case as its sequences
stacked, each resampled onto the finest one's grid.

This module names and groups; it reads nothing (``pipeline.reading`` and ``pipeline.cases`` import it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

# A case's path: its folder, the start of its files' names where several cases share the folder, then its
# sequences in braces (as a shell expands them): 7100000/{flair,t1}, imagesTr/BRATS_001_{0000,0001}
_CASE_NAME = re.compile(r"^([^{}]*)\{([^{}/]+)\}$")
_NAME_PARTS = re.compile(r"[-_ .]+")
_SUFFIX = re.compile(r"(\.nii\.gz|\.[A-Za-z0-9]{1,5})$")
# A series or file named by its number (a PACS export's SE0002/, S03/, IMG0001): no sequence's name, though the
# same numbers recur in every study
_NUMBERED = re.compile(r"[a-z]{0,8}[-_ ]?\d{2,}")
# Words naming a localiser (scout, Philips' survey), taken to plan a scan, not to read: no sequence
LOCALISER_WORDS = {"localizer", "localiser", "loc", "scout", "survey", "aascout", "aahscout", "3plane", "tripilot"}
# MRI sequences by their usual names (case, '-', '_' and spaces ignored)
SEQUENCE_NAMES = {"t1", "t1w", "t1c", "t1ce", "t1gd", "t1wce", "t1post", "t2", "t2w", "flair", "t2flair", "pd",
                  "pdw", "dwi", "adc", "hbv", "swi", "mprage", "pet"}
# Imaging planes by their usual names
PLANE_NAMES = {"axial", "coronal", "sagittal", "ax", "cor", "sag", "tra", "transverse"}
# A sequence's kind by the words of its name, so that sites naming one sequence differently agree
# (AX FLAIR, t2_tirm_tra_dark-fluid, FLAIR_3D_SAG: flair): T1 (before and after contrast: Siemens' "KM" is
# Kontrastmittel), FLAIR (Siemens' TIRM dark-fluid), T2, T2*, SWI, PD, diffusion by b-value, ADC
_T1_WORDS = {"t1", "t1w", "t1n", "mprage", "spgr", "bravo", "tfl", "flash"}
_T1_CONTRAST_WORDS = {"t1c", "t1ce", "t1gd", "t1wce", "t1post"}
_CONTRAST_WORDS = {"post", "gd", "gad", "gado", "ce", "c", "km", "contrast"}
_FLAIR_WORDS = {"flair", "t2flair", "tirm"}
_T2_WORDS = {"t2", "t2w", "tse", "fse", "frfse"}
_T2_STAR_WORDS = {"t2star", "gre", "star"}
_SWI_WORDS = {"swi", "swan"}
_DIFFUSION_WORDS = {"dwi", "diff", "diffusion", "trace", "tracew"}
# An image derived from another (a reformat in another plane, a projection): no kind of its own, so that a
# FLAIR's reformat beside it leaves one FLAIR in its case
_DERIVED_WORDS = {"mpr", "mip", "minip", "reformat", "reformatted", "mpvr"}
KIND_WORDS = (_T1_WORDS | _T1_CONTRAST_WORDS | _CONTRAST_WORDS | _FLAIR_WORDS | _T2_WORDS | _T2_STAR_WORDS
              | _SWI_WORDS | _DIFFUSION_WORDS | _DERIVED_WORDS | {"pd", "pdw", "adc", "dark", "fluid"})
# Words of a DICOM SeriesDescription kept to name a sequence: sequences, planes, contrast, and the words
# that tell a sequence's kind (nothing else of a description is kept: it may name a person)
DESCRIPTION_WORDS = SEQUENCE_NAMES | PLANE_NAMES | KIND_WORDS | {"pre", "spine"}
# The end of a file's name after its case's: a sequence's name, or nnU-Net's 4-digit channel (BRATS_001_0000)
_TAIL = re.compile(r"^(.*[-_])([^-_]+)$")
# Fewest cases holding the same sequences, and more than half of the folders (or cases) of several volumes
MIN_CASES = 5
# A sequence that this share of the cases or more lack is not read where two or more others are, so that
# those cases are (a site that acquires no diffusion)
LACKING_SHARE = 0.1


class Case(NamedTuple):
    folder: Path
    prefix: str  # the start of its files' names, "" where the case is its folder
    sequences: list[str]


def file_stem(name: str) -> str:
    """A file's name without its suffix (both parts of ``.nii.gz``)."""
    return _SUFFIX.sub("", name)


def case_path(folder: Path, sequences: Iterable[str], prefix: str = "") -> Path:
    """The path of the case in ``folder`` (its files' names starting ``prefix``) read as ``sequences``."""
    return Path(folder) / (prefix + "{" + ",".join(sequences) + "}")


def case_location(path: str | Path) -> Case | None:
    """The case ``path`` is the path of (:func:`case_path`), else None."""
    path = Path(path)
    found = _CASE_NAME.match(path.name)
    return Case(path.parent, found.group(1), found.group(2).split(",")) if found else None


def sequence_name(folder_name: str, entry_name: str) -> str:
    """The sequence a file or series ``entry_name`` in the case folder ``folder_name`` holds, by its name:
    the parts of its name (lower case, without suffix) that are neither numbers (a series number, an
    acquisition time, a study id) nor parts of the folder's name (the case's id), joined by ``_``.
    ``t1_mprage_tra_4.nii.gz``, ``7100000_t1_mprage_tra_20190101120000_4.nii.gz`` in ``7100000/``:
    ``t1_mprage_tra``; ``BraTS2021_00000_flair.nii.gz`` in ``BraTS2021_00000/``: ``flair``; the series
    ``FLAIR/``: ``flair``; "" where nothing is left, for a name that is a number after a few letters
    (a PACS export's series ``SE0002/``), and for a localiser's (``localizer_1.nii.gz``)."""
    stem = file_stem(entry_name).lower()
    if _NUMBERED.fullmatch(stem):
        return ""
    case = set(_NAME_PARTS.split(folder_name.lower()))
    parts = [part for part in _NAME_PARTS.split(stem) if part and not part.isdigit() and part not in case]
    if LOCALISER_WORDS & set(parts):
        return ""
    return "_".join(parts).replace(",", "_").replace("{", "").replace("}", "")


def description_words(description: str) -> str:
    """The words of a series' description that name a sequence, a plane or contrast, sorted and joined by
    ``_`` (``AX FLAIR``, ``FLAIR_AX``: ``ax_flair``; ``T1 AX POST GAD``: ``ax_gad_post_t1``); "" for none.
    Nothing else of the description is kept (it may name a person)."""
    words = {word for word in re.split(r"[^a-z0-9]+", description.lower()) if word in DESCRIPTION_WORDS}
    return "_".join(sorted(words))


def named_tail(entry_name: str) -> tuple[str, str] | None:
    """(the start of a file's name, its sequence) where the name ends in a sequence's name or in nnU-Net's
    4-digit channel after ``_`` or ``-``: ``BraTS2021_00000_flair.nii.gz``: (``BraTS2021_00000_``,
    ``flair``); ``BRATS_001_0000.nii.gz``: (``BRATS_001_``, ``0000``); ``10000_1000000_t2w.mha``:
    (``10000_1000000_``, ``t2w``); else None."""
    found = _TAIL.match(file_stem(entry_name))
    if not found:
        return None
    head, tail = found.groups()
    named = re.sub(r"[-_ ]", "", tail.lower()) in SEQUENCE_NAMES or re.fullmatch(r"\d{4}", tail)
    return (head, tail.lower()) if named else None


def sequence_kind(name: str) -> str:
    """The kind of sequence a sequence's name (:func:`sequence_name`, :func:`description_words`) says it is, by
    its words: ``t1``, ``t1c`` (after contrast), ``flair``, ``t2``, ``t2star``, ``swi``, ``pd``, ``adc``,
    ``dwi`` and a diffusion volume's ``dwi_b<value>``; "" where they say none, or say the image is derived
    from another (``flair_3d_mpr_cor``: a reformat). ``t1_mprage_tra_km``: ``t1c``; ``t2_tirm_tra_dark_fluid``,
    ``ax_flair``, ``flair_sag``: ``flair``; ``dwi_b1000``: ``dwi_b1000``."""
    words = set(re.split(r"[^a-z0-9]+", name.lower())) - {""}
    if words & _DERIVED_WORDS:
        return ""
    if "adc" in words:
        return "adc"
    if words & _DIFFUSION_WORDS:
        b_value = next((word for word in sorted(words) if re.fullmatch(r"b\d+", word)), None)
        return f"dwi_{b_value}" if b_value else "dwi"
    contrast = words & _CONTRAST_WORDS - ({"c"} if "spine" in words else set())  # C-SPINE: the cervical spine
    if words & _T1_CONTRAST_WORDS or (words & _T1_WORDS and contrast and "pre" not in words):
        return "t1c"
    if words & _T1_WORDS:
        return "t1"  # a T1 FLAIR too
    if words & _FLAIR_WORDS or {"dark", "fluid"} <= words:
        return "flair"
    if words & _SWI_WORDS:
        return "swi"
    if words & _T2_STAR_WORDS:
        return "t2star"
    if words & {"pd", "pdw"}:
        return "pd"  # a PD-weighted TSE too
    return "t2" if words & _T2_WORDS else ""


def match_sequences(sequences: Iterable[str], names: dict[str, list[Path]]
                    ) -> tuple[dict[str, list[Path]], list[Path]]:
    """The volumes of each of a case's ``sequences`` among its volumes by the name they are known by
    (``names``), and the volumes of none. A sequence's volumes are those of its name; where none is, those of
    its kind (:func:`sequence_kind`) whose name is none of ``sequences``, where no other sequence is of that
    kind: a case of ``flair, t2`` from one site reads another's ``ax_flair`` and ``ax_t2``, and a model
    trained on ``t1_mprage_tra, t2_tirm_tra_dark_fluid`` reads a new site's ``t1w_3d_tfe`` and ``flair_sag``
    (but one of ``t2_tse_tra, t2_tse_cor`` tells no T2 of another name apart)."""
    kinds = {sequence: sequence_kind(sequence) for sequence in sequences}
    shared = Counter(kinds.values())
    of_kind = {kind: sequence for sequence, kind in kinds.items() if kind and shared[kind] == 1}
    matched = {sequence: list(names[sequence]) for sequence in kinds if sequence in names}
    others = []
    for name, found in names.items():
        if name in kinds:
            continue
        sequence = of_kind.get(sequence_kind(name))
        if sequence is not None and sequence not in names:
            matched.setdefault(sequence, []).extend(found)
        else:
            others += found
    return matched, others


def _by_kind(names: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """A case's volumes by the kind of their names (:func:`sequence_kind`), not by the names."""
    kinds: dict[str, list[Path]] = {}
    for name, found in names.items():
        kinds.setdefault(sequence_kind(name), []).extend(found)
    return kinds


Locate = Callable[[Path], "tuple[Path, str] | None"]


def _cases_of(entries: Iterable[Path], locate: Locate) -> dict[tuple[Path, str], dict[str, list[Path]]]:
    """The volumes among ``entries`` by candidate case, (folder, prefix), and sequence name: a folder's
    volumes one case, named by :func:`sequence_name`; but where two or more cases' files each of two or more
    sequences share a folder (a set's flat ``imagesTr/`` in nnU-Net's layout, a patient's two studies), a
    case by the start of their names, named by :func:`named_tail`. ``locate`` gives a volume's case folder and
    the name it is known by there (``pipeline.reading.volume_location``), None for no volume."""
    folders: dict[Path, list[tuple[Path, str]]] = {}
    for entry in entries:
        entry = Path(entry)
        if case_location(entry) is None and (found := locate(entry)) is not None:
            folders.setdefault(found[0], []).append((entry, found[1]))
    cases: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    for folder, volumes in folders.items():
        tails = {entry: found for entry, name in volumes if (found := named_tail(name))}
        heads = Counter(head for head, _ in tails.values())
        by_name = sum(count > 1 for count in heads.values()) > 1
        for entry, name in volumes:
            if by_name and entry in tails and heads[tails[entry][0]] > 1:
                head, sequence = tails[entry]
                cases.setdefault((folder, head), {}).setdefault(sequence, []).append(entry)
            else:
                cases.setdefault((folder, ""), {}).setdefault(sequence_name(folder.name, name), []).append(entry)
    return cases


def recurring_sequences(entries: Iterable[Path], locate: Locate) -> list[str]:
    """The sequences (two or more, sorted) that most cases of several volumes among ``entries`` hold one
    each of, where at least ``MIN_CASES`` do; else []. By name, or, where more cases agree so, by kind
    (:func:`sequence_kind`: a multi-site export's ``ax_flair`` and ``flair_sag`` are both ``flair``). A
    sequence that ``LACKING_SHARE`` of those cases or more lack (a site without diffusion) is not one of them
    where two or more others are left, so that its cases are read rather than made error rows. Volumes
    of no name or kind (a localiser, a series named by its number alone) are left out of the count; a
    folder of one volume or of a set's many cases of one volume each names no sequences."""
    cases = list(_cases_of(entries, locate).values())
    several = sum(sum(map(len, names.values())) > 1 for names in cases)
    by_name, by_kind = _most_held(cases), _most_held([_by_kind(names) for names in cases])
    sequences, held = by_kind if by_kind[1] > by_name[1] else by_name
    return sorted(sequences) if held >= MIN_CASES and held > several / 2 else []


def _most_held(cases: list[dict[str, list[Path]]]) -> tuple[frozenset[str], int]:
    """The named sequences (two or more) that most ``cases`` hold one volume each of and no others, less
    those that ``LACKING_SHARE`` or more of the cases holding any of them lack, where two or more are left;
    and how many cases hold one volume each of them, others or not (a localiser beside them)."""
    named = [{name: found for name, found in names.items() if name} for names in cases]
    sets = Counter(frozenset(names) for names in named
                   if len(names) > 1 and all(len(found) == 1 for found in names.values()))
    if not sets:
        return frozenset(), 0
    sequences = sets.most_common(1)[0][0]
    holding = [names for names in named if sequences & set(names)]
    # a sequence a site never acquires would leave that site's cases unread, in training and in screening
    widely_held = frozenset(name for name in sequences if sum(len(names.get(name, ())) == 1 for names in holding)
                            >= (1 - LACKING_SHARE) * len(holding))
    sequences = widely_held if len(widely_held) > 1 else sequences
    return sequences, sum(all(len(names.get(name, ())) == 1 for name in sequences) for names in holding)


def group_cases(entries: list[Path], sequences: list[str], locate: Locate
                ) -> tuple[list[Path], dict[Path, Path], dict[Path, Path]]:
    """``entries`` with each case's volumes replaced by the case's path, sorted; each volume read as a
    case's sequence, to its case; and the volumes of cases that are none of ``sequences`` (a localiser, a
    sequence other cases lack), to theirs.

    A case is one holding a volume of one of ``sequences`` (by name or kind, :func:`match_sequences`), and
    of them at most twice as many volumes as there are sequences (a folder of a set's many FLAIRs is none);
    one lacking a sequence, or holding two of one, is still a case, which reading then reports as an error
    naming them. Its volumes of no sequence read (a localiser, a sequence other cases lack) count for
    nothing."""
    grouped: dict[Path, Path] = {}
    left_out: dict[Path, Path] = {}
    for (folder, prefix), names in _cases_of(entries, locate).items():
        matched, others = match_sequences(sequences, names)
        if matched and sum(map(len, matched.values())) <= 2 * len(sequences):
            case = case_path(folder, sequences, prefix)
            grouped |= {entry: case for found in matched.values() for entry in found}
            left_out |= dict.fromkeys(others, case)
    kept = [entry for entry in entries if entry not in grouped and entry not in left_out]
    return sorted(set(kept) | set(grouped.values())), grouped, left_out


def member_name(case: Case, entry_name: str) -> str | None:
    """The sequence a volume known as ``entry_name`` in ``case``'s folder holds for that case (as
    :func:`group_cases` named it); None for another case's file."""
    if not case.prefix:
        return sequence_name(case.folder.name, entry_name)
    found = named_tail(entry_name)
    return found[1] if found and found[0].lower() == case.prefix.lower() else None
