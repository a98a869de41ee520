#!/usr/bin/env python3
"""Time the snapshot life cycle of cas, restic and borg over the same corpus.

Usage::

    python3 tools/bench/history.py --corpus DIR --work DIR [--repeat 3]
        [--only restic,borg,cas,tar,cp] [--json OUT] [--cas "CMD"] [--keep]
        [--tmpfs-dir /dev/shm] [--quiet-wait 1800] [--retry-disturbed 3]

Every run starts from fresh repositories (``WORK/runs/run<N>/<tool>/``) and a
fresh copy of the corpus at ``WORK/corpus`` (``cp -a``, untimed), the one path
every tool backs up, so absolute paths match. Within a run each step is done
by every tool before the next step starts (tool order rotates between runs):

    prepare          cp -a CORPUS WORK/corpus; restic init, borg init, cas init
                     (untimed); tar -cf of the copy (timed, a baseline row)
    backup-first     restic backup; borg create R::a; cas snapshot -m a
    backup-nochange  the same again (borg R::b); cas records nothing
    (mutate)         make_corpus.py --mutate WORK/corpus (untimed)
    backup-incr      restic backup; borg create R::c; cas snapshot -m c
    restore-disk     the FIRST backup, in full, to WORK/restore-<tool>
    restore-tmpfs    the same to TMPFS/cas-bench-restore-<tool>
    restore-file     models/mini-coder/model.safetensors of the first backup
                     to TMPFS/cas-bench-restore-<tool>; cp is the baseline

Timing reuses peers.py: each command runs as ``bash -o pipefail -c COMMAND``,
reaped with ``os.wait4`` (wall time, user+sys CPU of the process tree, peak
RSS of its largest process; a small launcher process spawns the command so
that the harness's own memory is not the floor of every peak RSS). Before
every backup step the corpus copy is read once more, untimed: borg drops the
files it reads from the page cache, and the tool after it would otherwise
read from disk. ``sync``
runs untimed before every step; the time the ``sync`` right after a step takes
is recorded too (``+sync`` column: the step's write-back that the kernel had
not done yet). The store size (du -sb)
is taken before and after every backup step. Restores are checked against the
original corpus (run 1: every file's path, size and BLAKE3 hash via b3sum, plus
mode and mtime; later runs: file count, total size and the big file's hash);
targets are deleted after the check. Output: the exact commands, a markdown
table per step (medians over ``--repeat`` runs, ratios of median wall time to
borg and restic), store sizes, check results; ``--json`` keeps every run.
Logs of every command are in ``WORK/logs/``.

The machine may be shared: one history.py runs at a time (a lock in the tmpfs
dir); before each run it waits for other programs to go quiet; each step
records the user CPU that other programs used meanwhile (/proc/stat minus the
step's own), and a run with a disturbed step is done again (its samples are
kept in the JSON as "discarded"). SIGTERM and Ctrl-C kill the running command
and remove the restore targets.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the shared measuring machinery)
from peers import (MB, REPO_ROOT, DEFAULT_CAS, du_bytes, first_line, fmt,  # noqa: E402
                   fs_type, median, mem_total_kb, q, read_tree, resolve_cas, run_timed,
                   scan_corpus, warm_up)

TOOLS = ("restic", "borg", "cas", "tar", "cp")
BACKUP_TOOLS = ("restic", "borg", "cas")
BIG_FILE = "models/mini-coder/model.safetensors"
MAKE_CORPUS = REPO_ROOT / "tools" / "bench" / "make_corpus.py"
STEPS = {  # step -> title
    "backup-first": "first backup",
    "backup-nochange": "no-change re-run",
    "backup-incr": "incremental backup after mutation",
    "restore-disk": "full restore of the first backup to {disk}",
    "restore-tmpfs": "full restore of the first backup to tmpfs",
    "restore-file": f"one large file ({BIG_FILE}) of the first backup to tmpfs",
}
BACKUP_STEPS = ("backup-first", "backup-nochange", "backup-incr")
SNAP_LABEL = {"backup-first": "a", "backup-nochange": "b", "backup-incr": "c"}
HEX64 = re.compile(r"^[0-9a-f]{64}$", re.M)


# --------------------------------------------------------------------------
# tools: shell text of each step, given the run's directory for the tool


@dataclass
class Ctx:
    """One tool in one run."""

    tool: str
    run: int
    dir: Path  # WORK/runs/run<N>/<tool>
    corpus: Path  # WORK/corpus, the path that is backed up
    first: str | None = None  # id of the first backup
    dead: str | None = None  # why later steps of this run are skipped


class Tool:
    name = ""
    steps: tuple[str, ...] = ()

    def env(self, c: Ctx) -> dict[str, str]:
        return {}

    def store(self, c: Ctx) -> Path | None:
        return None

    def init(self, c: Ctx) -> list[str]:
        return []

    def backup(self, c: Ctx, label: str) -> str:
        raise NotImplementedError

    def first_id(self, c: Ctx, log: Path) -> str:
        raise NotImplementedError

    def restore(self, c: Ctx, target: Path) -> str:
        raise NotImplementedError

    def restored_root(self, c: Ctx, target: Path) -> Path:
        return target

    def restore_file(self, c: Ctx, target: Path) -> tuple[str, Path]:
        raise NotImplementedError


def inside(c: Ctx) -> Path:
    """The corpus path as restic and borg store it (absolute, leading '/' dropped)."""
    return c.corpus.relative_to(c.corpus.anchor)


class Restic(Tool):
    name = "restic"
    steps = BACKUP_STEPS + ("restore-disk", "restore-tmpfs", "restore-file")

    def env(self, c):
        return {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(c.dir / "cache")}

    def store(self, c):
        return c.dir / "repo"

    def init(self, c):
        return [f"restic init --repo {q(self.store(c))}"]

    def backup(self, c, label):
        return f"restic backup --repo {q(self.store(c))} {q(c.corpus)}"

    def first_id(self, c, log):
        out = subprocess.run(["restic", "snapshots", "--json", "--repo", str(self.store(c))],
                             capture_output=True, text=True, env={**os.environ, **self.env(c)})
        if out.returncode != 0:
            raise RuntimeError(f"restic snapshots failed: {out.stderr.strip()}")
        snaps = sorted(json.loads(out.stdout), key=lambda s: s["time"])
        if not snaps:
            raise RuntimeError("restic snapshots: no snapshot")
        return snaps[0]["id"]

    def restore(self, c, target):
        return f"restic restore --repo {q(self.store(c))} {c.first} --target {q(target)}"

    def restored_root(self, c, target):
        return target / inside(c)

    def restore_file(self, c, target):
        return (f"restic restore --repo {q(self.store(c))} {c.first} --target {q(target)}"
                f" --include {q(c.corpus / BIG_FILE)}", target / inside(c) / BIG_FILE)


class Borg(Tool):
    name = "borg"
    steps = Restic.steps

    def env(self, c):
        return {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_BASE_DIR": str(c.dir / "borg-home")}

    def store(self, c):
        return c.dir / "repo"

    def init(self, c):
        return [f"borg init --encryption none {q(self.store(c))}"]

    def backup(self, c, label):
        return f"borg create --compression none {q(self.store(c))}::{label} {q(c.corpus)}"

    def first_id(self, c, log):
        return "a"

    def restore(self, c, target):
        return f"cd {q(target)} && borg extract {q(self.store(c))}::{c.first}"

    def restored_root(self, c, target):
        return target / inside(c)

    def restore_file(self, c, target):
        rel = inside(c) / BIG_FILE
        return (f"cd {q(target)} && borg extract {q(self.store(c))}::{c.first} {q(rel)}",
                target / rel)


class Cas(Tool):
    name = "cas"
    steps = Restic.steps

    def __init__(self, cas: str):
        self.cas = cas

    def store(self, c):
        return c.dir / "store"

    def init(self, c):
        return [f"{self.cas} --store {q(self.store(c))} init"]

    def backup(self, c, label):
        return f"{self.cas} --store {q(self.store(c))} snapshot {q(c.corpus)} -m {label}"

    def first_id(self, c, log):
        # the first `cas snapshot` prints the snapshot id (alone on a line) on stdout
        ids = HEX64.findall(log.read_text(errors="replace"))
        if len(ids) != 1:
            raise RuntimeError(f"expected one snapshot id in {log}, found {len(ids)}")
        return ids[0]

    def restore(self, c, target):
        return f"{self.cas} --store {q(self.store(c))} restore {c.first} --to {q(target)}"

    def restore_file(self, c, target):
        out = target / Path(BIG_FILE).name
        return (f"{self.cas} --store {q(self.store(c))} cat {c.first}:{BIG_FILE} -o {q(out)}",
                out)


class Tar(Tool):
    """Baseline: tar -cf of the corpus copy (made before the mutation), tar -xf of it."""

    name = "tar"
    steps = ("backup-first", "restore-disk", "restore-tmpfs")

    def store(self, c):
        return c.dir / "corpus.tar"

    def backup(self, c, label):
        return f"tar -cf {q(self.store(c))} -C {q(c.corpus)} ."

    def first_id(self, c, log):
        return "corpus.tar"

    def restore(self, c, target):
        return f"tar -xf {q(self.store(c))} -C {q(target)}"


class Cp(Tool):
    """Baseline: cp of the original big file."""

    name = "cp"
    steps = ("restore-file",)

    def restore_file(self, c, target):
        out = target / Path(BIG_FILE).name
        return f"cp {q(c.corpus / BIG_FILE)} {q(out)}", out


# --------------------------------------------------------------------------
# data model


@dataclass
class Sample(peers.Sample):
    """peers.Sample plus what the life cycle needs."""

    sync_after_s: float | None = None  # the untimed sync right after the step
    store_before: int | None = None  # du -sb of the store before a backup step
    check: str | None = None  # restore check result ("ok", or what differs)
    note: str | None = None
    load1: float | None = None  # 1-minute load average just before the step
    started: str | None = None  # wall-clock time the step started (UTC)
    # user CPU seconds the whole machine spent during the step minus the step's
    # own: other programs running meanwhile (kernel threads are not counted)
    other_user_s: float | None = None
    discarded: bool = False  # its run was disturbed and done again

    @property
    def disturbed(self) -> bool:
        return self.other_user_s is not None and self.other_user_s > 0.3 + 0.05 * self.wall_s

    @property
    def growth(self) -> int | None:
        if self.store_bytes is None or self.store_before is None:
            return None
        return self.store_bytes - self.store_before


@dataclass
class Row:
    """Medians over the runs of one (step, tool)."""

    step: str
    tool: str
    runs: int
    wall_s: float | None
    wall_min_s: float | None
    wall_max_s: float | None
    wall_sync_s: float | None
    cpu_s: float | None
    user_s: float | None
    sys_s: float | None
    peak_rss_mb: float | None
    store_mb: float | None = None
    growth_mb: float | None = None
    vs_borg: float | None = None
    vs_restic: float | None = None
    failed: str | None = None
    disturbed_runs: list[int] = field(default_factory=list)


@dataclass
class Report:
    meta: dict
    commands: dict[str, list[str]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # untimed work: prepare, mutate, ...
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # failures outside timed steps


# --------------------------------------------------------------------------
# reference listing and restore checks


@dataclass
class Listing:
    """Regular files below a root: relative path -> (size, mode, mtime_ns), and hashes."""

    meta: dict[str, tuple[int, int, int]]
    b3: dict[str, str] | None = None

    @property
    def bytes(self) -> int:
        return sum(m[0] for m in self.meta.values())


def list_tree(root: Path, hashes: bool) -> Listing:
    meta = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)  # a symlink differs from a file in st_mode
            meta[os.path.relpath(p, root)] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return Listing(meta, b3sums(root) if hashes else None)


def b3sums(root: Path) -> dict[str, str]:
    out = subprocess.run("find . -type f -print0 | xargs -0 -r b3sum --num-threads 2",
                         shell=True, cwd=root, capture_output=True, text=True, check=True)
    sums = {}
    for line in out.stdout.splitlines():
        digest, path = line.split("  ", 1)
        sums[path.removeprefix("./")] = digest.lstrip("\\")
    return sums


def b3sum_file(path: Path) -> str:
    out = subprocess.run(["b3sum", "--no-names", str(path)], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def compare(ref: Listing, root: Path, full: bool) -> str:
    """'ok' or what differs between the reference corpus and a restored tree."""
    if not root.is_dir():
        return f"restored tree not found at {root}"
    got = list_tree(root, hashes=full)
    problems, metadata = [], []
    missing = sorted(set(ref.meta) - set(got.meta))
    extra = sorted(set(got.meta) - set(ref.meta))
    if missing:
        problems.append(f"{len(missing)} files missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} extra files (e.g. {extra[0]})")
    common = sorted(set(ref.meta) & set(got.meta))
    size = [p for p in common if ref.meta[p][0] != got.meta[p][0]]
    if size:
        problems.append(f"{len(size)} files differ in size (e.g. {size[0]})")
    if full:
        content = [p for p in common if ref.b3.get(p) != got.b3.get(p)]
        if content:
            problems.append(f"{len(content)} files differ in content (e.g. {content[0]})")
        mode = [p for p in common if ref.meta[p][1] != got.meta[p][1]]
        mtime = [p for p in common if ref.meta[p][2] != got.meta[p][2]]
        mtime_s = [p for p in mtime if ref.meta[p][2] // 10**9 != got.meta[p][2] // 10**9]
        if mode:
            metadata.append(f"{len(mode)} files differ in mode (e.g. {mode[0]})")
        if mtime_s:
            metadata.append(f"{len(mtime_s)} files differ in mtime (e.g. {mtime_s[0]})")
        elif mtime:
            metadata.append(f"{len(mtime)} files differ in sub-second mtime only")
    else:
        digest = b3sum_file(root / BIG_FILE) if (root / BIG_FILE).is_file() else None
        if digest != ref.b3[BIG_FILE]:
            problems.append(f"{BIG_FILE} differs")
    what = f"{len(got.meta):,} files, {got.bytes:,} B" + (", all hashed" if full else "")
    if problems:
        return "DIFFERS: " + "; ".join(problems + metadata) + " -- " + what
    if metadata:
        return "ok (content), metadata: " + "; ".join(metadata) + " -- " + what
    return "ok: " + what


def check_big_file(ref: Listing, path: Path) -> str:
    if not path.is_file():
        return f"DIFFERS: {path} not restored"
    digest = b3sum_file(path)
    if digest != ref.b3[BIG_FILE]:
        return f"DIFFERS: b3sum {digest} != {ref.b3[BIG_FILE]}"
    return f"ok: b3sum {digest[:16]}…, {path.stat().st_size:,} B"


# --------------------------------------------------------------------------
# running


def machine_user_s() -> float:
    """User + nice CPU seconds of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # cpu user nice system idle ...
    return (int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")


class Runner:
    def __init__(self, args: argparse.Namespace, tools: list[Tool], ref: Listing,
                 report: Report):
        self.args, self.tools, self.ref, self.report = args, tools, ref, report
        self.work: Path = args.work
        self.corpus = self.work / "corpus"
        self.logs = self.work / "logs"
        self.tag = "run0"

    # ---- helpers

    def ctx(self, tool: Tool, run: int) -> Ctx:
        return Ctx(tool.name, run, self.work / "runs" / f"run{run}" / tool.name, self.corpus)

    def untimed(self, what: str, run: int, argv: list[str] | str, env: dict | None = None,
                log: Path | None = None) -> tuple[int, float]:
        """Run setup work (shell text or argv); returns (exit code, seconds)."""
        log = log or self.logs / f"{self.tag}-{what}.log"
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            text = argv if isinstance(argv, str) else " ".join(q(a) for a in argv)
            out.write(f"$ {text}\n".encode())
            out.flush()
            rc = subprocess.run(["bash", "-o", "pipefail", "-c", argv] if isinstance(argv, str)
                                else argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
                                ).returncode
        secs = time.perf_counter() - t0
        self.report.events.append({"run": run, "what": what, "command": text, "returncode": rc,
                                   "seconds": round(secs, 3), "log": str(log)})
        return rc, secs

    def timed(self, tool: Tool, c: Ctx, step: str, command: str) -> Sample:
        log = self.logs / f"{self.tag}-{tool.name}-{step}.log"
        store = tool.store(c)
        measure_store = step in BACKUP_STEPS and store is not None
        os.sync()  # untimed: flush write-back left over from earlier work
        before = du_bytes(store) if measure_store and store.exists() else None
        env = tool.env(c)
        load1 = os.getloadavg()[0]
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        user0 = machine_user_s()
        wall, usage, rc = run_timed(command, env, log, launcher=True)
        other = machine_user_s() - user0 - usage.ru_utime
        t0 = time.perf_counter()
        os.sync()
        sync_s = time.perf_counter() - t0
        s = Sample(tool.name, step, c.run, command, env, wall, usage.ru_utime, usage.ru_stime,
                   usage.ru_maxrss, rc, None, str(log), sync_after_s=sync_s,
                   store_before=before, load1=load1, started=started,
                   other_user_s=round(other, 3))
        if rc != 0:
            s.error = f"exit {rc}; see {log}"
        elif measure_store:
            s.store_bytes = du_bytes(store)
        self.report.samples.append(s)
        return s

    def say(self, s: Sample) -> None:
        extra = []
        if s.growth is not None:
            extra.append(f"store +{s.growth / MB:,.1f} MB")
        elif s.store_bytes is not None:
            extra.append(f"store {s.store_bytes / MB:,.1f} MB")
        if s.check:
            extra.append(s.check)
        if s.note:
            extra.append(s.note)
        if s.error:
            extra.append(f"FAILED: {s.error}")
        if s.disturbed:
            extra.append(f"DISTURBED: other programs used {s.other_user_s:.1f} s user CPU")
        print(f"  run {s.run} {s.step:<15} {s.tool:<6} {s.wall_s:8.2f} s  "
              f"(+sync {s.sync_after_s:.2f} s, cpu {s.cpu_s:.2f} s, "
              f"rss {s.maxrss_kb / 1024:.0f} MiB)  " + "; ".join(extra), flush=True)

    def rotate(self, names: list[str], run: int) -> list[Tool]:
        tools = [t for t in self.tools if t.name in names]
        k = (run - 1) % len(tools) if tools else 0
        return tools[k:] + tools[:k]

    def fresh(self, path: Path) -> Path:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def wait_quiet(self, limit_s: float) -> None:
        """Before a run: wait (up to limit_s) until other programs use < 5% of a CPU."""
        t0, said, calm = time.perf_counter(), False, 0
        while True:
            u0 = machine_user_s()
            time.sleep(5)
            other = (machine_user_s() - u0) / 5
            calm = calm + 1 if other < 0.05 else 0
            if calm >= 2:
                break
            waited = time.perf_counter() - t0
            if waited > limit_s:
                self.report.notes.append(f"started a run after waiting {waited:.0f} s although "
                                         f"other programs used {other:.0%} of a CPU")
                break
            if not said and other >= 0.05:
                print(f"waiting for a quiet machine (other programs use {other:.0%} of a CPU)",
                      flush=True)
                said = True
        waited = time.perf_counter() - t0
        if said:
            print(f"quiet after {waited:.0f} s", flush=True)
        self.report.events.append({"what": "wait-quiet", "seconds": round(waited, 1)})

    # ---- one run

    def run(self, run: int, attempt: int = 1) -> None:
        self.tag = f"run{run}" + (f"-retry{attempt - 1}" if attempt > 1 else "")
        rundir = self.work / "runs" / f"run{run}"
        if rundir.exists():
            shutil.rmtree(rundir)
        if self.corpus.exists():
            shutil.rmtree(self.corpus)
        rc, secs = self.untimed("prepare", run, ["cp", "-a", str(self.args.corpus),
                                                 str(self.corpus)])
        if rc != 0:
            raise SystemExit(f"cp -a of the corpus failed; see {self.logs}")
        os.sync()
        print(f"run {run}: copied corpus to {self.corpus} in {secs:.1f} s", flush=True)

        ctxs: dict[str, Ctx] = {}
        for tool in self.tools:
            c = ctxs[tool.name] = self.ctx(tool, run)
            c.dir.mkdir(parents=True)
            for i, cmd in enumerate(tool.init(c)):
                rc, _ = self.untimed(f"{tool.name}-init", run, cmd, tool.env(c))
                if rc != 0:
                    c.dead = f"init failed; see {self.logs / f'{self.tag}-{tool.name}-init.log'}"
                    print(f"  run {run} {tool.name}: {c.dead}", flush=True)
                    self.report.failures.append(f"run {run} {tool.name}: {c.dead}")

        def backup_step(step: str, names: tuple[str, ...]) -> None:
            for tool in self.rotate(list(names), run):
                c = ctxs[tool.name]
                if c.dead or step not in tool.steps:
                    continue
                # Untimed: borg drops the files it read from the page cache
                # (posix_fadvise DONTNEED); without this the tool after it
                # would read the corpus from disk.
                read_tree(self.corpus)
                s = self.timed(tool, c, step, tool.backup(c, SNAP_LABEL[step]))
                if s.ok and step == "backup-first":
                    try:
                        c.first = tool.first_id(c, Path(s.log))
                    except (RuntimeError, OSError, ValueError, KeyError) as e:
                        s.error = f"first snapshot id: {e}"
                if s.ok and tool.name == "cas" and step == "backup-nochange":
                    text = Path(s.log).read_text(errors="replace")
                    s.note = ("cas: nothing changed" if "nothing changed" in text
                              else "cas did not say 'nothing changed'")
                if not s.ok:
                    c.dead = f"{step} failed"
                self.say(s)

        # tar first: its archive must hold the state of the first backup
        backup_step("backup-first", ("tar",))
        backup_step("backup-first", BACKUP_TOOLS)
        backup_step("backup-nochange", BACKUP_TOOLS)

        rc, secs = self.untimed("mutate", run, [sys.executable, str(MAKE_CORPUS), "--mutate",
                                                str(self.corpus)])
        if rc != 0:
            raise SystemExit(f"mutate failed; see {self.logs / f'{self.tag}-mutate.log'}")
        os.sync()
        print(f"run {run}: mutated {self.corpus} in {secs:.1f} s", flush=True)
        backup_step("backup-incr", BACKUP_TOOLS)

        tmpfs = self.args.tmpfs_dir
        for step, base, prefix in (("restore-disk", self.work, "restore-"),
                                   ("restore-tmpfs", tmpfs, "cas-bench-restore-")):
            for tool in self.rotate(list(BACKUP_TOOLS) + ["tar"], run):
                c = ctxs[tool.name]
                if c.dead or step not in tool.steps:
                    continue
                target = self.fresh(base / f"{prefix}{tool.name}")
                try:
                    s = self.timed(tool, c, step, tool.restore(c, target))
                    if s.ok:
                        s.check = compare(self.ref, tool.restored_root(c, target), run == 1)
                    self.say(s)
                finally:
                    shutil.rmtree(target, ignore_errors=True)

        for tool in self.rotate(list(BACKUP_TOOLS) + ["cp"], run):
            c = ctxs[tool.name]
            if c.dead or "restore-file" not in tool.steps:
                continue
            target = self.fresh(tmpfs / f"cas-bench-restore-{tool.name}")
            try:
                command, out = tool.restore_file(c, target)
                s = self.timed(tool, c, "restore-file", command)
                if s.ok:
                    s.check = check_big_file(self.ref, out)
                self.say(s)
            finally:
                shutil.rmtree(target, ignore_errors=True)

        if not self.args.keep:
            shutil.rmtree(rundir, ignore_errors=True)
            shutil.rmtree(self.corpus, ignore_errors=True)
        os.sync()


# --------------------------------------------------------------------------
# summary and output


def summarize(samples: list[Sample]) -> list[Row]:
    samples = [s for s in samples if not s.discarded]
    rows = []
    keys = sorted({(s.step, s.tool) for s in samples},
                  key=lambda k: (list(STEPS).index(k[0]), TOOLS.index(k[1])))
    for step, tool in keys:
        group = [s for s in samples if (s.step, s.tool) == (step, tool)]
        good = [s for s in group if s.ok]
        bad = [s for s in group if not s.ok]
        stores = [s.store_bytes for s in good if s.store_bytes is not None]
        growths = [s.growth for s in good if s.growth is not None]
        rows.append(Row(
            step, tool, len(good),
            wall_s=median([s.wall_s for s in good]),
            wall_min_s=min((s.wall_s for s in good), default=None),
            wall_max_s=max((s.wall_s for s in good), default=None),
            wall_sync_s=median([s.wall_s + (s.sync_after_s or 0) for s in good]),
            cpu_s=median([s.cpu_s for s in good]),
            user_s=median([s.user_s for s in good]),
            sys_s=median([s.sys_s for s in good]),
            peak_rss_mb=median([s.maxrss_kb * 1024 / MB for s in good]),
            store_mb=median(stores) / MB if stores else None,
            growth_mb=median(growths) / MB if growths else None,
            failed=bad[0].error if bad else None,
            disturbed_runs=[s.run for s in good if s.disturbed],
        ))
    for r in rows:
        for base, attr in (("borg", "vs_borg"), ("restic", "vs_restic")):
            b = next((x for x in rows if x.step == r.step and x.tool == base), None)
            if b and b.wall_s and r.wall_s is not None:
                setattr(r, attr, r.wall_s / b.wall_s)
    return rows


def step_table(step: str, rows: list[Row]) -> str:
    backup = step in BACKUP_STEPS
    bases = [b for b in ("borg", "restic") if any(r.tool == b and r.wall_s for r in rows)]
    head = ["tool", "median wall s", "min–max s", "wall+sync s",
            "CPU s user+sys (user / sys)", "peak RSS MB"]
    head += [f"wall vs {b}" for b in bases]
    if backup:
        head += ["store MB after", "store growth MB"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        label = r.tool + (" (baseline)" if r.tool in ("tar", "cp") else "")
        if r.wall_s is None:
            lines.append(f"| {label} | FAILED: {r.failed} |" + " |" * (len(head) - 2))
            continue
        cpu = f"{fmt(r.cpu_s, '.2f')} ({fmt(r.user_s, '.2f')} / {fmt(r.sys_s, '.2f')})"
        wall = fmt(r.wall_s, ".2f") + (" ‡" if r.disturbed_runs else "")
        cells = [label, wall, f"{fmt(r.wall_min_s, '.2f')}–{fmt(r.wall_max_s, '.2f')}",
                 fmt(r.wall_sync_s, ".2f"), cpu, fmt(r.peak_rss_mb, ".1f")]
        cells += [fmt(getattr(r, f"vs_{b}"), ".2f", "x") for b in bases]
        if backup:
            cells += [fmt(r.store_mb, ",.1f"), fmt(r.growth_mb, ",.1f")]
        if r.failed:
            cells[0] += f" ({r.runs} ok; {r.failed})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def store_table(rows: list[Row]) -> str:
    by = {(r.step, r.tool): r for r in rows}
    tools = [t for t in BACKUP_TOOLS if any(r.tool == t for r in rows)]
    lines = ["| tool | after first backup MB | after no-change re-run MB | "
             "after incremental MB | incremental growth MB |", "|---|---:|---:|---:|---:|"]
    for t in tools:
        cell = [by.get((s, t)) for s in BACKUP_STEPS]
        lines.append(f"| {t} | " + " | ".join(fmt(r.store_mb if r else None, ",.1f") for r in cell)
                     + f" | {fmt(cell[2].growth_mb if cell[2] else None, ',.1f')} |")
    if "tar" in {r.tool for r in rows if r.step == "backup-first"}:
        r = by[("backup-first", "tar")]
        lines.append(f"| tar (baseline) | {fmt(r.store_mb, ',.1f')} | – | – | – |")
    return "\n".join(lines)


def check_lines(samples: list[Sample]) -> list[str]:
    out = []
    for s in samples:
        if s.check and not s.check.startswith("ok:") and not s.discarded:
            out.append(f"- run {s.run} {s.step} {s.tool}: {s.check}")
    return out


def print_report(report: Report) -> None:
    m = report.meta
    c = m["corpus"]
    print(f"\n## Results\n\ncorpus: {c['path']} ({c['files']:,} files, {c['bytes'] / MB:,.1f} MB)"
          f" copied to {m['work']['path']}/corpus; work fs {m['work']['fs']}, tmpfs dir "
          f"{m['tmpfs']['path']} (fs {m['tmpfs']['fs']}); {m['repeat']} run(s), medians "
          f"reported; {m['machine']['cpus']} CPUs; versions: "
          + "; ".join(f"{k} {v}" for k, v in m["versions"].items()))
    for step, title in STEPS.items():
        rows = [r for r in report.rows if r.step == step]
        if not rows:
            continue
        print(f"\n### {title.format(disk=m['work']['fs'])} ({step})\n")
        print(step_table(step, rows))
    print("\n### Store sizes (du -sb, median over runs)\n")
    print(store_table(report.rows))
    mutate = [e["seconds"] for e in report.events if e["what"] == "mutate"]
    print(f"\nwall: median wall time of the command; wall+sync adds the `sync` right after it "
          f"(write-back the kernel still owed); CPU: user+sys of the process tree; peak RSS: "
          f"largest process (ru_maxrss, via a launcher whose own ~8 MiB is the floor). "
          f"min–max: fastest and slowest run. Ratios: median wall "
          f"over borg's / restic's median wall for the same step. mutate took "
          f"{median(mutate) or 0:.1f} s (untimed).")
    disturbed = [s for s in report.samples if s.disturbed and not s.discarded]
    if disturbed:
        print("\n‡ other programs ran during some runs of this row (user CPU of the machine "
              "minus the step's own):")
        for s in disturbed:
            print(f"- run {s.run} {s.step} {s.tool}: {s.other_user_s:.1f} s other user CPU "
                  f"during {s.wall_s:.1f} s (started {s.started})")
    redone = sorted({(s.run, s.started) for s in report.samples if s.discarded})
    if redone:
        runs = sorted({r for r, _ in redone})
        print(f"\nRuns done again because other programs ran during them (their samples are in "
              f"the JSON with \"discarded\": true): {', '.join(map(str, runs))}")
    bad = check_lines(report.samples)
    checked = sum(1 for s in report.samples if s.check and not s.discarded)
    if not bad:
        verdict = "all identical."
    elif any("DIFFERS" in b for b in bad):
        verdict = "DIFFERENCES FOUND:"
    else:
        verdict = "content identical everywhere; metadata differences:"
    print(f"\n### Restore checks\n\n{checked} restores checked against {c['path']} "
          f"(run 1: every file's path, size, BLAKE3, mode, mtime; later runs: count, size, "
          f"{BIG_FILE} BLAKE3): " + verdict)
    for line in bad:
        print(line)
    for s in report.samples:
        if s.note and s.tool == "cas" and "did not" in s.note:
            print(f"- run {s.run} {s.step} cas: {s.note} (log {s.log})")
    for note in report.notes:
        print(f"note: {note}")
    for failure in report.failures:
        print(f"FAILED: {failure}")


def write_json(path: Path, report: Report) -> None:
    peers.write_json(path, report,
                     run_extra=lambda s: {"growth": s.growth, "disturbed": s.disturbed},
                     untimed=report.events, failures=report.failures)


def script(tools: list[Tool], work: Path, tmpfs: Path) -> dict[str, list[str]]:
    """The commands of run 1, as a runnable script (first ids as shell variables)."""
    corpus = work / "corpus"
    cmds: dict[str, list[str]] = {"prepare": [f"cp -a CORPUS {q(corpus)}"]}
    for t in tools:
        c = Ctx(t.name, 1, work / "runs" / "run1" / t.name, corpus,
                first={"restic": "$RESTIC_FIRST", "cas": "$CAS_FIRST"}.get(t.name, "a"))
        lines = [f"# {t.name}"]
        env = t.env(c)
        if env:
            lines.append("export " + " ".join(f"{k}={q(v)}" for k, v in env.items()))
        lines += [f"{cmd}   # untimed" for cmd in t.init(c)]
        for step in BACKUP_STEPS:
            if step in t.steps:
                lines.append(f"{t.backup(c, SNAP_LABEL[step])}   # {step}")
                if step == "backup-first" and t.name == "restic":
                    lines.append(f"RESTIC_FIRST=$(restic snapshots --json --repo "
                                 f"{q(t.store(c))} | jq -r '.[0].id')   # untimed")
                if step == "backup-first" and t.name == "cas":
                    lines[-1] = f"CAS_FIRST=$({t.backup(c, 'a')})   # backup-first (prints the id)"
        for step, base, prefix in (("restore-disk", work, "restore-"),
                                   ("restore-tmpfs", tmpfs, "cas-bench-restore-")):
            if step in t.steps:
                target = base / f"{prefix}{t.name}"
                lines.append(f"mkdir -p {q(target)}; {t.restore(c, target)}   # {step}")
                lines.append(f"rm -rf {q(target)}   # untimed")
        if "restore-file" in t.steps:
            target = tmpfs / f"cas-bench-restore-{t.name}"
            lines.append(f"mkdir -p {q(target)}; {t.restore_file(c, target)[0]}   # restore-file")
            lines.append(f"rm -rf {q(target)}   # untimed")
        cmds[t.name] = lines
    cmds["mutate"] = [f"python3 {q(MAKE_CORPUS.relative_to(REPO_ROOT))} --mutate {q(corpus)}"
                      "   # untimed, after every tool's backup-nochange, before backup-incr"]
    return cmds


# --------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="corpus to copy (not modified)")
    ap.add_argument("--work", type=Path, required=True,
                    help="scratch dir: corpus copy, repositories, disk restores, logs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(TOOLS),
                    help=f"comma-separated subset of {','.join(TOOLS)} (default all)")
    ap.add_argument("--json", type=Path, help="write every run and the summary here")
    ap.add_argument("--cas", default=DEFAULT_CAS,
                    help=f"cas command (default {DEFAULT_CAS}, relative to the repo root)")
    ap.add_argument("--keep", action="store_true",
                    help="keep each run's repositories and the last corpus copy")
    ap.add_argument("--tmpfs-dir", type=Path, default=Path("/dev/shm"),
                    help="where tmpfs restores go (default /dev/shm)")
    ap.add_argument("--quiet-wait", type=float, default=1800, metavar="SECONDS",
                    help="before each run, wait up to this long for other programs to use "
                         "< 5%% of a CPU (0: do not wait; default 1800)")
    ap.add_argument("--retry-disturbed", type=int, default=3, metavar="N",
                    help="do a run again when other programs ran during one of its steps, "
                         "at most N times in all (default 3)")
    args = peers.check_common_args(ap, ap.parse_args(argv), TOOLS)
    args.tmpfs_dir = args.tmpfs_dir.resolve()
    if not (args.corpus / BIG_FILE).is_file():
        ap.error(f"{args.corpus} has no {BIG_FILE} (not a make_corpus.py corpus?)")
    if args.work.is_relative_to(args.corpus) or args.corpus.is_relative_to(args.work):
        ap.error("--work and --corpus must not contain each other")
    if (args.corpus / "models" / "mini-coder-ft").exists():
        ap.error(f"{args.corpus} is already mutated")
    return args


def take_lock(tmpfs: Path):
    """One history.py at a time: the tmpfs restore targets have fixed names, and
    two benchmarks running at once would time each other."""
    path = tmpfs / "cas-bench-history.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise SystemExit(f"error: another history.py holds {path} ({f.read().strip()}); "
                         "wait for it to finish")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
    f.flush()
    return f


def repo_state() -> dict:
    """Which cas source the default --cas runs: HEAD and uncommitted files under cas/."""
    def git(*a: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *a], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "unavailable"
    return {"head": git("rev-parse", "HEAD"),
            "uncommitted_in_cas": git("status", "--porcelain", "--", "cas").splitlines()}


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lock = take_lock(args.tmpfs_dir)  # noqa: F841  (held until exit)
    # SIGTERM unwinds like Ctrl-C, so the running command is killed and the
    # restore targets (on tmpfs: memory) are removed by the finally blocks
    signal.signal(signal.SIGTERM, interrupted)
    args.work.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    notes: list[str] = []
    tools: list[Tool] = []
    for name in sorted(args.only, key=TOOLS.index):
        if name == "cas":
            cas, why = resolve_cas(args.cas)
            if cas is None:
                notes.append(f"cas rows skipped: {why}")
                continue
            tools.append(Cas(cas))
        else:
            tools.append({"restic": Restic, "borg": Borg, "tar": Tar, "cp": Cp}[name]())

    corpus = scan_corpus(args.corpus)
    need = corpus.bytes * (2 + sum(t.name in ("restic", "borg", "cas", "tar") for t in tools))
    free = shutil.disk_usage(args.work).free
    if free < need * (args.repeat if args.keep else 1):
        notes.append(f"only {free / MB:,.0f} MB free in {args.work}; a run needs about "
                     f"{need / MB:,.0f} MB" + (" (times --repeat with --keep)" if args.keep else ""))
    tfree = shutil.disk_usage(args.tmpfs_dir).free
    if tfree < 1.2 * corpus.bytes:
        notes.append(f"only {tfree / MB:,.0f} MB free in {args.tmpfs_dir}")

    commands = script(tools, args.work, args.tmpfs_dir)
    print(f"# commands of run 1 (each timed one runs as `bash -o pipefail -c COMMAND`; "
          f"logs in {logs})\n")
    for key in ("prepare", *[t.name for t in tools], "mutate"):
        print("\n".join(commands[key]) + "\n")

    warm_up(corpus)
    t0 = time.perf_counter()
    ref = list_tree(args.corpus, hashes=True)
    print(f"warm-up: read {corpus.files:,} files, {corpus.bytes / MB:,.1f} MB in "
          f"{corpus.warmup_s:.1f} s; reference listing + b3sum in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    versions = {"restic": ["restic", "version"], "borg": ["borg", "--version"],
                "tar": ["tar", "--version"], "b3sum": ["b3sum", "--version"]}
    meta = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "corpus": {"path": str(corpus.path), "files": corpus.files, "bytes": corpus.bytes,
                   "fs": fs_type(corpus.path), "warmup_s": round(corpus.warmup_s, 3),
                   "big_file_b3": ref.b3[BIG_FILE]},
        "work": {"path": str(args.work), "fs": fs_type(args.work)},
        "tmpfs": {"path": str(args.tmpfs_dir), "fs": fs_type(args.tmpfs_dir)},
        "repeat": args.repeat,
        "tools": [t.name for t in tools],
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                    "python": sys.version.split()[0], "mem_total_kb": mem_total_kb()},
        "versions": {k: first_line(v) for k, v in versions.items()
                     if k == "b3sum" or k in args.only},
    }
    if any(t.name == "cas" for t in tools):
        meta["versions"]["cas"] = first_line(next(t for t in tools if t.name == "cas")
                                             .cas.split() + ["--version"])
    meta["repo"] = repo_state()
    report = Report(meta, commands, notes=notes)
    runner = Runner(args, tools, ref, report)
    retries = args.retry_disturbed
    run = attempt = 1
    while run <= args.repeat:
        try:
            if args.quiet_wait > 0:
                runner.wait_quiet(args.quiet_wait)
            first = len(report.samples)
            runner.run(run, attempt)
            mine = report.samples[first:]
            if retries > 0 and any(s.disturbed for s in mine):
                for s in mine:
                    s.discarded = True
                retries -= 1
                attempt += 1
                print(f"run {run} was disturbed by other programs; doing it again "
                      f"({retries} retries left)", flush=True)
                continue
            run, attempt = run + 1, 1
        except KeyboardInterrupt:
            print(f"interrupted in run {run}", flush=True)
            report.failures.append(f"interrupted in run {run}")
            if not args.keep:
                shutil.rmtree(args.work / "runs" / f"run{run}", ignore_errors=True)
                shutil.rmtree(runner.corpus, ignore_errors=True)
            if args.json:
                report.rows = summarize(report.samples)
                write_json(args.json, report)
            return 130
        report.rows = summarize(report.samples)
        report.meta["harness_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if args.json:
            write_json(args.json, report)  # partial results survive a crash
    report.meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print_report(report)
    if args.json:
        write_json(args.json, report)
        print(f"\njson: {args.json}")
    failed = report.failures or any(r.failed for r in report.rows) or any(
        s.check and s.check.startswith("DIFFERS") for s in report.samples)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
