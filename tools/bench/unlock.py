"""Time unlocking an encrypted store: Argon2id at the key slot parameters
(cas.storage.keys.DEFAULT_KDF) and a few others, and a whole `cas key list`.

Run with the project venv:  .venv/bin/python tools/bench/unlock.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from cas.storage.keys import DEFAULT_KDF, kek

CANDIDATES = [
    {"memory_kib": 64 << 10, "iterations": 2, "lanes": 2},
    {"memory_kib": 64 << 10, "iterations": 3, "lanes": 2},
    {"memory_kib": 64 << 10, "iterations": 3, "lanes": 4},
    {"memory_kib": 128 << 10, "iterations": 2, "lanes": 2},
    {"memory_kib": 256 << 10, "iterations": 1, "lanes": 2},
]


def median_seconds(kdf: dict, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one derivation (CPU time shows the
    cost on a loaded machine, where wall time includes waiting)."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        kek(b"correct horse battery staple", os.urandom(32), kdf)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def cli_unlock_seconds(repeat: int) -> tuple[float, float]:
    """Median wall time of `cas key list` and of `cas --version` (start-up alone)."""
    env = {**os.environ, "CAS_PASSWORD": "bench"}
    cas = [sys.executable, "-m", "cas.cli"]
    with tempfile.TemporaryDirectory() as root:
        subprocess.run([*cas, "-q", "init", "--encrypt"], cwd=root, env=env, check=True)
        def timed(args: list[str]) -> float:
            runs = []
            for _ in range(repeat):
                started = time.perf_counter()
                subprocess.run([*cas, *args], cwd=root, env=env, check=True, capture_output=True)
                runs.append(time.perf_counter() - started)
            return statistics.median(runs)
        return timed(["key", "list"]), timed(["--version"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, repeat {args.repeat}, medians")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    print("| memory | passes | lanes | wall | CPU |")
    print("|---:|---:|---:|---:|---:|")
    for kdf in CANDIDATES:
        mark = " (default)" if all(DEFAULT_KDF[k] == v for k, v in kdf.items()) else ""
        wall, cpu = median_seconds({"name": "argon2id", **kdf}, args.repeat)
        print(f"| {kdf['memory_kib'] >> 10} MiB | {kdf['iterations']} | {kdf['lanes']} | "
              f"{wall:.3f} s{mark} | {cpu:.3f} s |")
    key_list, startup = cli_unlock_seconds(args.repeat)
    print(f"\n`cas key list` (one unlock): {key_list:.3f} s; `cas --version`: {startup:.3f} s")


if __name__ == "__main__":
    main()
