"""The crafted-store fuzzer's parts: a small real store, mutations of it, and
the commands run against a mutated copy (see tests/test_fuzz_store.py).

Mutations name what they damage by role ("the pack holding the HEAD root
tree", "the chunk list of big.bin"), never by id: ids change with every
build of the base store (snapshot times, temp paths), roles do not, so a
failing example written down as an ``@example`` reproduces the same damage.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import stat
import subprocess
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cas.model.refs import HEADS, Refs
from cas.objectid import ObjectId, hash_bytes
from cas.storage.config import StoreConfig
from cas.storage.encoding import Encoding
from cas.storage.index import IndexEntry, PackRecord
from cas.storage.pack import PackWriter, read_entries
from cas.storage.store import Store

REPO = Path(__file__).resolve().parent.parent
COMMAND_TIMEOUT = 20
MEMORY_LIMIT = 2 << 30
BRANCH = "src"


# -- the base store -----------------------------------------------------------

@dataclass
class BaseStore:
    root: Path                                           # holds S (the store) and src
    files: dict[str, str] = field(default_factory=dict)  # role -> path relative to S
    ids: dict[str, str] = field(default_factory=dict)    # role -> object or snapshot id
    trees: dict[str, str] = field(default_factory=dict)  # manifest role -> id (head trees)

    @property
    def store(self) -> Path:
        return self.root / "S"


def _write_source(src: Path) -> None:
    rng = random.Random(11)
    words = [bytes(rng.choice(b"abcdefghij ") for _ in range(rng.randint(2, 9))) for _ in range(300)]

    def text(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += rng.choice(words) + b" "
        return bytes(out[:n])

    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a" / "x.txt").write_bytes(b"hello\n")
    (src / "a" / "b" / "z.txt").write_bytes(text(5000))
    (src / "mid.txt").write_bytes(text(200_000))                    # loose, zstd
    (src / "rnd.bin").write_bytes(rng.randbytes(100_000))           # loose, raw
    (src / "big.bin").write_bytes(rng.randbytes(700_000) + text(800_000))  # chunked
    (src / "zero").write_bytes(b"")
    os.symlink("a/x.txt", src / "link")


def build_base(root: Path) -> BaseStore:
    """Two snapshots (the second changes a file and adds one), a tag, small
    thresholds so the store has packs, loose raw and zstd objects and chunks."""
    src = root / "src"
    _write_source(src)
    # Format 1: the fuzzer edits chunk lists as JSON.
    config = StoreConfig(loose_min_size=64 << 10, pack_target_size=256 << 10, version=1)
    Store.init(str(root / "S"), config).close()
    run_cas(root, "snapshot", str(src), "-m", "one")
    with open(src / "a" / "x.txt", "ab") as f:
        f.write(b"more\n")
    (src / "new.txt").write_bytes(b"new\n")
    run_cas(root, "snapshot", str(src), "-m", "two")
    run_cas(root, "tag", "t1", "HEAD~1")
    base = BaseStore(root)
    _catalogue(base)
    return base


def run_cas(root: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "cas.cli", "--store", str(root / "S"), *args],
                       cwd=root, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()


def _catalogue(base: BaseStore) -> None:
    """Find each role's object and file in the base store."""
    s = base.store
    with Store.open(str(s)) as store:
        refs = Refs(store)
        head = refs.get(HEADS + BRANCH)
        record = json.loads((s / "snapshots" / f"{head.hex}.json").read_bytes())
        parent = record["parents"][0]
        base.ids.update(head=head.hex, parent=parent)
        base.files.update(
            config="config.json", HEAD="HEAD", ref_branch=f"refs/heads/{BRANCH}",
            ref_tag="refs/tags/t1", index="index/data.mdb", lock="lock",
            record_head=f"snapshots/{head.hex}.json", record_parent=f"snapshots/{parent}.json")
        parent_record = json.loads((s / "snapshots" / f"{parent}.json").read_bytes())
        base.trees.update(root=record["tree"], root_parent=parent_record["tree"])
        root_tree = _tree(store, record["tree"])
        base.trees["a"] = root_tree["a"]["id"]
        base.trees["a/b"] = _tree(store, base.trees["a"])["b"]["id"]
        for name in ("mid.txt", "rnd.bin", "big.bin", "new.txt"):
            base.ids[name] = root_tree[name]["id"]
        base.ids["x.txt"] = _tree(store, base.trees["a"])["x.txt"]["id"]
        base.ids["z.txt"] = _tree(store, base.trees["a/b"])["z.txt"]["id"]
        chunks = store.chunk_list(ObjectId.parse(base.ids["big.bin"])).chunks
        base.ids["chunk0"], base.ids["chunk_last"] = chunks[0][0].hex, chunks[-1][0].hex
        for role in ("mid.txt", "rnd.bin", "big.bin", "chunk0", "chunk_last", "z.txt", "x.txt"):
            base.files[f"obj:{role}"] = _object_file(store, base.ids[role])
        for role, tree in base.trees.items():
            base.files[f"tree:{role}"] = _object_file(store, tree)
        base.files["obj:snapshot"] = _object_file(store, head.hex)


def _tree(store: Store, oid: str) -> dict:
    doc = json.loads(store.read_object(ObjectId.parse(oid)))
    return {e["name"]: e for e in doc["entries"]}


def _object_file(store: Store, oid: str) -> str:
    entry = store.entry(ObjectId.parse(oid))
    if entry.pack is not None:
        path = store.layout.pack_path(entry.pack)
    else:
        path = store.layout.loose_path(entry.oid, entry.encoding)
    return os.path.relpath(path, store.path)


def remove_tree(path: Path) -> None:
    """rm -rf: a restored chain of 1,100 directories is too deep for shutil.rmtree."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=120)


def copy_base(base: BaseStore, dest: Path) -> Path:
    """A private copy of the store, made writable as damage needs."""
    store = dest / "S"
    shutil.copytree(base.store, store, symlinks=True)
    return store


# -- mutations ----------------------------------------------------------------

def mutate_bytes(path: Path, op: str, where: float, data: bytes) -> None:
    """flip/overwrite/truncate/extend a file at fraction ``where`` of its size."""
    os.chmod(path, 0o600)
    raw = bytearray(path.read_bytes())
    at = min(int(where * len(raw)), max(len(raw) - 1, 0))
    if op == "flip" and raw:
        raw[at] ^= data[0] or 1
    elif op == "overwrite":
        raw[at:at + len(data)] = data
    elif op == "truncate":
        del raw[at:]
    elif op == "extend":
        raw += data
    elif op == "tail":          # overwrite counting from the end: footers, trailers, seek tables
        at = max(len(raw) - 1 - int(where * min(len(raw), 200)), 0)
        raw[at:at + len(data)] = data
    path.write_bytes(bytes(raw))


def replace_file(path: Path, how: str, outside: Path) -> None:
    """Put something that is not the file where the file was."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if how == "remove":
        return
    if how == "devzero":
        os.symlink("/dev/zero", path)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "outside":      # a link to a file outside the store, which must not change
        os.symlink(outside, path)
    elif how == "dangling":
        os.symlink(path.parent / "no-such-file", path)
    elif how == "directory":
        path.mkdir()
    elif how == "empty":
        path.write_bytes(b"")


# Values a crafted manifest field takes: extremes of every type the fields hold.
EXTREMES = [-1, 0, 1, -(2**63), 2**63, 2**64, 2**64 + 1, 10**30, -(10**30), 1e308, 0.5,
            None, True, "", "0777", "4755", "7777", "-1", "../../escape", "a/b", ".", "..",
            "\x1b[31mred", "x" * 5000, [], {}, ["a"], "dir", "file", "symlink", "chunks"]


def id_value(base: BaseStore, which: str, own: str) -> str:
    """An id to put in a manifest: another object's, its own, or nobody's."""
    if which == "own":
        return own
    if which == "none":
        return "ab" * 32
    if which in base.trees:
        return base.trees[which]
    return base.ids[which]


def edit_json(doc, location: list, value):
    """Set ``doc`` at a path of keys and indexes (wrapping indexes)."""
    target = doc
    for step in location[:-1]:
        target = _step(target, step)
        if target is None:
            return doc
    last = location[-1]
    if isinstance(target, list) and target and isinstance(last, int):
        if value is _DELETE:
            del target[last % len(target)]
        else:
            target[last % len(target)] = value
    elif isinstance(target, dict) and isinstance(last, str):
        if value is _DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return doc


_DELETE = object()
DELETE = _DELETE


def _step(target, step):
    if isinstance(target, list) and target and isinstance(step, int):
        return target[step % len(target)]
    if isinstance(target, dict) and isinstance(step, str):
        return target.get(step)
    return None


def canonical(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8", "surrogatepass")


def rewrite_object(store_path: Path, oid: str, data: bytes) -> None:
    """Make ``oid``'s stored content ``data`` (which does not hash to it), as
    damage or an attacker would, with the index still pointing at it."""
    with Store.open(str(store_path)) as store:
        entry = store.entry(ObjectId.parse(oid))
        if entry.pack is None:
            for enc in Encoding:
                path = store.layout.loose_path(entry.oid, enc)
                if os.path.exists(path):
                    os.unlink(path)
            path = store.layout.loose_path(entry.oid, Encoding.RAW)
            Path(path).write_bytes(data)
            store.index.record([IndexEntry(entry.oid, Encoding.RAW, len(data), len(data))])
            return
        _rewrite_pack(store, entry.pack, entry.oid, data)


def _rewrite_pack(store: Store, pack: ObjectId, oid: ObjectId, data: bytes) -> None:
    old_path = store.layout.pack_path(pack)
    writer = PackWriter(store.layout.tmp)
    with open(old_path, "rb") as f:
        for e in read_entries(old_path):
            if e.oid == oid:
                writer.add(oid, Encoding.RAW, data, len(data))
            else:
                f.seek(e.offset)
                writer.add(e.oid, e.encoding, f.read(e.stored_length), e.size)
    new_id = writer.finish()
    new_path = store.layout.pack_path(new_id)
    os.makedirs(os.path.dirname(new_path), exist_ok=True)
    os.rename(writer.temp_path, new_path)
    os.unlink(old_path)
    entries = [IndexEntry(e.oid, e.encoding, e.size, e.stored_length, new_id, e.offset)
               for e in writer.entries]
    store.index.remove([], [pack])
    store.index.record(entries, [PackRecord(new_id, os.path.getsize(new_path), len(entries))])


def commit_tree(store_path: Path, base: BaseStore, role: str, data: bytes) -> None:
    """Store a crafted tree properly (named by its hash) and rewrite every
    manifest above it up to a new HEAD snapshot: a store whose every hash
    checks out, holding a hostile tree."""
    chain = {"a/b": ["a", "root"], "a": ["root"], "root": [], "root_parent": []}[role]
    with Store.open(str(store_path)) as store:
        new_id = store.put_bytes(data).hex
        old_id = base.trees[role]
        for parent_role in chain:
            parent = json.loads(store.read_object(ObjectId.parse(base.trees[parent_role])))
            for e in parent["entries"]:
                if e.get("id") == old_id:
                    e["id"] = new_id
            old_id, new_id = base.trees[parent_role], store.put_bytes(canonical(parent)).hex
        snap_role = "parent" if role == "root_parent" else "head"
        record = json.loads((store_path / "snapshots" / f"{base.ids[snap_role]}.json").read_bytes())
        record["tree"] = new_id
        new_snap = commit_snapshot(store, store_path, canonical(record), move_ref=snap_role == "head")
        if snap_role == "parent":
            relink_head(store, store_path, base, new_snap)


def relink_head(store: Store, store_path: Path, base: BaseStore, parent: str) -> None:
    """A new HEAD like the old one but with ``parent`` as its parent."""
    head = json.loads((store_path / "snapshots" / f"{base.ids['head']}.json").read_bytes())
    head["parents"] = [parent]
    commit_snapshot(store, store_path, canonical(head))


def commit_snapshot(store: Store, store_path: Path, data: bytes, move_ref: bool = True) -> str:
    """Record crafted snapshot bytes under their own hash and point the branch at them."""
    oid = store.put_bytes(data)
    (store_path / "snapshots" / f"{oid.hex}.json").write_bytes(data)
    store.index.update(b"snapshots", put=[(oid.digest, data)])
    if move_ref:
        (store_path / "refs" / "heads" / BRANCH).write_text(oid.hex + "\n")
    return oid.hex


def deep_chain(store_path: Path, base: BaseStore, depth: int) -> None:
    """A HEAD whose tree nests ``depth`` directories (a recursion bomb)."""
    with Store.open(str(store_path)) as store, store.writer() as writer:
        child = writer.put_bytes(canonical({"entries": [], "type": "tree", "version": 1})).hex
        for _ in range(depth):
            doc = {"entries": [{"id": child, "kind": "dir", "mode": "0755", "mtime_ns": 0,
                                "name": "d"}], "type": "tree", "version": 1}
            child = writer.put_bytes(canonical(doc)).hex
        writer.flush()
        record = json.loads((store_path / "snapshots" / f"{base.ids['head']}.json").read_bytes())
        record["tree"] = child
        commit_snapshot(store, store_path, canonical(record))


# -- running the commands -----------------------------------------------------

@dataclass
class Outcome:
    args: tuple[str, ...]
    code: int | None          # None: killed at the time limit
    err: str
    seconds: float = 0.0


def _limits() -> None:
    # RLIMIT_DATA, not RLIMIT_AS: LMDB maps a 1 TiB address range it never touches.
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def command_lists(target: Path, base: BaseStore) -> list[tuple[str, ...]]:
    return [
        ("verify", "--full"),
        ("log",),
        ("ls", "-r", "HEAD"),
        ("restore", "HEAD", "--to", str(target / "t1")),
        ("gc", "--dry-run"),
        ("cat", "HEAD:big.bin"),
        ("cat", base.ids["mid.txt"]),
        ("diff", "HEAD~1", "HEAD"),
        ("show", "HEAD"),
        ("stats",),
        ("du", "HEAD"),
        ("ls", "t1"),
        ("log", "--", "a/x.txt"),
        ("cat", "HEAD:a/b/z.txt"),
        # The same target twice: what the first restore left (a link to
        # outside, say) must not be followed by the second.
        ("restore", "HEAD~1", "--to", str(target / "t3")),
        ("restore", "HEAD", "--to", str(target / "t3")),
        ("index", "rebuild"),
        ("verify", "--full"),
        ("log",),
        ("restore", "HEAD", "--to", str(target / "t2")),
    ]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_all(store: Path, target: Path, cwd: Path, base: BaseStore) -> list[Outcome]:
    """Every command on the store, each in a process of its own.

    By default one driver process imports cas once and forks a child per
    command (the same ``main`` the ``cas`` executable runs, a fifth of the
    start-up cost); ``CAS_FUZZ_EXEC=1`` starts a fresh interpreter for each.
    """
    commands = [("--store", str(store), *args) for args in command_lists(target, base)]
    if os.environ.get("CAS_FUZZ_EXEC"):
        return [_run_exec(c, cwd) for c in commands]
    r = subprocess.run([sys.executable, "-m", "tests.fuzz_support", str(cwd)], cwd=REPO,
                       env=_clean_env(), input=json.dumps(commands).encode(), capture_output=True,
                       timeout=COMMAND_TIMEOUT * (len(commands) + 2))
    assert r.returncode == 0, r.stderr.decode()
    return [Outcome(tuple(o["args"][2:]), o["code"], o["err"], o["seconds"])
            for o in json.loads(r.stdout)]


def _run_exec(command: tuple[str, ...], cwd: Path) -> Outcome:
    start = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "cas.cli", *command], cwd=cwd, env=_clean_env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT, preexec_fn=_limits)
        code, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        code, err = None, e.stderr or b""
    return Outcome(command[2:], code, err.decode("utf-8", "replace"), time.monotonic() - start)


def _drive(cwd: str, commands: list[list[str]]) -> list[dict]:
    """Run each command in a forked child of this warm interpreter, with the
    time and memory limits; the child runs exactly what ``cas`` runs."""
    import importlib
    import pkgutil

    import cas.cli
    from cas.cli.main import main
    for mod in pkgutil.iter_modules(cas.cli.__path__):
        if mod.name != "__main__":   # that one runs the CLI on import
            importlib.import_module(f"cas.cli.{mod.name}")   # warm: every command's imports
    results = []
    for command in commands:
        with tempfile.TemporaryFile() as err:
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(cwd, command, err.fileno(), main)
            code = _wait(pid, start)
            err.seek(0)
            text = err.read(1 << 20).decode("utf-8", "replace")
        results.append({"args": command, "code": code, "err": text,
                        "seconds": time.monotonic() - start})
    return results


def _child(cwd: str, command: list[str], err_fd: int, main) -> None:
    code = 71
    try:
        os.chdir(cwd)
        _limits()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err_fd, 2)
        try:
            main(command)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)


def _wait(pid: int, start: float) -> int | None:
    """The child's exit code (negative: a signal), or None if it ran out of time."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() - start > COMMAND_TIMEOUT:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


# Commands that report each damaged object or failed entry on its own line.
REPORTS_EACH = {"verify", "restore", "index", "gc"}


def problems(outcomes: list[Outcome]) -> list[str]:
    """What breaks the rules: a hang, exit 70 or a signal, a traceback, an
    error that is not one line."""
    found = []
    for o in outcomes:
        name = " ".join(o.args)
        if o.code is None:
            found.append(f"{name}: still running after {COMMAND_TIMEOUT} s")
            continue
        if o.code not in (0, 1, 2):
            found.append(f"{name}: exit {o.code}: {o.err.strip()[-400:]}")
        if "Traceback" in o.err:
            found.append(f"{name}: traceback: {o.err.strip()[-600:]}")
        errors = [line for line in o.err.splitlines() if line.startswith("cas: error:")]
        if len(errors) > 1 and o.args[0] not in REPORTS_EACH:
            found.append(f"{name}: {len(errors)} error lines: {errors[:3]}")
        if o.code and o.code != 0 and not o.err.strip():
            found.append(f"{name}: exit {o.code} without a word")
    return found


def listing(root: Path, skip: set[str]) -> dict[str, tuple]:
    """Everything under ``root`` except the store and the restore targets,
    with what a write would change."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = hash_bytes(Path(path).read_bytes()).hex
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return seen


def timings(outcomes: list[Outcome]) -> str:
    return ", ".join(f"{' '.join(o.args[:2])} {o.seconds:.2f}s" for o in outcomes)


if __name__ == "__main__":
    json.dump(_drive(sys.argv[1], json.load(sys.stdin)), sys.stdout)
