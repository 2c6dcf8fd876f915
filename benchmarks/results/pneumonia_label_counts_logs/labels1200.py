"""PneumoniaMNIST with 600 labelled scans a class: supervised at the batch the plan gave (an eighth of
the labelled scans: 64 + 128) against 16 + 32. (Run from /tmp; imports tidied here for the linter.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "pneumonia_labels1200"
spec = dict(load_sets()["pneumoniamnist"], labels_per_class=600)
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    path = result_path("pneumoniamnist", "supervised", draw, SUITE)
    own = json.loads(path.read_text()) if path.exists() else run_one("pneumoniamnist", spec, "supervised", draw, None, SUITE)
    if not result_path("pneumoniamnist", "supervised", draw, SUITE + "_batch16").exists():
        run_one("pneumoniamnist", spec, "supervised", draw, own, SUITE + "_batch16",
                ("train.batch_size=16", "train.unlabelled_batch_size=32"))
