"""Usage: python -m benchmarks.multi_sequence_set OUT N SEED [CONTRAST] [--first-sequence]

Generated brain MRI in the Medical Segmentation Decathlon's layout (``Task01_BrainTumour/imagesTr/
BRATS_NNN.nii.gz``: FLAIR, T1, T1 with contrast and T2 of one head on a fourth axis, 48 x 48 x 32 at
1.5 x 1.5 x 3 mm; ``labelsTr/`` masks, ``dataset.json``) with a ``labels.csv`` of tumour or healthy, half
each (the Decathlon's every case has a tumour: a screening set needs healthy heads too). A tumour shows
in every sequence, faintly (CONTRAST, default 0.25, of the tissue's intensity, against noise of 0.2 of
it): bright in FLAIR and T2, dark in T1, an enhancing rim in T1 with contrast. With ``--first-sequence``
each file holds the FLAIR alone, of the same heads (what splitting the files to single volumes gives)."""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

SHAPE = (48, 48, 32)
SPACING = (1.5, 1.5, 3.0)
SEQUENCES = ("FLAIR", "T1w", "t1gd", "T2w")
# The tissue's intensity in each sequence (grey matter, white matter, fluid), as scanners' units differ.
TISSUE = {"FLAIR": (400, 320, 60), "T1w": (600, 800, 150), "t1gd": (650, 850, 160), "T2w": (900, 700, 1600)}
TUMOUR_SIGN = {"FLAIR": 1.0, "T1w": -0.6, "t1gd": 1.0, "T2w": 1.0}

args = [a for a in sys.argv[1:] if not a.startswith("--")]
out, n, seed = Path(args[0]), int(args[1]), int(args[2])
contrast = float(args[3]) if len(args) > 3 else 0.25
first_only = "--first-sequence" in sys.argv
rng = np.random.default_rng(seed)
root = out / "Task01_BrainTumour"
for folder in ("imagesTr", "labelsTr"):
    (root / folder).mkdir(parents=True, exist_ok=True)
grid = np.stack(np.meshgrid(*[np.arange(s) * d for s, d in zip(SHAPE, SPACING)], indexing="ij"), -1)
centre = np.array([(s - 1) * d / 2 for s, d in zip(SHAPE, SPACING)])
rows = ["file,label"]
for case in range(n):
    tumour = case % 2 == 1
    radii = centre * rng.uniform(0.75, 0.9, 3)
    head = (((grid - centre) / radii) ** 2).sum(-1) < 1
    white = gaussian_filter(rng.normal(size=SHAPE), 2.0) > 0.0
    fluid = (((grid - centre) / (radii * 0.25)) ** 2).sum(-1) < 1  # the ventricles
    mask = np.zeros(SHAPE, np.uint8)
    if tumour:
        where = centre + rng.uniform(-0.45, 0.45, 3) * radii
        size = rng.uniform(6, 10)
        distance = np.sqrt((((grid - where) / size) ** 2).sum(-1))
        mask = ((distance < 1) & head).astype(np.uint8)
    volumes = []
    for name in SEQUENCES:  # drawn for every sequence either way: --first-sequence gives the same heads' FLAIR
        grey, whites, csf = TISSUE[name]
        tissue = np.where(fluid, csf, np.where(white, whites, grey)).astype(np.float32)
        scale = float(np.mean(TISSUE[name][:2]))
        if tumour:
            shape = (np.abs(distance - 0.8) < 0.2) if name == "t1gd" else (distance < 1)  # an enhancing rim
            tissue = tissue + TUMOUR_SIGN[name] * contrast * scale * (shape & head)
        volume = (tissue + rng.normal(0, 0.2 * scale, SHAPE)) * head
        volumes.append(np.clip(volume, 0, None).astype(np.float32))
    affine = np.diag([*SPACING, 1.0])
    name = f"BRATS_{case:03d}.nii.gz"
    nib.save(nib.Nifti1Image(volumes[0] if first_only else np.stack(volumes, -1), affine),
             root / "imagesTr" / name)
    nib.save(nib.Nifti1Image(mask, affine), root / "labelsTr" / name)
    rows.append(f"imagesTr/{name},{'tumour' if tumour else 'healthy'}")
(root / "labels.csv").write_text("\n".join(rows) + "\n")
(root / "dataset.json").write_text(json.dumps({
    "name": "BRATS (generated)", "tensorImageSize": "4D",
    "modality": {str(i): name for i, name in enumerate(SEQUENCES[:1] if first_only else SEQUENCES)},
    "labels": {"0": "background", "1": "tumour"}, "numTraining": n}, indent=1))
print(root)
