"""Usage: python -m benchmarks.knee_planes_set OUT N_TRAIN N_VALID SEED [AMPLITUDE]

Generated knees in MRNet's layout (``MRNet-v1.0/{train,valid}/{axial,coronal,sagittal}/NNNN.npy``,
16-28 slices of 64 x 64 uint8 a plane, headerless ``train-abnormal.csv``): half are abnormal, and an
abnormal knee's lesion (a small bright blob, AMPLITUDE above a noisy background, default 30) shows in
one or two of its three planes only, as a tear shows in some planes. Every plane takes its knee's label,
so an abnormal knee's healthy planes are labelled abnormal: a case is read by its most probable view."""
import sys
from pathlib import Path

import numpy as np

PLANES = ("axial", "coronal", "sagittal")

out, n_train, n_valid, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
amplitude = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
rng = np.random.default_rng(seed)
root = out / "MRNet-v1.0"
case = 0
for split, n in (("train", n_train), ("valid", n_valid)):
    rows = []
    for _ in range(n):
        abnormal = rng.random() < 0.5
        shown = set(rng.choice(PLANES, size=int(rng.integers(1, 3)), replace=False))
        for plane in PLANES:
            slices = int(rng.integers(16, 29))
            z, y, x = np.mgrid[:slices, :64, :64]
            volume = 60 + 40 * np.exp(-((y - 32) ** 2 + (x - 32) ** 2) / 400.0) + rng.normal(0, 12, (slices, 64, 64))
            if abnormal and plane in shown:
                cz, cy, cx = rng.integers(4, slices - 4), rng.integers(16, 48), rng.integers(16, 48)
                volume += amplitude * np.exp(-((z - cz) ** 2 / 4 + (y - cy) ** 2 / 16 + (x - cx) ** 2 / 16))
            folder = root / split / plane
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{case:04d}.npy", np.clip(volume, 0, 255).astype(np.uint8))
        rows.append(f"{case:04d},{int(abnormal)}")
        case += 1
    (root / f"{split}-abnormal.csv").write_text("\n".join(rows) + "\n")
print(root)
