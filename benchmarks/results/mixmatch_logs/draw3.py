"""PneumoniaMNIST's draw 3, where MixMatch read 0.904: the default again (into mixmatch_pneumonia_rerun),
without alignment (mixmatch_pneumonia_unaligned) and with an EMA of the weights predicting
(mixmatch_pneumonia_ema), each with the draw's stored `real.md` VAT plan as overrides.
Usage: PYTHONPATH=<a clean worktree> python draw3.py. (The runs were made by the same calls from two
/tmp queue scripts, logs draw3_rerun_and_adrenal.log and draw3_variants.log beside this one.)"""
import json

from benchmarks.real import load_sets, result_path, run_one

plan = json.loads(result_path("pneumoniamnist", "vat", 3).read_text())
for folder, settings in (("mixmatch_pneumonia_rerun", ()),
                         ("mixmatch_pneumonia_unaligned", ("method.mixmatch.alignment=false",)),
                         ("mixmatch_pneumonia_ema", ("method.mixmatch.ema_decay=0.99",))):
    if not result_path("pneumoniamnist", "mixmatch", 3, folder).exists():
        run_one("pneumoniamnist", load_sets()["pneumoniamnist"], "mixmatch", 3, plan, folder, settings)
