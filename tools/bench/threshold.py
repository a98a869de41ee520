#!/usr/bin/env python3
"""Where should objects stop going into packs and become files of their own?

    .venv/bin/python tools/bench/threshold.py --work DIR [--total-mb 256]

For several object sizes, stores TOTAL MB of distinct objects of that size
twice: once packed (threshold above the size) and once loose (threshold at or
below it), on the filesystem of --work, and prints wall time and throughput
of each. A loose object costs a file creation, an fsync and a directory
entry; a packed one shares all three with its pack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from cas.storage.config import StoreConfig
from cas.storage.store import Store


def run(work: Path, size: int, total: int, loose: bool) -> float:
    shutil.rmtree(work / "store", ignore_errors=True)
    threshold = size if loose else size * 2
    store = Store.init(str(work / "store"), StoreConfig(loose_min_size=threshold))
    count = max(total // size, 8)
    # Incompressible, distinct contents: this measures the write path only.
    blobs = [os.urandom(size) for _ in range(count)]
    os.sync()
    t = time.perf_counter()
    with store.writer() as w:
        for b in blobs:
            w.put_bytes(b)
    elapsed = time.perf_counter() - t
    store.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--total-mb", type=int, default=256)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    total = args.total_mb << 20
    print("| object size | packed s | loose s | packed MB/s | loose MB/s | loose/packed |")
    print("|---:|---:|---:|---:|---:|---:|")
    for kib in (64, 256, 512, 1024, 2048, 4096, 16384):
        size = kib << 10
        packed = min(run(args.work, size, total, False) for _ in range(3))
        loose = min(run(args.work, size, total, True) for _ in range(3))
        mb = max(total // size, 8) * size / 2**20
        print(f"| {kib} KiB | {packed:.2f} | {loose:.2f} | {mb / packed:.0f} | {mb / loose:.0f} | "
              f"{loose / packed:.2f} |", flush=True)
    shutil.rmtree(args.work / "store", ignore_errors=True)


if __name__ == "__main__":
    main()
