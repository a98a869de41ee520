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


# plain_only where a decorator cannot say it: cases of a parametrized test
# (the other cases run encrypted too), a file that does not import pytest.
# Each flips a raw weight object in place.
PLAIN_ONLY_CASES = {
    "tests/test_models.py::test_a_damaged_weight_names_model_file_and_tensor[False]",
    "tests/test_models.py::test_cli_model_verify_names_the_damaged_tensor[False]",
    "tests/test_repair.py::test_model_reimport_repairs_a_damaged_weight",
}

# Tests whose subject holds for encrypted stores but whose harness reaches
# into a plain store's files (a record or ref by its id or name, a pack byte
# by offset), strips CAS_* from a subprocess's environment, or chooses plain
# and encrypted stores itself. Skipped under --encrypted-stores until adapted;
# the behaviour each checks was tried by hand on encrypted stores (and the
# special files of test_history_trust are in test_encrypted_suite.py).
NEEDS_ADAPTING = {
    "tests/test_forget.py::test_policy_set_show_clear_and_forget_applies_the_stored_one":
        "policies/main.json by its plain name",
    "tests/test_forget.py::test_policy_clear_never_follows_a_link_and_set_names_the_policy_not_a_temp_file":
        "plants policies/main.json by its plain name",
    "tests/test_history_trust.py::test_a_record_or_ref_that_is_not_a_small_file_is_an_error_not_a_hang":
        "record and ref by plain names (sealed names: test_encrypted_suite.py)",
    "tests/test_history_trust.py::test_verify_reports_every_problem_and_goes_on": "rewrites a plain record",
    "tests/test_history_trust.py::test_an_edited_snapshot_record_is_refused_by_readers_rebuild_and_verify":
        "rewrites a plain record",
    "tests/test_history_trust.py::test_a_record_whose_manifest_object_is_gone_is_still_checked":
        "rewrites a plain record",
    "tests/test_history_trust.py::test_a_ref_named_like_a_snapshot_id_does_not_hide_it": "writes a plain tag file",
    "tests/test_history_trust.py::test_concurrent_snapshots_on_one_branch_are_all_kept":
        "takes snapshots/ file names for ids",
    "tests/test_history_trust.py::test_a_watcher_and_manual_snapshots_on_one_branch_lose_nothing":
        "takes snapshots/ file names for ids",
    "tests/test_history_adversary.py::test_a_change_in_the_same_second_is_seen": "reads a plain record",
    "tests/test_history_adversary.py::test_a_record_with_a_lone_surrogate_branch_is_bad_input":
        "rewrites a plain record",
    "tests/test_history_adversary.py::test_log_tilde_and_at_match_the_records": "its oracle reads plain records",
    "tests/test_history_adversary.py::test_the_property_test_makes_forks": "its oracle reads plain records",
    "tests/test_history_adversary.py::test_times_beyond_64_bits_keep_their_order": "its oracle reads plain records",
    "tests/test_maintain.py::test_a_locked_store_is_one_line_and_exit_1_or_2":
        "its lock holder opens the store without a passphrase",
    "tests/test_models.py::test_weights_from_the_store_equal_mx_load_bit_for_bit":
        "compares entry.encoding.name with 'CHUNKED' (encoding.inner would do)",
    "tests/test_format2_adversary.py::test_a_tensor_equal_to_a_chunked_file_still_reads":
        "asserts Encoding.CHUNKED (encoding.inner would do)",
    "tests/test_format2_adversary.py::test_extreme_live_thresholds_still_restore_bit_exact":
        "strips CAS_* from its subprocesses",
    "tests/test_json_everywhere.py::test_model_commands": "needs a view of a sealed model (refused by design)",
    "tests/test_repair.py::test_readd_replaces_a_damaged_loose_object": "looks for damaged/<id> by its plain name",
    "tests/test_repair.py::test_sigkill_during_repair_leaves_only_what_is_still_damaged":
        "reads a chunk list it has damaged (a plain list still parses, a sealed one does not open)",
    "tests/test_timeline.py::test_the_timeline_follows_records_changed_behind_its_back":
        "rewrites a record by its plain name",
    "tests/test_timeline.py::test_a_read_only_store_lists_history_it_cannot_index":
        "removes a record by its plain name",
    "tests/test_timeline.py::test_the_timeline_always_lists_exactly_the_records":
        "its crashed writer leaves a plain record",
    "tests/test_watch.py::test_a_failing_maintenance_is_trouble_and_retried_not_a_stop":
        "its lock holder opens the store without a passphrase",
    "tests/test_watch_trouble.py::test_an_observer_that_cannot_be_restarted_is_trouble_with_backoff":
        "head_files_elsewhere opens the store without a passphrase",
    "tests/test_watch_trust.py::test_a_dead_observer_thread_is_restarted":
        "head_files_elsewhere opens the store without a passphrase",
    "tests/test_watch_trust.py::test_a_failing_snapshot_is_retried_then_succeeds":
        "head_files_elsewhere opens the store without a passphrase",
    "tests/test_watch_trust.py::test_a_fault_in_the_event_handler_is_logged_and_recovered_by_a_full_scan":
        "head_files_elsewhere opens the store without a passphrase",
    "tests/test_watch_trust.py::test_a_snapshot_that_always_fails_makes_the_watcher_exit_non_zero":
        "calls watch_status without the store's sealer",
    "tests/test_watch_trust.py::test_status_reports_a_watcher_that_stopped_beating":
        "reads the watch state file by its plain name",
    "tests/test_watch_trust.py::test_watch_files_and_the_log_are_private_whatever_the_umask":
        "waits for the watch state file by its plain name",
    "tests/test_cli.py::test_the_demo_runs": "tools/demo.py opens its stores without a passphrase",
    "tests/test_races.py": "strips CAS_* from its subprocesses",
    "tests/test_format2_adversary.py::test_a_page_equal_to_a_chunked_log_still_restores":
        "strips CAS_* from its subprocesses",
    "tests/test_history_adversary.py::test_log_while_snapshots_and_forgets_run": "its oracle reads plain records",
    "tests/test_forget.py::test_applying_a_policy_to_many_snapshots": "writes its records as plain files",
    "tests/test_audit.py::test_reads_and_changes_are_recorded_with_outcome":
        "expects no MAC (an encrypted store's records carry one)",
    "tests/test_store_trust.py::test_a_store_is_private_whatever_the_umask":
        "looks for files named '.chunks' (an encrypted store's end in '.chunks.sealed')",
    "tests/test_store_trust.py::test_a_shared_store_gives_its_group_access":
        "looks for files named '.chunks' (an encrypted store's end in '.chunks.sealed')",
    "tests/test_thinning_adversary.py::test_policy_clear_removes_a_damaged_policy_as_its_error_says":
        "plants policies/main.json by its plain name",
    "tests/test_thinning_adversary.py::test_a_crafted_policy_file_is_a_one_line_error_and_loses_nothing":
        "plants policies/main.json by its plain name",
    "tests/test_copy.py": "chooses plain and encrypted stores itself",
}


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--encrypted-stores"):
        return
    plain = pytest.mark.skip(reason="the plain store format is its subject")
    for item in items:
        if "plain_only" in item.keywords or item.nodeid in PLAIN_ONLY_CASES:
            item.add_marker(plain)
            continue
        test = item.nodeid.split("[")[0]
        reason = NEEDS_ADAPTING.get(test) or NEEDS_ADAPTING.get(test.split("::")[0])
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"not yet run on encrypted stores: {reason}"))


def _encrypt_every_new_store() -> None:
    """Every store made in this process or its subprocesses is encrypted:
    the CLI through the user's 'encrypt new stores' setting and CAS_PASSWORD
    (in-process runs read both too), the library by Store.init itself."""
    from cas.cli import user_config
    from cas.storage import keys
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cas-suite-config-")
    os.environ["CAS_PASSWORD"] = SUITE_PASSWORD
    user_config.set_encrypt_new_stores(True)
    # Readable by the unprivileged user some tests run cas as.
    config = user_config.config_path()
    for path, mode in ((os.environ["XDG_CONFIG_HOME"], 0o755), (os.path.dirname(config), 0o755),
                       (config, 0o644)):
        os.chmod(path, mode)
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
