"""PneumoniaMNIST with 200 labelled scans a class: VAT's own plan, supervised with it, and both at 8 + 16.
(Run from /tmp; imports tidied here for the linter.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "pneumonia_labels400"
spec = dict(load_sets()["pneumoniamnist"], labels_per_class=200)
small = ("train.batch_size=8", "train.unlabelled_batch_size=16")
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    path = result_path("pneumoniamnist", "vat", draw, SUITE)
    vat = json.loads(path.read_text()) if path.exists() else run_one("pneumoniamnist", spec, "vat", draw, None, SUITE)
    for method, suite, settings in (("supervised", SUITE, ()), ("supervised", SUITE + "_batch8", small),
                                    ("vat", SUITE + "_batch8", small)):
        if not result_path("pneumoniamnist", method, draw, suite).exists():
            run_one("pneumoniamnist", spec, method, draw, vat, suite, settings)
