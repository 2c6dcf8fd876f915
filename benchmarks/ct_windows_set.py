"""Usage: python -m benchmarks.ct_windows_set OUT N SEED [lung]

Semi-real head CT slices: the development panel's real head CT series (dicom_ct_head), slices 6-28,
each drawn many times with a random flip, rotation (+-15 deg) and shift, at 256x256 (0.98 mm), 40% of
them with a bleed: a smooth blob 15-35 mm across inside the brain, 25-45 HU above it (acute blood
60-80 HU against brain 30-40). Written as CT DICOM (HU stored with intercept -1024, the header's
brain window 35/100); group = the base slice, so a slice's draws stay on one side of the split."""
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from pipeline.reading import load_scan

out, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# "lung": the brain's voxels moved 900 HU down (parenchyma near -865 HU, its real texture kept) and the
# blob 250-400 HU above them (ground glass), to see what the windows cost where lungs are the finding
lung = len(sys.argv) > 4 and sys.argv[4] == "lung"
rng = np.random.default_rng(seed)
volume = load_scan(Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom_ct_head" / "GE_series").array
(out / "scans").mkdir(parents=True, exist_ok=True)
rows = ["file,label,group"]
for i in range(n):
    k = int(rng.integers(6, 29))
    hu = volume[:, :, k].copy()
    if rng.random() < 0.5:
        hu = hu[:, ::-1]
    hu = ndimage.rotate(hu, rng.uniform(-15, 15), reshape=False, order=1, cval=-1500)
    hu = ndimage.shift(hu, rng.uniform(-20, 20, 2), order=1, cval=-1500)
    hu = ndimage.zoom(hu, 0.5, order=1)  # 256x256
    tissue = ndimage.binary_erosion((hu > 15) & (hu < 60), iterations=2)
    if lung:
        hu = np.where(ndimage.binary_closing(tissue, iterations=3) & (hu < 100), hu - 900, hu)
    bleed = rng.random() < 0.4
    if bleed:
        brain = ndimage.binary_erosion(tissue, iterations=2)
        inside = np.argwhere(brain)
        if len(inside) == 0:
            bleed = False
        else:
            cy, cx = inside[rng.integers(len(inside))]
            yy, xx = np.mgrid[:256, :256]
            ry, rx = rng.uniform(7.5, 17.5, 2) / 0.98
            blob = ndimage.gaussian_filter((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).astype(float), 1.0)
            hu = hu + blob * (rng.uniform(250, 400) if lung else rng.uniform(25, 45)) * brain
    hu = hu + rng.normal(0, 3, hu.shape)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = "CT", "HEAD"
    ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 256
    ds.PixelSpacing = [0.98, 0.98]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.WindowCenter, ds.WindowWidth = 35, 100
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16).tobytes()
    name = f"ct{i:04d}.dcm"
    ds.save_as(out / "scans" / name, enforce_file_format=True)
    rows.append(f"{name},{'bleed' if bleed else 'normal'},slice{k}")
(out / "scans" / "labels.csv").write_text("\n".join(rows) + "\n")
print(sum(r.endswith("bleed") or ",bleed," in r for r in rows), "bleeds of", n)
