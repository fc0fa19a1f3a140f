"""Rebuild the shipped sample of NI-c012 from the full benchmark.

Run once by a maintainer (needs the full data, e.g. ../shared/data/ni-c012):
    python data/make_sample.py ../shared/data/ni-c012 data/ni-c012-sample
Seeds and the spare rows (`extra`, the validation split) are copied whole; train, replay and eval rows are a seeded random sample (the eval files
are sorted by label, so their first rows would all share one answer).
"""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

TASKS = ["qa", "qg", "sa", "sum", "trans", "dsg", "expl", "para", "pe", "pos"]
SIZES = {"train": 100, "train.smp01": 40, "eval": 100}
SEED = 12


def sample_lines(src: Path, n: int, seed: int) -> list[str]:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    picked = sorted(random.Random(seed).sample(range(len(lines)), min(n, len(lines))))
    return [lines[i] for i in picked]


def main(src_dir: str, dst_dir: str) -> None:
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        for whole in ("train.smp001", "extra"):  # the seeds; 20 spare rows, disjoint from train and eval
            shutil.copyfile(src / f"{task}.{whole}.json", dst / f"{task}.{whole}.json")
        for split, n in SIZES.items():
            source = src / f"{task}.{split}.json"
            if not source.exists():  # qg and sum ship no full train split: sample smp01
                source = src / f"{task}.train.smp01.json"
            (dst / f"{task}.{split}.json").write_text("".join(sample_lines(source, n, SEED)), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
