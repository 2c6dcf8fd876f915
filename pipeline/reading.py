"""One reading path for every scan format: NIfTI, Analyze and FreeSurfer MGH volumes, PNG, JPEG, TIFF,
BMP, WebP, JPEG 2000 and Netpbm (.pgm) pictures through MONAI's readers, MetaImage and NRRD volumes through
SimpleITK, DICOM files and series through pydicom (``pipeline.dicom``), and NumPy ``.npy`` arrays
(as MRNet's knee MRI and many exported sets come) through numpy, never unpickling.

A volume whose header and voxels lie in two files (Analyze ``x.hdr`` + ``x.img``, MetaImage ``x.mhd`` +
``x.raw``, NRRD ``x.nhdr`` + ``x.raw``) is one scan, named by its header file.

A DICOM series is one scan whose path is its folder (``<folder>/#<SeriesInstanceUID>`` when the
folder holds several series, or when the series lies in the scanned folder itself).

A case whose MRI sequences lie in files or series of their own in its folder is one scan where ingest
found them so (``pipeline.sequences``): its path is the folder and the sequences, ``7100000/{flair,t1}``,
read as the sequences stacked as channels.

Ingest, training and scoring all read through :func:`load_scan`, so a model never
sees one orientation in training and another when scoring (MONAI's PIL reader swaps
the two axes of a PNG unless told not to).
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import logging
import os
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.sequences import case_location, match_sequences, member_name, sequence_name

log = logging.getLogger("pipeline.reading")

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".j2k",
                    ".pgm", ".ppm", ".pnm")  # Netpbm: mini-MIAS mammograms are .pgm
NIBABEL_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".mgz", ".mgh")
# MONAI's ITKReader needs ITK (over 100 MB of wheels); SimpleITK reads both formats in one of 50 MB.
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIBABEL_SUFFIXES + ITK_SUFFIXES
# A NumPy array is a picture or a volume by its shape (``array_is_volume``), not by its suffix.
ARRAY_SUFFIXES = (".npy",)
SCAN_SUFFIXES = VOLUME_SUFFIXES + PICTURE_SUFFIXES + ARRAY_SUFFIXES
# The formats a scan file may have, as messages name them to a user whose file is none of them
SCAN_FORMATS = "DICOM, NIfTI, Analyze, MGH, MetaImage, NRRD, PNG, JPEG, TIFF, BMP, WebP, JPEG 2000, Netpbm, NumPy .npy"
# A NIfTI of a few volumes of one region (the Medical Segmentation Decathlon's brain tumours: FLAIR, T1,
# T1 with contrast and T2; its prostates: T2 and ADC) is one scan, its volumes the channels. More are a
# series in time or diffusion directions, which no screening model here takes.
MAX_VOLUMES_PER_FILE = 8
# The voxel files of a two-file volume, by the suffixes of the header that names them.
DATA_FILE_SUFFIXES = {".img": (".hdr",), ".img.gz": (".hdr",), ".raw": (".mhd", ".nhdr"),
                      ".zraw": (".mhd",), ".raw.gz": (".mhd", ".nhdr")}
HEADER_SUFFIXES = tuple(dict.fromkeys(suffix for headers in DATA_FILE_SUFFIXES.values() for suffix in headers))
FORMAT_NAMES = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".hdr": "Analyze", ".mgz": "MGH", ".mgh": "MGH",
                ".mha": "MetaImage", ".mhd": "MetaImage", ".nrrd": "NRRD", ".nhdr": "NRRD", ".npy": "NumPy array"}
# Metadata that operating systems leave in folders, and the index a DICOM export writes beside its
# files (DICOMDIR: a DICOM file without an image): never scans, skipped and counted, not errors.
SYSTEM_FILE_NAMES = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "dicomdir"}
SYSTEM_FOLDER_NAMES = {"__macosx"}
# A BIDS dataset (dataset_description.json at its top) keeps processed copies, the raw DICOMs, code and
# stimuli beside its scans, and its metadata as JSON and TSV files: none of them is a scan of its own.
BIDS_ASIDE_FOLDERS = {"derivatives", "sourcedata", "code", "stimuli"}
BIDS_METADATA_NAMES = {"readme", "readme.md", "readme.txt", "readme.rst", "changes", "license", ".bidsignore"}


# What converters write beside a volume (dcm2niix, as BIDS keeps it): its acquisition parameters as JSON,
# a diffusion series' b-values and directions. Neither scans nor problems.
SIDECAR_SUFFIXES = (".json", ".bval", ".bvec")


def sidecars(paths: Collection[Path]) -> dict[Path, Path]:
    """The files among ``paths`` that hold metadata of a scan beside them named as it is (``sub-01_dwi.json``,
    ``.bval`` and ``.bvec`` beside ``sub-01_dwi.nii.gz``), each to its scan."""
    scans = {}
    for path in paths:
        if suffix := scan_suffix(path):
            scans.setdefault((path.parent, path.name[: -len(suffix)].lower()), path)
    found = {}
    for path in paths:
        name = path.name.lower()
        for suffix in SIDECAR_SUFFIXES:
            if name.endswith(suffix) and (scan := scans.get((path.parent, name[: -len(suffix)]))) is not None:
                found[path] = scan
    return found


def is_system_file(relative_path: str | os.PathLike) -> bool:
    """True for operating-system metadata: ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, anything
    in ``__MACOSX/`` or in a hidden folder (``.ipynb_checkpoints/``), and hidden files; and for a
    DICOM export's ``DICOMDIR``. (Listing a BIDS dataset also passes over its ``derivatives/``,
    ``sourcedata/``, ``code/`` and ``stimuli/`` folders and its JSON, TSV and README files.)"""
    parts = Path(relative_path).parts
    if any(part.lower() in SYSTEM_FOLDER_NAMES or part.startswith(".") for part in parts[:-1]):
        return True
    name = parts[-1] if parts else ""
    return name.lower() in SYSTEM_FILE_NAMES or name.startswith(".")


class ScanReadError(Exception):
    """A scan could not be read; ``reason`` says why in words a person can act on."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def scan_suffix(path: str | os.PathLike) -> str | None:
    """Return the recognised scan suffix of ``path`` (lower case), or None."""
    name = str(path).lower()
    for suffix in SCAN_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def scan_id(relative_path: str | os.PathLike) -> str:
    """The id of a scan, the same in every stage: its path relative to the scanned folder, with
    '/' separators and the suffix kept, so ``Y92.jpg`` and ``Y92.png`` are two scans."""
    return Path(relative_path).as_posix()


def has_old_style_id(scan_id_text: str, path: str) -> bool:
    """True for an id written before ids kept the file suffix (``yes/Y92`` for ``yes/Y92.jpg``)."""
    suffix = scan_suffix(path)
    return bool(suffix) and not scan_id_text.lower().endswith(suffix)


def series_location(path: str | os.PathLike) -> tuple[Path, str | None, str | None] | None:
    """(folder, series uid or None, volume name or None) when ``path`` names a DICOM series or one
    volume of a series of several (``SE4/@b1000``; ``study/#<uid>@b1000`` where the folder holds
    several series), else None."""
    path = Path(path)
    if path.name[:1] in ("#", "@") and path.parent.is_dir():
        uid, _, volume = path.name.partition("@")
        return path.parent, uid[1:] or None, volume or None
    if path.is_dir():
        return path, None, None
    return None


def scan_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file or folder, or the id of a series or volume in a folder that is
    (``SE3/@b1000``, ``study/#<uid>``: score's reports and verdicts name them so), or a case's sequences
    in a folder that is (``7100000/{flair,t1}``)."""
    if os.path.exists(path) or (Path(path).name[:1] in ("#", "@") and series_location(path) is not None):
        return True
    case = case_location(path)
    return case is not None and case[0].is_dir()


def names_a_scan(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a scan: a scan file, a folder holding a DICOM series' slices, or the id of a
    series or volume (:func:`scan_exists`)."""
    if os.path.isdir(path):
        return bool(series_slices(Path(path), None))
    return scan_exists(path) and is_scan_file(path)


def volume_header(path: str | os.PathLike) -> Path | None:
    """The header file beside ``path`` where ``path`` holds the voxels of a two-file volume (``x.img``
    of ``x.hdr``, ``x.raw`` of ``x.mhd``), else None."""
    path = Path(path)
    name = path.name.lower()
    for data_suffix, header_suffixes in DATA_FILE_SUFFIXES.items():
        if name.endswith(data_suffix):
            stem = path.name[: len(path.name) - len(data_suffix)]
            for suffix in header_suffixes:
                for written in (suffix, suffix.upper()):
                    if (path.parent / (stem + written)).is_file():
                        return path.parent / (stem + written)
    return None


def scan_files(path: str | os.PathLike) -> list[Path]:
    """The files a scan file is read from: itself, and the voxel file beside a two-file volume's header."""
    path = Path(path)
    suffix = scan_suffix(path)
    if suffix not in HEADER_SUFFIXES:
        return [path]
    stem = path.name[: len(path.name) - len(suffix)]
    data = [path.parent / (stem + data_suffix) for data_suffix, headers in DATA_FILE_SUFFIXES.items()
            if suffix in headers]
    return [path] + [file for file in data if file.is_file()]


def is_scan_file(path: str | os.PathLike) -> bool:
    from pipeline.dicom import is_dicom_file

    return (scan_suffix(path) is not None or series_location(path) is not None or case_location(path) is not None
            or is_dicom_file(path))


def volume_location(path: str | os.PathLike) -> tuple[Path, str] | None:
    """Where a listed entry (:func:`list_files`) that is a volume by its name would sit as a sequence of a case
    (``pipeline.sequences``), and the name it is known by there; None for no volume (single DICOM files and
    NumPy arrays tell only when read). A volume file: its folder and name. A DICOM series: the folder above its
    own and its folder's name, or, where that is a number (a PACS export's ``SE0002/``) or the series shares
    its folder (``study/#<uid>``), the sequence words of its description (``AX FLAIR``: ``ax_flair``). A volume of
    a series (``SE0004/@b1000``): the series' place, and its name and the volume's (``dwi_b1000``)."""
    path = Path(path)
    if scan_suffix(path) in VOLUME_SUFFIXES:
        return path.parent, path.name
    location = series_location(path)
    if location is None:
        return None
    folder, uid, volume = location  # the series' folder; its uid where it shares the folder with others
    where = folder.parent if uid is None else folder
    name = folder.name if uid is None and sequence_name(where.name, folder.name) else _sequence_words(folder, uid)
    return where, f"{name}_{volume}" if name and volume else name  # an unnamed series' volumes are unnamed


def _sequence_words(folder: Path, uid: str | None) -> str:
    """The sequence words of the description of the series ``uid`` in ``folder`` (of its one series where
    None), "" where it has none; read once while the folder is unchanged (ingest asks for each series to find
    the sequences, then again to group them)."""
    try:
        return _description_of(str(folder), uid, folder.stat().st_mtime_ns)
    except OSError:
        return ""


@functools.lru_cache(maxsize=4096)
def _description_of(folder: str, uid: str | None, listed_at: int) -> str:
    """:func:`_sequence_words` of ``folder`` as it was at ``listed_at`` (its modification time): of its one
    series, the first DICOM file's header, not every slice's, as a CT export's thousand series would take."""
    from pipeline import dicom

    try:
        if uid is None:
            first = next((item for item in sorted(Path(folder).iterdir()) if item.is_file()
                          and not is_system_file(item.name) and dicom.is_dicom_file(item)), None)
            return dicom.read_header(first).sequence_words if first is not None else ""
        headers = series_slices(Path(folder), uid)
    except (dicom.DicomError, OSError):
        return ""
    return headers[0].sequence_words if headers else ""


def included(paths: list[Path], root: str | os.PathLike, pattern: str) -> tuple[list[Path], list[Path]]:
    """(the ``paths`` whose path below ``root`` matches ``pattern``; the others). The pattern is one or more
    globs joined by ``,``, ``*`` crossing folders; a path is kept where it matches one of those without ``!``
    (or there are none) and none of those with it (``flair,!mpr``: the FLAIRs but their reformats). Case is
    ignored, and so are the separators ``-``, ``_`` and space (``dark_fluid`` matches
    ``t2_tirm_tra_dark-fluid_3.nii.gz``); a glob without wildcards matches any path holding it (``flair``:
    ``*flair*``)."""
    def plain(text: str) -> str:
        return re.sub(r"[-_ ]", "_", text.lower())

    def glob(part: str) -> str:
        return part if any(character in part for character in "*?[") else f"*{part}*"

    parts = [plain(part.strip()) for part in pattern.split(",") if part.strip()]
    wanted = [glob(part) for part in parts if not part.startswith("!")]
    unwanted = [glob(part[1:].strip()) for part in parts if part.startswith("!")]
    kept, left_out = [], []
    for path in paths:
        relative = plain(Path(os.path.relpath(path, root)).as_posix())
        keep = ((not wanted or any(fnmatch.fnmatchcase(relative, glob) for glob in wanted))
                and not any(fnmatch.fnmatchcase(relative, glob) for glob in unwanted))
        (kept if keep else left_out).append(path)
    return kept, left_out


def find_scans(folder: str | os.PathLike, slices_alone: Collection[str] = ()) -> list[Path]:
    """Every file with a scan suffix below ``folder``, sorted, system files skipped; DICOM series as
    :func:`list_files` gives them."""
    return [path for path in list_files(folder, slices_alone) if is_scan_file(path)]


def _reader_for(path: str):
    from monai.data import NibabelReader, PILReader

    suffix = scan_suffix(path)
    if suffix in PICTURE_SUFFIXES:
        # reverse_indexing=False keeps numpy/Pillow's (row, column) order.
        return PILReader(reverse_indexing=False)
    if suffix in NIBABEL_SUFFIXES:
        return NibabelReader()
    raise ScanReadError(path, f"unsupported file type; expected one of {', '.join(SCAN_SUFFIXES)}")


# SimpleITK's physical space is LPS; NIfTI's, and so the pipeline's affines, RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _load_itk(path: str) -> LoadedScan:
    """A MetaImage or NRRD file through SimpleITK, its axes in NIfTI's (x, y, z) order."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as error:
        # ITK's message: where in its sources, then the reader's complaint; the last line says most
        lines = [re.sub(r"^(ITK ERROR|itk::ERROR): \w+\(0x[0-9a-f]+\): ", "", line.strip())
                 for line in str(error).strip().splitlines()[1:]]
        reason = " ".join(lines[-2:]) or type(error).__name__
        raise ScanReadError(path, f"cannot decode as {FORMAT_NAMES[scan_suffix(path)]} ({reason}); the header may "
                                  "be damaged, or name a voxel file that is not beside it") from None
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise ScanReadError(path, f"{components} values per voxel (a vector or colour image): one intensity a voxel "
                                  "is expected; save a picture as PNG, or one component as a volume of its own")
    if dimension not in (2, 3):
        raise ScanReadError(path, f"{dimension}-dimensional image: a 2D image or a 3D volume is expected")
    array = sitk.GetArrayFromImage(image).transpose()  # SimpleITK's arrays are (z, y, x)
    spacing = tuple(float(value) for value in image.GetSpacing())
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    lps[:dimension, :dimension] = direction * np.asarray(spacing)
    lps[:dimension, 3] = image.GetOrigin()
    return LoadedScan(array=array, source_dtype=str(array.dtype), spacing=spacing, affine=LPS_TO_RAS @ lps,
                      is_volume=dimension == 3)


def array_is_volume(shape: tuple[int, ...]) -> bool:
    """Whether a NumPy array of ``shape`` (singleton axes dropped) is a volume: three axes, unless the
    last holds 3 or 4 values of pictures at least 8 wide (RGB or RGBA, channels last as Pillow gives)."""
    return len(shape) == 3 and not (shape[-1] in (3, 4) and min(shape[:2]) >= 8)


def _load_array(path: str) -> LoadedScan:
    """A ``.npy`` file: (rows, columns), (rows, columns, 3 or 4) or a volume of three axes, in its own
    axis order (no affine: its voxels are taken as 1 mm cubes, its axes as they are stored)."""
    with open(path, "rb") as file:
        magic = file.read(6)
    if magic != b"\x93NUMPY":
        kind = "a NumPy .npz archive (a zip of arrays)" if magic.startswith(b"PK") else "not a NumPy .npy file"
        raise ScanReadError(path, f"cannot decode as a NumPy array: {kind}; one array a file, written by numpy.save, "
                                  "is read")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ScanReadError(path, "holds Python objects, not an array of numbers (not read: unpickling can "
                                      "run code); save the pixels with numpy.save of a numeric array") from None
        raise ScanReadError(path, f"cannot decode as a NumPy array: {error}") from None
    except (OSError, EOFError) as error:
        raise ScanReadError(path, f"cannot decode as a NumPy array ({type(error).__name__}: {error}); "
                                  "the file may be cut short") from None
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "uif":
        raise ScanReadError(path, f"an array of {array.dtype} values: numbers (integers or floats) are expected")
    source_dtype = str(array.dtype)
    array = array.reshape([size for size in array.shape if size != 1] or [1])
    if array.ndim not in (2, 3) or array.size < 4:
        raise ScanReadError(path, f"an array of shape {tuple(array.shape)}: a 2D image (rows, columns), a colour "
                                  "picture (rows, columns, 3) or a 3D volume is expected")
    volume = array_is_volume(array.shape)
    return LoadedScan(array=array, source_dtype=source_dtype, spacing=(1.0,) * array.ndim if volume else None,
                      affine=np.eye(4) if volume else None, is_volume=volume)


@dataclass
class LoadedScan:
    """A scan as read from disk: the raw array (spatial axes first, channels last if any)."""

    array: np.ndarray
    source_dtype: str
    spacing: tuple[float, ...] | None
    affine: np.ndarray | None
    is_volume: bool
    info: dict = field(default_factory=dict)  # DICOM: modality, body part, study/series uids, patient group

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


DEFAULT_MAX_BYTES = 2 * 1024**3
EXIF_ORIENTATION = 0x0112  # the EXIF tag cameras and phones set instead of turning the pixels
# Picture modes whose pixel values are not intensities as stored, read as these: a palette PNG holds
# indices into its palette, a CMYK JPEG ink amounts; grey with alpha keeps its grey.
PICTURE_MODES = {"P": "RGB", "PA": "RGB", "LA": "L", "La": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                 "HSV": "RGB"}


def check_file(path: str, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
    """Raise ScanReadError for what stops a file being read before any decoding: a missing
    file, a broken link or link loop, a folder, no read permission, 0 bytes, or a size over
    ``max_bytes``."""
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ScanReadError(path, "symbolic link loop; fix or remove the link") from None
        if error.errno == errno.ENOENT:
            reason = "broken symbolic link" if os.path.islink(path) else "file does not exist"
            raise ScanReadError(path, reason) from None
        raise ScanReadError(path, f"cannot access: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ScanReadError(path, "is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise ScanReadError(path, "permission denied: the file is not readable by this user")
    if info.st_size == 0:
        raise ScanReadError(path, "empty file (0 bytes)")
    if max_bytes and info.st_size > max_bytes:
        raise ScanReadError(path, f"file is {info.st_size / 1e6:.1f} MB, over the size limit of "
                                  f"{max_bytes / 1e6:.1f} MB (preprocess.max_file_mb)")


def load_scan(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_BYTES) -> LoadedScan:
    """Read one scan through MONAI's readers.

    Raises
    ------
    ScanReadError
        The file is missing, unreadable, empty, too large, of an unknown type, or cannot
        be decoded.
    """
    path = str(path)
    from pipeline.dicom import is_dicom_file

    if (case := case_location(path)) is not None:
        return _load_case(path, case.sequences, max_bytes)
    if series_location(path) is not None or (os.path.isfile(path) and is_dicom_file(path)):
        return _load_dicom(path, max_bytes)
    check_file(path, max_bytes)
    for part in scan_files(path)[1:]:
        check_file(str(part), max_bytes)
    if scan_suffix(path) in ITK_SUFFIXES:
        return _load_itk(path)
    if scan_suffix(path) in ARRAY_SUFFIXES:
        return _load_array(path)
    reader = _reader_for(path)
    try:
        image = reader.read(path)
        pages = getattr(image, "n_frames", 1)
        if pages > 1:
            kind = "multi-page TIFF" if scan_suffix(path) in (".tif", ".tiff") else "animated picture"
            raise ScanReadError(path, f"{kind} ({pages} pages): which page is the scan is not known; "
                                      "save the page to screen as a file of its own")
        if hasattr(image, "getexif") and image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            from PIL import ImageOps

            # A photo of a film taken upright but stored sideways: turned as every viewer shows it.
            image = ImageOps.exif_transpose(image)
        if getattr(image, "mode", None) in PICTURE_MODES:
            image = image.convert(PICTURE_MODES[image.mode])
        data, meta = reader.get_data(image)
    except ScanReadError:
        raise
    except PermissionError:
        raise ScanReadError(path, "permission denied: the file is not readable by this user") from None
    except Exception as error:  # decoders raise many types; the reason is what matters
        kind = FORMAT_NAMES.get(scan_suffix(path), "image")
        raise ScanReadError(path, f"cannot decode as {kind}: {type(error).__name__}: {error}") from None
    array = np.asarray(data)
    if array.size == 0:
        raise ScanReadError(path, "image has no pixels")
    is_nibabel = scan_suffix(path) in NIBABEL_SUFFIXES
    if is_nibabel and array.ndim in (3, 4) and array.shape[2:] in ((1,), (1, 1)):
        array = array.reshape(array.shape[:2])  # one slice: a 2D image, as a DICOM frame is
    while is_nibabel and array.ndim > 4 and array.shape[-1] == 1:
        array = array[..., 0]
    is_volume = is_nibabel and array.ndim >= 3
    if is_nibabel and array.ndim == 4 and array.shape[3] > MAX_VOLUMES_PER_FILE:
        raise ScanReadError(path, f"{array.shape[3]} volumes in one file (time points or diffusion directions?): "
                                  f"up to {MAX_VOLUMES_PER_FILE}, read as channels of one scan (a multi-sequence "
                                  "MRI's modalities), are screened; save the volume to screen as a file of its own")
    if is_nibabel and array.ndim > 4:
        raise ScanReadError(path, f"an array of shape {tuple(array.shape)}: a volume, or a few volumes of one "
                                  "region stacked on a fourth axis, is expected")
    spacing = None
    affine = None
    if is_nibabel:
        affine = np.asarray(meta.get("affine")) if meta.get("affine") is not None else None
        spatial = min(array.ndim, 3)
        pixdim = np.asarray(meta.get("pixdim", []), dtype=float)
        if pixdim.size > spatial:
            spacing = tuple(float(v) for v in pixdim[1 : spatial + 1])
        elif affine is not None:  # MGH headers keep the voxel sizes in the affine alone
            spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial], axis=0))
    return LoadedScan(
        array=array,
        source_dtype=str(array.dtype),
        spacing=spacing,
        affine=affine,
        is_volume=is_volume,
    )


def case_members(path: str | os.PathLike) -> list[Path]:
    """The file or series of each of a case's sequences (``7100000/{flair,t1}``: the folder's FLAIR and
    T1 volumes, by :func:`pipeline.sequences.member_name` and ``match_sequences``), in the case's order.

    Raises
    ------
    ScanReadError
        The folder is gone, lacks a sequence, or holds two volumes of one.
    """
    case = case_location(path)
    folder, sequences = case.folder, case.sequences
    if not folder.is_dir():
        raise ScanReadError(path, "the case's folder does not exist")
    volumes: dict[str, list[Path]] = {}
    for entry, known_as in _volume_entries(str(folder), folder.stat().st_mtime_ns):
        if (name := member_name(case, known_as)) is not None:
            volumes.setdefault(name, []).append(entry)
    named = match_sequences(sequences, volumes)[0]
    missing = [sequence for sequence in sequences if sequence not in named]
    if missing:
        found = ", ".join(sorted(entry.name for entries in volumes.values() for entry in entries)) or "none"
        raise ScanReadError(path, f"no {' or '.join(missing)} volume in the case's folder (it holds {found}): the "
                                  f"model reads each case's {', '.join(sequences)} as its channels; add the missing "
                                  "sequence, or leave the case out")
    for sequence in sequences:
        if len(named[sequence]) > 1:
            raise ScanReadError(path, f"{len(named[sequence])} {sequence} volumes in the case's folder ("
                                      f"{', '.join(entry.name for entry in named[sequence])}): keep the one to read, "
                                      "and move the others out of the folder")
    return [named[sequence][0] for sequence in sequences]


@functools.lru_cache(maxsize=8)
def _volume_entries(folder: str, listed_at: int) -> tuple[tuple[Path, str], ...]:
    """The volumes (files, DICOM series and their volumes) of the cases in ``folder`` as it was at
    ``listed_at`` (its modification time: files added or removed change it), each with the name it is known
    by (:func:`volume_location`); listed once for all the cases that share the folder (nnU-Net's flat
    ``imagesTr/``: 43 ms a case for 800 files, listed afresh each time)."""
    located = ((entry, volume_location(entry)) for entry in list_files(folder))
    return tuple((entry, found[1]) for entry, found in located if found is not None and found[0] == Path(folder))


def _load_case(path: str, sequences: list[str], max_bytes: int | None) -> LoadedScan:
    """A case's sequences as the channels of one volume (x, y, z, sequence), each resampled (trilinear) onto
    the finest sequence's voxel grid where its own differs: a 5 mm axial FLAIR onto a 1 mm T1's."""
    members = case_members(path)
    volumes = []
    for sequence, member in zip(sequences, members):
        try:
            scan = load_scan(member, max_bytes)
        except ScanReadError as error:
            raise ScanReadError(path, f"its {sequence} ({member.name}): {error.reason}") from None
        if not scan.is_volume or scan.array.ndim != 3:
            raise ScanReadError(path, f"its {sequence} ({member.name}) is not one volume (an array of shape "
                                      f"{scan.shape}): each sequence of a case is read as one channel")
        volumes.append(scan)
    finest = min(range(len(volumes)), key=lambda index: np.prod(volumes[index].spacing or (1.0,)))
    grid = volumes[finest]
    arrays = []
    for sequence, member, scan in zip(sequences, members, volumes):
        if scan.shape == grid.shape and (grid.affine is None or scan.affine is None
                                         or np.allclose(scan.affine, grid.affine, atol=1e-3)):
            arrays.append(scan.array)
        elif grid.affine is None or scan.affine is None:
            raise ScanReadError(path, f"its {sequence} ({member.name}, {scan.shape}) has another shape than its "
                                      f"{sequences[finest]} ({grid.shape}) and no geometry to resample it by")
        else:
            from nibabel import Nifti1Image
            from nibabel.processing import resample_from_to

            # outside its field of view a sequence reads as its own background (its lowest value), not 0: a CT's
            # air is -1000
            moved = resample_from_to(Nifti1Image(np.asarray(scan.array, dtype=np.float32), scan.affine),
                                     (grid.shape, grid.affine), order=1, cval=float(np.min(scan.array)))
            arrays.append(np.asarray(moved.dataobj))
    dtype = arrays[0].dtype if all(array.dtype == arrays[0].dtype for array in arrays) else np.float32
    stacked = np.stack([np.asarray(array, dtype=dtype) for array in arrays], axis=-1)
    return LoadedScan(array=stacked, source_dtype=volumes[0].source_dtype, spacing=grid.spacing, affine=grid.affine,
                      is_volume=True, info=volumes[0].info)


def series_slices(folder: Path, uid: str | None, volume: str | None = None) -> list:
    """The DICOM headers of the slices of series ``uid`` in ``folder`` (of its one series where
    ``uid`` is None), in file-name order: what the series' volume is made of; of its ``volume`` only
    where it holds several (:func:`pipeline.dicom.series_volumes`).

    A folder's headers are read once for all its series (an export of 60 series of 40 slices in one
    folder took 60 s to ingest, reading every header for each series): kept while the folder lists the
    same files and the series' own slices are unchanged."""
    folder = Path(folder)

    def members() -> list:
        return [(header, stamp) for header, stamp in _folder_slices(str(folder), folder.stat().st_mtime_ns)
                if uid is None or header.series_uid == uid]

    found = members()
    if any(_stamp(header.path) != stamp for header, stamp in found):  # a slice written again in place
        _folder_slices.cache_clear()
        found = members()
    headers = [header for header, _ in found]
    if volume is None:
        return headers
    from pipeline import dicom

    named = dict(dicom.series_volumes(headers))
    if volume not in named:
        raise dicom.DicomError(f"the series has no volume {volume!r} (it has {', '.join(named) or 'one'}): the "
                               "folder has changed since it was listed")
    return named[volume]


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


@functools.lru_cache(maxsize=4)
def _folder_slices(folder: str, listed_at: int) -> tuple:
    """(header, (mtime, size)) of each DICOM slice in ``folder``, in file-name order, as the folder was
    at ``listed_at`` (its modification time: files added or removed change it)."""
    from pipeline import dicom

    slices = []
    for item in sorted(Path(folder).iterdir()):
        if item.is_file() and not is_system_file(item.name) and dicom.is_dicom_file(item):
            stamp = _stamp(str(item))
            try:
                header = dicom.read_header(item)
            except dicom.DicomError:
                continue  # not part of any series; scored on its own
            if header.is_slice:
                slices.append((header, stamp))
    return tuple(slices)


def _load_dicom(path: str, max_bytes: int | None) -> LoadedScan:
    from pipeline import dicom

    location = series_location(path)
    try:
        if location is None:
            check_file(path, max_bytes)
            array, spacing, affine, is_volume = dicom.read_file(path)
            header = dicom.read_header(path)
        else:
            members = series_slices(*location)
            if not members:
                raise dicom.DicomError("no DICOM slices of this series in the folder")
            array, spacing, affine = dicom.read_series([h.path for h in members])
            header, is_volume = members[0], True
    except dicom.DicomError as error:
        raise ScanReadError(path, str(error)) from None
    except PermissionError:
        raise ScanReadError(path, "permission denied: a file of the scan is not readable by this user") from None
    if np.ndim(array) == 4 and np.shape(array)[3] > MAX_VOLUMES_PER_FILE:
        raise ScanReadError(path, f"{np.shape(array)[3]} volumes in one file (time points or diffusion directions?): "
                                  f"up to {MAX_VOLUMES_PER_FILE}, read as channels of one scan (b-values, echoes), "
                                  "are screened; export the volume to screen as a series or file of its own")
    info = {"modality": header.modality, "body_part": header.body_part, "study_uid": header.study_uid,
            "series_uid": header.series_uid, "patient_group": header.patient_group,
            "accession_group": header.accession_group}
    return LoadedScan(array=np.asarray(array), source_dtype=str(np.asarray(array).dtype), spacing=spacing,
                      affine=affine, is_volume=is_volume, info=info)


def list_files(folder: str | os.PathLike, slices_alone: Collection[str] = (), series: bool = True) -> list[Path]:
    """Every entry below ``folder`` that is not a folder and not a system file (see
    :func:`is_system_file`), sorted, links not followed; the slices of a DICOM series are one
    entry, the series' path (see :func:`series_location`), but for a series one of whose slices'
    real paths is in ``slices_alone``, and for every series where ``series`` is False: its slices
    are entries each (a labels file that labels CT slices one by one, as RSNA's intracranial
    haemorrhage labels do, makes each slice a scan, and a 2D model scores slices).

    Scoring reports a row for each of them, so nothing in a folder is silently skipped;
    :func:`system_files` lists what this leaves out.
    """
    files = [path for path in _walk(folder)[0] if volume_header(path) is None]  # read with their header
    return _collapse_series(Path(folder), files, frozenset(slices_alone)) if series else files


def _collapse_series(root: Path, files: list[Path], slices_alone: frozenset[str]) -> list[Path]:
    """Replace the slices of each DICOM series (2+ positioned single-frame files of one
    SeriesInstanceUID in one folder) by the series' path, but for series with a slice in
    ``slices_alone``."""
    from pipeline import dicom

    series: dict[tuple[Path, str], list[Path]] = {}
    headers = {}
    for path in files:
        if dicom.is_dicom_file(path):
            try:
                header = dicom.read_header(path)
            except dicom.DicomError:
                continue
            if header.is_slice and header.series_uid:
                series.setdefault((path.parent, header.series_uid), []).append(path)
                headers[path] = header
    series = {key: members for key, members in series.items() if len(members) >= 2}
    labelled_alone = [key for key, members in series.items()
                      if slices_alone and any(os.path.realpath(path) in slices_alone for path in members)]
    if labelled_alone:
        log.info("%d DICOM series whose slices the labels name one by one: each of their %d slices is a scan",
                 len(labelled_alone), sum(len(series.pop(key)) for key in labelled_alone))
    if not series:
        return files
    members = {path for group in series.values() for path in group}
    per_folder: dict[Path, int] = {}
    for folder, _ in series:
        per_folder[folder] = per_folder.get(folder, 0) + 1
    entries = [path for path in files if path not in members]
    for (folder, uid), paths in series.items():
        alone = per_folder[folder] == 1 and folder != root
        try:
            volumes = [name for name, _ in dicom.series_volumes([headers[path] for path in paths])]
        except dicom.DicomError:
            volumes = [""]  # read as one, and reported as the error it is
        for volume in volumes:
            if not volume:
                entries.append(folder if alone else folder / f"#{uid}")
            else:  # a diffusion series' b-values, echoes, time points: a scan each
                entries.append(folder / (f"@{volume}" if alone else f"#{uid}@{volume}"))
    return sorted(entries)


def system_files(folder: str | os.PathLike) -> list[str]:
    """The system files below ``folder`` (relative paths), which every stage skips and counts."""
    return _walk(folder)[1]


def _walk(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    folder = Path(folder)
    if folder.is_file():
        raise FileNotFoundError(f"{folder} is a file: the stages read a folder of scans; give the folder it is in, "
                                "or put the scan in a folder of its own")
    if not folder.is_dir():
        raise FileNotFoundError(f"scan folder {folder} does not exist or is not a folder")
    found, skipped = [], []
    bids = (folder / "dataset_description.json").is_file()
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            aside = is_system_file(relative) or (bids and _bids_aside(relative))
            (skipped.append(relative) if aside else found.append(path))
    return sorted(found), sorted(skipped)


def _bids_aside(relative: str) -> bool:
    top, _, rest = relative.partition("/")
    return ((bool(rest) and top.lower() in BIDS_ASIDE_FOLDERS) or relative.lower().endswith((".json", ".tsv"))
            or (not rest and top.lower() in BIDS_METADATA_NAMES))


def spatial_shape_of(shape: str, path: str, spacing: str = "") -> tuple[tuple[int, ...], int]:
    """(spatial shape, channels) of a manifest row from its shape string such as '512x432x3' (and its
    spacing string: a DICOM volume of three or four slices has three spacings, a colour picture none)."""
    return _spatial_shape(str(shape), scan_suffix(path) or "dicom", str(spacing or ""))


def spatial_shapes(frame) -> list[tuple[tuple[int, ...], int]]:
    """:func:`spatial_shape_of` of each row of a manifest-like frame (its shape, path and spacing columns)."""
    spacings = frame["spacing"] if "spacing" in frame else [""] * len(frame)
    return [spatial_shape_of(shape, path, spacing) for shape, path, spacing in zip(frame["shape"], frame["path"],
                                                                                    spacings)]


def _spatial_shape(shape: str, suffix: str, spacing: str = "") -> tuple[tuple[int, ...], int]:
    """(spatial shape, channels) from a manifest shape string such as '512x432x3'."""
    sizes = tuple(int(v) for v in shape.split("x") if v)
    dicom_volume = suffix == "dicom" and (len(sizes) == 4 or (len(sizes) == 3 and spacing.count("x") == 2))
    if suffix in VOLUME_SUFFIXES or (suffix in ARRAY_SUFFIXES and array_is_volume(sizes)) or dicom_volume:
        if len(sizes) == 4:  # a multi-sequence MRI's modalities (an enhanced DICOM's b-values) are its channels
            return sizes[:3], sizes[3]
        return sizes, 1
    if len(sizes) == 3 and sizes[-1] in (3, 4):
        return sizes[:2], sizes[-1]
    return sizes, 1


