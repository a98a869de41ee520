"""The race harness: an unprivileged attacker swapping directories for symbolic links.

A "world" is a fresh directory under /tmp (root-owned, 0755) holding:

- ``secret/``: root-only (0700) files and directories outside the target,
  which root must never write, chmod, utime, delete or read on the
  attacker's behalf;
- ``attacker/``: scratch space owned by the unprivileged user;
- ``store/``: the cas store root uses;
- the target (or source, or working tree) of the command, owned by the
  unprivileged user, made by each test.

The attacker is a real process running as uid 65534 (``setpriv``) that
exchanges each named directory with a symbolic link to ``secret/`` and back
(``renameat2(RENAME_EXCHANGE)``, so neither name is ever missing), as fast as
it can, counting swaps in a shared 16-byte file: [ready, swaps]. cas runs as
root in its own subprocess; an attempt counts only if the attacker swapped
between the command's start and end.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534
SECRET_CONTENT = b"TOPSECRET-"
SECRET_NAME = "hidden-file-"

SWAPPER = r"""
import ctypes, json, mmap, os, random, signal, sys, time
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
exchange = libc.renameat2
exchange.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD, RENAME_EXCHANGE = -100, 2
pairs = [(d.encode(), l.encode()) for d, l in cfg["pairs"]]
for _, link in pairs:
    os.symlink(cfg["link_to"], link)
fd = os.open(cfg["counter"], os.O_RDWR)
shared = mmap.mmap(fd, 16)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
if cfg.get("trigger"):   # start at the first such event there, then after the delay
    watch = libc.inotify_init1(0)
    libc.inotify_add_watch(watch, cfg["trigger"].encode(), cfg["trigger_mask"])
shared[0:8] = (1).to_bytes(8, "little")
if cfg.get("trigger"):
    os.read(watch, 4096)
time.sleep(cfg["delay"])
swapped = [False] * len(pairs)
swaps = 0
parent = os.getppid()
deadline = time.monotonic() + cfg["limit"]   # never outlive a test that died
while not stop and time.monotonic() < deadline and os.getppid() == parent:
    for i, (victim, link) in enumerate(pairs):
        if exchange(AT_FDCWD, victim, AT_FDCWD, link, RENAME_EXCHANGE) == 0:
            swapped[i] = not swapped[i]
            swaps += swapped[i]
    shared[8:16] = swaps.to_bytes(8, "little")
    if cfg["hold"]:
        time.sleep(random.uniform(0, cfg["hold"]))
for i, (victim, link) in enumerate(pairs):
    if swapped[i] and exchange(AT_FDCWD, victim, AT_FDCWD, link, RENAME_EXCHANGE) != 0:
        try:
            os.rename(link, victim)   # the victim's name was removed while swapped
        except OSError:
            pass
for _, link in pairs:
    if os.path.islink(link):
        os.unlink(link)
print(json.dumps({"swaps": swaps}))
"""


# Replaces each temp name restore creates in ``dirs`` (inotify IN_CREATE) by a
# hard link to ``victim``, a root-owned file the attacker may link to (it
# can read and write it), hoping root then changes that file's owner or
# times through the name.
LINKER = r"""
import ctypes, json, mmap, os, select, signal, struct, sys, time
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
dirs = {libc.inotify_add_watch(fd, d.encode(), 0x100): d.encode() for d in cfg["dirs"]}
victim = cfg["victim"].encode()
shared = mmap.mmap(os.open(cfg["counter"], os.O_RDWR), 16)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
shared[0:8] = (1).to_bytes(8, "little")
swaps, parent, deadline = 0, os.getppid(), time.monotonic() + cfg["limit"]
while not stop and time.monotonic() < deadline and os.getppid() == parent:
    if not select.select([fd], [], [], 0.05)[0]:
        continue
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        continue
    at = 0
    while at < len(buf):
        wd, mask, _, size = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16:at + 16 + size].rstrip(b"\0")
        at += 16 + size
        if not name.startswith(cfg["prefix"].encode()):
            continue
        path = dirs[wd] + b"/" + name
        spare = dirs[wd] + b"/.hl-" + name
        try:
            os.link(victim, spare)
            os.rename(spare, path)
            swaps += 1
        except OSError:
            try:
                os.unlink(spare)
            except OSError:
                pass
    shared[8:16] = swaps.to_bytes(8, "little")
"""

# Swaps a directory for a link the moment a file in it ending in ``suffix``
# has been closed for the ``nth`` time (inotify IN_CLOSE_NOWRITE), then
# swaps back after ``hold`` seconds: aimed at a check by path followed by a
# use by path.
ON_CLOSE = r"""
import collections, ctypes, json, mmap, os, select, signal, struct, sys, time
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
exchange = libc.renameat2
exchange.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
fd = libc.inotify_init1(os.O_NONBLOCK)
pairs = {}
for victim, link in cfg["pairs"]:
    os.symlink(cfg["link_to"], link)
    pairs[libc.inotify_add_watch(fd, victim.encode(), 0x10)] = (victim.encode(), link.encode())
shared = mmap.mmap(os.open(cfg["counter"], os.O_RDWR), 16)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
shared[0:8] = (1).to_bytes(8, "little")
closes = collections.Counter()
swaps, parent, deadline = 0, os.getppid(), time.monotonic() + cfg["limit"]
while not stop and time.monotonic() < deadline and os.getppid() == parent:
    if not select.select([fd], [], [], 0.05)[0]:
        continue
    buf = os.read(fd, 65536)
    at = 0
    while at < len(buf):
        wd, mask, _, size = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16:at + 16 + size].rstrip(b"\0")
        at += 16 + size
        if not name.endswith(cfg["suffix"].encode()):
            continue
        closes[wd, name] += 1
        if closes[wd, name] != cfg["nth"]:
            continue
        victim, link = pairs[wd]
        if exchange(-100, victim, -100, link, 2) == 0:
            swaps += 1
            time.sleep(cfg["hold"])
            for _ in range(1000):
                if exchange(-100, victim, -100, link, 2) == 0:
                    break
                time.sleep(0.001)
    shared[8:16] = swaps.to_bytes(8, "little")
for _, link in pairs.values():
    if os.path.islink(link):
        os.unlink(link)
"""


def skip_reason() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "the race harness runs cas as root against an unprivileged attacker"
    if shutil.which("setpriv") is None:
        return "setpriv is needed to run the attacker as uid 65534"
    if not hasattr(ctypes.CDLL(None), "renameat2"):
        return "renameat2 is needed for the attacker's atomic exchange"
    return None


def attempts(default: int) -> int:
    """Attempts per case: ``CAS_RACE_ATTEMPTS`` raises the CI default on demand."""
    return int(os.environ.get("CAS_RACE_ATTEMPTS") or default)


@dataclass
class World:
    base: Path

    @property
    def secret(self) -> Path:
        return self.base / "secret"

    @property
    def attacker(self) -> Path:
        return self.base / "attacker"

    @property
    def store(self) -> Path:
        return self.base / "store"

    @property
    def counter(self) -> Path:
        return self.attacker / "counter"


def make_world() -> World:
    base = Path(tempfile.mkdtemp(prefix="cas-race-", dir="/tmp"))
    os.chmod(base, 0o755)   # the attacker must reach its own directories
    world = World(base)
    world.attacker.mkdir()
    os.chown(world.attacker, NOBODY, NOBODY)
    return world


def remove_world(world: World) -> None:
    shutil.rmtree(world.base, ignore_errors=True)


def make_secret(world: World, bait: dict[str, bytes | dict] | None = None) -> None:
    """A fresh root-only secret directory: a few files of its own, plus bait.

    Bait carries the names the command under attack will write, delete or
    descend into, so that following a swapped link shows up as a change.
    """
    shutil.rmtree(world.secret, ignore_errors=True)
    spec: dict = {f"{SECRET_NAME}{i:02}": SECRET_CONTENT + b"%d\n" % i for i in range(8)}
    spec["private"] = {f"{SECRET_NAME}deep": SECRET_CONTENT + b"deep\n"}
    spec.update(bait or {})
    _build(world.secret, spec, 0o600)
    os.chmod(world.secret, 0o700)
    old = 1_000_000_000_000_000_000   # 2001: any change shows
    for path in sorted(world.secret.rglob("*"), reverse=True) + [world.secret]:
        os.utime(path, ns=(old, old), follow_symlinks=False)


def _build(root: Path, spec: dict, mode: int) -> None:
    root.mkdir(mode=0o700)
    for name, value in spec.items():
        if isinstance(value, dict):
            _build(root / name, value, mode)
            os.chmod(root / name, 0o700)
        else:
            (root / name).write_bytes(value)
            os.chmod(root / name, mode)


def make_tree(root: Path, spec: dict, owner: int = NOBODY) -> None:
    """Write ``spec`` (name -> bytes or dict) at ``root``, all owned by ``owner``."""
    root.mkdir(exist_ok=True)
    os.chown(root, owner, owner)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, dict):
            make_tree(path, value, owner)
        else:
            path.write_bytes(value)
            os.chown(path, owner, owner)


def fingerprint(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Everything root could damage under ``root``: kind, mode, owner, mtime, content."""
    out: dict[str, tuple] = {}
    skip = {os.fspath(p) for p in exclude}
    stack = [os.fspath(root)]
    while stack:
        path = stack.pop()
        if path in skip:
            continue
        st = os.lstat(path)
        meta = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            out[path] = meta
            stack.extend(os.path.join(path, n) for n in os.listdir(path))
        elif stat.S_ISLNK(st.st_mode):
            out[path] = meta + (os.readlink(path),)
        else:
            with open(path, "rb") as f:
                out[path] = meta + (f.read(),)
    return out


def differences(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    lines = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            lines.append(f"created {path}")
        elif new is None:
            lines.append(f"deleted {path}")
        else:
            fields = ("kind", "mode", "owner", "group", "mtime", "content")
            what = [name for i, name in enumerate(fields) if old[i:i + 1] != new[i:i + 1]]
            lines.append(f"changed {'/'.join(what)} of {path}")
    return lines


def cas_argv(world: World, *args: str) -> list[str]:
    return [sys.executable, "-m", "cas.cli", "--store", os.fspath(world.store), *args]


def cas(world: World, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run cas as root, with no attacker, and require success."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    proc = subprocess.run(cas_argv(world, *args), cwd=world.base, env=env, capture_output=True,
                          timeout=timeout)
    assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))
    return proc


class Attacker:
    """A uid 65534 process running ``script`` with ``cfg`` (plus the shared counter's path).

    The script sets slot 0 of the counter to 1 once it is ready, counts its
    successful moves in slot 1, and stops on SIGTERM or when its parent dies.
    """

    def __init__(self, world: World, script: str, cfg: dict):
        # What an earlier attempt left: a directory checkout deleted while it
        # was swapped out stays here with its link.
        for leftover in world.attacker.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        world.counter.write_bytes(bytes(16))
        os.chown(world.counter, NOBODY, NOBODY)
        cfg = {**cfg, "counter": os.fspath(world.counter), "limit": 600}
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-I", "-S", "-c", script, json.dumps(cfg)],
            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._fd = os.open(world.counter, os.O_RDONLY)
        self._shared = mmap.mmap(self._fd, 16, prot=mmap.PROT_READ)
        deadline = time.monotonic() + 20
        while self._read(0) != 1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the attacker did not start")
            time.sleep(0.005)

    def _read(self, slot: int) -> int:
        return int.from_bytes(self._shared[slot * 8:slot * 8 + 8], "little")

    def swaps(self) -> int:
        return self._read(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        self._shared.close()
        os.close(self._fd)
        assert self.proc.returncode == 0, f"the attacker failed: {err.decode(errors='replace')}"


class OpenWatch:
    """Root's inotify watch on a directory tree: did anything open or read in it?

    The attacker cannot (the tree is root-only), so any event while cas ran
    is cas reaching outside its source.
    """

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, root: Path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        self.dirs = {}
        for path in [root, *[p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]]:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path),
                                              self.IN_ACCESS | self.IN_OPEN)
            self.dirs[wd] = path

    def events(self) -> list[str]:
        out = []
        try:
            while True:
                buf = os.read(self.fd, 65536)
                at = 0
                while at < len(buf):
                    wd, mask, _, size = struct.unpack_from("iIII", buf, at)
                    name = buf[at + 16:at + 16 + size].rstrip(b"\0").decode(errors="replace")
                    what = "read" if mask & self.IN_ACCESS else "opened"
                    out.append(f"{what} {self.dirs.get(wd)}/{name}")
                    at += 16 + size
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Attempt:
    swaps: int
    returncode: int
    stderr: str
    damage: list[str] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        return self.swaps > 0

    @property
    def bad_exit(self) -> bool:
        return (self.returncode not in (0, 1, 2) or "Traceback" in self.stderr
                or "internal error" in self.stderr)


def attack(world: World, args: list[str], pairs: list[tuple[Path, Path]], watched: Path,
           exclude: tuple[Path, ...], delay: float, hold: float = 0,
           link_to: Path | None = None, watch_opens: bool = False,
           trigger: Path | None = None, trigger_on: str = "delete") -> Attempt:
    """Run ``cas args`` as root while the attacker swaps ``pairs``; report any damage.

    ``watched`` (minus ``exclude``: the target, the store, the attacker's
    scratch space) must come out exactly as it went in. The attacker starts
    ``delay`` seconds in and, with ``hold``, keeps each state up to that
    long (a scan must see a swapped directory through several calls); with
    ``trigger``, it starts at the first deletion in that directory (or,
    with ``trigger_on="open"``, when that directory is first opened). With
    ``watch_opens``, cas opening or reading anything in the secret
    directory is damage too.
    """
    cfg = {"pairs": [(os.fspath(v), os.fspath(l)) for v, l in pairs],
           "link_to": os.fspath(link_to or world.secret), "delay": delay, "hold": hold,
           "trigger": os.fspath(trigger) if trigger else None,
           "trigger_mask": {"delete": 0x200, "open": 0x20}[trigger_on]}   # inotify IN_*
    return run_attacked(world, args, SWAPPER, cfg, watched, exclude, watch_opens)


def run_attacked(world: World, args: list[str], script: str, cfg: dict, watched: Path,
                 exclude: tuple[Path, ...], watch_opens: bool = False) -> Attempt:
    before = fingerprint(watched, exclude)
    attacker = Attacker(world, script, cfg)
    opens = OpenWatch(world.secret) if watch_opens else None
    try:
        start = attacker.swaps()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
        proc = subprocess.run(cas_argv(world, *args), cwd=world.base, env=env,
                              capture_output=True, timeout=300)
        swaps = attacker.swaps() - start
    finally:
        attacker.stop()
        seen = opens.events() if opens else []
        if opens:
            opens.close()
    after = fingerprint(watched, exclude)
    return Attempt(swaps, proc.returncode, proc.stderr.decode(errors="replace"),
                   differences(before, after) + seen)


def verdict(attempts: list[Attempt], what: str) -> str | None:
    """None if every attempt was harmless and most of them raced; else why not."""
    hits = [a for a in attempts if a.damage]
    bad = [a for a in attempts if a.bad_exit]
    counted = sum(a.counted for a in attempts)
    problems = []
    if hits:
        problems.append(f"{len(hits)} of {len(attempts)} attempts of {what} touched what is "
                        f"outside the target ({len(hits[0].damage)} changes, first: "
                        f"{hits[0].damage[:3]})")
    if bad:
        problems.append(f"{len(bad)} attempts of {what} ended badly: exit {bad[0].returncode}, "
                        f"{bad[0].stderr.strip()[-300:]}")
    if counted * 2 <= len(attempts):
        problems.append(f"only {counted} of {len(attempts)} attempts of {what} saw a swap "
                        "during the run: the harness did not race")
    if problems:
        problems.append("attempts (swaps, exit, changes): " + ", ".join(
            f"({a.swaps}, {a.returncode}, {len(a.damage)})" for a in attempts))
    return "; ".join(problems) or None
