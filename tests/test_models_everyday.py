"""Models in everyday use: sizes in the inventory, notes, the version log,
and links into a Hugging Face cache that `model rm` takes back."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from cas.model.history import History
from cas.ops.models import link_hf_cache, model_inventory, resolve_model
from cas.storage.store import Store

from .test_models_trust import REV, make_hf_repo, tree_state

N = 256 * 1024                     # float32 elements: 1 MiB of weights per model


def safetensors(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def weights(seed: int, n: int = N) -> bytes:
    """Bytes that neither compress nor repeat across seeds."""
    out, i = bytearray(), 0
    while len(out) < n * 4:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n * 4])


def make_model(path: Path, seed: int, config_extra: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "tiny", "seed": seed,
                                                  **(config_extra or {})}))
    (path / "model.safetensors").write_bytes(
        safetensors({"w": ("F32", [N], weights(seed)), "b": ("F32", [4], b"\0" * 16)}))
    return path


def rows(cas, *args: str) -> dict[str, dict]:
    r = cas("model", "ls", "--json", *args)
    assert r.code == 0, r.err
    return {f"{m['ref']}@{m['version']}": m for m in json.loads(r.out)["models"]}


@pytest.fixture
def store_dir(cas, tmp_path) -> Path:
    assert cas("init").code == 0
    return tmp_path / ".cas"


# -- item 1: ON DISK and SHARED -----------------------------------------------------

@pytest.mark.plain_only
def test_two_models_that_share_nothing_show_no_shared_bytes(cas, store_dir, tmp_path):
    for seed, name in ((1, "a"), (2, "b")):
        assert cas("model", "import", str(make_model(tmp_path / name, seed)),
                   "--name", name).code == 0
    got = rows(cas)
    for key in ("a@1", "b@1"):
        assert got[key]["shared_bytes"] == 0, got[key]
        # Stored raw: on disk is the files' size.
        assert got[key]["stored_bytes"] == got[key]["size_bytes"]


@pytest.mark.plain_only
def test_versions_show_what_each_takes_and_shares_with_the_others(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "m", 1)
    assert cas("model", "import", str(src), "--name", "m", "-m", "first").code == 0
    (src / "config.json").write_text(json.dumps({"model_type": "tiny", "seed": 1, "v": 2}))
    assert cas("model", "import", str(src), "--name", "m", "-m", "config only").code == 0
    got = rows(cas, "--versions")
    assert set(got) == {"m@1", "m@2"}
    weights_size = (src / "model.safetensors").stat().st_size
    for key in got:
        assert got[key]["stored_bytes"] == got[key]["size_bytes"] > weights_size
        # The weights are shared between the versions, the configs are not.
        assert got[key]["shared_bytes"] == weights_size
    r = cas("model", "ls", "--versions")
    lines = [line for line in r.text.splitlines() if line.startswith("m ")]
    assert len(lines) == 2 and all("0 B" not in line for line in lines), r.text


def test_the_same_model_under_two_names_is_all_shared(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "m", 3)
    for name in ("x", "y"):
        assert cas("model", "import", str(src), "--name", name).code == 0
    got = rows(cas)
    assert got["x@1"]["shared_bytes"] == got["x@1"]["stored_bytes"] > 0


def test_a_model_file_also_in_a_snapshot_is_shared(cas, store_dir, tmp_path):
    data = tmp_path / "data"
    make_model(data / "models" / "m", 4)
    assert cas("snapshot", str(data)).code == 0
    assert cas("model", "import", str(data / "models" / "m"), "--name", "m").code == 0
    got = rows(cas)
    assert got["m@1"]["shared_bytes"] == got["m@1"]["stored_bytes"] > 0


def test_ls_json_is_the_library_inventory(cas, store_dir, tmp_path):
    assert cas("model", "import", str(make_model(tmp_path / "m", 5)), "--name", "m").code == 0
    doc = json.loads(cas("model", "ls", "--json").out)
    lib = model_inventory([(None, str(store_dir))]).to_doc()
    doc.pop("generated_at")
    lib.pop("generated_at")
    assert doc == lib


# -- item 3: the note of an import -------------------------------------------------

def test_the_import_note_is_shown_by_ls_and_show(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "m", 6)
    assert cas("model", "import", str(src), "--name", "m", "-m", "pinned for evals").code == 0
    assert "pinned for evals" in cas("model", "ls").text
    assert rows(cas)["m@1"]["note"] == "pinned for evals"
    r = cas("model", "show", "m")
    assert r.code == 0 and "note       pinned for evals" in r.text


# -- item 4: cas model log ----------------------------------------------------------

def test_model_log_lists_versions_newest_first(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "m", 7)
    assert cas("model", "import", str(src), "--name", "m", "-m", "one").code == 0
    (src / "config.json").write_text("{}")
    assert cas("model", "import", str(src), "--name", "m", "-m", "two").code == 0
    r = cas("model", "log", "m")
    assert r.code == 0, r.err
    lines = r.text.splitlines()
    assert [line.split()[0] for line in lines] == ["m@2", "m@1"]
    assert lines[0].rstrip().endswith("two") and lines[1].rstrip().endswith("one")
    doc = json.loads(cas("model", "log", "m", "--json").out)
    assert [(d["version"], d["note"]) for d in doc] == [(2, "two"), (1, "one")]
    assert all(d["size_bytes"] > 0 and d["stored_bytes"] > 0 and d["time"] for d in doc)
    r = cas("model", "log", "nosuch")
    assert r.code in (1, 2) and "nosuch" in r.err and "Traceback" not in r.err


# -- item 5: links into a Hugging Face cache -----------------------------------------

@pytest.mark.plain_only
def test_linking_into_the_source_cache_keeps_its_revision_and_blobs(cas, store_dir, tmp_path):
    hub = tmp_path / "hub"
    repo = make_hf_repo(hub, make_model(tmp_path / "src", 8))
    assert cas("model", "import", str(repo)).code == 0
    before = tree_state(hub)
    r = cas("model", "link", "tiny", "--hf-cache", str(hub))
    assert r.code == 0, r.err
    assert r.out.decode().strip() == str(repo / "snapshots" / REV)
    assert (repo / "refs" / "main").read_text() == REV
    assert tree_state(hub) == before          # nothing added beside the sha256 blobs
    hf = pytest.importorskip("huggingface_hub")
    info = hf.scan_cache_dir(hub)
    assert [len(list(r.revisions)) for r in info.repos] == [1]


@pytest.mark.plain_only
def test_a_source_cache_with_pruned_blobs_gets_links_under_the_hubs_names(cas, store_dir,
                                                                          tmp_path):
    hub = tmp_path / "hub"
    repo = make_hf_repo(hub, make_model(tmp_path / "src", 9))
    names = sorted(p.name for p in (repo / "blobs").iterdir())
    assert cas("model", "import", str(repo)).code == 0
    for blob in (repo / "blobs").iterdir():
        blob.unlink()
    assert cas("model", "link", "tiny", "--hf-cache", str(hub)).code == 0
    assert sorted(p.name for p in (repo / "blobs").iterdir()) == names
    snap = repo / "snapshots" / REV
    assert (snap / "model.safetensors").read_bytes() == \
        (tmp_path / "src" / "model.safetensors").read_bytes()
    # model rm takes back the links it made, and only those.
    r = cas("model", "rm", "tiny")
    assert r.code == 0, r.err
    assert list((repo / "blobs").iterdir()) == []
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors"]
    assert (repo / "refs" / "main").read_text() == REV


@pytest.mark.plain_only
def test_rm_removes_the_links_link_made_and_gc_leaves_none_dangling(cas, store_dir, tmp_path):
    assert cas("model", "import", str(make_model(tmp_path / "src", 10)), "--name", "m").code == 0
    hub = tmp_path / "hub"
    (hub / "models--other").mkdir(parents=True)
    (hub / "models--other" / "keep").write_text("not ours")
    assert cas("model", "link", "m", "--hf-cache", str(hub)).code == 0
    record = json.loads((store_dir / "links" / "m.json").read_text())
    links = [d for d in record["links"] if not d.get("dir")]
    assert record["model"] == "m" and len(links) == 5   # 2 blobs, 2 files, refs/main
    assert cas("model", "rm", "m").code == 0 and cas("gc").code == 0
    assert not (hub / "models--cas--m").exists()
    assert (hub / "models--other" / "keep").read_text() == "not ours"
    assert not (store_dir / "links" / "m.json").exists()
    dangling = [p for p in hub.rglob("*") if p.is_symlink() and not p.exists()]
    assert dangling == []


@pytest.mark.plain_only
def test_rm_leaves_links_that_no_longer_point_into_the_store(cas, store_dir, tmp_path):
    assert cas("model", "import", str(make_model(tmp_path / "src", 11)), "--name", "m").code == 0
    hub = tmp_path / "hub"
    assert cas("model", "link", "m", "--hf-cache", str(hub)).code == 0
    blobs = hub / "models--cas--m" / "blobs"
    mine = sorted(blobs.iterdir())[0]
    mine.unlink()
    mine.symlink_to(tmp_path / "src" / "config.json")   # the user pointed it elsewhere
    other = sorted(blobs.iterdir())[1]
    assert cas("model", "rm", "m").code == 0
    assert mine.is_symlink() and os.readlink(mine) == str(tmp_path / "src" / "config.json")
    assert not other.exists() and not other.is_symlink()
    assert (tmp_path / "src" / "config.json").exists()


@pytest.mark.plain_only
def test_rm_warns_about_links_it_cannot_remove(cas, store_dir, tmp_path):
    assert cas("model", "import", str(make_model(tmp_path / "src", 12)), "--name", "m").code == 0
    hub = tmp_path / "hub"
    assert cas("model", "link", "m", "--hf-cache", str(hub)).code == 0
    blobs = hub / "models--cas--m" / "blobs"
    # An immutable directory refuses even root: the links in it stay.
    import subprocess
    if subprocess.run(["chattr", "+i", str(blobs)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        r = cas("model", "rm", "m")
    finally:
        subprocess.run(["chattr", "-i", str(blobs)], check=True)
    assert r.code == 0, r.err
    warned = [line for line in r.err.splitlines() if line.startswith("cas: warning:")]
    assert len(warned) == 2 and all(str(blobs) in w for w in warned), r.err


@pytest.mark.plain_only
def test_link_into_a_fresh_cache_uses_the_hub_revision(cas, store_dir, tmp_path):
    repo = make_hf_repo(tmp_path / "hub", make_model(tmp_path / "src", 13))
    assert cas("model", "import", str(repo)).code == 0
    other = tmp_path / "other-hub"
    r = cas("model", "link", "tiny", "--hf-cache", str(other))
    assert r.code == 0, r.err
    assert (other / "models--org--tiny" / "refs" / "main").read_text() == REV
    with Store.open(str(store_dir)) as store:
        v = resolve_model(History(store), "tiny")
        assert Path(link_hf_cache(History(store), v, str(other))).name == REV


@pytest.mark.plain_only
def test_gc_after_forgetting_a_linked_version_removes_its_links_only(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "src", 14)
    assert cas("model", "import", str(src), "--name", "m").code == 0
    (src / "config.json").write_text(json.dumps({"model_type": "tiny", "v": 2}))
    assert cas("model", "import", str(src), "--name", "m").code == 0
    hub = tmp_path / "hub"
    snaps = {}
    for spec in ("m@1", "m@2"):
        r = cas("model", "link", spec, "--hf-cache", str(hub))
        assert r.code == 0, r.err
        snaps[spec] = Path(r.out.decode().strip())
    old = json.loads(cas("model", "log", "m", "--json").out)[1]["snapshot"]
    assert cas("gc").code == 0
    assert snaps["m@1"].is_dir()                 # nothing forgotten yet: all kept
    assert cas("forget", "--force", old).code == 0
    r = cas("gc", "--json")
    assert r.code == 0, r.err
    # m@1's config blob, its 2 snapshot links, and refs/main, which named its revision.
    assert json.loads(r.out)["removed_links"] == 4
    assert not snaps["m@1"].exists()
    assert not (hub / "models--cas--m" / "refs" / "main").exists()
    # m@2 shares the weights blob with m@1: it stays, and nothing dangles.
    assert (snaps["m@2"] / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    dangling = [p for p in hub.rglob("*") if p.is_symlink() and not p.exists()]
    assert dangling == []
    assert cas("model", "rm", "m").code == 0
    assert not (hub / "models--cas--m").exists()


def test_export_reports_each_file_written_against_the_manifest_total(cas, store_dir, tmp_path):
    from cas.ops.models import export_model
    assert cas("model", "import", str(make_model(tmp_path / "src", 15)), "--name", "m").code == 0
    sizes: list[int] = []
    with Store.open(str(store_dir)) as store:
        v = resolve_model(History(store), "m")
        report = export_model(History(store), v, str(tmp_path / "out"), on_file=sizes.append)
    assert not report.problems
    assert sorted(sizes) == sorted(f.size for f in v.manifest.files)
    assert sum(sizes) == v.manifest.bytes


@pytest.mark.plain_only
def test_gc_says_in_text_how_many_links_it_removed(cas, store_dir, tmp_path):
    src = make_model(tmp_path / "src", 14)
    assert cas("model", "import", str(src), "--name", "m").code == 0
    (src / "config.json").write_text(json.dumps({"model_type": "tiny", "v": 2}))
    assert cas("model", "import", str(src), "--name", "m").code == 0
    assert cas("model", "link", "m@1", "--hf-cache", str(tmp_path / "hub")).code == 0
    old = json.loads(cas("model", "log", "m", "--json").out)[1]["snapshot"]
    assert cas("forget", "--force", old).code == 0
    r = cas("gc")
    assert r.code == 0, r.err
    assert "removed 5 model links of versions no longer recorded" in r.out.decode()
