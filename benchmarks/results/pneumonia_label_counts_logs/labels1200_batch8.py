"""PneumoniaMNIST with 600 labelled scans a class at 8 + 16: METHOD (supervised unless given) with each
draw's stored supervised plan of pneumonia_labels1200 (which planned 64 + 128) as overrides, into
pneumonia_labels1200_batch8, against the 16 + 32 arm of pneumonia_labels1200_batch16.
Usage: labels1200_batch8.py DRAWS [METHOD]. (Run from /tmp with PYTHONPATH at a clean worktree; the
supervised runs were made with METHOD fixed to supervised, the VAT runs by a copy with it fixed to vat,
its log labels1200_vat_batch8.log.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "pneumonia_labels1200"
method = sys.argv[2] if len(sys.argv) > 2 else "supervised"
spec = dict(load_sets()["pneumoniamnist"], labels_per_class=600)
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    own = json.loads(result_path("pneumoniamnist", "supervised", draw, SUITE).read_text())
    if not result_path("pneumoniamnist", method, draw, SUITE + "_batch8").exists():
        run_one("pneumoniamnist", spec, method, draw, own, SUITE + "_batch8",
                ("train.batch_size=8", "train.unlabelled_batch_size=16"))
