"""Synthetic MRI-like head volumes for testing the pipeline on 3D data (``pipeline synth volumes``).

Each volume is a head phantom evaluated in world (RAS, millimetre) coordinates: scalp,
skull, CSF, grey- and white-matter-like tissue and two ventricles, each with its own
intensity; random ellipsoid radii, a smooth random deformation and cortical folding make
every head different.  The head gets a random pose (rotation, translation) and is then
sampled on a voxel grid whose spacing (anisotropic, e.g. 1x1x2 mm) and orientation (RAS,
LPS, LAS, PIR) vary between files.  The data array is sampled *through the file's
affine*, so after reorientation to RAS and resampling to a common spacing all volumes
are alike.  A smooth bias field, Rician noise, a random intensity scale and the storage
type (int16 with a scale slope/intercept, or float32) vary as well.

Abnormal volumes carry one to three roughly spherical lesions (hyper- or hypo-intense,
7-12 mm across at the 32-voxel scale, one in ten subtle) anywhere in the white matter or
the cortical ribbon; healthy ones carry none.  A lesion makes up a few per cent of a head
this coarse, so it must not show in the histogram: hyper-intense lesions (1.17-2.1 x the
white-matter level) stay within the range of the scalp fat (1.6-2.4 x), the brightest
tissue of a T1 image, and the amounts of fat, white matter and bias-field shading vary
more between heads than one lesion changes them.  So a
logistic regression on global intensity statistics stays near chance
(``tests/test_volumes.py``).

Everything is deterministic for a seed: file ``i`` uses ``numpy.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.orientations import axcodes2ornt

from pipeline.io import write_csv, write_json

log = logging.getLogger("pipeline.synth")

# Bumped whenever a change makes a seed give different volumes; written to generator.json
# so that a set made by an older generator is recognised (2: gentler folds, larger lesions;
# 3: hyper-intense lesions brighter than white matter, bright scalp fat, lesions anywhere in the brain).
GENERATOR_VERSION = 3
ORIENTATIONS = ("RAS", "LPS", "LAS", "PIR")
# voxel spacing (mm) per array axis; the phantom is sized for 1 mm voxels at ``size``
SPACINGS = ((1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (2.0, 1.0, 1.0), (0.8, 0.8, 1.5), (1.2, 1.2, 1.2))
DTYPES = ("int16", "float32")
CLASSES = ("healthy", "abnormal")


@dataclass
class Volume:
    """One generated volume: the stored array, its affine and how it is stored."""

    data: np.ndarray  # stored values (int16 or float32)
    affine: np.ndarray
    slope: float
    inter: float
    orientation: str
    spacing: tuple[float, float, float]
    lesion_contrasts: tuple[float, ...]  # intensity factor of each lesion (> 1 hyper, < 1 hypo)
    subtle_lesions: int

    @property
    def lesions(self) -> int:
        return len(self.lesion_contrasts)

    def to_nifti(self) -> nib.Nifti1Image:
        image = nib.Nifti1Image(self.data, self.affine, dtype=self.data.dtype)
        image.header.set_xyzt_units("mm")
        image.header.set_qform(self.affine, code=1)
        image.header.set_sform(self.affine, code=1)
        if self.data.dtype == np.int16:
            image.header.set_slope_inter(self.slope, self.inter)
        return image

    def scaled(self) -> np.ndarray:
        """The values a reader should return (stored * slope + inter)."""
        return self.data.astype(np.float64) * self.slope + self.inter


def orientation_affine(codes: str, spacing, shape) -> np.ndarray:
    """Axis-aligned affine for orientation ``codes`` whose voxel grid is centred on world 0."""
    ornt = axcodes2ornt(tuple(codes))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world_axis, flip) in enumerate(ornt):
        affine[int(world_axis), axis] = flip * spacing[axis]
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _rotation(angles) -> np.ndarray:
    result = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i] = rot[j, j] = math.cos(angle)
        rot[i, j], rot[j, i] = -math.sin(angle), math.sin(angle)
        result = rot @ result
    return result


def _step(distance: np.ndarray, width: float) -> np.ndarray:
    """Soft inside indicator: 1 well inside (distance < 0), 0 outside; ``width`` in the same units."""
    return 0.5 * (1.0 - np.tanh(distance / (2.0 * width)))


def _contrast(rng: np.random.Generator) -> tuple[float, bool]:
    """Intensity factor of a lesion, hyper- or hypo-intense with equal odds, and whether it is subtle.

    A hyper-intense lesion is its own tissue, ``factor`` x the head's white-matter level; a
    hypo-intense one darkens the tissue it lies in by ``factor``.  Nine in ten are clear
    (x1.5-2.1 or x0.25-0.65); one in ten is subtle (x1.17-1.5 or x0.65-0.85), so a few
    abnormal heads stay hard to tell from healthy ones.
    """
    subtle = bool(rng.random() < 0.1)
    if rng.random() < 0.5:
        return float(rng.uniform(1.17, 1.5) if subtle else rng.uniform(1.5, 2.1)), subtle
    return float(rng.uniform(0.65, 0.85) if subtle else rng.uniform(0.25, 0.65)), subtle


def paint_lesion(value: np.ndarray, mask: np.ndarray, contrast: float, white: float) -> np.ndarray:
    """Intensities with a lesion of ``contrast`` painted where ``mask`` (0-1) is set.

    Hyper-intense (``contrast > 1``): the lesion is its own tissue at ``contrast`` x the
    white-matter level, so it is brighter than every brain tissue it covers.  Hypo-intense:
    the covered tissue is darkened by ``contrast``.
    """
    if contrast > 1:
        return value + (white * contrast - value) * mask
    return value * (1 + (contrast - 1) * mask)


def _lesion_semi_axes(rng: np.random.Generator, unit: float) -> np.ndarray:
    """Semi-axes (mm) of a lesion: 3.6-6 mm at the 32-voxel scale, slightly elongated."""
    return rng.uniform(3.6, 6.0) * unit * rng.uniform(0.8, 1.2, 3)


def make_volume(rng: np.random.Generator, size: int = 32, abnormal: bool = False, *,
                orientation: str | None = None, spacing=None, dtype: str | None = None,
                field_of_view=None) -> Volume:
    """One head-like phantom sampled on a random grid (see the module docstring).

    ``orientation``, ``spacing``, ``dtype`` and ``field_of_view`` (mm, 3 values) replace the
    random choices (which are drawn all the same, so the same ``rng`` state gives the
    same head), for tests that store one object in several ways.
    """
    unit = size / 32.0  # millimetres of the phantom scale with ``size``
    drawn_orientation = ORIENTATIONS[rng.integers(len(ORIENTATIONS))]
    drawn_spacing = SPACINGS[rng.integers(len(SPACINGS))]
    drawn_fov = size * rng.uniform(1.0, 1.15, 3)
    orientation = orientation or drawn_orientation
    spacing = tuple(float(v) for v in spacing) if spacing is not None else drawn_spacing
    field_of_view = np.asarray(field_of_view, dtype=float) if field_of_view is not None else drawn_fov
    shape = tuple(max(4, int(round(f / s))) for f, s in zip(field_of_view, spacing))
    affine = orientation_affine(orientation, spacing, shape)

    # world coordinates (mm, RAS) of every voxel, (3, N)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)

    # pose: head coordinates p = R^T (x - t)
    rotation = _rotation(np.radians(rng.uniform(-12, 12, 3)))
    translation = rng.uniform(-1.5, 1.5, 3) * unit
    p = rotation.T.astype(np.float32) @ (world - translation[:, None].astype(np.float32))

    # smooth random deformation: a few low-frequency sinusoids per axis
    waves = 4
    freq = rng.normal(0, 1, (waves, 3)) / (9.0 * unit)
    phase = rng.uniform(0, 2 * np.pi, (waves, 1))
    amp = rng.normal(0, 0.7 * unit, (3, waves))
    p = p + (amp @ np.sin(freq @ p + phase)).astype(np.float32)

    radii = np.array([11.0, 13.5, 12.0]) * unit * rng.uniform(0.9, 1.08, 3)
    q = p / radii[:, None].astype(np.float32)
    r = np.sqrt((q * q).sum(0))
    edge = 0.6 / (radii.mean())  # soft edges about half a millimetre wide, in normalised radius

    # Cortical folding on the grey/white boundary.  Gentle: with folds as deep as a lesion is
    # wide (amplitude 0.035), a white-matter-bright lesion in the ribbon looked like one more
    # fold, and no method told hyper-intense-only heads from healthy ones (benchmarks/volumes.md).
    fold_freq = rng.normal(0, 1, (6, 3)) / (1.6 * unit)
    fold_phase = rng.uniform(0, 2 * np.pi, (6, 1))
    fold = (0.014 * np.sin(fold_freq @ p + fold_phase)).sum(0).astype(np.float32)

    # Tissue intensities (T1-like: fat > WM > GM > CSF > bone), jittered per head.  The scalp
    # fat is the brightest tissue and its thickness varies (the brain fills 78-92% of the
    # head's radius), as does the white-matter volume: so the share of bright voxels varies
    # between healthy heads more than a hyper-intense lesion changes it.
    skull, csf, grey, white = np.array([0.12, 0.22, 0.52, 0.8]) * rng.uniform(0.9, 1.1, 4)
    scalp = white * rng.uniform(1.6, 2.4)
    brain_fraction = rng.uniform(0.78, 0.92)
    thresholds = np.array([1.0, rng.uniform(0.89, 0.94) * brain_fraction, 0.84 * brain_fraction,
                           0.79 * brain_fraction]) + rng.normal(0, 0.01, 4)
    white_radius = rng.uniform(0.45, 0.68) * brain_fraction
    value = (
        scalp * _step(r - thresholds[0], edge)
        + (skull - scalp) * _step(r - thresholds[1], edge)
        + (csf - skull) * _step(r - thresholds[2], edge)
        + (grey - csf) * _step(r - thresholds[3], edge)
        + (white - grey) * _step(r + fold - white_radius, edge)
    )
    brain = _step(r - thresholds[3], edge)

    # lateral ventricles, their size varying a lot between heads
    ventricle_scale = rng.uniform(0.6, 1.6)
    ventricle_radii = np.array([0.07, 0.2, 0.11]) * ventricle_scale
    ventricles = np.zeros_like(r)
    for side in (-1, 1):
        centre = np.array([side * rng.uniform(0.08, 0.13), rng.uniform(-0.05, 0.08), rng.uniform(0.0, 0.12)])
        d = (q - centre[:, None].astype(np.float32)) / ventricle_radii[:, None].astype(np.float32)
        ventricles = np.maximum(ventricles, _step(np.sqrt((d * d).sum(0)) - 1.0, edge / ventricle_radii.mean()))
    value = value * (1 - ventricles) + csf * ventricles

    # Abnormal heads carry one to three lesions centred anywhere from the deep white matter
    # to the cortical ribbon (not only in the ribbon: there a bright lesion next to the
    # bright scalp looked like thicker fat).  Version 2 capped hyper-intense lesions at the
    # white-matter level, which left them invisible in white matter and no method found them.
    lesions = int(rng.integers(1, 4)) if abnormal else 0
    contrasts, subtle_count = [], 0
    for _ in range(lesions):
        semi_axes = _lesion_semi_axes(rng, unit)
        direction = rng.normal(0, 1, 3)
        depth = rng.uniform(0.3 * brain_fraction, thresholds[3])
        centre_mm = (direction / np.linalg.norm(direction) * depth * radii).astype(np.float32)
        d = (p - centre_mm[:, None]) / semi_axes[:, None].astype(np.float32)
        mask = _step(np.sqrt((d * d).sum(0)) - 1.0, 0.5 / semi_axes.min()) * brain
        contrast, subtle = _contrast(rng)
        contrasts.append(round(contrast, 4))
        subtle_count += subtle
        value = paint_lesion(value, mask, contrast, white)

    # smooth multiplicative bias field (quadratic in world coordinates)
    x = world / (size / 2)
    basis = np.concatenate([x, x * x - 1 / 3, x[[0]] * x[[1]], x[[1]] * x[[2]], x[[0]] * x[[2]]])
    bias = np.exp(rng.normal(0, 0.2, basis.shape[0]).astype(np.float32) @ basis)
    value = value * bias

    # intensity scale and Rician noise
    scale = 10 ** rng.uniform(0.0, 3.0)
    sigma = rng.uniform(0.01, 0.05)
    storage = np.random.default_rng(rng.integers(2**63))  # storage draws independent of the grid size
    noise = rng.normal(0, sigma, (2, value.size)).astype(np.float32)
    value = np.sqrt((value + noise[0]) ** 2 + noise[1] ** 2) * scale
    value = value.reshape(shape)

    drawn_dtype = DTYPES[storage.integers(len(DTYPES))]
    dtype = dtype or drawn_dtype
    inter = float(np.round(storage.uniform(-0.05, 0.05) * scale, 3)) if storage.random() < 0.5 else 0.0
    target_max = storage.uniform(2000, 30000)
    if dtype == "int16":
        slope = float((value.max() - inter) / target_max)
        data = np.clip(np.round((value - inter) / slope), -32768, 32767).astype(np.int16)
    else:
        slope, inter = 1.0, 0.0
        data = value.astype(np.float32)
    return Volume(data, affine, slope, inter, orientation, tuple(spacing), tuple(contrasts), subtle_count)


def generate_volumes(
    out: str | Path, n: int, abnormal_fraction: float = 0.5, seed: int = 0, size: int = 32,
    test_fraction: float = 0.0, progress: bool = True,
) -> Path:
    """Write ``n`` volumes ``vol_00000.nii.gz``... and ``labels.csv`` (file,label,split) into ``out``.

    ``round(n * abnormal_fraction)`` volumes are abnormal, in a seeded random order.  A
    stratified ``test_fraction`` of each class gets split ``test``, the rest ``train``.
    ``truth.csv`` adds how each file was made: its lesions (how many, how many hyper-,
    hypo-intense and subtle, each one's intensity factor), orientation, spacing, dtype.
    Returns the path of ``labels.csv``.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if not 0.0 <= abnormal_fraction <= 1.0 or not 0.0 <= test_fraction < 1.0:
        raise ValueError("abnormal fraction must be in [0, 1] and test fraction in [0, 1)")
    if size < 8:
        raise ValueError(f"--size must be at least 8, got {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 2**31]).permutation(n)
    abnormal = np.zeros(n, dtype=bool)
    abnormal[order[: int(round(n * abnormal_fraction))]] = True
    split = np.array(["train"] * n, dtype=object)
    for is_abnormal in (False, True):
        members = np.flatnonzero(abnormal == is_abnormal)
        members = np.random.default_rng([seed, 2**31 + 1 + int(is_abnormal)]).permutation(members)
        split[members[: int(round(len(members) * test_fraction))]] = "test"

    from tqdm import tqdm

    rows, truth = [], []
    for i in tqdm(range(n), desc="synth volumes", disable=not progress, leave=False):
        volume = make_volume(np.random.default_rng([seed, i]), size=size, abnormal=bool(abnormal[i]))
        name = f"vol_{i:05d}.nii.gz"
        nib.save(volume.to_nifti(), out / name)
        label = CLASSES[int(abnormal[i])]
        rows.append({"file": name, "label": label, "split": split[i]})
        contrasts = volume.lesion_contrasts
        truth.append({"file": name, "label": label, "lesions": volume.lesions,
                      "hyper_lesions": sum(c > 1 for c in contrasts), "hypo_lesions": sum(c < 1 for c in contrasts),
                      "subtle_lesions": volume.subtle_lesions,
                      "lesion_contrasts": ";".join(f"{c:g}" for c in contrasts),
                      "orientation": volume.orientation,
                      "spacing": "x".join(f"{s:g}" for s in volume.spacing),
                      "shape": "x".join(str(s) for s in volume.data.shape), "dtype": str(volume.data.dtype),
                      "slope": volume.slope, "inter": volume.inter})
    write_csv(out / "truth.csv", pd.DataFrame(truth))
    write_json(out / "generator.json", {"generator_version": GENERATOR_VERSION, "n": n, "seed": seed, "size": size,
                                        "abnormal_fraction": abnormal_fraction, "test_fraction": test_fraction})
    labels = out / "labels.csv"
    write_csv(labels, pd.DataFrame(rows, columns=["file", "label", "split"]))
    log.info("wrote %d volumes (%d abnormal, %d test) to %s", n, int(abnormal.sum()),
             int((split == "test").sum()), out)
    return labels


def stale_set_warning(folder: str | Path) -> str | None:
    """A message when ``folder`` was generated by another generator version (or before versions)."""
    stamp = Path(folder) / "generator.json"
    try:
        version = json.loads(stamp.read_text()).get("generator_version") if stamp.exists() else None
    except (ValueError, AttributeError) as error:  # not JSON, or not a JSON object
        return f"{stamp} is unreadable ({error}); the generator version of {folder} is unknown."
    if version == GENERATOR_VERSION:
        return None
    return (f"{folder} was generated by generator version {version or 'unknown (before 2)'}, not "
            f"{GENERATOR_VERSION}: its volumes differ from what the current generator makes. Delete it and "
            "its data_manifests/ files to regenerate, or keep it knowingly.")


# what ``data.dataset = "synth_volumes"`` generates when data.scans has no labels.csv
SYNTH_VOLUMES_DATASET = {"n": 1400, "abnormal_fraction": 0.5, "seed": 0, "size": 32, "test_fraction": 0.2}
