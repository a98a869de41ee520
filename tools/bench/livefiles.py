#!/usr/bin/env python3
"""What `cas watch` stores per snapshot for a small, busy assistant directory.

    .venv/bin/python tools/bench/livefiles.py [--work /dev/shm/cas-livefiles] [--seconds 180] \
        [--seed 1] [--cas /tmp/cas-before] [--json out.json]

The scenario, seeded (``random.Random(seed)`` picks every content and every
pause): a 3.3 MB assistant directory with three SQLite databases (a 335 KB
``memory.db`` in WAL mode that one long-lived connection updates a row of
every 2-5 s; a 1.4 MB ``history.db`` that gets a message every 15-40 s; a
small ``settings.db`` rewritten every 45-90 s), today's 670 KB JSONL log
appended a line every 0.5-2.5 s, older logs and notes, one note edited every
10-40 s. A real ``cas watch`` child process (default settings, store in
``.cas/`` inside the tree) runs for ``--seconds`` of this activity.

``--store-version 1`` makes the new store one of format version 1 (JSON
chunk lists) to compare list encodings. ``--cas`` picks the build: a directory (a checkout of cas, run with this
Python and ``PYTHONPATH`` set to it; ``git worktree add /tmp/cas-before
COMMIT`` makes one) or an executable (a ``cas`` entry point). Reported, as a
table and with ``--json`` as JSON:

* snapshots made (the watcher's log) and kept at the end (``cas log``),
  and kept per hour of activity;
* bytes stored per snapshot after the first: growth of the store's objects,
  packs and snapshot records, divided by the snapshots made;
* the watcher's CPU per snapshot after the first (``/proc`` at the first
  snapshot, ``wait4`` at exit);
* the store's pack and loose-file counts at the end.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
WORDS = ("the model answered that memory should hold facts the user asked for and tools "
         "ran a search over notes files and the calendar then wrote a summary of today "
         "with links to sources error retry later ok done tokens latency").split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def log_line(rng: random.Random, n: int) -> bytes:
    doc = {"ts": 1_760_000_000 + n, "seq": n, "kind": rng.choice(["user", "assistant", "tool"]),
           "session": f"{rng.getrandbits(32):08x}", "text": sentence(rng, rng.randint(10, 60)),
           "tokens": rng.randint(5, 900), "latency_ms": rng.randint(20, 4000)}
    return (json.dumps(doc) + "\n").encode()


def make_log(path: Path, rng: random.Random, size: int, start: int) -> int:
    lines, total, n = [], 0, start
    while total < size:
        line = log_line(rng, n)
        lines.append(line)
        total += len(line)
        n += 1
    path.write_bytes(b"".join(lines))
    return n


def make_db(path: Path, rng: random.Random, rows: int, words: int, wal: bool) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, "
                 "body TEXT, score REAL)")
    conn.execute("CREATE INDEX items_ts ON items(ts)")
    conn.executemany("INSERT INTO items VALUES (?,?,?,?,?)",
                     [(i, 1_760_000_000 + i, rng.choice(WORDS), sentence(rng, words), rng.random())
                      for i in range(rows)])
    conn.commit()
    conn.close()


def build_tree(tree: Path, rng: random.Random) -> dict:
    """The assistant directory; returns the sizes of its parts."""
    for d in ("db", "logs", "notes"):
        (tree / d).mkdir(parents=True)
    make_db(tree / "db" / "memory.db", rng, 820, 60, wal=True)
    make_db(tree / "db" / "history.db", rng, 2950, 75, wal=False)
    make_db(tree / "db" / "settings.db", rng, 40, 20, wal=False)
    for day in range(1, 4):
        make_log(tree / "logs" / f"2025-10-0{day}.jsonl", rng, 200_000, day * 100_000)
    make_log(tree / "logs" / "today.jsonl", rng, 670_000, 900_000)
    for i in range(25):
        (tree / "notes" / f"note-{i:02}.md").write_text(
            "\n".join(sentence(rng, 12) for _ in range(rng.randint(60, 300))))
    return {p.relative_to(tree).as_posix(): p.stat().st_size
            for p in sorted(tree.rglob("*")) if p.is_file()}


class Activity:
    """The assistant at work: each kind of change on its own seeded schedule."""

    def __init__(self, tree: Path, rng: random.Random):
        self.tree, self.rng = tree, rng
        # The long-lived writer of memory.db: its WAL stays open throughout.
        self.memory = sqlite3.connect(tree / "db" / "memory.db", isolation_level=None)
        self.log_seq = 2_000_000
        self.counts = {"memory": 0, "history": 0, "settings": 0, "log": 0, "note": 0}
        self.schedule = {"memory": (2, 5), "history": (15, 40), "settings": (45, 90),
                         "log": (0.5, 2.5), "note": (10, 40)}

    def run(self, seconds: float) -> None:
        start = time.monotonic()
        due = [(start + self.rng.uniform(*span), kind) for kind, span in self.schedule.items()]
        heapq.heapify(due)
        while True:
            at, kind = heapq.heappop(due)
            if at - start > seconds:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            getattr(self, "do_" + kind)()
            self.counts[kind] += 1
            heapq.heappush(due, (at + self.rng.uniform(*self.schedule[kind]), kind))
        self.memory.close()

    def do_memory(self) -> None:
        self.memory.execute("UPDATE items SET body = ?, ts = ?, score = ? WHERE id = ?",
                            (sentence(self.rng, 60), int(time.time()), self.rng.random(),
                             self.rng.randrange(820)))

    def do_history(self) -> None:
        with sqlite3.connect(self.tree / "db" / "history.db") as conn:
            conn.execute("INSERT INTO items (ts, kind, body, score) VALUES (?,?,?,?)",
                         (int(time.time()), "message", sentence(self.rng, 75), self.rng.random()))
        conn.close()

    def do_settings(self) -> None:
        with sqlite3.connect(self.tree / "db" / "settings.db") as conn:
            conn.execute("UPDATE items SET body = ? WHERE id = ?",
                         (sentence(self.rng, 20), self.rng.randrange(40)))
        conn.close()

    def do_log(self) -> None:
        with open(self.tree / "logs" / "today.jsonl", "ab") as f:
            f.write(log_line(self.rng, self.log_seq))
        self.log_seq += 1

    def do_note(self) -> None:
        path = self.tree / "notes" / f"note-{self.rng.randrange(25):02}.md"
        lines = path.read_text().split("\n")
        lines[self.rng.randrange(len(lines))] = sentence(self.rng, 12)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines))
        os.replace(tmp, path)  # as editors save


def cas_command(cas: str | None) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if cas is None:
        return [PY, "-m", "cas.cli"], env
    if os.path.isdir(cas):
        env["PYTHONPATH"] = os.path.abspath(cas)
        return [PY, "-m", "cas.cli"], env
    return [cas], env


def events(log: Path, kind: str) -> list[dict]:
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in filter(None, lines):
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a line being written
        if doc.get("event") == kind:
            found.append(doc)
    return found


def store_usage(store: Path) -> dict:
    """Bytes in objects, packs and snapshot records, and how many files hold them."""
    usage = {"bytes": 0, "packs": 0, "loose": 0}
    for part in ("objects", "packs", "snapshots"):
        for root, _, files in os.walk(store / part):
            for name in files:
                usage["bytes"] += os.lstat(os.path.join(root, name)).st_size
                if part == "packs" and name.endswith(".pack"):
                    usage["packs"] += 1
                elif part == "objects":
                    usage["loose"] += 1
    return usage


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_first_snapshot(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while not events(log, "snapshot"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the watcher made no first snapshot")
        time.sleep(0.05)


def set_store_version(config: Path, version: int) -> None:
    """Make a fresh store one of an older format version (version 1: JSON
    chunk lists), to measure what the format change is worth."""
    doc = json.loads(config.read_text())
    doc["version"] = version
    os.chmod(config, 0o600)
    config.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def run(work: Path, seconds: float, seed: int, cas: str | None,
        store_version: int | None = None) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "tree"
    tree.mkdir(parents=True)
    rng = random.Random(seed)
    sizes = build_tree(tree, rng)
    cmd, env = cas_command(cas)
    subprocess.run(cmd + ["init"], cwd=tree, env=env, check=True, capture_output=True)
    if store_version is not None:
        set_store_version(tree / ".cas" / "config.json", store_version)
    log = work / "watch.log"
    proc = subprocess.Popen(cmd + ["watch", "--log-file", str(log)], cwd=tree, env=env)
    wait_first_snapshot(proc, log)
    time.sleep(1)  # the first snapshot's record and index are written after its log line
    first = store_usage(tree / ".cas")
    cpu_first = proc_cpu(proc.pid)
    made_first = len(events(log, "snapshot"))
    activity = Activity(tree, rng)
    activity.run(seconds)
    time.sleep(6)  # the last changes' quiet period and snapshot
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    made = len(events(log, "snapshot")) - made_first
    end = store_usage(tree / ".cas")
    kept = json.loads(subprocess.run(cmd + ["log", "--json"], cwd=tree, env=env, check=True,
                                     capture_output=True).stdout)
    listed = [s for s in kept if s.get("stats", {}).get("stored_bytes") is not None][:-1]
    verify = subprocess.run(cmd + ["verify"], cwd=tree, env=env, capture_output=True)
    return {
        "seconds": seconds, "seed": seed, "cas": cas or "this checkout",
        "store_version": store_version,
        "tree_bytes": sum(sizes.values()), "changes": activity.counts,
        "snapshots_made": made, "snapshots_kept": len(kept),
        "kept_per_hour": round(len(kept) * 3600 / seconds),
        "stored_bytes_per_snapshot": round((end["bytes"] - first["bytes"]) / max(made, 1)),
        "recorded_stored_bytes_per_snapshot":
            round(sum(s["stats"]["stored_bytes"] for s in listed) / max(len(listed), 1)),
        "cpu_seconds_per_snapshot": round((cpu - cpu_first) / max(made, 1), 4),
        "first_snapshot_bytes": first["bytes"],
        "packs": end["packs"], "loose_files": end["loose"],
        "watcher_exit": proc.returncode, "verify_exit": verify.returncode,
    }


ROWS = [("snapshots made", "snapshots_made"), ("snapshots kept", "snapshots_kept"),
        ("kept per hour of activity", "kept_per_hour"),
        ("bytes stored per snapshot (store growth)", "stored_bytes_per_snapshot"),
        ("bytes stored per snapshot (recorded stats)", "recorded_stored_bytes_per_snapshot"),
        ("watcher CPU s per snapshot", "cpu_seconds_per_snapshot"),
        ("packs / loose files at the end", None)]


def table(r: dict) -> str:
    version = "" if r["store_version"] is None else f", store version {r['store_version']}"
    lines = [f"| {r['cas']}{version}, {r['seconds']:.0f} s, seed {r['seed']} | |", "|---|---:|"]
    for label, key in ROWS:
        value = f"{r['packs']} / {r['loose_files']}" if key is None else f"{r[key]:,}"
        lines.append(f"| {label} | {value} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/dev/shm/cas-livefiles"))
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cas", help="a cas checkout directory or a cas executable (default: this one)")
    ap.add_argument("--store-version", type=int,
                    help="set the new store's format version (1: JSON chunk lists)")
    ap.add_argument("--keep", action="store_true", help="leave the tree and store in --work")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = run(args.work, args.seconds, args.seed, args.cas, args.store_version)
    print(table(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0 if result["watcher_exit"] == 0 and result["verify_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
