"""AdrenalMNIST3D with 100 labelled scans a class: VAT planning itself, supervised with its plan.
(Run from /tmp; kept here beside its log.)"""
import json
import sys

from benchmarks.real import load_sets, result_path, run_one

SUITE = "adrenal_labels200"
spec = dict(load_sets()["adrenalmnist3d"], labels_per_class=100)
for draw in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    path = result_path("adrenalmnist3d", "vat", draw, SUITE)
    vat = json.loads(path.read_text()) if path.exists() else run_one("adrenalmnist3d", spec, "vat", draw, None, SUITE)
    if not result_path("adrenalmnist3d", "supervised", draw, SUITE).exists():
        run_one("adrenalmnist3d", spec, "supervised", draw, vat, SUITE)
