"""How quickly `cas watch` gets changes into history, and what it costs idle.

    .venv/bin/python tools/bench/watch.py --work /work/bench-watch [--tmpfs /dev/shm/bench-watch] \
        [--rate 1000] [--seconds 10] [--burst 10000] [--idle-files 100000] [--idle-seconds 600] \
        [--json out.json]

Three measurements, each with its own tree and store and a real `cas watch`
child process (`--quiet-period 2s`):

* **recovery point**: a writer rewrites 2,000 files at ``--rate`` files
  per second for ``--seconds`` (each write closed), in a tree that may hold
  ``--rp-extra-files`` more that nobody touches (built in ``--rp-dir``). For every write, the
  recovery point is the time from its close to the end of the first
  snapshot whose scan began after it (from the watcher's JSON log). Reports
  the median, p95 and maximum; target: quiet period + 1 s. At the end the
  newest snapshot must hold the last content of every file.
* **burst**: ``--burst`` new small files written as fast as possible; the
  time from the first write to the end of the snapshot that holds them all
  (target 15 s).
* **idle**: a watcher on a tree of ``--idle-files`` files (on ``--tmpfs``
  when given: only creating them is faster there) is left alone for
  ``--idle-seconds`` after its first snapshot; reports the CPU it used
  (utime + stime from /proc) as a share of one core, and its RSS at the
  start and end of the window (target: under 1% of a core, flat memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PY = sys.executable
QUIET = 2.0


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()


def events(log: Path, kind: str) -> list[dict]:
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, filter(None, lines)) if e["event"] == kind]


def start_watcher(tree: Path, log: Path) -> subprocess.Popen:
    subprocess.run([PY, "-m", "cas.cli", "init"], cwd=tree, check=True, capture_output=True)
    proc = subprocess.Popen([PY, "-m", "cas.cli", "watch", "--quiet-period", f"{QUIET}s",
                             "--log-file", str(log)], cwd=tree)
    deadline = time.monotonic() + 600
    while not events(log, "ingest"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the watcher did not start")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def recovery_point(work: Path, rate: int, seconds: float, extra: int = 0) -> dict:
    tree = fresh(work / "rp-tree")
    files = 2000
    for d in range(extra // 100):  # files nobody touches: a snapshot must not pay for them
        sub = tree / "still" / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:02d}.txt").write_text(f"{d}/{i}\n")
    (tree / "load").mkdir()
    for i in range(files):
        (tree / "load" / f"f{i:04d}.txt").write_text("0\n")
    log = work / "rp.log"
    log.unlink(missing_ok=True)
    proc = start_watcher(tree, log)
    time.sleep(QUIET + 1)
    writes: list[tuple[float, str, bytes]] = []
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while n < due:
            name = f"load/f{n % files:04d}.txt"
            data = f"{n}\n".encode()
            with open(tree / name, "wb") as f:
                f.write(data)
            writes.append((time.time(), name, data))
            n += 1
        time.sleep(0.001)
    time.sleep(QUIET + 3)
    stop(proc)
    snaps = [(parse_ts(e["started"]), parse_ts(e["ts"])) for e in events(log, "snapshot")]
    latencies = []
    for closed, _, _ in writes:
        ends = [end for began, end in snaps if began >= closed]
        latencies.append(min(ends) - closed if ends else float("inf"))
    last = {name: data for _, name, data in writes}
    subprocess.run([PY, "-m", "cas.cli", "verify"], cwd=tree, check=True, capture_output=True)
    from cas.model.history import History
    from cas.storage.store import Store
    with Store.open(str(tree / ".cas")) as store:
        h = History(store)
        head = h.branch_head("main")
        wrong = sum(store.read_object(h.entry_at(head.tree, name.encode()).oid) != data
                    for name, data in last.items())
    latencies.sort()
    return {"writes": len(writes), "achieved_rate": len(writes) / seconds,
            "snapshots": len(snaps), "p50": statistics.median(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))], "max": latencies[-1],
            "files_wrong_in_last_snapshot": wrong}


def burst(work: Path, count: int) -> dict:
    tree = fresh(work / "burst-tree")
    (tree / "seed.txt").write_text("seed\n")
    log = work / "burst.log"
    log.unlink(missing_ok=True)
    proc = start_watcher(tree, log)
    time.sleep(QUIET + 1)
    started = time.time()
    d = tree / "burst"
    d.mkdir()
    for i in range(count):
        (d / f"{i:06d}.json").write_text(f'{{"i": {i}}}\n')
    written = time.time() - started
    deadline = time.monotonic() + 300
    done = None
    while done is None and time.monotonic() < deadline:
        for e in events(log, "ingest"):
            if e["files"] >= count + 1:
                done = parse_ts(e["ts"])
                break
        time.sleep(0.05)
    stop(proc)
    return {"files": count, "write_seconds": written,
            "snapshotted_after": (done - started) if done else None,
            "snapshots": len(events(log, "snapshot")),
            "overflows": len(events(log, "overflow"))}


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def idle(root: Path, count: int, seconds: float) -> dict:
    tree = fresh(root / "idle-tree")
    per_dir = 100
    for d in range(count // per_dir):
        sub = tree / f"d{d:04d}"
        sub.mkdir()
        for i in range(per_dir):
            (sub / f"f{i:03d}.txt").write_text(f"{d}/{i}\n")
    log = root / "idle.log"
    log.unlink(missing_ok=True)
    t = time.monotonic()
    proc = start_watcher(tree, log)
    first = time.monotonic() - t
    time.sleep(QUIET + 1)
    cpu0, rss0, t0 = proc_cpu(proc.pid), proc_rss_mb(proc.pid), time.monotonic()
    samples = [rss0]
    while time.monotonic() - t0 < seconds:
        time.sleep(min(10, seconds))
        samples.append(proc_rss_mb(proc.pid))
    cpu1, t1 = proc_cpu(proc.pid), time.monotonic()
    stop(proc)
    return {"files": count, "first_snapshot_seconds": first, "window_seconds": t1 - t0,
            "cpu_seconds": cpu1 - cpu0, "core_share": (cpu1 - cpu0) / (t1 - t0),
            "rss_start_mb": rss0, "rss_end_mb": samples[-1], "rss_max_mb": max(samples),
            "snapshots_while_idle": len(events(log, "snapshot")) - 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--tmpfs", type=Path, help="where to build the idle tree (default: --work)")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rp-extra-files", type=int, default=0,
                    help="untouched files beside the 2,000 rewritten ones")
    ap.add_argument("--rp-dir", type=Path, help="where to build the recovery-point tree (default --work)")
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--idle-files", type=int, default=100_000)
    ap.add_argument("--idle-seconds", type=float, default=600)
    ap.add_argument("--only", default="rp,burst,idle")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    results: dict = {}
    if "rp" in only:
        r = results["recovery_point"] = recovery_point(args.rp_dir or args.work, args.rate,
                                                       args.seconds, args.rp_extra_files)
        print(f"recovery point ({2000 + args.rp_extra_files} files in the tree) at "
              f"{r['achieved_rate']:.0f} closed writes/s for {args.seconds:.0f} s "
              f"({r['writes']} writes, {r['snapshots']} snapshots): median {r['p50']:.2f} s, "
              f"p95 {r['p95']:.2f} s, max {r['max']:.2f} s (target {QUIET + 1:.0f} s); "
              f"files wrong in the last snapshot: {r['files_wrong_in_last_snapshot']}", flush=True)
    if "burst" in only:
        b = results["burst"] = burst(args.work, args.burst)
        print(f"burst of {b['files']} files (written in {b['write_seconds']:.1f} s): all in a "
              f"snapshot {b['snapshotted_after']:.1f} s after the first write (target 15 s); "
              f"{b['snapshots']} snapshots, {b['overflows']} queue overflows", flush=True)
    if "idle" in only:
        i = results["idle"] = idle(args.tmpfs or args.work, args.idle_files, args.idle_seconds)
        print(f"idle watcher on {i['files']} files (first snapshot {i['first_snapshot_seconds']:.1f} s): "
              f"{i['cpu_seconds']:.2f} s CPU in {i['window_seconds']:.0f} s = "
              f"{100 * i['core_share']:.3f}% of a core; RSS {i['rss_start_mb']:.1f} -> "
              f"{i['rss_end_mb']:.1f} MB (max {i['rss_max_mb']:.1f}); "
              f"{i['snapshots_while_idle']} snapshots while idle", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
