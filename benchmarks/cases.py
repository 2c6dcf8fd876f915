"""Usage: python -m benchmarks.cases RUN REPORT LABELS

A scored folder's cases (``pipeline.cases``: a knee's planes, a study's series) called two ways against
their labels (a headerless ``case,label`` file, MRNet's): any view over the scans' own operating point,
and the most probable view over the cases' point the run calibrated (``screening.cases``)."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.cases import case_of

run, report, labels = Path(sys.argv[1]), pd.read_csv(sys.argv[2]), sys.argv[3]
screening = json.loads((run / "calibration.json").read_text())["screening"]
positive = screening["positive_class"]
truth = pd.read_csv(labels, header=None, names=["case", "label"], dtype=str).set_index("case")["label"]
report = report[report["status"] == "ok"].assign(case=lambda r: r["scan_id"].map(lambda s: case_of(s)[0].split("/")[-1]))
cases = report.groupby("case")[f"p_{positive}"].max().to_frame("p").join(truth, how="inner")
abnormal = (cases["label"] == positive).to_numpy()
print(f"{len(cases)} cases ({abnormal.sum()} {positive}); AUROC of the most probable view {roc_auc_score(abnormal, cases['p']):.3f}")
for rule, threshold in (("any view at the scans' point", screening["decision"]),
                        ("the cases' point", screening.get("cases", {}).get("decision", np.nan))):
    called = cases["p"].to_numpy() >= threshold
    print(f"{rule} ({threshold:.3f}): sensitivity {called[abnormal].mean():.2f}, specificity {(~called[~abnormal]).mean():.2f}")
