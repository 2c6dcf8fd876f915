#!/usr/bin/env bash
# One turn of the review-label-retrain loop on PneumoniaMNIST, run as a user would (the README's
# walk-through): train on 200 labelled scans, score a folder of new scans, ask which unlabelled
# scans to label next, label them, retrain with the verdicts, compare test AUROC.
# The held-back truth of the development panel stands in for the radiologist.
# Usage: bash benchmarks/loop_demo.sh [OUT]   (from the repository root; ../shared/data needed)
set -euo pipefail
PANEL=../shared/data/pneumoniamnist
OUT=${1:-cache/loop_demo}
BIN=.venv/bin
rm -rf "$OUT" && mkdir -p "$OUT/incoming"

# The team's labels: 100 training scans of each class and the held-out test scans; 400 test
# scans also arrive as a folder of new scans to screen.
$BIN/python - "$PANEL" "$OUT" <<'PY'
import os, shutil, sys
import pandas as pd
panel, out = sys.argv[1:3]
labels = pd.read_csv(os.path.join(panel, "labels.csv"))
train = labels[labels["split"] == "train"]
start = pd.concat([train.groupby("label").sample(100, random_state=0), labels[labels["split"] == "test"]])
start["file"] = [os.path.abspath(os.path.join(panel, f)) for f in start["file"]]
start.to_csv(os.path.join(out, "start.csv"), index=False)
for f in labels[labels["split"] == "test"]["file"].head(400):
    shutil.copy(os.path.join(panel, f), os.path.join(out, "incoming"))
PY

$BIN/pipeline run --scans $PANEL --labels "$OUT/start.csv" --positive pneumonia --minutes 3 --quiet name=loop_before
BEFORE=$(cat runs/LATEST)
$BIN/pipeline score "$OUT/incoming" --model "$BEFORE" --out "$OUT/report.csv" --quiet
$BIN/pipeline suggest "$BEFORE" --n 20 --out "$OUT/to_label.csv"

# The radiologist labels the 20 suggested scans (in the page's labelling mode, exported as CSV).
$BIN/python - "$PANEL" "$OUT" <<'PY'
import os, sys
import pandas as pd
panel, out = sys.argv[1:3]
truth = pd.read_csv(os.path.join(panel, "labels.csv")).set_index("file")["label"]
chosen = pd.read_csv(os.path.join(out, "to_label.csv"))
pd.DataFrame({"file": chosen["scan_id"], "label": chosen["scan_id"].map(truth), "verdict": "labelled",
              "reviewed_at": "2026-12-01T20:00:00Z"}).to_csv(os.path.join(out, "verdicts.csv"), index=False)
PY

$BIN/pipeline run --scans $PANEL --labels "$OUT/start.csv" --extra-labels "$OUT/verdicts.csv" --positive pneumonia \
    --minutes 3 --quiet name=loop_after
AFTER=$(cat runs/LATEST)
for run in "$BEFORE" "$AFTER"; do
    $BIN/python -c "import json, sys; s = json.load(open(sys.argv[1] + '/train_summary.json')); \
print(sys.argv[1], 'labelled', s['n_labelled'], 'calibration', s['n_calibration'], 'test AUROC', round(s['test_auroc'], 4))" "$run"
done
