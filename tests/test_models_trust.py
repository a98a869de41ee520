"""Models against hostile or odd input: crafted Hugging Face cache repos and
model directories, links planted in a cache being linked into, malformed
safetensors headers, damaged manifests, stores that are offline or made with
--store, and tools that write into a view."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cas.errors import StoreNotFound
from cas.model.canonical import dumps
from cas.model.history import History
from cas.model.refs import MODELS
from cas.model.snapshot import Snapshot
from cas.objectid import hash_bytes
from cas.ops.models import import_model, link_hf_cache, resolve_model
from cas.storage.store import Store

from .conftest import REPO, flip_byte

REV = "0123456789abcdef0123456789abcdef01234567"
BIG = 384 * 1024          # float32 elements: 1.5 MiB, stored as one plain object


def safetensors(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def crafted(header: dict, data: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def weights(seed: int = 1, n: int = BIG) -> bytes:
    block = hashlib.sha256(bytes([seed])).digest()
    return (block * (n * 4 // len(block) + 1))[:n * 4]


def make_model_dir(path: Path, seed: int = 1, n: int = BIG) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "tiny", "seed": seed}))
    (path / "model.safetensors").write_bytes(
        safetensors({"w": ("F32", [n], weights(seed, n)), "b": ("F32", [4], b"\0" * 16)}))
    return path


def make_hf_repo(hub: Path, model: Path, name: str = "models--org--tiny") -> Path:
    repo = hub / name
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / REV).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    for f in sorted(model.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (repo / "snapshots" / REV / f.name).symlink_to(f"../../blobs/{blob.name}")
    return repo


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything under ``root``, to show that nothing in it changed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            content = p.read_bytes() if p.is_file() and not p.is_symlink() else \
                os.readlink(p) if p.is_symlink() else None
            state[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return state


def one_line_error(r, code: int = 2) -> None:
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert len([line for line in r.err.splitlines() if line.startswith("cas: error:")]) == 1


def warnings_about(r, word: str) -> list[str]:
    return [line for line in r.err.splitlines() if line.startswith("cas: warning:") and word in line]


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory no command here may write into or read from."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_bytes(b"root-only secret\n")
    os.chmod(d / "secret", 0o600)
    return d


@pytest.fixture
def imported(cas, tmp_path) -> Path:
    assert cas("init").code == 0
    src = make_model_dir(tmp_path / "src")
    assert cas("model", "import", str(src), "--name", "m").code == 0
    return src


# -- item 7: cas model link --hf-cache never writes through a link -----------------

@pytest.mark.plain_only
@pytest.mark.parametrize("planted", ["models--cas--m", "models--cas--m/blobs", "models--cas--m/refs",
                                     "models--cas--m/snapshots", f"models--cas--m/snapshots/REV"])
def test_link_refuses_a_symlinked_directory_in_the_cache(cas, imported, tmp_path, outside, planted):
    hub = tmp_path / "hub"
    with Store.open(str(tmp_path / ".cas")) as store:
        rev = resolve_model(History(store), "m").snapshot.oid.hex[:40]
    link = hub / planted.replace("REV", rev)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    before = tree_state(outside)
    r = cas("model", "link", "m", "--hf-cache", str(hub))
    one_line_error(r)
    assert "symbolic link" in r.err and str(link) in r.err
    assert tree_state(outside) == before


@pytest.mark.plain_only
def test_link_never_writes_through_planted_temp_names_or_links(cas, imported, tmp_path, outside):
    hub = tmp_path / "hub"
    repo = hub / "models--cas--m"
    (repo / "refs").mkdir(parents=True)
    (repo / "blobs").mkdir()
    # The temp names an earlier cas used, and refs/main itself, all links out.
    (repo / "refs" / ".main.tmp").symlink_to(outside / "secret")
    (repo / "refs" / "main").symlink_to(outside / "secret")
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
    for f in v.manifest.files:
        (repo / "blobs" / (f.id.hex + ".cas-tmp")).symlink_to(outside / f"made-{f.path}")
    before = tree_state(outside)
    r = cas("model", "link", "m", "--hf-cache", str(hub))
    assert r.code == 0, r.err
    assert tree_state(outside) == before
    main = repo / "refs" / "main"
    assert not main.is_symlink() and main.read_text() == v.snapshot.oid.hex[:40]
    snap = Path(r.out.decode().strip())
    assert (snap / "model.safetensors").read_bytes() == (imported / "model.safetensors").read_bytes()


@pytest.mark.plain_only
def test_link_leaves_a_regular_file_where_a_link_belongs(cas, imported, tmp_path):
    hub = tmp_path / "hub"
    assert cas("model", "link", "m", "--hf-cache", str(hub)).code == 0
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
    blob = hub / "models--cas--m" / "blobs" / v.manifest.file("config.json").id.hex
    blob.unlink()
    blob.write_bytes(b"mine")
    r = cas("model", "link", "m", "--hf-cache", str(hub))
    one_line_error(r)
    assert "not a link" in r.err and blob.read_bytes() == b"mine"


# -- item 8: importing reads nothing outside the repo or directory -------------------

def test_hf_repo_with_refs_main_leading_out_is_refused(cas, tmp_path, outside):
    assert cas("init").code == 0
    repo = make_hf_repo(tmp_path / "hub", make_model_dir(tmp_path / "src"))
    (outside / "x").mkdir()
    shutil.copytree(repo / "snapshots" / REV, outside / "x" / "copy", symlinks=False)
    (repo / "refs" / "main").write_text("../../../../" + str(outside.relative_to("/")) + "/x/copy")
    r = cas("model", "import", str(repo))
    one_line_error(r)
    assert "refs/main" in r.err and "not a revision" in r.err
    assert json.loads(cas("model", "ls", "--json").out)["model_count"] == 0


@pytest.mark.parametrize("how", ["link", "fifo", "huge"])
def test_hf_repo_with_refs_main_not_a_small_file_is_refused(cas, tmp_path, outside, how):
    assert cas("init").code == 0
    repo = make_hf_repo(tmp_path / "hub", make_model_dir(tmp_path / "src"))
    main = repo / "refs" / "main"
    main.unlink()
    if how == "link":
        (outside / "rev").write_text(REV)
        main.symlink_to(outside / "rev")
    elif how == "fifo":
        os.mkfifo(main)
    else:
        main.write_text("a" * 100_000)
    r = cas("model", "import", str(repo))
    one_line_error(r)
    assert str(main) in r.err


@pytest.mark.parametrize("target", ["secret", "/etc/shadow", "dir"])
def test_hf_snapshot_link_leading_out_of_the_repo_is_refused(cas, tmp_path, outside, target):
    if target == "/etc/shadow" and not os.path.exists(target):
        pytest.skip("no /etc/shadow here")
    assert cas("init").code == 0
    repo = make_hf_repo(tmp_path / "hub", make_model_dir(tmp_path / "src"))
    snap = repo / "snapshots" / REV
    if target == "dir":
        (outside / "tokenizer").mkdir()
        (outside / "tokenizer" / "vocab.json").write_text("{}")
        (snap / "tokenizer").symlink_to(outside / "tokenizer")
        planted = snap / "tokenizer"
    else:
        planted = snap / "tokenizer.json"
        planted.symlink_to(outside / target if target == "secret" else target)
    r = cas("model", "import", str(repo))
    one_line_error(r)
    assert str(planted) in r.err and "outside" in r.err
    assert json.loads(cas("model", "ls", "--json").out)["model_count"] == 0
    with Store.open(str(tmp_path / ".cas")) as store:
        assert store.index.lookup(hash_bytes(b"root-only secret\n")) is None


def test_hf_blobs_directory_linked_out_of_the_repo_is_refused(cas, tmp_path, outside):
    assert cas("init").code == 0
    repo = make_hf_repo(tmp_path / "hub", make_model_dir(tmp_path / "src"))
    shutil.move(repo / "blobs", outside / "blobs")
    (repo / "blobs").symlink_to(outside / "blobs")
    r = cas("model", "import", str(repo))
    one_line_error(r)
    assert "outside" in r.err


def test_hf_links_inside_the_repo_are_followed_relative_or_absolute(cas, tmp_path):
    assert cas("init").code == 0
    src = make_model_dir(tmp_path / "src")
    repo = make_hf_repo(tmp_path / "hub", src)
    snap = repo / "snapshots" / REV
    config = snap / "config.json"
    blob = os.path.realpath(config)
    config.unlink()
    config.symlink_to(blob)  # absolute, still inside the repo
    (snap / "nested").mkdir()
    (snap / "nested" / "weights.safetensors").symlink_to(
        "../" + os.readlink(snap / "model.safetensors"))
    r = cas("model", "import", str(repo), "--json")
    assert r.code == 0, r.err
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "tiny")
        assert sorted(f.path for f in v.manifest.files) == \
            ["config.json", "model.safetensors", "nested/weights.safetensors"]
        assert store.read_object(v.manifest.file("config.json").id) == \
            (src / "config.json").read_bytes()


def test_model_directory_links_must_stay_inside_it(cas, tmp_path, outside):
    assert cas("init").code == 0
    src = make_model_dir(tmp_path / "src")
    (src / "sub").mkdir()
    shutil.move(src / "config.json", src / "sub" / "config.json")
    (src / "config.json").symlink_to("sub/config.json")  # inside: followed
    assert cas("model", "import", str(src), "--name", "ok").code == 0
    (src / "notes.txt").symlink_to(outside / "secret")
    r = cas("model", "import", str(src), "--name", "bad")
    one_line_error(r)
    assert str(src / "notes.txt") in r.err and "outside" in r.err
    (src / "notes.txt").unlink()
    (src / "up").symlink_to("../outside")
    r = cas("model", "import", str(src), "--name", "bad")
    one_line_error(r)
    assert "outside" in r.err or "leads out" in r.err
    rows = json.loads(cas("model", "ls", "--json").out)["models"]
    assert [m["ref"] for m in rows] == ["ok"]


# -- item 10: safetensors headers are checked as the manifest reader checks them ----

GOOD = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("entry, why", [
    ({"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}, "non-negative"),
    ({"dtype": "F32", "shape": [2.0, 2], "data_offsets": [0, 16]}, "non-negative"),
    ({"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}, "non-negative"),
    ({"dtype": "F32", "shape": ["2", 2], "data_offsets": [0, 16]}, "non-negative"),
    ({"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}, "non-negative"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16, 32]}, "two non-negative"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [-16, 0]}, "two non-negative"),
    ({"dtype": "F33", "shape": [2, 2], "data_offsets": [0, 16]}, "unknown dtype"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 48]}, "does not fit"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}, "overlap"),
])
def test_a_bad_safetensors_header_is_refused_at_import(cas, tmp_path, entry, why):
    assert cas("init").code == 0
    assert cas("model", "import", str(make_model_dir(tmp_path / "good")), "--name", "g").code == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(crafted({"a": GOOD, "b": entry}, b"\1" * 32))
    r = cas("model", "import", str(bad))
    one_line_error(r)
    assert "not a model directory" in r.err and why in r.err
    r = cas("model", "ls")
    assert r.code == 0 and not warnings_about(r, "model") and "g " in r.text


def test_a_huge_header_length_is_refused(cas, tmp_path):
    assert cas("init").code == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    r = cas("model", "import", str(bad))
    one_line_error(r)
    assert "header length" in r.err


def record_damaged_version(store_path: Path, name: str) -> None:
    """A version whose manifest has a negative dimension, as an earlier cas
    recorded from a crafted header."""
    with Store.open(str(store_path)) as store:
        history = History(store)
        v = resolve_model(history, name)
        doc = json.loads(v.manifest.to_json())
        doc["tensors"][0]["shape"] = [-1, -(v.manifest.tensors[0].numel)]
        with store.writer() as writer:
            model_id = writer.put_bytes(dumps(doc))
            snap = Snapshot(tree=v.snapshot.tree, parents=(v.snapshot.oid,),
                            time_ns=v.snapshot.time_ns + 1, message="crafted",
                            branch=v.snapshot.branch, host="h", user="u", source="s",
                            stats=v.snapshot.stats, model=model_id, model_version=2)
            history.record(snap, writer, ref=MODELS + name)


def test_a_damaged_manifest_is_skipped_by_ls_and_removed_by_rm(cas, tmp_path, monkeypatch):
    assert cas("init").code == 0
    assert cas("model", "import", str(make_model_dir(tmp_path / "a", 1)), "--name", "good").code == 0
    assert cas("model", "import", str(make_model_dir(tmp_path / "b", 2)), "--name", "bad").code == 0
    record_damaged_version(tmp_path / ".cas", "bad")
    for args in (("model", "ls"), ("model", "ls", "--versions"), ("model", "ls", "--json")):
        r = cas(*args)
        assert r.code == 0, r.err
        assert len(warnings_about(r, "model bad")) == 1 and "Traceback" not in r.err, r.err
        assert b"good" in r.out
    # The older version of the damaged model is still there, by number.
    assert cas("model", "show", "bad@1").code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cas("stores", "add", "here", str(tmp_path)).code == 0
    r = cas("model", "ls", "--all-stores", "--json")
    assert r.code == 0 and [m["ref"] for m in json.loads(r.out)["models"]] == ["good"]
    r = cas("model", "rm", "bad")
    assert r.code == 0, r.err
    r = cas("model", "ls", "--json")
    assert r.code == 0 and not warnings_about(r, "model") and json.loads(r.out)["model_count"] == 1
    assert cas("gc").code == 0 and cas("verify", "--full").code == 0


def test_reimporting_over_a_damaged_manifest_records_a_good_version(cas, tmp_path):
    assert cas("init").code == 0
    src = make_model_dir(tmp_path / "a")
    assert cas("model", "import", str(src), "--name", "m").code == 0
    record_damaged_version(tmp_path / ".cas", "m")
    r = cas("model", "import", str(src), "--name", "m")
    assert r.code == 0 and "m@3" in r.text, (r.text, r.err)
    assert not warnings_about(cas("model", "ls"), "model")


# -- item 18: which store a path names --------------------------------------------

def test_stores_add_takes_a_store_made_with_store_init(cas, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cas("init").code == 0               # a .cas above: must not be registered instead
    s = tmp_path / "disk" / "store"
    assert cas("--store", str(s), "init").code == 0
    assert cas("--store", str(s), "model", "import", str(make_model_dir(tmp_path / "src")),
               "--name", "m").code == 0
    assert cas("stores", "add", "disk", str(s)).code == 0
    r = cas("stores", "ls")
    assert r.text.split() == ["disk", str(s)]
    r = cas("model", "ls", "--all-stores", "--json")
    assert [(m["store"], m["ref"]) for m in json.loads(r.out)["models"]] == [("disk", "m")]
    r = cas("stores", "add", "wrong", str(tmp_path / "disk"))  # no store there, one above
    one_line_error(r)
    assert "wrong" not in cas("stores", "ls").text


def test_all_stores_lists_what_is_reachable_and_marks_the_rest_offline(cas, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("internal", "ssd"):
        d = tmp_path / name
        d.mkdir()
        assert cas("init", cwd=d).code == 0
        assert cas("model", "import", str(make_model_dir(tmp_path / f"src-{name}")),
                   "--name", name, cwd=d).code == 0
        assert cas("stores", "add", name, str(d)).code == 0
    (tmp_path / "ssd").rename(tmp_path / "unplugged")
    r = cas("model", "ls", "--all-stores")
    assert r.code == 0, r.err
    assert len(warnings_about(r, "'ssd'")) == 1 and "offline" in r.err
    lines = r.text.splitlines()
    assert any(line.split()[:2] == ["internal", "internal"] for line in lines)
    assert any(line.split() == ["ssd", "(offline)"] for line in lines)
    doc = json.loads(cas("model", "ls", "--all-stores", "--json").out)
    assert [m["ref"] for m in doc["models"]] == ["internal"]
    assert [o["store"] for o in doc["offline_stores"]] == ["ssd"]


@pytest.mark.plain_only
def test_python_api_takes_a_store_directory_or_a_tree_holding_one(cas, tmp_path):
    mlx = pytest.importorskip("cas.mlx")
    s = tmp_path / "disk" / "store"
    assert cas("init").code == 0  # a .cas above the store made with --store
    assert cas("--store", str(s), "init").code == 0
    src = make_model_dir(tmp_path / "src")
    assert cas("--store", str(s), "model", "import", str(src), "--name", "m").code == 0
    for where in (str(s), s):
        got = mlx.load_weights("m", store=where)
        assert bytes(memoryview(got["w"])) == weights(1)
        assert mlx.load_config("m", store=where)["seed"] == 1
        assert mlx.model_path("m", store=where).startswith(str(s) + "/views/")
    tree = tmp_path / "proj"
    tree.mkdir()
    assert cas("init", "--nested", cwd=tree).code == 0
    assert cas("model", "import", str(src), "--name", "p", cwd=tree).code == 0
    assert mlx.load_config("p", store=str(tree))["seed"] == 1
    (tree / "deep").mkdir()
    with pytest.raises(StoreNotFound):  # a path given names its own store, none further up
        mlx.load_config("p", store=str(tree / "deep"))


# -- Low: export names each failed file; views do not expose the store's copy --------

@pytest.mark.plain_only
def test_export_reports_a_damaged_file_in_one_line_each(cas, imported, tmp_path):
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
        path = store.plain_path(v.manifest.file("model.safetensors").id)
    flip_byte(path, 1000)
    r = cas("model", "export", "m", str(tmp_path / "out"))
    assert r.code == 1, r.err
    assert "model.safetensors" in r.err and "Traceback" not in r.err and "internal" not in r.err


@pytest.fixture
def nobody_home():
    """A directory an unprivileged user owns and can reach (pytest's own
    temp directories are private to root)."""
    top = Path(tempfile.mkdtemp(prefix="cas-nobody-", dir="/tmp"))
    os.chmod(top, 0o755)
    home = top / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    yield home
    shutil.rmtree(top)


def as_nobody(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *args], cwd=cwd, capture_output=True, timeout=120,
                          env={**os.environ, "HOME": str(cwd), "PYTHONPATH": str(REPO)})


@pytest.mark.plain_only
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_tool_writing_into_a_view_cannot_change_the_store(nobody_home):
    home = nobody_home
    make_model_dir(home / "src")
    subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
    cas = [sys.executable, "-m", "cas.cli"]
    assert as_nobody(*cas, "init", cwd=home).returncode == 0
    r = as_nobody(*cas, "model", "import", "src", "--name", "m", cwd=home)
    assert r.returncode == 0, r.stderr
    view = Path(as_nobody(*cas, "model", "path", "m", cwd=home).stdout.decode().strip())
    r = as_nobody(*cas, "model", "link", "m", "--hf-cache", str(home / "hub"), cwd=home)
    assert r.returncode == 0, r.stderr
    blob_dir = next((home / "hub").glob("models--*/blobs"))
    write = ("import sys\nwith open(sys.argv[1], 'r+b') as f:\n    f.seek(100)\n"
             "    f.write(b'XXXX')\n")
    for target in [view / "model.safetensors", *blob_dir.iterdir()]:
        r = as_nobody(sys.executable, "-c", write, str(target), cwd=home)
        assert r.returncode != 0 and b"PermissionError" in r.stderr, (target, r.stderr)
    r = as_nobody(*cas, "verify", "--full", cwd=home)
    assert r.returncode == 0, r.stderr
    assert (view / "model.safetensors").read_bytes() == (home / "src" / "model.safetensors").read_bytes()


@pytest.mark.plain_only
def test_view_files_are_clones_or_links_to_read_only_objects(history, tmp_path):
    """Clones where the filesystem has them (run with --basetemp on XFS or
    btrfs to take that branch), else links to objects no write bit allows."""
    src = make_model_dir(tmp_path / "src")
    v = import_model(history, str(src), "m").version
    obj = history.store.plain_path(v.manifest.file("model.safetensors").id)
    os.chmod(obj, 0o644)  # as an older cas, or a hand, left it
    from cas.ops.models import model_view
    view = Path(model_view(history, v).path) / "model.safetensors"
    hub = Path(link_hf_cache(history, v, str(tmp_path / "hub")))
    assert (hub / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    if view.is_symlink():
        assert os.path.realpath(view) == obj and os.stat(obj).st_mode & 0o222 == 0
    else:  # a copy-on-write clone: even root's writes never reach the object
        assert os.stat(view).st_mode & 0o777 == 0o444 and not os.path.samefile(view, obj)
        os.chmod(view, 0o644)
        with open(view, "r+b") as f:
            f.seek(100)
            f.write(b"XXXX")
        assert Path(obj).read_bytes() == (src / "model.safetensors").read_bytes()


@pytest.fixture
def history(store) -> History:
    return History(store)


@pytest.mark.plain_only
def test_model_verify_says_how_to_repair_and_following_it_repairs(cas, imported, tmp_path):
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
        path = store.plain_path(v.manifest.file("model.safetensors").id)
    flip_byte(path, 1000)  # as a tool writing into the view would, where modes do not stop it
    r = cas("model", "verify", "m")
    assert r.code == 1 and "model.safetensors" in r.err
    hint = next(line for line in r.err.splitlines() if line.startswith("to repair m@1"))
    assert f"cas model import {imported} --name m" in hint and f"cas repair --from {imported}" in hint
    # Importing the good file again repairs: the verify recorded the object
    # damaged, and a write of recorded-damaged content replaces it.
    assert cas("model", "import", str(imported), "--name", "m").code == 0
    assert cas("model", "verify", "m").code == 0
    assert cas("verify", "--full").code == 0


def test_weights_load_from_a_store_on_a_read_only_disk(cas, tmp_path):
    """A write-protected backup disk: loading checks the tensors and records nothing."""
    mlx = pytest.importorskip("cas.mlx")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = disk / "store"
        assert cas("--store", str(store), "init").code == 0
        src = make_model_dir(tmp_path / "src")
        assert cas("--store", str(store), "model", "import", str(src), "--name", "m").code == 0
        for obj in (store / "objects").rglob("*"):
            obj.chmod(obj.stat().st_mode)  # a new ctime: the recorded check no longer holds
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
        for verify in (False, True):
            with pytest.warns(RuntimeWarning, match="reads are not being logged"):
                got = mlx.load_weights("m", store=str(store), verify=verify)
            assert bytes(memoryview(got["w"])) == weights(1)
    finally:
        subprocess.run(["umount", "-l", str(disk)])
