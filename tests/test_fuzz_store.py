"""A crafted-store fuzzer: damage a small real store, run every reading command.

A store is built once per module (packs, loose raw and zstd objects, a
chunked file, a symlink, nested and empty directories, two snapshots, a
tag). Each example copies it, applies one mutation drawn by hypothesis
(bytes flipped, overwritten, truncated or appended in any store file;
fields of trees, snapshot records, chunk lists and config set to other ids
or extreme values, with or without every hash above them made to match;
files replaced by links to /dev/zero, FIFOs, links outside the store,
directories, or removed), then runs ``verify --full``, ``log``, ``ls -r``,
``restore``, ``gc --dry-run``, ``cat``, ``diff``, ``index rebuild`` and
reads again, each as a real process with a time limit (20 s) and a memory
limit (2 GiB). Every command must finish, exit 0, 1 or 2, print no
traceback and at most one error line, and write nothing outside the store
and the restore target.

Examples are drawn deterministically (``derandomize``), about 32 in all by
default. For a long run set ``CAS_FUZZ_EXAMPLES``, the total over the four
tests, e.g.::

    CAS_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -n 2 tests/test_fuzz_store.py

and set ``CAS_FUZZ_SEED`` to a number to draw other examples than CI does.
Failures found that way are kept below as ``@example`` cases.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.objectid import ObjectId
from cas.storage.store import Store

from . import fuzz_support as fz

TOTAL_EXAMPLES = int(os.environ.get("CAS_FUZZ_EXAMPLES", "32"))
SEED = os.environ.get("CAS_FUZZ_SEED")
FUZZ = settings(
    max_examples=max(TOTAL_EXAMPLES // 4, 1),
    deadline=None,
    derandomize=SEED is None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> fz.BaseStore:
    return fz.build_base(tmp_path_factory.mktemp("fuzzbase"))


def check_commands(base: fz.BaseStore, damage, describe: str) -> None:
    """Copy the store, damage it, run every command and hold them to the rules."""
    tmp = Path(tempfile.mkdtemp(dir=base.root.parent, prefix="fuzz-"))
    try:
        store = fz.copy_base(base, tmp)
        for name in ("T", "cwd", "outside"):
            (tmp / name).mkdir()
        canary = tmp / "outside" / "canary"
        canary.write_bytes(b"must not change\n")
        damage(store, canary)
        # The snapshots' source directory is outside too: nothing may write there.
        before = fz.listing(tmp, {"S", "T"}), fz.listing(base.root / "src", set())
        outcomes = fz.run_all(store, tmp / "T", tmp / "cwd", base)
        found = fz.problems(outcomes)
        after = fz.listing(tmp, {"S", "T"}), fz.listing(base.root / "src", set())
        if after != before:
            before, after = before[0] | before[1], after[0] | after[1]
            changed = sorted(set(after.items()) ^ set(before.items()))
            found.append(f"wrote outside the store and the target: {changed[:5]}")
    finally:
        fz.remove_tree(tmp)
    assert not found, f"{describe}:\n  " + "\n  ".join(found)


# -- byte damage to store files ------------------------------------------------

OBJECT_FILES = ["obj:mid.txt", "obj:rnd.bin", "obj:big.bin", "obj:chunk0", "obj:chunk_last",
                "obj:z.txt", "obj:x.txt", "obj:snapshot", "tree:root", "tree:a", "tree:a/b"]
METADATA_FILES = ["config", "HEAD", "ref_branch", "ref_tag", "record_head", "record_parent",
                  "index", "lock"]
BYTE_OPS = ["flip", "overwrite", "truncate", "extend", "tail"]


def byte_damage(roles):
    """One to three (role, op, where, bytes) mutations."""
    one = st.tuples(st.sampled_from(roles), st.sampled_from(BYTE_OPS),
                    st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=24))
    return st.lists(one, min_size=1, max_size=3)


def damage_bytes(base, mutations):
    def damage(store, canary):
        for role, op, where, data in mutations:
            fz.mutate_bytes(store / base.files[role], op, where, data)
    return damage


@pytest.mark.plain_only
@FUZZ
@given(mutations=byte_damage(OBJECT_FILES))
@example(mutations=[("obj:z.txt", "tail", 0.5, b"\xff\xff\xff\xff\xff\xff\xff\x7f")])
@example(mutations=[("obj:mid.txt", "tail", 0.0, b"\x00\x00\x00\x00\x00\x00\xff\xff")])
def test_damaged_object_files(base, mutations):
    check_commands(base, damage_bytes(base, mutations), f"{mutations!r}")


@pytest.mark.plain_only
@FUZZ
@given(mutations=byte_damage(METADATA_FILES))
def test_damaged_metadata_files(base, mutations):
    check_commands(base, damage_bytes(base, mutations), f"{mutations!r}")


@pytest.mark.plain_only
def test_a_truncated_index_is_reported(base):
    """LMDB maps index/data.mdb: a page past the end of a truncated file would be SIGBUS."""
    mutations = [("index", "truncate", 0.56, b"\x00")]
    check_commands(base, damage_bytes(base, mutations), f"{mutations!r}")


# -- files replaced by what is not a file ----------------------------------------

REPLACEMENTS = ["remove", "devzero", "fifo", "outside", "dangling", "directory", "empty"]


@pytest.mark.plain_only
@FUZZ
@given(role=st.sampled_from(OBJECT_FILES + METADATA_FILES), how=st.sampled_from(REPLACEMENTS))
@example(role="record_head", how="devzero")
@example(role="ref_branch", how="fifo")
@example(role="obj:big.bin", how="devzero")
def test_replaced_files(base, role, how):
    def damage(store, canary):
        fz.replace_file(store / base.files[role], how, canary)
    check_commands(base, damage, f"{role} replaced: {how}")


# -- crafted manifests ---------------------------------------------------------

ID_SOURCES = ["own", "none", "head", "parent", "root", "a", "a/b", "root_parent", "big.bin",
              "mid.txt", "chunk0", "x.txt"]
TREE_KEYS = ["id", "size", "mode", "mtime_ns", "name", "kind", "target", "uid", "gid", "name_b64"]
LOCATIONS = {
    "tree": st.one_of(
        st.tuples(st.just("entries"), st.integers(0, 8), st.sampled_from(TREE_KEYS)).map(list),
        st.sampled_from([["entries"], ["type"], ["version"]])),
    "record": st.sampled_from([
        ["tree"], ["parents"], ["parents", 0], ["time_ns"], ["stats", "files"], ["stats", "bytes"],
        ["source"], ["branch"], ["version"], ["type"], ["message"], ["model"], ["model_version"],
        ["host"]]),
    "chunklist": st.one_of(
        st.tuples(st.just("chunks"), st.integers(0, 40), st.sampled_from([0, 1])).map(list),
        st.sampled_from([["chunks"], ["size"], ["id"], ["version"], ["chunks", 0]])),
    "config": st.sampled_from([
        ["loose_min_size"], ["pack_target_size"], ["chunk_min_size"], ["compression", "algorithm"],
        ["compression", "small_level"], ["compression", "min_saving"], ["compression"],
        ["id_hash"], ["version"], ["store_id"], ["encryption"], ["format"]]),
}
MANIFESTS = {"tree:root": "tree", "tree:a": "tree", "tree:a/b": "tree", "tree:root_parent": "tree",
             "record_head": "record", "record_parent": "record", "chunklist": "chunklist",
             "config": "config"}
VALUES = st.one_of(st.sampled_from(fz.EXTREMES + [fz.DELETE]),
                   st.sampled_from(ID_SOURCES).map(lambda w: ("id", w)),
                   st.sampled_from(["outside", "canary"]).map(lambda w: ("path", w)),
                   st.lists(st.sampled_from(ID_SOURCES).map(lambda w: ("id", w)), max_size=3))


@st.composite
def manifest_edits(draw):
    manifest = draw(st.sampled_from(sorted(MANIFESTS)))
    location = draw(LOCATIONS[MANIFESTS[manifest]])
    return manifest, location, draw(VALUES), draw(st.booleans())


def _resolve(base, value, own, canary):
    if isinstance(value, tuple) and value[0] == "path":
        return str(canary if value[1] == "canary" else canary.parent)
    if isinstance(value, tuple):
        return fz.id_value(base, value[1], own)
    if isinstance(value, list):
        return [_resolve(base, v, own, canary) for v in value]
    return value


def apply_manifest_edit(base, store, canary, manifest, location, value, rehash):
    """Set one field of one manifest; ``rehash`` stores the result under its
    own hash and rewrites the manifests above it, so every hash checks."""
    kind = MANIFESTS[manifest]
    if kind == "tree":
        role = manifest.split(":", 1)[1]
        own = base.trees[role]
        with Store.open(str(store)) as s:
            doc = json.loads(s.read_object(ObjectId.parse(own)))
        data = fz.canonical(fz.edit_json(doc, location, _resolve(base, value, own, canary)))
        if rehash:
            fz.commit_tree(store, base, role, data)
        else:
            fz.rewrite_object(store, own, data)
        return
    if kind == "record":
        snap = "head" if manifest == "record_head" else "parent"
        own = base.ids[snap]
        path = store / base.files[manifest]
        doc = fz.edit_json(json.loads(path.read_bytes()), location, _resolve(base, value, own, canary))
        if rehash:
            with Store.open(str(store)) as s:
                new = fz.commit_snapshot(s, store, fz.canonical(doc), move_ref=snap == "head")
                if snap == "parent":
                    fz.relink_head(s, store, base, new)
        else:
            path.write_bytes(fz.canonical(doc))
        return
    path = store / base.files["obj:big.bin" if kind == "chunklist" else "config"]
    own = base.ids["big.bin"]
    os.chmod(path, 0o600)
    doc = fz.edit_json(json.loads(path.read_bytes()), location, _resolve(base, value, own, canary))
    path.write_bytes(fz.canonical(doc))


@pytest.mark.plain_only
@FUZZ
@given(edit=manifest_edits())
@example(edit=("record_head", ["parents", 0], ("id", "own"), False))
@example(edit=("chunklist", ["chunks", 0, 0], ("id", "own"), False))
@example(edit=("tree:a", ["entries", 0, "id"], ("id", "root"), False))
@example(edit=("tree:root", ["entries", 0, "mtime_ns"], 10**30, True))
@example(edit=("tree:root", ["entries", 1, "size"], 2**64, True))
@example(edit=("record_head", ["time_ns"], -(2**63), True))
@example(edit=("config", ["compression", "algorithm"], "lz4", False))
def test_crafted_manifests(base, edit):
    manifest, location, value, rehash = edit

    def damage(store, canary):
        apply_manifest_edit(base, store, canary, manifest, location, value, rehash)
    check_commands(base, damage, f"{manifest} {location} = {value!r} (rehash={rehash})")


@pytest.mark.plain_only
def test_a_tree_chain_deeper_than_the_interpreter_recurses(base):
    check_commands(base, lambda store, canary: fz.deep_chain(store, base, 1100),
                   "a HEAD tree nesting 1,100 directories")


@pytest.mark.plain_only
def test_a_link_restored_from_one_snapshot_is_not_followed_by_the_next(base):
    """HEAD~1 holds ``a`` as a link to a directory outside the target, HEAD
    holds ``a`` as a directory: restoring both into one target must not
    write HEAD's files through the link."""
    def damage(store, canary):
        with Store.open(str(store)) as s:
            doc = json.loads(s.read_object(ObjectId.parse(base.trees["root_parent"])))
        doc["entries"] = [e for e in doc["entries"] if e["name"] != "a"] + [
            {"kind": "symlink", "mode": "0777", "mtime_ns": 0, "name": "a",
             "target": str(canary.parent)}]
        doc["entries"].sort(key=lambda e: e["name"].encode())
        fz.commit_tree(store, base, "root_parent", fz.canonical(doc))
    check_commands(base, damage, "HEAD~1:a is a link to outside, HEAD:a a directory")
