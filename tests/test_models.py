"""Models: import, versions, inventory, views, and MLX loading from the store."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")

from cas.errors import ModelNotFound, WeightsDamaged  # noqa: E402
from cas.mlx import load_config, load_weights, model_path  # noqa: E402
from cas.model.history import History  # noqa: E402
from cas.ops.gc import gc  # noqa: E402
from cas.ops.models import (import_model, link_hf_cache, list_models,  # noqa: E402
                            model_versions, resolve_model)
from cas.ops.verify import verify  # noqa: E402
from cas.storage.store import Store  # noqa: E402

from .conftest import REPO, flip_byte  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import tiny_model  # noqa: E402

# Big enough that model.safetensors is chunked (over 1 MiB), small enough to be quick.
BIGGER = {**tiny_model.CONFIG, "vocab_size": 2048, "hidden_size": 256, "intermediate_size": 512}


def make_model(out: Path, dtype: str = "bfloat16", bits: int | None = None, seed: int = 7,
               config: dict = BIGGER) -> Path:
    model, cfg = tiny_model.build(config, dtype=dtype, bits=bits, seed=seed)
    tiny_model.save(model, cfg, str(out))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "f32": make_model(root / "f32", "float32"),
        "f16": make_model(root / "f16", "float16"),
        "bf16": make_model(root / "bf16", "bfloat16"),
        "q4": make_model(root / "q4", "bfloat16", bits=4),
        "tiny": make_model(root / "tiny", "bfloat16", config=tiny_model.CONFIG),
    }


@pytest.fixture
def history(store) -> History:
    return History(store)


def assert_same_weights(got: dict, path: Path) -> None:
    want = mx.load(str(path))
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert bytes(memoryview(got[k])) == bytes(memoryview(want[k])), k


@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "q4", "tiny"])
@pytest.mark.parametrize("chunked", [False, True])
def test_weights_from_the_store_equal_mx_load_bit_for_bit(history, models, kind, chunked):
    result = import_model(history, str(models[kind]), kind, chunked=chunked)
    size = (models[kind] / "model.safetensors").stat().st_size
    entry = history.store.entry(result.version.manifest.file("model.safetensors").id)
    if size >= (1 << 20):
        assert (entry.encoding.name == "CHUNKED") == chunked
    assert_same_weights(load_weights(kind, store=history.store), models[kind] / "model.safetensors")


def test_quantized_model_is_described_and_runs_the_same(history, models):
    v = import_model(history, str(models["q4"]), "q4").version
    assert v.manifest.quantization == {"bits": 4, "group_size": 64}
    plain = import_model(history, str(models["bf16"]), "bf16").version
    assert v.manifest.parameters == plain.manifest.parameters  # packed weights count eight per uint32
    assert plain.manifest.dtype == "bfloat16" and plain.manifest.architecture == "tinylm"
    cfg = load_config("q4", store=history.store)
    assert cfg == json.loads((models["q4"] / "config.json").read_text())
    tokens = [1, 5, 9, 200, 7]
    from_store = tiny_model.forward(cfg, load_weights("q4", store=history.store), tokens)
    from_file = tiny_model.forward(cfg, mx.load(str(models["q4"] / "model.safetensors")), tokens)
    assert mx.array_equal(from_store, from_file).item()


def test_keys_load_only_those_tensors(history, models):
    import_model(history, str(models["bf16"]), "m")
    got = load_weights("m", store=history.store, keys=["lm_head.weight", "norm.weight"])
    want = mx.load(str(models["bf16"] / "model.safetensors"))
    assert sorted(got) == ["lm_head.weight", "norm.weight"]
    assert mx.array_equal(got["lm_head.weight"], want["lm_head.weight"]).item()
    with pytest.raises(ModelNotFound, match="no tensor 'nope'"):
        load_weights("m", store=history.store, keys=["nope"])


def test_weights_stored_compressed_by_a_snapshot_still_load_exactly(history, models, tmp_path):
    from cas.ops.snapshot import take_snapshot
    take_snapshot(history, str(models["f32"]), "main")  # zstd chunks, as a data directory gets
    result = import_model(history, str(models["f32"]), "f32")
    assert result.new_bytes < 100_000  # the tensors were already stored
    assert_same_weights(load_weights("f32", store=history.store), models["f32"] / "model.safetensors")


def test_importing_the_same_model_twice_stores_nothing_new(history, models):
    first = import_model(history, str(models["bf16"]), "m")
    assert not first.unchanged and first.new_objects > 0
    before = sorted(p for p in Path(history.store.path).rglob("*") if p.is_file()
                    and "index" not in p.parts)
    again = import_model(history, str(models["bf16"]), "m")
    after = sorted(p for p in Path(history.store.path).rglob("*") if p.is_file()
                   and "index" not in p.parts)
    assert again.unchanged and again.new_objects == 0 and again.version.number == 1
    assert before == after


def test_old_versions_stay_loadable_after_a_new_import(history, models, tmp_path):
    base = models["bf16"]
    tuned = tmp_path / "tuned"
    model, cfg = tiny_model.build(BIGGER, dtype="bfloat16", seed=7)
    model.layers[1].up_proj.weight = model.layers[1].up_proj.weight * 1.01  # a fine-tune
    tiny_model.save(model, cfg, str(tuned))
    v1 = import_model(history, str(base), "coder", chunked=True).version
    time.sleep(0.01)
    moment = time.time_ns()
    time.sleep(0.01)
    second = import_model(history, str(tuned), "coder", chunked=True)
    v2 = second.version
    assert v2.number == 2 and v2.snapshot.parent == v1.snapshot.oid
    # Only the changed tensor (and the header) is new.
    assert second.new_bytes < 0.2 * (tuned / "model.safetensors").stat().st_size
    assert_same_weights(load_weights("coder", store=history.store), tuned / "model.safetensors")
    assert_same_weights(load_weights("coder@1", store=history.store), base / "model.safetensors")
    assert_same_weights(load_weights(f"coder@{v1.snapshot.oid.hex[:10]}", store=history.store),
                        base / "model.safetensors")
    assert_same_weights(load_weights("coder", store=history.store, at_ns=moment),
                        base / "model.safetensors")
    with pytest.raises(ModelNotFound, match="versions 1 to 2"):
        resolve_model(history, "coder@3")


@pytest.mark.parametrize("chunked", [False, True])
def test_a_damaged_weight_names_model_file_and_tensor(history, models, chunked):
    v = import_model(history, str(models["bf16"]), "m", chunked=chunked).version
    tensor = next(t for t in v.manifest.tensors if t.name == "layers.0.q_proj.weight")
    store = history.store
    file_id = v.manifest.file("model.safetensors").id
    if not chunked:
        flip_byte(store.plain_path(file_id), tensor.start + 100)
    else:
        pos = 0
        for chunk, n in store.chunk_list(file_id).chunks:
            if pos <= tensor.start < pos + n:
                e = store.entry(chunk)
                flip_byte(store.layout.pack_path(e.pack) if e.pack else
                           store.layout.loose_path(chunk, e.encoding),
                           e.offset + tensor.start - pos + 100)
                break
            pos += n
    with pytest.raises(WeightsDamaged) as err:
        load_weights("m", store=store)
    message = str(err.value)
    assert "m@1" in message and "model.safetensors" in message and "layers.0.q_proj.weight" in message
    # Another tensor still loads.
    ok = load_weights("m", store=store, keys=["norm.weight"])
    assert "norm.weight" in ok


def test_hugging_face_cache_repo_imports_with_its_revision(history, models, tmp_path):
    repo = tmp_path / "hub" / "models--mlx-community--tiny-coder-4bit"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in sorted(models["q4"].iterdir()):
        blob = repo / "blobs" / f"blob-{f.name}"
        blob.write_bytes(f.read_bytes())
        (repo / "snapshots" / rev / f.name).symlink_to(os.path.relpath(blob, repo / "snapshots" / rev))
    v = import_model(history, str(repo)).version
    assert v.name == "tiny-coder-4bit"
    assert v.manifest.source["repo"] == "mlx-community/tiny-coder-4bit"
    assert v.manifest.source["revision"] == rev
    tree = history.load_tree(v.snapshot.tree)
    assert all(e.kind == "file" for e in tree.entries)  # links were followed, not stored
    assert_same_weights(load_weights("tiny-coder-4bit", store=history.store),
                        models["q4"] / "model.safetensors")


@pytest.mark.plain_only
def test_views_link_plain_objects_and_copy_the_rest(history, models, tmp_path):
    whole = import_model(history, str(models["f32"]), "plain").version
    chunked = import_model(history, str(models["bf16"]), "cut", chunked=True).version
    path = model_path("plain", store=history.store)
    weights = Path(path) / "model.safetensors"
    obj = history.store.plain_path(whole.manifest.file("model.safetensors").id)
    if weights.is_symlink():
        assert os.path.realpath(weights) == obj
    else:  # a copy-on-write clone, where the filesystem has them
        assert not os.path.samefile(weights, obj) and weights.read_bytes() == Path(obj).read_bytes()
    assert_same_weights(mx.load(str(weights)), models["f32"] / "model.safetensors")
    cut = Path(model_path("cut", store=history.store)) / "model.safetensors"
    assert not cut.is_symlink() and cut.read_bytes() == (models["bf16"] / "model.safetensors").read_bytes()
    snap_dir = Path(link_hf_cache(history, chunked, str(tmp_path / "hub")))
    assert snap_dir.parent.parent.name == "models--cas--cut"
    assert (snap_dir.parent.parent / "refs" / "main").read_text() == snap_dir.name
    linked = snap_dir / "model.safetensors"
    assert linked.is_symlink() and os.readlink(linked).startswith("../../blobs/")
    assert linked.read_bytes() == (models["bf16"] / "model.safetensors").read_bytes()


def test_rm_and_gc_keep_what_other_models_share(history, models, tmp_path):
    import_model(history, str(models["bf16"]), "a")
    import_model(history, str(models["bf16"]), "b")  # the same tensors, another name
    rows = {r.version.name: r for r in list_models(history)}
    assert rows["a"].shared_bytes == rows["a"].stored_bytes > 0
    from cas.ops.models import remove_model
    assert remove_model(history, "a") == 1
    gc(history, grace_seconds=0)
    assert verify(history.store, history=history).ok
    assert_same_weights(load_weights("b", store=history.store), models["bf16"] / "model.safetensors")
    with pytest.raises(ModelNotFound):
        load_weights("a", store=history.store)


def test_gc_keeps_model_manifests_and_verify_passes(history, models):
    import_model(history, str(models["q4"]), "q")
    report = gc(history, grace_seconds=0)
    assert report.removed_objects == 0
    assert verify(history.store, history=history).ok
    assert resolve_model(history, "q").manifest.quantization["bits"] == 4


def test_cli_import_ls_show_export(cas, models, tmp_path):
    assert cas("init").code == 0
    r = cas("model", "import", str(models["q4"]), "--name", "coder")
    assert r.code == 0 and "coder@1" in r.text
    r = cas("model", "import", str(models["q4"]), "--name", "coder")
    assert r.code == 0 and "unchanged" in r.text
    r = cas("model", "ls", "--json")
    inventory = json.loads(r.out)
    assert inventory["model_count"] == 1
    assert inventory["device"]["kind"] in ("internal", "external") and inventory["device"]["mount"]
    assert inventory["store"].endswith(".cas")
    row = inventory["models"][0]
    shape = json.loads((REPO / "data" / "coding-models-inventory.json").read_text())["models"][0]
    for key in ("name", "architecture", "parameters", "framework", "type", "revision",
                "quantization", "size_bytes", "files", "modified"):
        assert key in row and key in shape, key
    assert row["quantization"] == {"bits": 4, "group_size": 64}
    assert row["size_bytes"] == sum(f.stat().st_size for f in models["q4"].iterdir())
    r = cas("model", "ls")
    assert r.code == 0 and "coder" in r.text and "4-bit" in r.text
    r = cas("model", "show", "coder")
    assert r.code == 0 and "tinylm" in r.text and "U32" in r.text
    r = cas("model", "export", "coder@1", str(tmp_path / "out"))
    assert r.code == 0
    for f in models["q4"].iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


def test_cli_all_stores_merges_registered_stores(cas, models, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name, kind in (("internal", "bf16"), ("external", "q4")):
        d = tmp_path / name
        d.mkdir()
        assert cas("init", cwd=d).code == 0
        assert cas("model", "import", str(models[kind]), cwd=d).code == 0
        assert cas("stores", "add", name, str(d)).code == 0
    r = cas("model", "ls", "--all-stores", "--json")
    rows = json.loads(r.out)["models"]
    assert sorted((m["store"], m["ref"]) for m in rows) == [("external", "q4"), ("internal", "bf16")]


def test_cli_refuses_link_loops_and_non_utf8_names_in_a_model(cas, models, tmp_path):
    assert cas("init").code == 0
    looped = tmp_path / "looped"
    import shutil
    shutil.copytree(models["tiny"], looped)
    (looped / "sub").mkdir()
    (looped / "sub" / "again").symlink_to("..")
    r = cas("model", "import", str(looped))
    assert r.code == 2 and "leads back into itself" in r.err and "Traceback" not in r.err
    odd = tmp_path / "odd"
    shutil.copytree(models["tiny"], odd)
    (odd / os.fsdecode(b"notes-\xff.txt")).write_text("x")
    r = cas("model", "import", str(odd))
    assert r.code == 2 and "must be UTF-8" in r.err and r.err.count("\n") == 1
    assert "model_count\": 0" in cas("model", "ls", "--json").text


@pytest.mark.parametrize("args, message", [
    (("model", "import", "/nonexistent/model"), "no such file or directory"),
    (("model", "import", "/etc"), "not a model directory"),
    (("model", "show", "nope"), "no such model"),
    (("model", "show", "m@7"), "versions 1 to 1"),
    (("model", "rm", "nope"), "no such model"),
    (("model", "import", "MODEL", "--name", "bad/name"), "not a valid"),
])
def test_cli_bad_input_is_one_line(cas, models, args, message):
    assert cas("init").code == 0
    assert cas("model", "import", str(models["tiny"]), "--name", "m").code == 0
    args = tuple(str(models["tiny"]) if a == "MODEL" else a for a in args)
    r = cas(*args)
    assert r.code != 0 and message in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err


@pytest.mark.plain_only
def test_gc_removes_the_view_of_a_forgotten_version(history, models):
    from cas.ops.forget import forget
    v1 = import_model(history, str(models["f32"]), "m").version
    old_view = Path(model_path("m@1", store=history.store))
    import_model(history, str(models["f16"]), "m")
    keep_view = Path(model_path("m@2", store=history.store))
    forget(history, [v1.snapshot.oid])
    report = gc(history, grace_seconds=0)
    assert report.removed_views == 1
    assert not old_view.exists() and keep_view.exists()
    assert_same_weights(mx.load(str(keep_view / "model.safetensors")), models["f16"] / "model.safetensors")


@pytest.mark.plain_only
def test_a_damaged_header_of_a_whole_file_is_named_too(history, models):
    v = import_model(history, str(models["bf16"]), "m").version
    path = history.store.plain_path(v.manifest.file("model.safetensors").id)
    flip_byte(path, 20)  # inside the JSON header
    with pytest.raises(WeightsDamaged, match="m@1.*model.safetensors"):
        load_weights("m", store=history.store)


@pytest.mark.parametrize("chunked", [False, True])
def test_cli_model_verify_names_the_damaged_tensor(cas, models, tmp_path, chunked):
    assert cas("init").code == 0
    assert cas("model", "import", str(models["bf16"]), "--name", "m",
               *(["--chunked"] if chunked else [])).code == 0
    r = cas("model", "verify", "m")
    assert r.code == 0 and "ok" in r.err
    with Store.open(str(tmp_path / ".cas")) as store:
        v = resolve_model(History(store), "m")
        t = next(t for t in v.manifest.tensors if t.name == "layers.1.up_proj.weight")
        fid = v.manifest.file("model.safetensors").id
        if not chunked:
            path, offset = store.plain_path(fid), t.start + 10
        else:
            pos = 0
            for chunk, n in store.chunk_list(fid).chunks:
                if pos <= t.start < pos + n:
                    e = store.entry(chunk)
                    path, offset = store.layout.pack_path(e.pack), e.offset + t.start - pos + 10
                    break
                pos += n
    flip_byte(path, offset)
    r = cas("model", "verify", "m")
    assert r.code == 1
    assert "layers.1.up_proj.weight" in r.err and "model.safetensors" in r.err and "Traceback" not in r.err


def test_models_survive_an_index_rebuild(cas, models, tmp_path):
    assert cas("init").code == 0
    assert cas("model", "import", str(models["q4"]), "--name", "coder").code == 0
    assert cas("index", "rebuild").code == 0
    rows = json.loads(cas("model", "ls", "--json").out)["models"]
    assert [r["ref"] for r in rows] == ["coder"]
    with Store.open(str(tmp_path / ".cas")) as store:
        assert_same_weights(load_weights("coder", store=store), models["q4"] / "model.safetensors")
    assert cas("verify", "--full").code == 0


def test_version_numbers_stay_put_when_a_version_is_forgotten(history, models):
    from cas.ops.forget import forget
    v1 = import_model(history, str(models["f32"]), "m").version
    v2 = import_model(history, str(models["f16"]), "m").version
    v3 = import_model(history, str(models["bf16"]), "m").version
    assert [v.number for v in (v1, v2, v3)] == [1, 2, 3]
    forget(history, [v2.snapshot.oid])
    # The older version stays listed past the forgotten one, under its number.
    assert [(v.number, v.snapshot.oid) for v in model_versions(history, "m")] == \
        [(3, v3.snapshot.oid), (1, v1.snapshot.oid)]
    assert_same_weights(load_weights("m@3", store=history.store), models["bf16"] / "model.safetensors")
    assert_same_weights(load_weights("m@1", store=history.store), models["f32"] / "model.safetensors")
    with pytest.raises(ModelNotFound, match="has versions 1, 3"):
        resolve_model(history, "m@2")
    forget(history, [v1.snapshot.oid])
    assert [v.number for v in model_versions(history, "m")] == [3]
    v4 = import_model(history, str(models["f16"]), "m").version
    assert v4.number == 4


@pytest.mark.plain_only
def test_model_verify_path_and_stores_ls_print_json(cas, models, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert cas("init").code == 0
    assert cas("model", "import", str(models["bf16"]), "--name", "m").code == 0
    doc = json.loads(cas("model", "verify", "m", "--json").out)
    assert doc["ok"] is True and doc["problems"] == [] and doc["files"] >= 2
    doc = json.loads(cas("model", "path", "m", "--json").out)
    assert os.path.isfile(os.path.join(doc["path"], "model.safetensors"))
    assert doc["linked_bytes"] + doc["copied_bytes"] > 0
    assert cas("stores", "add", "here", str(tmp_path)).code == 0
    listed = json.loads(cas("stores", "ls", "--json").out)
    assert [s["name"] for s in listed] == ["here"]
    assert os.path.realpath(listed[0]["path"]) in (os.path.realpath(tmp_path),
                                                   os.path.realpath(tmp_path / ".cas"))
