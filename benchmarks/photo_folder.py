"""Copy a 2D development-panel set as a folder of photos of mixed sizes, colour modes and formats.

MedMNIST's pictures are 28 px squares of one format; a folder a user brings never is. This copy keeps
each picture's content and label and changes only its container, so that a run on it goes through
what a real folder makes the plan choose (a larger input, the network and batches for it) while the
information in each picture stays that of the 28 px original: each picture is resized (bicubic) to
a long side drawn from ``--sides`` at an aspect ratio drawn from 0.8-1.25, and saved as grey (60%),
RGB (30%) or palette (10%), JPEG at quality 90 (70%) or PNG (30%). Draws are seeded by ``--seed``.
``labels.csv`` keeps the source's columns (``split`` included) with the new file names.

    python -m benchmarks.photo_folder ../shared/data/pneumoniamnist /work/pneumonia_photos

Add the copy to a bench tree's ``real_sets.toml`` to run it with ``python -m benchmarks.real``
(``benchmarks/real_variants.md``, "PneumoniaMNIST as a folder of photos").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.io import write_csv


def as_photo(picture: Image.Image, rng: np.random.Generator, sides: tuple[int, int]) -> tuple[Image.Image, str]:
    """``picture`` resized and recoloured as drawn, with the suffix to save it under."""
    long_side = int(rng.integers(sides[0], sides[1] + 1))
    aspect = float(rng.uniform(0.8, 1.25))
    width, height = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    photo = picture.convert("L").resize((width, height), Image.Resampling.BICUBIC)
    mode = rng.choice(["L", "RGB", "P"], p=[0.6, 0.3, 0.1])
    photo = photo.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else photo.convert(mode)
    suffix = ".png" if mode == "P" or rng.random() < 0.3 else ".jpg"  # JPEG holds no palette
    return photo, suffix


def photo_folder(source: Path, out: Path, sides: tuple[int, int] = (256, 768), seed: int = 123) -> pd.DataFrame:
    """Write the copy to ``out`` and return its labels.

    Raises
    ------
    ValueError
        ``source`` has no ``labels.csv`` or ``sides`` is not an increasing pair of positive sides.
    """
    if not (source / "labels.csv").is_file():
        raise ValueError(f"{source}: no labels.csv (file,label[,split]) to copy")
    if not 0 < sides[0] <= sides[1]:
        raise ValueError(f"--sides {sides[0]} {sides[1]}: give the shortest and the longest long side, in pixels")
    labels = pd.read_csv(source / "labels.csv")
    rng = np.random.default_rng(seed)
    files = []
    for file in labels["file"]:
        with Image.open(source / file) as picture:
            photo, suffix = as_photo(picture, rng, sides)
        name = Path(file).with_suffix(suffix)
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        photo.save(out / name, quality=90)  # PNG ignores the quality
        files.append(name.as_posix())
    copy = labels.assign(file=files)
    write_csv(out / "labels.csv", copy)  # last and atomic: a copy with labels.csv is whole
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a 2D panel folder with labels.csv")
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--sides", type=int, nargs=2, default=(256, 768), metavar=("MIN", "MAX"),
                        help="range of each photo's long side in pixels (default 256 768)")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    copy = photo_folder(args.source, args.out, tuple(args.sides), args.seed)
    suffixes = copy["file"].str.rsplit(".", n=1).str[-1].value_counts().to_dict()
    print(f"{args.out}: {len(copy)} photos", suffixes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
