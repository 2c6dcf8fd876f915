"""PneumoniaMNIST with 600 labelled scans a class: supervised at 8 + 16, with the plan stored in
pneumonia_labels1200 (which planned 64 + 128), against the 16 + 32 arm of pneumonia_labels1200_batch16.
(Run from /tmp with PYTHONPATH at a clean worktree.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "pneumonia_labels1200"
spec = dict(load_sets()["pneumoniamnist"], labels_per_class=600)
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    own = json.loads(result_path("pneumoniamnist", "supervised", draw, SUITE).read_text())
    if not result_path("pneumoniamnist", "supervised", draw, SUITE + "_batch8").exists():
        run_one("pneumoniamnist", spec, "supervised", draw, own, SUITE + "_batch8",
                ("train.batch_size=8", "train.unlabelled_batch_size=16"))
