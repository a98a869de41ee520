"""Models in an encrypted store: sealed by default, raw weights only for a
model imported with --public, and nothing that would lay a sealed model's
content out in plain files (views, Hugging Face cache links)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")

from cas.errors import StoreIsEncrypted, WeightsDamaged  # noqa: E402
from cas.mlx import load_config, load_weights, model_path  # noqa: E402
from cas.model.history import History  # noqa: E402
from cas.objectid import hash_bytes  # noqa: E402
from cas.ops.gc import gc  # noqa: E402
from cas.ops.models import (  # noqa: E402
    check_model,
    export_model,
    import_model,
    link_hf_cache,
    list_models,
    model_view,
    remove_model,
    resolve_model,
)
from cas.storage import crypto  # noqa: E402
from cas.storage.config import ENCRYPTION, StoreConfig  # noqa: E402
from cas.storage.store import Store  # noqa: E402

from .conftest import REPO, flip_byte  # noqa: E402
from .test_models_trust import make_model_dir  # noqa: E402

PASSWORD = b"correct horse models"
MARKER = "MARKER-5f1c-model-at-rest"
NAME = "secret-coder-q7"
FILE_NAMES = ("model.safetensors", "config.json", "tokenizer_secret.json")


def encrypted_store(path: Path) -> Store:
    return Store.init(str(path), StoreConfig(encryption=dict(ENCRYPTION)), password=PASSWORD)


def model_source(root: Path, seed: int = 3) -> Path:
    """A model directory whose small files carry the marker; its weights
    (1.5 MiB of F32) are one loose object of two sealed segments."""
    src = make_model_dir(root / "src-model-dir", seed=seed)
    (src / "config.json").write_text(json.dumps({"model_type": "tiny", "note": MARKER}))
    (src / "tokenizer_secret.json").write_text(json.dumps({"marker": MARKER}))
    return src


@pytest.fixture
def vault(tmp_path):
    store = encrypted_store(tmp_path / "vault")
    yield store
    store.close()


@pytest.fixture
def history(vault) -> History:
    return History(vault)


def needles(history: History, src: Path) -> dict[str, bytes]:
    """What must not appear in any file of the store: names, the marker,
    and every plain id of the model (hex and raw)."""
    found = {"marker": MARKER.encode(), "model name": NAME.encode(), "source": src.name.encode()}
    found.update({f"file name {n}": n.encode() for n in FILE_NAMES})
    for v in list_models(history, versions=True):
        ids = {f"id of {f.path}": f.id for f in v.version.manifest.files}
        ids.update({"snapshot": v.version.snapshot.stored_id, "tree": v.version.snapshot.tree})
        if v.version.snapshot.model is not None:
            ids["manifest"] = v.version.snapshot.model
        for what, oid in ids.items():
            found[f"{what} (hex)"] = oid.hex.encode()
            found[f"{what} (raw)"] = oid.digest
    return found


def leaks(root: Path, looked_for: dict[str, bytes], skip: frozenset[str] = frozenset()) -> list[str]:
    """Every (file, what) where a needle is in a path or a file's bytes
    below ``root``; ``skip``: files whose bytes are not searched."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).encode()
            if rel != b"config.json":     # the store's own
                out.extend(f"{path}: its name holds the {w}" for w, n in looked_for.items() if n in rel)
            if name in filenames and path not in skip and not os.path.islink(path):
                data = Path(path).read_bytes()
                out.extend(f"{path}: holds the {w}" for w, n in looked_for.items() if n in data)
    return out


def same_arrays(got: dict, path: Path) -> None:
    want = mx.load(str(path))
    assert sorted(got) == sorted(want)
    for k in want:
        assert bytes(memoryview(got[k])) == bytes(memoryview(want[k])), k


def weight_files(history: History, spec: str = NAME) -> list:
    v = resolve_model(history, spec)
    return [f for f in v.manifest.files if f.path.endswith(".safetensors")]


# -- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True])
def test_import_ls_verify_export_and_load_round_trip(history, tmp_path, public):
    src = model_source(tmp_path)
    result = import_model(history, str(src), NAME, public=public)
    assert result.version.manifest.public is public
    rows = list_models(history)
    assert [r.version.name for r in rows] == [NAME]
    v = resolve_model(history, NAME)
    assert check_model(history, v).problems == []
    report = export_model(history, v, str(tmp_path / "out"))
    assert report.problems == []
    for name in FILE_NAMES:
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    same_arrays(load_weights(NAME, store=history.store, verify=True), src / "model.safetensors")
    assert load_config(NAME, store=history.store)["note"] == MARKER


def test_a_sealed_model_leaves_nothing_readable_in_the_store(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME)
    v = resolve_model(history, NAME)
    assert check_model(history, v).problems == []
    export_model(history, v, str(tmp_path / "out"))
    load_weights(NAME, store=history.store, verify=True)
    assert [f for f in weight_files(history) if history.store.plain_path(f.id)] == []
    assert leaks(Path(history.store.path), needles(history, src)) == []


def test_a_public_model_keeps_only_its_weights_raw(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME, public=True)
    load_weights(NAME, store=history.store)
    raw = set()
    for f in weight_files(history):
        path = history.store.plain_path(f.id)
        assert path is not None, "a public model's weights are raw"
        assert hash_bytes(Path(path).read_bytes()) == f.id   # b3sum of the file is its id
        assert f.id.hex not in path                          # named like every object
        raw.add(path)
    assert leaks(Path(history.store.path), needles(history, src), frozenset(raw)) == []


def test_a_public_import_of_weights_stored_sealed_stores_them_raw(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME)
    [f] = weight_files(history)
    assert history.store.plain_path(f.id) is None
    result = import_model(history, str(src), NAME, public=True)
    assert not result.unchanged and result.version.number == 2 and result.version.manifest.public
    assert history.store.plain_path(f.id) is not None
    same_arrays(load_weights(NAME, store=history.store, verify=True), src / "model.safetensors")
    assert check_model(history, resolve_model(history, NAME)).problems == []


def test_public_in_a_plain_store_is_recorded_and_stores_the_same(store, tmp_path):
    history = History(store)
    src = model_source(tmp_path)
    plain = import_model(history, str(src), "plain")
    public = import_model(history, str(src), "public", public=True)
    assert not plain.version.manifest.public and public.version.manifest.public
    assert public.new_bytes < 64 << 10        # a manifest and a record: the files are stored once
    [f] = weight_files(history, "public")
    assert store.plain_path(f.id) is not None
    assert "public" not in json.loads(plain.version.manifest.to_json())   # ids as before


def test_many_small_tensors_and_a_subset_load_exactly_from_a_sealed_store(history, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import tiny_model
    config = {**tiny_model.CONFIG, "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768}
    model, cfg = tiny_model.build(config, dtype="bfloat16", seed=11)
    tiny_model.save(model, cfg, str(tmp_path / "tiny"))
    import_model(history, str(tmp_path / "tiny"), "tiny")
    weights = tmp_path / "tiny" / "model.safetensors"
    same_arrays(load_weights("tiny", store=history.store, verify=True), weights)
    want = mx.load(str(weights))
    names = sorted(want)[::3]
    got = load_weights("tiny", store=history.store, keys=names, verify=True)
    assert list(got) == names
    assert all(bytes(memoryview(got[k])) == bytes(memoryview(want[k])) for k in names)


def test_sealed_weights_load_where_there_is_no_memfd(history, tmp_path, monkeypatch):
    # macOS has none: the arrays are then made with mx.zeros.
    src = model_source(tmp_path)
    import_model(history, str(src), NAME)
    monkeypatch.delattr(os, "memfd_create")
    same_arrays(load_weights(NAME, store=history.store, verify=True), src / "model.safetensors")


def sealed_offset(content_offset: int) -> int:
    """Where a byte of a sealed loose object's content lies in its file
    (FORMAT §18.5: an 80-byte header, then segments each followed by a tag)."""
    segment, inner = divmod(content_offset, crypto.SEGMENT)
    return 80 + segment * (crypto.SEGMENT + crypto.TAG_SIZE) + inner


@pytest.mark.parametrize("tensor", ["w", "b"])
def test_a_damaged_sealed_weight_names_its_tensor(history, tmp_path, tensor):
    import_model(history, str(model_source(tmp_path)), NAME)
    v = resolve_model(history, NAME)
    t = next(t for t in v.manifest.tensors if t.name == tensor)
    [path] = history.store.backing_files(weight_files(history)[0].id)
    flip_byte(path, sealed_offset(t.start + t.nbytes // 2))
    with pytest.raises(WeightsDamaged) as raised:
        load_weights(NAME, store=history.store)
    # A sealed segment authenticates whole: damage names a tensor it holds
    # part of ('b' shares its segment with the end of 'w').
    segment = t.start + t.nbytes // 2 >> 20
    holders = {u.name for u in v.manifest.tensors if u.start >> 20 <= segment <= u.stop - 1 >> 20}
    assert raised.value.tensor in holders and (tensor == "b" or raised.value.tensor == tensor)
    assert check_model(history, v).problems


# -- what would write plaintext is refused --------------------------------------------


def test_views_and_links_of_a_sealed_model_are_refused(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME)
    v = resolve_model(history, NAME)
    hub = tmp_path / "hub"
    for attempt in (lambda: model_view(history, v), lambda: link_hf_cache(history, v, str(hub)),
                    lambda: model_path(NAME, store=history.store)):
        with pytest.raises(StoreIsEncrypted, match="cas model export"):
            attempt()
    assert not (Path(history.store.path) / "views").exists() or \
        list((Path(history.store.path) / "views").iterdir()) == []
    assert not hub.exists() or list(hub.iterdir()) == []
    assert not (Path(history.store.path) / "links").exists() or \
        list((Path(history.store.path) / "links").iterdir()) == []


def test_a_public_model_has_a_view_and_a_sealed_link_record(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME, public=True)
    v = resolve_model(history, NAME)
    path = model_path(NAME, store=history.store)
    assert os.path.basename(path) == history.store.sealer.name(v.snapshot.stored_id).hex
    same_arrays(mx.load(os.path.join(path, "model.safetensors")), src / "model.safetensors")
    hub = tmp_path / "hub"
    snap_dir = Path(link_hf_cache(history, v, str(hub)))
    assert (snap_dir / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    [record] = (Path(history.store.path) / "links").iterdir()
    assert record.name == history.store.sealer.label(NAME) + ".json"
    assert str(hub).encode() not in record.read_bytes() and NAME.encode() not in record.read_bytes()
    gc(history, grace_seconds=0)   # the view is a recorded snapshot's, under its name: it stays
    assert (snap_dir / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert remove_model(history, NAME) == 1
    assert not (snap_dir / "model.safetensors").exists(), "rm opened the sealed record"
    assert not record.exists()


def test_a_damaged_link_record_removes_nothing(history, tmp_path):
    src = model_source(tmp_path)
    import_model(history, str(src), NAME, public=True)
    snap_dir = Path(link_hf_cache(history, resolve_model(history, NAME), str(tmp_path / "hub")))
    [record] = (Path(history.store.path) / "links").iterdir()
    flip_byte(record, record.stat().st_size - 3)
    remove_model(history, NAME)
    assert (snap_dir / "model.safetensors").is_symlink(), "a record that does not open names nothing"


# -- the command line and the library's passphrase ------------------------------------


def cli(*args: str, cwd: Path, password: bytes | None = PASSWORD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    if password is not None:
        env["CAS_PASSWORD"] = password.decode()
    return subprocess.run([str(REPO / ".venv/bin/cas"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_store(tmp_path) -> Path:
    encrypted_store(tmp_path / ".cas").close()
    return tmp_path


def test_cli_refuses_path_and_link_of_a_sealed_model_and_serves_a_public_one(cli_store, tmp_path):
    src = model_source(tmp_path)
    assert cli("model", "import", str(src), "--name", NAME, cwd=cli_store).returncode == 0
    for args in (["model", "path", NAME], ["model", "link", NAME, "--hf-cache", str(tmp_path / "hub")]):
        r = cli(*args, cwd=cli_store)
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
        assert r.stderr.count("cas: error:") == 1 and "Traceback" not in r.stderr
        assert "encrypted store" in r.stderr and "cas model export" in r.stderr
    r = cli("model", "import", str(src), "--name", "pub", "--public", "--json", cwd=cli_store)
    assert r.returncode == 0 and json.loads(r.stdout)["public"] is True, r.stderr
    r = cli("model", "path", "pub", cwd=cli_store)
    assert r.returncode == 0, r.stderr
    view = Path(r.stdout.strip())
    assert (view / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    r = cli("model", "ls", "--json", cwd=cli_store)
    assert r.returncode == 0 and {m["ref"] for m in json.loads(r.stdout)["models"]} == {NAME, "pub"}
    assert cli("model", "verify", NAME, cwd=cli_store).returncode == 0
    r = cli("model", "export", NAME, str(tmp_path / "out"), cwd=cli_store)
    assert r.returncode == 0, r.stderr
    assert all((tmp_path / "out" / n).read_bytes() == (src / n).read_bytes() for n in FILE_NAMES)
    r = cli("model", "path", NAME, cwd=cli_store, password=b"wrong")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("cas: error:") == 1


LOAD = ("import sys; from cas.mlx import load_weights\n"
        "w = load_weights('m', store=sys.argv[1]{})\n"
        "print(sorted(w))\n")


def test_load_weights_takes_a_password_and_says_when_one_is_needed(tmp_path):
    store = encrypted_store(tmp_path / "vault")
    import_model(History(store), str(model_source(tmp_path)), "m")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}

    def run(code: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, str(tmp_path / "vault")],
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)

    r = run(LOAD.format(", password=" + repr(PASSWORD)))
    assert r.returncode == 0 and r.stdout.strip() == "['b', 'w']", r.stderr
    r = run(LOAD.format(", password=b'wrong'"))
    assert r.returncode != 0 and "WrongPassword" in r.stderr
    r = run(LOAD.format(""))
    assert r.returncode != 0 and "PasswordRequired" in r.stderr
    r = run("from cas.storage import keys; keys.set_password_source(lambda: "
            + repr(PASSWORD) + ")\n" + LOAD.format(""))
    assert r.returncode == 0, r.stderr
    r = run(LOAD.format(""), CAS_PASSWORD=PASSWORD.decode())
    assert r.returncode == 0, r.stderr
