"""DICOM scans through pydicom: single-file images, multi-frame files and slice series.

A series (CT/MR slices sharing a SeriesInstanceUID in one folder) is one scan, or a scan per volume where
it holds several at the same positions (a diffusion series' b-values, echoes, time points; see
:func:`series_volumes`); an enhanced multi-frame file of several volumes is one scan of a channel each
(:func:`_frame_volumes`); a localizer's slices in several orientations are no scan. Slices are ordered
by their position along the slice normal (not by InstanceNumber, which scanners number in either
direction), checked for one orientation, one in-plane geometry and no missing slices, stacked,
and given the affine of their geometry in RAS (DICOM is LPS), as NIfTI volumes have. Stored
values become modality values (RescaleSlope/Intercept); MONOCHROME1 images are inverted so that
bright is dense, as in MONOCHROME2. MONAI's PydicomReader stacks series by InstanceNumber and
takes spacing from one axis, which mis-stacks tilted or reverse-numbered series, so the stacking
is done here.

Nothing that identifies a patient leaves this module: the patient becomes an opaque group
(a hash of PatientID), and names, birth dates, accession numbers and institutions are never read
into the manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.sequences import description_words

DICOM_SUFFIXES = (".dcm", ".dicom")
# Tags that tell apart the volumes of a series acquired at the same positions, in the order they are
# tried, with the name a volume gets from its value (a diffusion series' b1000, an echo's echo2).
VOLUME_TAGS = [("DiffusionBValue", "b"), ("EchoNumbers", "echo"), ("EchoTime", "te"),
               ("TemporalPositionIdentifier", "t"), ("TriggerTime", "trigger"), ("AcquisitionNumber", "acquisition")]
HEADER_TAGS = ["SOPClassUID", "Modality", "BodyPartExamined", "StudyInstanceUID", "SeriesInstanceUID",
               "SeriesNumber", "PatientID", "ImagePositionPatient", "ImageOrientationPatient",
               "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "InstanceNumber", "AccessionNumber",
               "ImageType", "SeriesDescription", *(tag for tag, _ in VOLUME_TAGS)]
ORIENTATION_TOLERANCE = 1e-3
LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "SURVEY"}  # ImageType values of images taken to plan a scan
GAP_TOLERANCE = 1.5  # a step this many times its neighbours' (and a whole multiple of them): a missing slice
UNEVEN_TOLERANCE = 1.05  # steps differing by more than this: resampled to even spacing


class DicomError(Exception):
    """A DICOM file or series cannot be used as a scan; the message says why."""


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """True for a file with the 'DICM' marker after its 128-byte preamble (extension-less DICOM)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A ``.dcm``/``.dicom`` file, or one with the DICM marker whose name has no suffix (``IM0001``), a
    number after its last dot (a UID-named export's ``1.3.12.2.1107.5.2.32``) or Siemens' ``.IMA``."""
    name = str(path).lower()
    if name.endswith(DICOM_SUFFIXES):
        return True
    suffix = Path(name).suffix
    return (not suffix or suffix == ".ima" or suffix[1:].isdigit()) and has_dicom_preamble(path)


@dataclass
class DicomHeader:
    """What the pipeline reads from a DICOM header (nothing identifying)."""

    path: str
    modality: str
    body_part: str
    study_uid: str
    series_uid: str
    series_number: int
    patient_group: str  # an opaque hash of PatientID, "" when absent
    accession_group: str  # an opaque hash of AccessionNumber (a labels file may key its rows by it)
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    frames: int
    rows: int
    columns: int
    instance: int
    localizer: bool = False  # ImageType names it a localizer (scout, survey): taken to plan a scan, not to read
    volume_values: tuple = ()  # the VOLUME_TAGS' values (None where absent), in their order
    # the sequence and plane words of its SeriesDescription ("AX FLAIR": "ax_flair"), and nothing else of it: a
    # description may name a person, and de-identification profiles remove it
    sequence_words: str = ""

    @property
    def is_slice(self) -> bool:
        """A single-frame image with a position in space: a member of a slice series."""
        return self.frames == 1 and self.position is not None and self.orientation is not None


def _floats(value) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None


# Modalities of DICOM objects that annotate or accompany scans: exports of annotated studies hold them.
NOT_SCANS = {"SEG": "a segmentation", "RTSTRUCT": "radiotherapy contours", "RTDOSE": "a radiotherapy dose grid",
             "RTPLAN": "a radiotherapy plan", "REG": "a registration", "SR": "a structured report",
             "PR": "a presentation state", "KO": "a key-object selection", "DOC": "an encapsulated document"}


def opaque_id(kind: str, value: str) -> str:
    """``"<kind>-<12 hex digits>"``, a hash of an identifying value (PatientID, AccessionNumber) that
    groups and matches scans without carrying the value; "" for no value."""
    value = value.strip()
    return f"{kind}-{hashlib.sha256(value.encode()).hexdigest()[:12]}" if value else ""


def read_header(path: str | os.PathLike) -> DicomHeader:
    """The header fields of one DICOM file, without its pixels."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except Exception as error:  # pydicom raises several types for damaged files
        raise DicomError(f"not a readable DICOM file: {type(error).__name__}: {error}") from None
    patient = str(ds.get("PatientID", "") or "")
    return DicomHeader(
        path=str(path), modality=str(ds.get("Modality", "") or ""),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""), series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        series_number=int(ds.get("SeriesNumber", 0) or 0),
        patient_group=opaque_id("patient", patient),
        accession_group=opaque_id("accession", str(ds.get("AccessionNumber", "") or "")),
        position=_floats(ds.get("ImagePositionPatient")), orientation=_floats(ds.get("ImageOrientationPatient")),
        frames=int(ds.get("NumberOfFrames", 1) or 1), rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0), instance=int(ds.get("InstanceNumber", 0) or 0),
        localizer=bool(LOCALIZER_TYPES & {str(v).upper() for v in _values(ds.get("ImageType"))}),
        volume_values=tuple(_number(ds.get(tag)) for tag, _ in VOLUME_TAGS),
        sequence_words=description_words(str(ds.get("SeriesDescription", "") or "")),
    )


def _values(value) -> list:
    """A header value's values: [] for none, one for a single value, each of a multi-value (ImageType)."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, bytes, int, float)) else list(value)


def _number(value) -> float | None:
    values = _values(value)
    try:
        return float(values[0]) if values else None
    except (TypeError, ValueError):
        return None


def _pixels(ds, path: str) -> np.ndarray:
    """Modality values of a dataset's pixels (rescaled; MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_rescale

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("DICOM file without pixel data (a report, presentation state or other non-image object)")
    try:
        array = ds.pixel_array
    except Exception as error:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        name = f"{syntax.name} ({syntax})" if syntax is not None else "unknown"
        raise DicomError(f"cannot decode pixel data of transfer syntax {name}: {type(error).__name__}: {error}") \
            from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        array = apply_rescale(array, ds).astype(np.float32, copy=False)
        if photometric == "MONOCHROME1":
            array = array.max() + array.min() - array
    elif photometric.startswith(("YBR", "RGB", "PALETTE")) and photometric != "RGB":
        from pydicom.pixels import convert_color_space

        if photometric.startswith("YBR"):
            array = convert_color_space(array, photometric, "RGB")
    return np.asarray(array)


def _affine(orientation, spacing_rc, first, step) -> np.ndarray:
    """RAS affine of an array indexed (row, column, slice)."""
    row_cosine, column_cosine = np.array(orientation[:3]), np.array(orientation[3:])
    lps = np.eye(4)
    lps[:3, 0] = column_cosine * spacing_rc[0]  # down the rows: the column direction
    lps[:3, 1] = row_cosine * spacing_rc[1]  # along a row
    lps[:3, 2] = step
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_file(path: str | os.PathLike):
    """One DICOM file: a 2D image (rows, columns[, 3]) or, for a multi-frame file, a volume
    (rows, columns, frames). Returns (array, spacing or None, affine or None, is_volume).

    A multi-frame file of a modality whose frames follow one another in time (an ultrasound cine
    loop, an angiography run: ``CINE_MODALITIES``) is its middle frame, a 2D image. An enhanced
    multi-frame volume (Enhanced CT and MR) gives its geometry in functional groups: its frames are
    ordered by their positions and spaced as they lie, as a series' slices are; where it holds several
    volumes at the same positions (b-values, echoes, time points: :func:`_frame_volumes`), they are a
    fourth axis (rows, columns, slices, volumes), a channel each, as a 4D NIfTI's volumes are."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as error:
        raise DicomError(f"not a readable DICOM file: {type(error).__name__}: {error}") from None
    if "SOPClassUID" not in ds and "Rows" not in ds:  # pydicom reads damaged bytes leniently
        raise DicomError("not a readable DICOM file: no image header in it (damaged, or not DICOM)")
    modality = str(ds.get("Modality", "") or "")
    if modality in NOT_SCANS:  # some carry pixels (a SEG's masks, a dose grid) that would pass as a volume
        raise DicomError(f"DICOM {modality} object ({NOT_SCANS[modality]}), not a scan")
    if LOCALIZER_TYPES & {str(v).upper() for v in _values(ds.get("ImageType"))}:
        raise _localizer_error()  # a CT topogram, an MR survey image
    array = _pixels(ds, str(path))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spacing_rc = [float(v) for v in ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None) or [1, 1]]
    if frames > 1 and array.ndim >= 3:
        if modality in CINE_MODALITIES and str(ds.get("SOPClassUID", "")) != ENHANCED_US_VOLUME:
            return array[frames // 2], None, None, False
        volume = np.moveaxis(array, 0, 2) if array.ndim == 3 else None
        if volume is None:
            raise DicomError(f"multi-frame colour DICOM ({frames} frames of colour pixels): not a volume the "
                             "pipeline can screen")
        if enhanced := _enhanced_geometry(ds, frames):
            orientation, positions, spacing_rc, rescale, keys = enhanced
            if rescale is not None and "RescaleSlope" not in ds:  # Enhanced CT's Hounsfield units
                volume = volume * rescale[0].astype(np.float32) + rescale[1].astype(np.float32)
            volumes = []
            for members in _frame_volumes(positions, keys):
                order, along, steps = _slice_order(orientation, positions[members], "multi-frame file",
                                                   "several volumes in one file whose b-values, echoes or time "
                                                   "points its frames do not tell apart")
                chosen = np.asarray(members)[order]
                volumes.append(_volume(volume[..., chosen], positions[chosen], along, steps, orientation, spacing_rc))
            if len(volumes) == 1:
                return (*volumes[0], True)
            # as a 4D NIfTI's: the volumes (b-values, echoes, time points) are the scan's channels
            return np.stack([v for v, _, _ in volumes], axis=-1), volumes[0][1], volumes[0][2], True
        thickness = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
        orientation = _floats(ds.get("ImageOrientationPatient")) or (1, 0, 0, 0, 1, 0)
        first = np.array(_floats(ds.get("ImagePositionPatient")) or (0.0, 0.0, 0.0))
        normal = np.cross(orientation[:3], orientation[3:])
        affine = _affine(orientation, spacing_rc, first, normal * thickness)
        return volume, (spacing_rc[0], spacing_rc[1], thickness), affine, True
    return array, None, None, False


# Modalities whose multi-frame files are frames in time, not slices in space: each is read as its middle frame.
CINE_MODALITIES = {"US": "ultrasound", "XA": "angiography", "RF": "fluoroscopy", "ES": "endoscopy",
                   "XC": "external camera"}
ENHANCED_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"  # Enhanced US Volume Storage: a 3D ultrasound, frames slices


def _enhanced_geometry(ds, frames: int):
    """(orientation, each frame's position, pixel spacing, each frame's (rescale slope, intercept) or
    None, each frame's values of ``FRAME_VOLUME_KEYS``) of an enhanced multi-frame file, from its
    per-frame and shared functional groups; None where it has none (a legacy multi-frame file)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return None
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]

    def group(frame, name: str):
        for where in (frame, shared):
            if where is not None and where.get(name):
                return where.get(name)[0]
        return None

    positions, orientation, measures, rescale, keys = [], None, None, [], []
    for frame in per_frame:
        keys.append(tuple(_number(item.get(name)) if (item := group(frame, sequence)) is not None else None
                          for sequence, name in FRAME_VOLUME_KEYS))
        plane, facing = group(frame, "PlanePositionSequence"), group(frame, "PlaneOrientationSequence")
        measures = measures or group(frame, "PixelMeasuresSequence")
        if plane is None or facing is None or not plane.get("ImagePositionPatient"):
            return None
        positions.append(_floats(plane.ImagePositionPatient))
        orientation = orientation or _floats(facing.get("ImageOrientationPatient"))
        transform = group(frame, "PixelValueTransformationSequence")
        if transform is not None and "RescaleSlope" in transform and "RescaleIntercept" in transform:
            rescale.append((float(transform.RescaleSlope), float(transform.RescaleIntercept)))
    if orientation is None or measures is None or not measures.get("PixelSpacing"):
        return None
    return (np.array(orientation), np.array(positions), [float(v) for v in measures.PixelSpacing],
            np.array(rescale).T if len(rescale) == frames else None, keys)


# Per-frame values that tell an enhanced MR file's volumes apart: (functional group, attribute)
FRAME_VOLUME_KEYS = [("MRDiffusionSequence", "DiffusionBValue"), ("MREchoSequence", "EffectiveEchoTime"),
                     ("FrameContentSequence", "TemporalPositionIndex")]


def _frame_volumes(positions: np.ndarray, keys: list[tuple]) -> list[list[int]]:
    """The frames of each volume of an enhanced multi-frame file, in channel order: one volume where
    no two frames lie at one position, else as :func:`_part_volumes` parts them by
    ``FRAME_VOLUME_KEYS`` (ascending: b0 before b1000) or by their order, every volume at the same
    positions; ``[all frames]`` where neither does, for :func:`_slice_order` to refuse."""
    places = [tuple(np.round(p, 2)) for p in positions]
    frames = list(range(len(places)))
    if len(set(places)) == len(places):
        return [frames]
    parted = _part_volumes(places, [list(values) for values in zip(*keys)], frames, same_places=True)
    return [members for _, members in parted[1]] if parted else [frames]


def _part_volumes(places: list, key_values: list[list], order: list[int], same_places: bool = False):
    """How slices or frames with repeated ``places`` part into volumes: (the index of the first of
    ``key_values`` (per key, a value per slice) whose values every slice has and which leave each volume
    two or more slices at distinct places, [(value, members)] ascending); else (None, [(n, members)]),
    a volume per n-th occurrence at each place in ``order``, where every place occurs equally often;
    else None. ``same_places``: every volume must lie at the same places (channels of one scan)."""
    def parts(volumes: list[list[int]]) -> bool:
        lying = [{places[i] for i in members} for members in volumes]
        return (all(len(members) >= 2 and len(at) == len(members) for members, at in zip(volumes, lying))
                and (not same_places or all(at == lying[0] for at in lying)))

    for index, values in enumerate(key_values):
        if None in values or len(set(values)) < 2:
            continue
        volumes: dict[float, list[int]] = {}
        for i, value in enumerate(values):
            volumes.setdefault(value, []).append(i)
        if parts(list(volumes.values())):
            return index, sorted(volumes.items())
    counts = Counter(places)
    if None in counts or len(counts) < 2 or len(set(counts.values())) > 1:
        return None
    seen: dict[tuple, int] = {}
    occurrences: dict[int, list[int]] = {}
    for i in order:
        seen[places[i]] = seen.get(places[i], 0) + 1
        occurrences.setdefault(seen[places[i]], []).append(i)
    return None, sorted(occurrences.items())


def series_volumes(headers: list[DicomHeader]) -> list[tuple[str, list[DicomHeader]]]:
    """The volumes of one series' slices, as (name, slices): ``[("", headers)]`` where no two slices lie
    at one position.

    Where they do (a diffusion series' b-values, a multi-echo series, time points), a volume per value
    of the first of ``VOLUME_TAGS`` that every slice has and that leaves each volume two or more
    slices at distinct positions (``b0``, ``b1000``); where no tag does (a vendor's b-value in a
    private tag), a volume per occurrence in InstanceNumber order at each position (``volume1``,
    ``volume2``), provided every position has the same count. Raises DicomError otherwise: a slice
    stored twice, or two series under one SeriesInstanceUID.
    """
    places = [tuple(np.round(h.position, 2)) if h.position is not None else None for h in headers]
    if len(set(places)) == len(places):
        return [("", headers)]
    key_values = [[h.volume_values[index] if index < len(h.volume_values) else None for h in headers]
                  for index in range(len(VOLUME_TAGS))]
    order = sorted(range(len(headers)), key=lambda i: (headers[i].instance, headers[i].path))
    parted = _part_volumes(places, key_values, order)
    if parted is None:
        raise DicomError("series has two slices at the same position (a duplicate slice, or two series in one)")
    index, volumes = parted
    prefix = VOLUME_TAGS[index][1] if index is not None else "volume"
    return [(f"{prefix}{value:g}", [headers[i] for i in members]) for value, members in volumes]


def _localizer_error(slices: int = 1, orientations: int = 1) -> DicomError:
    what = (f"series: {slices} slices in {orientations} orientation{'s' if orientations > 1 else ''}" if slices > 1
            else "image")
    return DicomError(f"a localizer (scout) {what}, taken to plan the scan, not to read; left out (nothing to do)")


def read_series(paths: list[str]):
    """Slices of one series stacked into (rows, columns, slices), ordered along the slice normal.

    Returns (volume, spacing, affine). Raises DicomError for mixed orientations or geometries,
    missing slices, a slice without pixel data, or fewer than two slices.
    """
    import pydicom

    if len(paths) < 2:
        raise DicomError("a series needs at least two slices")
    headers = [read_header(p) for p in paths]
    orientations = np.array([h.orientation for h in headers])
    kinds = len({tuple(np.round(o / ORIENTATION_TOLERANCE)) for o in orientations})
    # a 3-plane localizer is a series of a few slices in each of its orientations
    if all(h.localizer for h in headers) or (kinds > 1 and len(headers) <= 3 * kinds):
        raise _localizer_error(len(headers), kinds)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise DicomError(f"series of {len(paths)} slices with mixed orientations (ImageOrientationPatient differs); "
                         "split it into one folder per orientation")
    if len({(h.rows, h.columns) for h in headers}) > 1:
        raise DicomError(f"series of {len(paths)} slices of different sizes")
    orientation = orientations[0]
    positions = np.array([h.position for h in headers])
    order, along, steps = _slice_order(orientation, positions, "series", "a duplicate slice, or two series in one")
    slices, spacing_rc = [], None
    for index in order:
        try:
            ds = pydicom.dcmread(paths[index])
        except Exception as error:
            raise DicomError(f"slice {Path(paths[index]).name}: {type(error).__name__}: {error}") from None
        slices.append(_pixels(ds, paths[index]))
        spacing_rc = spacing_rc or [float(v) for v in ds.get("PixelSpacing", None) or [1, 1]]
    return _volume(np.stack(slices, axis=-1), positions[order], along, steps, orientation, spacing_rc)


def _slice_order(orientation, positions: np.ndarray, what: str, same_place: str):
    """(the slices' order along the slice normal, their places along it in that order, the steps
    between them). Raises DicomError for two slices at one place (``same_place`` says what that may
    be) or a step that leaves a slice out."""
    normal = np.cross(orientation[:3], orientation[3:])
    along = positions @ normal
    order = np.argsort(along)
    along = along[order]
    steps = np.diff(along)
    if (steps < 1e-4).any():
        raise DicomError(f"{what} has two slices at the same position ({same_place})")
    # A missing slice leaves a step a whole multiple of its neighbours'; a series acquired with
    # thin slices at one end and thick ones at the other (GE heads) changes step once, and is kept.
    for i, step in enumerate(steps):
        around = np.r_[steps[max(0, i - 2):i], steps[i + 1:i + 3]]
        ratio = step / float(np.median(around)) if len(around) else 1.0
        if ratio > GAP_TOLERANCE and abs(ratio - round(ratio)) < 0.15:
            raise DicomError(f"{what} has a gap of {step:.3g} mm where slices are {step / ratio:.3g} mm apart: "
                             "a slice is missing")
    return order, along, steps


def _volume(volume: np.ndarray, positions: np.ndarray, along: np.ndarray, steps: np.ndarray, orientation,
            spacing_rc) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """(volume, spacing, affine) of slices stacked in order along the normal, uneven steps resampled even."""
    if steps.max() > UNEVEN_TOLERANCE * steps.min():
        volume, positions = _even_slices(volume, positions, along, float(np.median(steps)))
    first, last = positions[0], positions[-1]
    step = (last - first) / (len(positions) - 1)  # follows a gantry tilt: the stack may be sheared
    affine = _affine(orientation, spacing_rc, first, step)
    return volume, (spacing_rc[0], spacing_rc[1], float(np.linalg.norm(step))), affine


def _even_slices(volume: np.ndarray, positions: np.ndarray, along: np.ndarray, step: float):
    """Linear interpolation of unevenly spaced slices onto slices ``step`` mm apart (as dcm2niix
    does for variable slice thickness), with their positions."""
    count = int(np.floor((along[-1] - along[0]) / step + 1e-6)) + 1
    targets = along[0] + step * np.arange(count)
    below = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, len(along) - 2)
    weight = ((targets - along[below]) / (along[below + 1] - along[below])).astype(np.float32)
    even = volume[..., below] * (1 - weight) + volume[..., below + 1] * weight
    where = positions[below] * (1 - weight[:, None]) + positions[below + 1] * weight[:, None]
    return even.astype(np.float32), where
