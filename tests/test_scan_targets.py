"""A targeted scan (only what changed, as a watcher reports it) must build
exactly the tree a full scan builds: same root id, same counts."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from cas.model.history import History
from cas.ops.scan import ScanPolicy, ScanTargets, scan
from cas.ops.snapshot import take_snapshot
from cas.storage.store import Store


def _random_tree(root: Path, rnd: random.Random) -> None:
    for d in range(rnd.randint(2, 5)):
        sub = root / f"d{d}" / (f"e{rnd.randint(0, 2)}" if rnd.random() < 0.5 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(rnd.randint(0, 6)):
            (sub / f"f{f}.txt").write_bytes(rnd.randbytes(rnd.randint(0, 300)))
    (root / "top.txt").write_text("top")
    os.symlink("top.txt", root / "link")


def _all_paths(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if ".cas" not in p.parts)


def _mutate(root: Path, rnd: random.Random, changed: set[bytes]) -> None:
    def rel(p: Path) -> bytes:
        return os.fsencode(p.relative_to(root))

    for _ in range(rnd.randint(1, 8)):
        paths = _all_paths(root)
        files = [p for p in paths if p.is_file() and not p.is_symlink()]
        dirs = [p for p in paths if p.is_dir() and not p.is_symlink()]
        op = rnd.choice(["write", "create", "delete", "mkdir", "rename_file", "rename_dir",
                         "rmtree", "chmod", "symlink"])
        if op == "write" and files:
            p = rnd.choice(files)
            p.write_bytes(rnd.randbytes(rnd.randint(0, 500)))
            changed.add(rel(p))
        elif op == "create":
            base = rnd.choice(dirs + [root])
            p = base / f"new{rnd.randint(0, 999)}.bin"
            p.write_bytes(rnd.randbytes(50))
            changed.add(rel(p))
        elif op == "delete" and files:
            p = rnd.choice(files)
            p.unlink()
            changed.add(rel(p))
        elif op == "mkdir":
            p = rnd.choice(dirs + [root]) / f"nd{rnd.randint(0, 999)}"
            if not p.exists():
                (p / "inner").mkdir(parents=True)
                (p / "inner" / "x.txt").write_text("x")
                changed.add(rel(p))
        elif op == "rename_file" and files:
            p = rnd.choice(files)
            q = rnd.choice(dirs + [root]) / f"moved{rnd.randint(0, 999)}.txt"
            if not q.exists():
                os.rename(p, q)
                changed.update({rel(p), rel(q)})
        elif op == "rename_dir" and dirs:
            p = rnd.choice(dirs)
            q = root / f"renamed{rnd.randint(0, 999)}"
            if not q.exists() and not str(q).startswith(str(p) + os.sep):
                os.rename(p, q)
                changed.update({rel(p), rel(q)})
        elif op == "rmtree" and dirs:
            p = rnd.choice(dirs)
            shutil.rmtree(p)
            changed.add(rel(p))
        elif op == "chmod" and files:
            p = rnd.choice(files)
            p.chmod(0o600 if p.stat().st_mode & 0o044 else 0o644)
            changed.add(rel(p))
        elif op == "symlink":
            p = rnd.choice(dirs + [root]) / f"ln{rnd.randint(0, 999)}"
            if not os.path.lexists(p):
                os.symlink("somewhere", p)
                changed.add(rel(p))


@pytest.mark.parametrize("seed", range(40))
def test_targeted_scan_equals_full_scan(tmp_path, seed):
    rnd = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    _random_tree(src, rnd)
    with Store.init(str(tmp_path / "store")) as store:
        history = History(store)
        head = take_snapshot(history, str(src), "main").snapshot
        changed: set[bytes] = set()
        _mutate(src, rnd, changed)
        targets = ScanTargets(base=head.tree, counts=head.stats, changed=changed, relist=set())
        targeted = scan(store, str(src), "main", None, policy=ScanPolicy(targets=targets))
        full = scan(store, str(src), "main", None)
        assert targeted.root == full.root
        assert (targeted.files, targeted.dirs, targeted.symlinks, targeted.bytes) == \
            (full.files, full.dirs, full.symlinks, full.bytes)
        # Only what changed was read.
        def files_under(p: Path) -> int:
            if p.is_symlink() or not p.exists():
                return 0
            return sum(1 for q in p.rglob("*") if q.is_file() and not q.is_symlink()) \
                if p.is_dir() else 1
        assert targeted.read_files <= sum(files_under(src / os.fsdecode(r)) for r in changed)
