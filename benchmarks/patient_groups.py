"""Usage: python -m benchmarks.patient_groups OUT

Whether a patient's (or a lesion's) images stay on one side of the split where only the data's own
naming says whose they are, on generated downloads in public sets' layouts:

- ``chest_xray/``, as Kaggle's Kermany chest X-rays: ``train/NORMAL/IM-0115-0001.jpeg``,
  ``train/PNEUMONIA/person1_bacteria_1.jpeg`` and ``person1_virus_6.jpeg``, ``test/`` and ``val/``
  beside ``train/``, 1 to 4 images a child (PneumoniaMNIST pictures: no patient shows in the pixels);
- ``ISIC_2019_Training_Input/`` with ``ISIC_2019_Training_GroundTruth.csv`` (one-hot classes) and
  ``ISIC_2019_Training_Metadata.csv`` (``lesion_id``; blank for a quarter of the images) beside it,
  1 to 3 photos a lesion;
- ``OCT2017/``, as Kermany's retinal OCT set: ``train/CNV/CNV-1016042-1.jpeg`` and
  ``train/DRUSEN/DRUSEN-1016042-1.jpeg``, 1 to 4 images a patient, a third of the patients with
  images in two class folders (a finding in each eye);
- ``export/``, a hospital's export of radiographs by patient: a folder per patient named by its record
  number (``4412017/1.png``), 1 to 4 images a patient, labelled by ``labels.csv`` beside the folder
  (``file,finding``), which names no patient.

Each is ingested and split as ``pipeline run`` does (30 labelled and 30 calibration scans a class,
seed 0); the script counts the patients and lesions of several images whose images the split put in
more than one subset (labelled, calibration, unlabelled, test), by the generator's own record.
"""
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.stages.ingest import ingest
from pipeline.stages.split import make_split

PNEUMONIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist"
CLASSES_2019 = "MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK".split(",")


def kermany(out: Path, per_class: int, seed: int = 0) -> dict[str, str]:
    """The chest_xray/ folder; returns {scan id: patient}."""
    rng = random.Random(seed)
    labels = pd.read_csv(PNEUMONIA / "labels.csv")
    patients, person = {}, 1
    for split_name, share in (("train", 1.0), ("test", 0.25), ("val", 0.05)):
        for label, folder in (("normal", "NORMAL"), ("pneumonia", "PNEUMONIA")):
            files = labels[(labels["split"] == split_name) & (labels["label"] == label)]["file"].tolist()
            files = files[: max(4, int(per_class * share))]
            while files:
                images = rng.randint(1, 4)
                taken, files = files[:images], files[images:]
                for image, file in enumerate(taken, start=1):
                    if label == "normal":
                        name = f"IM-{person:04d}-{image:04d}.jpeg"
                    else:
                        name = f"person{person}_{rng.choice(['bacteria', 'virus'])}_{person * 10 + image}.jpeg"
                    scan = Path(split_name) / folder / name
                    (out / scan).parent.mkdir(parents=True, exist_ok=True)
                    Image.open(PNEUMONIA / file).convert("L").save(out / scan, quality=95)
                    patients[scan.as_posix()] = f"child {person}"
                person += 1
    return patients


def isic_2019(out: Path, n: int, seed: int = 0) -> dict[str, str]:
    """ISIC_2019_Training_Input/ and its two tables beside it; returns {scan id: lesion}."""
    rng, pixels = random.Random(seed), np.random.default_rng(seed)
    images = out / "ISIC_2019_Training_Input"
    images.mkdir(parents=True, exist_ok=True)
    truth, meta, lesions = ["image," + ",".join(CLASSES_2019)], ["image,age_approx,anatom_site_general,lesion_id,sex"], {}
    index = lesion = 0
    while index < n:
        diagnosis = "MEL" if rng.random() < 0.3 else "NV"
        named = index >= n // 4  # the first quarter as ISIC 2019's BCN images: no lesion id
        base = pixels.integers(60, 200, 3)
        for _ in range(rng.choice([1, 1, 2, 3]) if named else 1):
            name = f"ISIC_{index:07d}"
            photo = base + pixels.normal(0, 25, (64, 64, 3)) + (40 if diagnosis == "MEL" else 0)
            Image.fromarray(photo.clip(0, 255).astype("uint8")).save(images / f"{name}.jpg", quality=90)
            truth.append(name + "," + ",".join("1.0" if c == diagnosis else "0.0" for c in CLASSES_2019))
            meta.append(f"{name},{rng.choice([35, 50, 65])}.0,anterior torso,{f'HAM_{lesion:07d}' if named else ''},"
                        f"{rng.choice(['male', 'female'])}")
            lesions[f"{name}.jpg"] = f"lesion {lesion}"
            index += 1
        lesion += 1
    (out / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(truth) + "\n")
    (out / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(meta) + "\n")
    return lesions


def oct2017(out: Path, patients: int, seed: int = 0) -> dict[str, str]:
    """The OCT2017/ folder (PneumoniaMNIST pictures, 4 classes); returns {scan id: patient}."""
    rng = random.Random(seed)
    files = pd.read_csv(PNEUMONIA / "labels.csv")["file"].tolist()
    whose, seen = {}, set()
    for patient in range(1_000_000, 1_000_000 + patients):
        classes = rng.sample(["CNV", "DME", "DRUSEN", "NORMAL"], 2 if rng.random() < 1 / 3 else 1)
        for image in range(1, rng.randint(len(classes), 4) + 1):
            folder = classes[image % len(classes)]
            scan = Path("train") / folder / f"{folder}-{patient}-{image}.jpeg"
            (out / scan).parent.mkdir(parents=True, exist_ok=True)
            picture = Image.open(PNEUMONIA / files.pop()).convert("L")
            while picture.tobytes() in seen:  # the set holds a few twins, which ingest would report
                picture = Image.open(PNEUMONIA / files.pop()).convert("L")
            seen.add(picture.tobytes())
            picture.save(out / scan, quality=95)
            whose[scan.as_posix()] = f"patient {patient}"
    return whose


def mrn_export(out: Path, patients: int, seed: int = 0) -> dict[str, str]:
    """The export/ folder and labels.csv beside it (PneumoniaMNIST pictures); returns {scan id: patient}."""
    rng = random.Random(seed)
    pictures = pd.read_csv(PNEUMONIA / "labels.csv").sample(frac=1.0, random_state=seed).itertuples()
    rows, whose, seen = [], {}, set()
    for patient in range(4_412_000, 4_412_000 + patients):
        for image in range(1, rng.randint(1, 4) + 1):
            picture = None
            while picture is None or picture.tobytes() in seen:  # the set holds a few twins, which ingest reports
                drawn = next(pictures)
                picture = Image.open(PNEUMONIA / drawn.file).convert("L")
            seen.add(picture.tobytes())
            scan = f"{patient}/{image}.png"
            (out / "export" / scan).parent.mkdir(parents=True, exist_ok=True)
            picture.save(out / "export" / scan)
            rows.append({"file": scan, "finding": drawn.label})
            whose[scan] = f"patient {patient}"
    pd.DataFrame(rows).to_csv(out / "labels.csv", index=False)
    return whose


def spanning(manifest_dir: Path, scans: Path, whose: dict[str, str], **options) -> str:
    found = ingest(scans, manifest_dir=manifest_dir, workers=1, **options)
    split_file = make_split(found.manifest_path, labels_per_class=30, calibration_per_class=30, selection="random",
                            seed=0)
    subsets = pd.read_csv(split_file, keep_default_na=False)
    subsets["whose"] = subsets["scan_id"].map(whose)
    several = subsets.groupby("whose").filter(lambda rows: len(rows) > 1)
    across = int((several.groupby("whose")["subset"].nunique() > 1).sum())
    grouped = int((found.manifest["group"] != "").sum())
    return (f"{len(subsets)} scans, {grouped} with a group in the manifest; {several['whose'].nunique()} of several "
            f"images, {across} of them in more than one subset")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    chest = kermany(out / "chest_xray", 300)
    print("Kermany-shaped chest_xray/:", spanning(out / "manifests", out / "chest_xray", chest, class_subfolders=True))
    lesions = isic_2019(out / "isic", 400)
    print("ISIC 2019-shaped download:", spanning(out / "manifests", out / "isic" / "ISIC_2019_Training_Input", lesions,
                                                 labels=out / "isic" / "ISIC_2019_Training_GroundTruth.csv"))
    retinas = oct2017(out / "OCT2017", 300)
    print("OCT2017-shaped folder:", spanning(out / "manifests", out / "OCT2017", retinas, class_subfolders=True))
    records = mrn_export(out / "mrn", 300)
    print("Hospital export by patient folder:", spanning(out / "manifests", out / "mrn" / "export", records,
                                                         labels=out / "mrn" / "labels.csv"))
