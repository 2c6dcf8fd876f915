"""Cases seen in several views: which scans are views of one case, and score's row per case."""

import numpy as np
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
    ("train/10_left.jpeg", ("train/10", "left")),  # EyePACS: a patient's two eyes, each graded
    ("Training Images/0_right.jpg", ("Training Images/0", "right")),  # ODIR-5K: labelled by patient
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


def test_a_case_decision_calls_a_case_by_its_most_probable_view_at_that_point():
    report = pd.DataFrame({
        "scan_id": ["axial/0000.npy", "coronal/0000.npy", "axial/0001.npy", "coronal/0001.npy"],
        "status": "ok", "prediction": ["abnormal", "normal", "abnormal", "abnormal"],
        "p_abnormal": [0.6, 0.3, 0.95, 0.7], "p_normal": [0.4, 0.7, 0.05, 0.3], "needs_review": "False"})
    assert case_rows(report, "abnormal")["prediction"].tolist() == ["abnormal", "abnormal"]  # any view
    assert case_rows(report, "abnormal", decision=0.9)["prediction"].tolist() == ["normal", "abnormal"]


def test_the_cases_operating_point_is_chosen_on_calibration_cases_and_only_where_there_are_enough():
    from pipeline.cases import MIN_CASES, case_keys, case_scores
    from pipeline.config import CalibrateConfig
    from pipeline.stages.calibrate import _case_operating_point

    # a knee is abnormal where one of its three planes shows the tear: the healthy planes of an abnormal
    # knee score low, so any plane over the scans' own threshold calls every healthy knee abnormal too
    rng = np.random.default_rng(0)
    ids, p, y = [], [], []
    for case in range(40):
        abnormal = case % 2 == 0
        shown = rng.integers(3)
        for k, plane in enumerate(("axial", "coronal", "sagittal")):
            ids.append(f"{plane}/{case:04d}.npy")
            p.append(0.9 + 0.05 * rng.random() if abnormal and k == shown else 0.5 * rng.random())
            y.append(abnormal)
    p, y = np.array(p), np.array(y)
    assert case_keys("/nowhere", ids[:3]) == ["0000"] * 3
    warnings = []
    point = _case_operating_point("/nowhere", ids, p, y, CalibrateConfig(), "abnormal", warnings)
    assert point["n_cases"] == 40 and point["n_positive"] == 20
    assert point["sensitivity"] >= 0.95 and point["specificity"] == 1.0 and point["decision"] > 0.5
    assert warnings == ["the cases' operating point rests on 20 calibration cases of class 'abnormal' (fewer than "
                        "30): its sensitivity is uncertain"]
    assert _case_operating_point("/nowhere", ids[: 3 * (MIN_CASES - 1)], p[: 3 * (MIN_CASES - 1)],
                                 y[: 3 * (MIN_CASES - 1)], CalibrateConfig(), "abnormal", []) is None  # too few
    assert case_scores([None] * len(ids), p, y) is None  # scans that are no case's views
