"""Usage: python -m benchmarks.dcm2niix_export_set TASK OUT [--only KIND] [--thick KIND] [--sites]

A hospital's MRI export converted by dcm2niix: a folder per patient named by record number, each
sequence a file of its own named by its protocol and series number, with its JSON sidecar
(``OUT/export/7100000/t2_tirm_tra_dark-fluid_3.nii.gz`` and ``.json``), and ``OUT/patients.csv``
labelling each patient (``MRN,diagnosis``). Made from a set of ``benchmarks/multi_sequence_set.py``
(TASK: its ``Task01_BrainTumour`` folder), so the same heads can be trained as four files a patient,
as one file (``--only flair``, ``t1``, ``t1_gd`` or ``t2``) or as the Decathlon's four channels a file.
``--thick flair`` writes that sequence at twice the slice thickness (each pair of slices averaged, as a
thick-slice acquisition of the same head), so a patient's files lie on two voxel grids, as a clinical
protocol's 1 mm T1 and 5 mm FLAIR do. ``--sites`` writes the patients of three sites in turn, each naming
the protocols its scanner's way (``SITE_PROTOCOLS``: Siemens', Philips' and GE's usual names).
"""
import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

# The Decathlon file's volumes in order (multi_sequence_set.SEQUENCES), as a Siemens scanner names them
PROTOCOLS = (("flair", "t2_tirm_tra_dark-fluid", 3), ("t1", "t1_mprage_tra", 4), ("t1_gd", "t1_mprage_tra_KM", 7),
             ("t2", "t2_tse_tra", 5))
# The same four protocols as a Philips and a GE site name them (Siemens' are PROTOCOLS')
SITE_PROTOCOLS = ({"flair": "FLAIR_3D_SAG", "t1": "T1W_3D_TFE", "t1_gd": "T1W_3D_TFE_GD", "t2": "T2W_TSE_TRA"},
                  {"flair": "Ax_T2_FLAIR", "t1": "Sag_T1_BRAVO", "t1_gd": "Sag_T1_BRAVO_POST", "t2": "Ax_T2_FSE"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", choices=[kind for kind, _, _ in PROTOCOLS])
    parser.add_argument("--thick", choices=[kind for kind, _, _ in PROTOCOLS])
    parser.add_argument("--sites", action="store_true")
    args = parser.parse_args()
    labels = pd.read_csv(args.task / "labels.csv")
    rows = []
    for index, row in enumerate(labels.itertuples()):
        image = nib.load(args.task / row.file)
        volumes = np.asarray(image.dataobj)
        record = f"{7_100_000 + index * 7}"
        folder = args.out / "export" / record
        folder.mkdir(parents=True, exist_ok=True)
        for channel, (kind, protocol, series) in enumerate(PROTOCOLS):
            if args.only and kind != args.only:
                continue
            site = index % 3 if args.sites else 0
            protocol = SITE_PROTOCOLS[site - 1][kind] if site else protocol
            name = f"{protocol}_{series}"
            volume, affine = volumes[..., channel].astype(np.float32), image.affine.copy()
            if kind == args.thick:
                volume = (volume[..., 0::2][..., : volume.shape[2] // 2] + volume[..., 1::2]) / 2
                affine[:3, 3] += affine[:3, 2] / 2  # the slab's centre lies between the two slices it averages
                affine[:3, 2] *= 2
            nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), folder / f"{name}.nii.gz")
            (folder / f"{name}.json").write_text(json.dumps({"ProtocolName": protocol, "SeriesNumber": series,
                                                             "Modality": "MR", "MagneticFieldStrength": 3}))
        rows.append({"MRN": record, "diagnosis": row.label})
    pd.DataFrame(rows).to_csv(args.out / "patients.csv", index=False)
    print(args.out)


if __name__ == "__main__":
    main()
