"""Cases seen in several views: which scans are views of one case, and score's row per case."""

import pandas as pd
import pytest

from pipeline.cases import case_of, case_rows


@pytest.mark.parametrize("scan_id, found", [
    ("train/axial/0000.npy", ("train/0000", "axial")),  # MRNet: a plane's folder
    ("coronal/0000.npy", ("0000", "coronal")),
    ("00002/FLAIR", ("00002", "FLAIR")),  # RSNA-MICCAI brain tumour: a sequence's DICOM series folder
    ("00002/T1wCE", ("00002", "T1wCE")),
    ("BraTS_001/BraTS_001_t1ce.nii.gz", ("BraTS_001/BraTS_001", "t1ce")),  # a sequence at the name's end
    ("10000/10000_1000000_adc.mha", ("10000/10000_1000000", "adc")),  # PI-CAI
    ("train/patient1/study1/view1_frontal.jpg", ("train/patient1/study1", "frontal")),  # CheXpert
    ("train/patient1/study1/view2_lateral.jpg", ("train/patient1/study1", "lateral")),
    ("normal/x_12.png", None),
    ("flair.png", None),  # a lone scan named for a sequence is no case's view
    ("yes/Y1.jpg", None),
])
def test_the_case_a_scan_is_a_view_of(scan_id, found):
    assert case_of(scan_id) == found


def test_a_case_is_abnormal_where_any_view_is_at_its_highest_probability():
    report = pd.DataFrame({
        "scan_id": ["axial/0000.npy", "coronal/0000.npy", "sagittal/0000.npy", "axial/0001.npy",
                    "coronal/0001.npy", "sagittal/0001.npy", "axial/0002.npy", "loose.png"],
        "status": ["ok"] * 5 + ["error", "ok", "ok"],
        "prediction": ["normal", "abnormal", "normal", "normal", "normal", "", "abnormal", "abnormal"],
        "p_abnormal": [0.1, 0.8, 0.3, 0.2, 0.1, None, 0.9, 0.9],
        "needs_review": ["False", "False", "True", "False", "False", "", "False", "False"],
    })
    cases = case_rows(report, "abnormal")
    assert cases["case"].tolist() == ["0000", "0001"]  # 0002 has one view; loose.png is no case's
    first, second = cases.iloc[0], cases.iloc[1]
    assert (first["views"], first["view_names"], first["p_abnormal"]) == (3, "axial|coronal|sagittal", 0.8)
    assert first["prediction"] == "abnormal" and bool(first["needs_review"])
    assert (second["views"], second["prediction"], bool(second["needs_review"])) == (2, "normal", False)
    assert case_rows(report.iloc[-1:], "abnormal").empty
