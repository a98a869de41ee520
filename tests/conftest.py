from __future__ import annotations

import dataclasses
import os
import pty
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cas.cli.main import run
from cas.storage.config import ENCRYPTION, StoreConfig
from cas.storage.store import Store

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

# The passphrase of every store made under --encrypted-stores.
SUITE_PASSWORD = "cas suite passphrase"


def pytest_addoption(parser):
    parser.addoption("--encrypted-stores", action="store_true",
                     help="make every store the tests create an encrypted one (tests marked "
                          "plain_only, whose subject is the plain format, are skipped)")


def pytest_configure(config):
    config.addinivalue_line("markers", "plain_only: checks the plain store format itself "
                                       "(skipped under --encrypted-stores)")
    if config.getoption("--encrypted-stores"):
        _encrypt_every_new_store()


def pytest_unconfigure(config):
    if config.getoption("--encrypted-stores"):
        import shutil
        shutil.rmtree(os.environ["XDG_CONFIG_HOME"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--encrypted-stores"):
        return
    skip = pytest.mark.skip(reason="the plain store format is its subject")
    for item in items:
        if "plain_only" in item.keywords:
            item.add_marker(skip)


def _encrypt_every_new_store() -> None:
    """Every store made in this process or its subprocesses is encrypted:
    the CLI through the user's 'encrypt new stores' setting and CAS_PASSWORD
    (in-process runs read both too), the library by Store.init itself."""
    from cas.cli import user_config
    from cas.storage import keys
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cas-suite-config-")
    os.environ["CAS_PASSWORD"] = SUITE_PASSWORD
    user_config.set_encrypt_new_stores(True)
    keys.set_password_source(SUITE_PASSWORD.encode())
    # The lowest Argon2id cost a slot may have: the suite unlocks thousands
    # of stores, and the key derivation is not what it tests (test_keys is).
    keys.DEFAULT_KDF = {"name": "argon2id", "memory_kib": 8 << 10, "iterations": 1, "lanes": 1}
    plain_init = Store.init.__func__

    def init(cls, path, config=None, password=None):
        config = config or StoreConfig()
        if config.encryption is None:
            config = dataclasses.replace(config, encryption=dict(ENCRYPTION))
        return plain_init(cls, path, config, password or SUITE_PASSWORD.encode())

    Store.init = classmethod(init)


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "surrogateescape")


@pytest.fixture
def cas(capfdbinary, monkeypatch, tmp_path):
    """Run the CLI in-process from ``cwd`` (default: tmp_path)."""
    monkeypatch.delenv("CAS_STORE", raising=False)

    def invoke(*args: str, cwd: Path | None = None) -> Result:
        monkeypatch.chdir(cwd or tmp_path)
        capfdbinary.readouterr()
        code = run(list(args))
        captured = capfdbinary.readouterr()
        return Result(code, captured.out, captured.err.decode("utf-8", "replace"))

    return invoke


def cas_process(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120,
                **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``cas`` executable in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, timeout=timeout, **kwargs)


ESCAPES = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def stderr_on_a_pty(args: list[str], cwd: Path) -> str:
    """stderr of a real ``cas`` run with a terminal on stderr (stdout a
    pipe), terminal escapes removed: what a user sees of progress bars."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CAS_STORE"}
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)
    return ESCAPES.sub("", b"".join(chunks).decode("utf-8", "replace"))


@pytest.fixture
def tree(tmp_path, cas) -> Path:
    """A cas tree holding one small file (the watcher tests' starting point)."""
    t = tmp_path / "tree"
    t.mkdir()
    (t / "notes.txt").write_text("first\n")
    assert cas("init", cwd=t).code == 0
    return t


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.init(str(tmp_path / ".cas"))
    yield s
    s.close()


@pytest.fixture
def small_config() -> StoreConfig:
    """Small thresholds so tests exercise loose objects and many packs cheaply."""
    return StoreConfig(loose_min_size=64 << 10, pack_target_size=256 << 10)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def damage_first_chunk(store_path, file_id: str) -> str:
    """Flip a byte inside the first chunk of a chunked file; returns the chunk's id."""
    from cas.objectid import ObjectId
    with Store.open(str(store_path)) as s:
        chunk = s.chunk_list(ObjectId.parse(file_id)).chunks[0][0]
        entry = s.entry(chunk)
        path = s.layout.pack_path(entry.pack) if entry.pack else s.layout.loose_path(chunk, entry.encoding)
        offset = entry.offset + entry.stored_length // 2
    flip_byte(path, offset, 0x40)
    return chunk.hex


def flip_byte(path, offset: int, mask: int = 0x01) -> None:
    """Damage one stored byte in place, as bit rot or a stray write would."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def chunk_list_path(store_path, file_id: str) -> Path:
    """Where a chunked file's list is: under its id in a plain store, under
    its name (sealed) in an encrypted one."""
    from cas.objectid import ObjectId
    from cas.storage import keys
    from cas.storage.encoding import Encoding
    config = StoreConfig.load(str(store_path))
    if config.encryption is None:
        return Path(store_path) / "objects" / file_id[:2] / (file_id[2:] + ".chunks")
    sealer = keys.sealer_for(str(store_path), config.store_id, True, SUITE_PASSWORD.encode())
    fan, rest = sealer.name(ObjectId.parse(file_id)).fanout()
    return Path(store_path) / "objects" / fan / (rest + Encoding.SEALED_CHUNKED.suffix)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount(name, size)``: a tmpfs of that size at tmp_path/name (a full
    disk, a disk remounted read-only), unmounted after the test."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(path)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)])
