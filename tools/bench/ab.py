#!/usr/bin/env python3
"""Two builds of cas side by side: snapshot, verify and restore of one corpus.

For a change that must not cost speed: each repetition runs build A, then
build B (then B, then A on the next one, so neither always goes first), on
the same warm corpus, with fresh stores: first snapshot, a no-change
re-run, ``verify --full`` and a full restore. Stores and restore targets go to
``--work`` (ext4 or tmpfs: run it once for each). Medians of wall and CPU
seconds and the ratio B/A are printed as a markdown table.

    python3 tools/bench/ab.py --corpus /work/bench-corpus --work /dev/shm/ab \\
        --a "env PYTHONPATH=/work/base /work/main/.venv/bin/python -m cas.cli" \\
        --b "/work/main/.venv/bin/python -m cas.cli" --repeat 5

Build A here is an older checkout (``git worktree add /work/base REV``)
run with the same interpreter and libraries.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import q, read_tree, run_timed  # noqa: E402

STEPS = ("first snapshot", "no-change snapshot", "verify --full", "full restore")


def one_run(cas: str, corpus: Path, work: Path, log: Path) -> dict[str, tuple[float, float]]:
    store, target = work / "store", work / "restore"
    for path in (store, target):
        shutil.rmtree(path, ignore_errors=True)
    commands = {
        "first snapshot": f"{cas} --store {q(store)} init >/dev/null && "
                          f"{cas} --store {q(store)} -q snapshot {q(corpus)} >/dev/null",
        "no-change snapshot": f"{cas} --store {q(store)} -q snapshot {q(corpus)} >/dev/null",
        "verify --full": f"{cas} --store {q(store)} -q verify --full >/dev/null",
        "full restore": f"{cas} --store {q(store)} -q restore HEAD --to {q(target)}",
    }
    out = {}
    for step in STEPS:
        read_tree(corpus)  # every build reads a warm corpus
        wall, usage, code = run_timed(commands[step], {}, log)
        if code != 0:
            sys.exit(f"{step} failed (exit {code}); see {log}")
        out[step] = (wall, usage.ru_utime + usage.ru_stime)
    for path in (store, target):
        shutil.rmtree(path, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--a", required=True, help="command running build A (the baseline)")
    parser.add_argument("--b", required=True, help="command running build B (the change)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {"A": {}, "B": {}}
    for i in range(args.repeat):
        order = (("A", args.a), ("B", args.b)) if i % 2 == 0 else (("B", args.b), ("A", args.a))
        for name, cas in order:
            result = one_run(cas, args.corpus, args.work, args.work / f"log-{name}.txt")
            for step, value in result.items():
                samples[name].setdefault(step, []).append(value)
            print(f"run {i + 1} {name}: " + ", ".join(f"{s} {w:.2f} s" for s, (w, _) in result.items()),
                  file=sys.stderr, flush=True)
    print("| step | A wall | B wall | B/A | A CPU | B CPU | A runs | B runs |")
    print("|---|---|---|---|---|---|---|---|")
    for step in STEPS:
        a, b = samples["A"][step], samples["B"][step]
        aw, bw = statistics.median(w for w, _ in a), statistics.median(w for w, _ in b)
        ac, bc = statistics.median(c for _, c in a), statistics.median(c for _, c in b)
        runs = lambda xs: " ".join(f"{w:.2f}" for w, _ in xs)  # noqa: E731
        print(f"| {step} | {aw:.2f} | {bw:.2f} | {bw / aw:.3f} | {ac:.2f} | {bc:.2f} | {runs(a)} | {runs(b)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
