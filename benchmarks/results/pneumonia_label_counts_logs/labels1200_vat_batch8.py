"""PneumoniaMNIST with 600 labelled scans a class: VAT at 8 + 16 (what the plan gives 1,200 labelled
scans since 5c17321), with each draw's stored supervised plan of pneumonia_labels1200 as overrides,
against supervised at 8 + 16 (pneumonia_labels1200_batch8). (Run from /tmp with PYTHONPATH at a
clean worktree.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "pneumonia_labels1200"
spec = dict(load_sets()["pneumoniamnist"], labels_per_class=600)
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    own = json.loads(result_path("pneumoniamnist", "supervised", draw, SUITE).read_text())
    if not result_path("pneumoniamnist", "vat", draw, SUITE + "_batch8").exists():
        run_one("pneumoniamnist", spec, "vat", draw, own, SUITE + "_batch8",
                ("train.batch_size=8", "train.unlabelled_batch_size=16"))
