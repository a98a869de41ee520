#!/usr/bin/env python3
"""How `cas verify`, `verify --full`, `gc --dry-run` and `snapshot` grow with store size.

Usage (imports ``cas``, so run it with the project's venv python)::

    .venv/bin/python tools/bench/scale.py --work DIR [--sizes 100000,300000,1000000]
        [--repeat 3] [--cas PATH] [--json OUT] [--keep]

For every size N a fresh store ``WORK/n<N>/store`` is built, untimed, with
the library (creating N small files on ext4 would take far longer than the
measurement):

* N distinct small objects (200-2000 bytes: a unique header, seeded random
  bytes and repeated text, so zstd keeps some and not others), put with one
  ``ObjectWriter`` into packs;
* trees over them as ``cas snapshot`` would write them: leaf directories of
  1000 file entries, 100 leaves per top directory, one root; one snapshot of
  that root recorded on branch ``bulk`` with ``History.record``;
* a real source directory ``WORK/n<N>/src`` of 2,000 files (40 directories
  of 50, 1-4 KB) snapshotted with the ``cas`` CLI on branch ``src``.

Then each command runs ``--repeat`` times as a child process
(``cas --store S ...``), timed like ``peers.py``: a tiny launcher spawns it
and reaps it with ``os.wait4`` (wall time around spawn and reap, user+sys
CPU, peak RSS of the child, not counting the harness). ``sync`` runs untimed
before each step. Steps, in order:

    verify          cas --store S verify
    verify-full     cas --store S verify --full
    gc-dry-run      cas --store S gc --dry-run --grace 0
    snap-nochange   cas --store S snapshot --branch src SRC      (nothing changed)
    snap-20changed  cas --store S snapshot --branch src SRC      (after appending to 20 files, untimed)

Output: a markdown table (medians) with µs per object (wall / objects in
the index), a growth table (µs/object relative to the smallest size) and,
with ``--json``, every run. Output of every command goes to ``WORK/log-n<N>.txt``; stores
are deleted after each size unless ``--keep``. This measures; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from cas.model.history import History  # noqa: E402
from cas.model.refs import Refs  # noqa: E402
from cas.model.snapshot import Snapshot  # noqa: E402
from cas.model.tree import DIR, FILE, Tree, TreeEntry  # noqa: E402
from cas.storage.store import Store  # noqa: E402

FILES_PER_LEAF = 1000
LEAVES_PER_TOP = 100
SRC_DIRS, SRC_FILES_PER_DIR = 40, 50
CHANGED_FILES = 20
STEPS = ("verify", "verify-full", "gc-dry-run", "snap-nochange", "snap-20changed")
MTIME_NS = 1_700_000_000_000_000_000
WORDS = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
         b"omicron pi rho sigma tau upsilon phi chi psi omega ") * 80

_LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t
os.write(int(sys.argv[1]), repr((wall, os.waitstatus_to_exitcode(status), ru.ru_utime, ru.ru_stime, ru.ru_maxrss)).encode())
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# building


def content(rng: random.Random, i: int) -> bytes:
    size = rng.randint(200, 2000)
    head = b"object %d\n" % i
    rand_len = rng.randint(0, size)
    body = head + rng.randbytes(rand_len)
    start = rng.randrange(len(WORDS) - size)
    return (body + WORDS[start:start + size])[:max(size, len(head))]


def build_store(path: Path, n: int, seed: int) -> dict:
    """N file objects reachable from one snapshot on branch ``bulk``."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    store = Store.init(str(path))
    try:
        Refs(store).set_head_branch("bulk")
        history = History(store)
        with store.writer() as w:
            leaves: list[TreeEntry] = []
            tops: list[TreeEntry] = []
            files: list[TreeEntry] = []

            def close_leaf() -> None:
                tree = Tree.build(files)
                oid = w.put_bytes(tree.to_json())
                leaves.append(TreeEntry(b"d%04d" % len(leaves), DIR, 0o755, MTIME_NS, 0, oid))
                files.clear()

            def close_top() -> None:
                tree = Tree.build(leaves)
                oid = w.put_bytes(tree.to_json())
                tops.append(TreeEntry(b"t%03d" % len(tops), DIR, 0o755, MTIME_NS, 0, oid))
                leaves.clear()

            for i in range(n):
                data = content(rng, i)
                oid = w.put_bytes(data)
                files.append(TreeEntry(b"f%04d.txt" % len(files), FILE, 0o644,
                                       MTIME_NS + i, len(data), oid))
                if len(files) == FILES_PER_LEAF:
                    close_leaf()
                    if len(leaves) == LEAVES_PER_TOP:
                        close_top()
                if i and i % 100_000 == 0:
                    log(f"  {i} objects put ({time.perf_counter() - t0:.0f} s)")
            if files:
                close_leaf()
            if leaves:
                close_top()
            root = w.put_bytes(Tree.build(tops).to_json())
            w.flush()
            snap = Snapshot(tree=root, parents=(), time_ns=time.time_ns(),
                            message=f"scale bench: {n} objects", branch="bulk", host="bench",
                            user="bench", source="/nonexistent/scale-bench",
                            stats={"files": n, "dirs": 0, "symlinks": 0})
            history.record(snap, w)
        objects = sum(1 for _ in store.entries())
        packs = len(store.index.packs())
    finally:
        store.close()
    return {"build_s": time.perf_counter() - t0, "objects": objects, "packs": packs}


def make_source(src: Path, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for d in range(SRC_DIRS):
        sub = src / f"dir{d:02d}"
        sub.mkdir(parents=True)
        for f in range(SRC_FILES_PER_DIR):
            p = sub / f"file{f:03d}.txt"
            size = rng.randint(1000, 4000)
            start = rng.randrange(len(WORDS) - size)
            p.write_bytes(b"src %d %d\n" % (d, f) + WORDS[start:start + size])
            paths.append(p)
    return paths


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


# --------------------------------------------------------------------------
# timing


def run_timed(argv: list[str], logfile: Path) -> dict:
    read, write = os.pipe()
    with open(logfile, "ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write), *argv],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                pass_fds=(write,))
        os.close(write)
        with os.fdopen(read, "rb") as r:
            report = r.read()
        proc.wait()
    wall, rc, user, sys_, maxrss = eval(report)  # noqa: S307 - our own launcher's repr
    return {"wall_s": wall, "cpu_s": user + sys_, "user_s": user, "sys_s": sys_,
            "maxrss_mb": maxrss / 1024, "returncode": rc}


def touch_files(paths: list[Path], rng: random.Random, round_: int) -> None:
    for p in rng.sample(paths, CHANGED_FILES):
        with open(p, "ab") as f:
            f.write(b"edit %d %d\n" % (round_, rng.getrandbits(64)))


def bench_size(n: int, work: Path, cas: list[str], repeat: int, seed: int) -> dict:
    base = work / f"n{n}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    store, src = base / "store", base / "src"
    logfile = work / f"log-n{n}.txt"
    logfile.unlink(missing_ok=True)
    log(f"N={n}: building store")
    info = build_store(store, n, seed)
    log(f"N={n}: built in {info['build_s']:.1f} s: {info['objects']} objects, {info['packs']} packs")
    paths = make_source(src, seed + 1)
    first = subprocess.run([*cas, "--store", str(store), "-q", "snapshot", "--branch", "src",
                            str(src)], capture_output=True, text=True)
    if first.returncode != 0:
        raise RuntimeError(f"first snapshot failed: {first.stderr}")
    with Store.open(str(store)) as s:
        info["objects"] = sum(1 for _ in s.entries())
    info["store_bytes"] = du(store)
    info["index_bytes"] = du(store / "index") if (store / "index").exists() else None
    log(f"N={n}: store {info['store_bytes'] / 1e6:.0f} MB, {info['objects']} objects")
    subprocess.run(["df", "-h", str(work)], check=False, stdout=sys.stderr)

    s = ["--store", str(store)]
    commands = {
        "verify": [*cas, *s, "verify"],
        "verify-full": [*cas, *s, "verify", "--full"],
        "gc-dry-run": [*cas, *s, "gc", "--dry-run", "--grace", "0"],
        "snap-nochange": [*cas, *s, "snapshot", "--branch", "src", str(src)],
        "snap-20changed": [*cas, *s, "snapshot", "--branch", "src", str(src)],
    }
    rng = random.Random(seed + 2)
    runs: dict[str, list[dict]] = {}
    for step in STEPS:
        runs[step] = []
        for r in range(repeat):
            if step == "snap-20changed":
                touch_files(paths, rng, r)
            subprocess.run(["sync"], check=False)
            sample = run_timed(commands[step], logfile)
            sample["run"] = r
            runs[step].append(sample)
            log(f"N={n} {step} run {r}: {sample['wall_s']:.2f} s wall, "
                f"{sample['cpu_s']:.2f} s CPU, {sample['maxrss_mb']:.0f} MB, rc {sample['returncode']}")
    if not args_keep:
        shutil.rmtree(base)
    return {"n": n, **info, "commands": {k: " ".join(v) for k, v in commands.items()},
            "runs": runs}


def median(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def report(results: list[dict]) -> str:
    lines = ["| N (objects in index) | command | wall s | CPU s | RSS MB | µs/object (wall) | rc |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for res in results:
        for step in STEPS:
            rs = res["runs"][step]
            wall = median(rs, "wall_s")
            lines.append(f"| {res['objects']:,} | {step} | {wall:.2f} | {median(rs, 'cpu_s'):.2f} | "
                         f"{median(rs, 'maxrss_mb'):.0f} | {wall / res['objects'] * 1e6:.2f} | "
                         f"{','.join(str(s['returncode']) for s in rs)} |")
    if len(results) > 1:
        lines += ["", "Growth: µs/object (wall) at each size relative to the smallest "
                  "(1.0 = linear; snapshot rows are a fixed 2,000-file source, so flat wall "
                  "time would show as falling µs/object):", ""]
        head = "| command | " + " | ".join(f"{r['objects']:,}" for r in results) + " |"
        lines += [head, "|---|" + "---:|" * len(results)]
        for step in STEPS:
            base = median(results[0]["runs"][step], "wall_s") / results[0]["objects"]
            cells = [median(r["runs"][step], "wall_s") / r["objects"] / base for r in results]
            lines.append(f"| {step} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    lines += ["", "Stores:", ""]
    for res in results:
        lines.append(f"- N={res['n']:,}: {res['objects']:,} objects, {res['packs']} packs, "
                     f"{res['store_bytes'] / 1e6:.0f} MB on disk"
                     + (f" (index {res['index_bytes'] / 1e6:.0f} MB)" if res.get("index_bytes") else "")
                     + f", built in {res['build_s']:.0f} s")
    return "\n".join(lines)


args_keep = False


def main() -> int:
    global args_keep
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cas", default=str(REPO_ROOT / ".venv/bin/cas"),
                    help="cas executable (a path; default: the repo's venv)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep each size's store and source")
    args = ap.parse_args()
    args_keep = args.keep
    cas = [os.path.abspath(args.cas)]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        results.append(bench_size(n, args.work, cas, args.repeat, args.seed))
        text = report(results)
        if args.json:  # written after every size, so a long run keeps what it has
            args.json.write_text(json.dumps({
                "host": platform.node(), "cpus": os.cpu_count(), "python": sys.version,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
                "results": results}, indent=1))
    print(f"# cas scale benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
          f"repeat {args.repeat}, medians)\n")
    print(text)
    print("\nCommands (S = WORK/n<N>/store, SRC = WORK/n<N>/src):\n")
    for step, cmd in results[-1]["commands"].items():
        print(f"- {step}: `{cmd}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
