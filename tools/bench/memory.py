#!/usr/bin/env python3
"""Peak memory of `cas add` against file size and file count.

    python3 tools/bench/memory.py --work DIR [--cas .venv/bin/cas] [--big-gb 4] [--small-files 100000]

Measures the peak RSS (ru_maxrss of the child) of `cas add` for: one tiny
file (the baseline), one large file of bf16-like weights (compressed path)
and one of random bytes (raw path), and many small files. Prints a markdown
table; the point is that memory stays flat as size and count grow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

BLOCK = 64 << 20


def write_weights(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal(BLOCK // 2, dtype=np.float32) * 0.02).view(np.uint32)
    block = (block >> 16).astype(np.uint16).tobytes()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            # Vary each block so no two are identical (no accidental dedup).
            head = rng.bytes(4096)
            f.write(head + block[4096:])
            written += BLOCK


def write_random(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(rng.bytes(BLOCK))


def write_small_files(root: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        d = root / f"{i // 1000:03}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:06}.txt").write_bytes(rng.bytes(int(rng.integers(100, 4000))))


# The child is started from a small helper process: Linux carries the
# parent's peak RSS across fork and exec, and this script's own peak (the
# generators' buffers) would otherwise mask the child's.
_WAIT = """
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, time.perf_counter() - t)
"""


def measure(cas: str, store: Path, target: Path) -> tuple[float, float]:
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run([cas, "-q", "--store", str(store), "init"], check=True)
    os.sync()
    out = subprocess.run([sys.executable, "-c", _WAIT, cas, "-q", "--store", str(store), "add", str(target)],
                         capture_output=True, text=True, check=True).stdout.split()
    code, maxrss_kb, wall = int(out[0]), int(out[1]), float(out[2])
    if code != 0:
        raise SystemExit(f"cas add {target} failed")
    return maxrss_kb / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--cas", default=str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cas"))
    ap.add_argument("--big-gb", type=float, default=4)
    ap.add_argument("--small-files", type=int, default=100_000)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.big_gb * (1 << 30)) // BLOCK * BLOCK
    cases = []
    tiny = work / "tiny.txt"
    tiny.write_bytes(b"tiny\n")
    cases.append(("one 5-byte file", tiny))
    weights = work / "weights.bin"
    if not weights.exists() or weights.stat().st_size != size:
        write_weights(weights, size, 1)
    cases.append((f"one {size / 2**30:.1f} GiB bf16 weights file (zstd path)", weights))
    noise = work / "noise.bin"
    if not noise.exists() or noise.stat().st_size != size:
        write_random(noise, size, 2)
    cases.append((f"one {size / 2**30:.1f} GiB random file (raw path)", noise))
    small = work / "small"
    if not small.exists():
        write_small_files(small, args.small_files, 3)
    cases.append((f"{args.small_files:,} small files (100 B - 4 KB)", small))
    print("| input | peak RSS MB | wall s |\n|---|---:|---:|")
    for label, target in cases:
        rss, wall = measure(args.cas, work / "store", target)
        print(f"| {label} | {rss:.0f} | {wall:.2f} |", flush=True)
    shutil.rmtree(work / "store", ignore_errors=True)


if __name__ == "__main__":
    main()
