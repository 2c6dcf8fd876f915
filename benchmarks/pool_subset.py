"""Copy a development-panel set with a small unlabelled pool, to measure what the pool's size gives.

The copy keeps the set's test split whole, ``reserve`` non-test scans a class (for the labelled and
calibration draws of ``pipeline run --labels-per-class N``, so ``reserve`` = 2N) and ``pool`` more
non-test scans at the set's own class mix, drawn with a fixed seed; ``labels.csv`` lists them all,
so the scans the run does not label form a pool of about ``pool`` scans at that mix.

    python -m benchmarks.pool_subset ../shared/data/pneumoniamnist /tmp/pn_pool200 --pool 200 --reserve 100

Add the copy to a bench tree's ``real_sets.toml`` to run it with ``python -m benchmarks.real``
(``benchmarks/real_variants.md``, "Small unlabelled pools").
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import write_csv


def pool_subset(source: Path, out: Path, pool: int, reserve: int, seed: int = 123) -> pd.DataFrame:
    """Write the copy to ``out`` and return its labels.

    Raises
    ------
    ValueError
        The source has no ``split`` column with ``test`` rows, or a class has fewer non-test
        scans than it needs.
    """
    labels = pd.read_csv(source / "labels.csv")
    if "split" not in labels or not (labels["split"] == "test").any():
        raise ValueError(f"{source / 'labels.csv'}: needs a split column with test rows")
    rng = np.random.default_rng(seed)
    rest = labels[labels["split"] != "test"]
    keep = [labels[labels["split"] == "test"]]
    for name, rows in rest.groupby("label"):
        wanted = reserve + round(pool * len(rows) / len(rest))
        if wanted > len(rows):
            raise ValueError(f"class {name!r} has {len(rows)} non-test scans; {wanted} are needed")
        keep.append(rows.iloc[rng.permutation(len(rows))[:wanted]])
    subset = pd.concat(keep)
    for file in subset["file"]:
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / file, out / file)
    write_csv(out / "labels.csv", subset)  # last and atomic: a copy with labels.csv is whole
    return subset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a panel folder with labels.csv (file,label,split)")
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--pool", type=int, required=True, help="unlabelled scans to keep, at the set's mix")
    parser.add_argument("--reserve", type=int, required=True, help="non-test scans a class for labels and calibration")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    subset = pool_subset(args.source, args.out, args.pool, args.reserve, args.seed)
    print(f"{args.out}: {len(subset)} scans", subset.groupby(["split", "label"]).size().to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
