"""The error hierarchy.

Every error a user can meet is a ``CasError`` subclass whose message says
what happened and what to do about it. Each class carries the process exit
code the CLI uses for it, so the mapping lives in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEM_FOUND = 1
EXIT_USAGE = 2


class CasError(Exception):
    """Base of every error cas reports to a user."""

    exit_code = EXIT_USAGE


class StoreNotFound(CasError):
    def __init__(self, start: str, searched_up: bool = True):
        where = f"in {start} or any parent directory" if searched_up else f"at {start}"
        super().__init__(f"no cas store found {where} "
                         "(run 'cas init', or pass --store / set CAS_STORE)")


class StoreExists(CasError):
    def __init__(self, path: str):
        super().__init__(f"a cas store already exists at {path}")


class UnsupportedFormat(CasError):
    def __init__(self, path: str, found: object, supported: int):
        super().__init__(
            f"store at {path} has format version {found}, this cas reads up to "
            f"version {supported}: upgrade cas to use this store"
        )


class ConfigDamaged(CasError):
    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(f"store config {path} is unreadable: {why}")


class IndexUnavailable(CasError):
    """The LMDB index is missing or damaged; it can be rebuilt from objects and packs."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(
            f"the store index at {path} is {why}: run 'cas index rebuild' to "
            "rebuild it from the objects and packs (no data is lost)"
        )


class StoreLocked(CasError):
    def __init__(self, path: str):
        super().__init__(
            f"store {path} is locked by another cas process (an index rebuild or "
            "gc); try again when it finishes"
        )


class InvalidObjectId(CasError):
    def __init__(self, text: str):
        super().__init__(
            f"'{text}' is not an object id (64 hex digits, or a unique prefix of at least 6)"
        )


class ObjectNotFound(CasError):
    def __init__(self, ref: str):
        super().__init__(f"no object {ref} in this store")


class AmbiguousPrefix(CasError):
    def __init__(self, prefix: str, count: int):
        super().__init__(
            f"id prefix {prefix} matches {count} objects: give more hex digits"
        )


class ObjectDamaged(CasError):
    """Stored bytes do not hash to their id, or cannot be decoded."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, oid: str, why: str):
        super().__init__(f"object {oid} is damaged: {why} (run 'cas verify --full')")
        self.oid = oid


class SourceError(CasError):
    """A file given to cas could not be read as asked."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class StoreWriteError(CasError):
    """Writing to the store failed (disk full, permissions, I/O error)."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(
            f"cannot write to the store ({why}) at {path}: nothing was recorded "
            "for the data in flight; fix the cause and run the command again"
        )


class ManifestInvalid(CasError):
    """A tree, snapshot or other manifest is malformed or unsafe."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, what: str, why: str):
        super().__init__(f"{what} is invalid: {why}; nothing was written for it")


class RefNotFound(CasError):
    def __init__(self, spec: str):
        super().__init__(
            f"'{spec}' names no snapshot, branch or tag (see 'cas log' and 'cas branch')")


class InvalidRefName(CasError):
    def __init__(self, name: str):
        super().__init__(
            f"'{name}' is not a valid branch or tag name (letters, digits, '.', '_', '-', '/')")


class PathNotInSnapshot(CasError):
    def __init__(self, path: str, snapshot: str, last_in: str = ""):
        # Where the path was last seen: a deleted file is found at once.
        hint = f" (last in {last_in})" if last_in else ""
        super().__init__(f"{path} is not in snapshot {snapshot}{hint}")


class WouldLoseChanges(CasError):
    def __init__(self, paths: list[str]):
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"checkout would overwrite or delete changes that are in no snapshot: {shown} "
            "(snapshot them first, or use --force)")



class ModelNotFound(CasError):
    def __init__(self, spec: str, why: str = "no such model"):
        super().__init__(f"model '{spec}': {why} (see 'cas model ls')")


class NotAModel(CasError):
    def __init__(self, path: str, why: str):
        super().__init__(f"{path} is not a model directory: {why}")


class WeightsDamaged(CasError):
    """A tensor read from the store does not match what was imported."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, model: str, file: str, tensor: str, why: str):
        super().__init__(f"model {model}: tensor '{tensor}' in {file} is damaged: {why} "
                         f"(run 'cas model verify {model}': it names every damaged "
                         "file and says how to repair it)")
        self.model, self.file, self.tensor = model, file, tensor


class MetadataUnreadable(CasError):
    """A ref or snapshot record is not a small regular file (a link, a FIFO, a device, huge)."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(f"{path} {why}: the store's history files are damaged "
                         "(see 'cas verify'; refs and snapshot records must be small plain files)")


class HistoryTooShort(RefNotFound):
    def __init__(self, spec: str, depth: int):
        CasError.__init__(self, f"'{spec}' goes back further than its history, which has "
                                f"{counted(depth, 'snapshot')} (see 'cas log')")


class AmbiguousArgument(CasError):
    def __init__(self, arg: str):
        super().__init__(f"ambiguous argument '{arg}': unknown revision or path "
                         "(use '--' to separate paths from revisions: cas log REF -- PATH)")


class AmbiguousRef(CasError):
    def __init__(self, name: str, ref: str, snapshot: str):
        super().__init__(f"'{name}' names both {ref} and snapshot {snapshot}: write {ref} for "
                         "the ref, or more digits of the id for the snapshot")


class RefNameLooksLikeId(InvalidRefName):
    def __init__(self, name: str):
        CasError.__init__(self, f"'{name}' looks like a snapshot id (6 to 64 hex digits) and "
                                "would hide it: choose a name with another character in it")


class RefMovedMeanwhile(CasError):
    """A ref moved in a way a snapshot cannot be re-parented onto."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, ref: str, why: str):
        super().__init__(f"{ref} {why}; the snapshot's data is stored but it was not recorded: "
                         "run the command again")


class WatcherFailed(CasError):
    """A watcher gave up after repeated unexpected errors: exits non-zero, so a
    service manager restarts it (a restart scans the whole tree again)."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, source: str, why: str):
        super().__init__(f"the watcher of {source} stopped: {why} (the log has the details; "
                         "restarting it rescans the tree, nothing is lost)")


class TargetRefused(CasError):
    """A place cas was asked to write into holds what cas will not write through
    (a symbolic link where a directory belongs, a file where a link belongs)."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}; nothing was written through it")
        self.path = path


class StoreFileInvalid(CasError):
    """A file of the store's own (its lock, its index) is not what cas made:
    a link, a FIFO, a device. It is refused, never followed or read."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(f"store file {path} {why}; nothing was read through it")


class NothingToChart(CasError):
    """A growth view asked of a store, or a branch, with no recorded snapshot."""

    def __init__(self, what: str):
        super().__init__(f"{what} has no recorded snapshots: nothing to show "
                         "(take one with 'cas snapshot')")


class BranchNotInHistory(CasError):
    def __init__(self, branch: str):
        super().__init__(f"no branch '{branch}' in this store's history "
                         "(see 'cas branch' and 'cas log --all')")


class RetentionRuleInvalid(CasError):
    """A retention rule given on the command line (or read back) that means nothing."""

    def __init__(self, why: str):
        super().__init__(f"bad retention rule: {why}")


class SnapshotTagged(CasError):
    """A tag protects its snapshot: forgetting it must be asked for by name."""

    def __init__(self, tags: dict[str, str]):
        shown = ", ".join(f"{name} ({oid[:12]})" for name, oid in sorted(tags.items()))
        super().__init__(f"refusing to forget tagged snapshots: {shown}; delete the tag first "
                         "('cas tag -d NAME') or pass --force, which deletes it")


class PolicyFileInvalid(CasError):
    """A stored retention policy that cannot be read as one."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, path: str, why: str):
        super().__init__(f"retention policy {path} is unreadable: {why} (set it again with "
                         "'cas policy set', or remove it with 'cas policy clear')")


class ArgumentsConflict(CasError):
    """Options that cannot be given together, or a required choice missing."""

    def __init__(self, why: str):
        super().__init__(why)


class SnapshotReferenced(CasError):
    """Another branch (or a model ref) stands on a snapshot asked to be forgotten."""

    def __init__(self, refs: dict[str, str]):
        shown = ", ".join(f"{ref} ({oid[:12]})" for ref, oid in sorted(refs.items()))
        super().__init__(f"refusing to forget snapshots other refs are on: {shown}; pass --force "
                         "to move each to the newest surviving snapshot of its history (or "
                         "delete it when none survives)")


class UnknownCommand(CasError):
    """A command name no group has: the nearest names are offered, as git does."""

    def __init__(self, name: str, group: str, nearest: list[str]):
        hint = ""
        if nearest:
            hint = "; did you mean " + " or ".join(f"'{n}'" for n in nearest) + "?"
        super().__init__(f"'{name}' is not a {group} command{hint} (see '{group} --help')")


class StoreInsideTree(CasError):
    """``cas init`` below a directory whose store would then snapshot the new one."""

    def __init__(self, directory: str, outer: str):
        super().__init__(f"{directory} is inside the tree of the store {outer}, whose snapshots "
                         "would take in the new store: snapshot it with that store, or pass "
                         "--nested to make a store inside it anyway")


class TagExists(CasError):
    """A tag names one snapshot for good: moving it must be asked for."""

    def __init__(self, name: str, at: str):
        super().__init__(f"tag '{name}' already exists at {at}: pass -f to move it, "
                         f"or choose another name")


def counted(n: int, noun: str, plural: str = "") -> str:
    """'1 file', '2 files': a count with its noun, for every message and summary line."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def human_bytes(n: float) -> str:
    """'512 B', '1.5 MiB': a size for every message, summary line and report."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class RefIsAPath(RefNotFound):
    """The argument that must name a snapshot names a path instead."""

    def __init__(self, spec: str, command: str):
        CasError.__init__(self, f"'{spec}' names no snapshot, branch or tag; it is a path: name "
                                f"the snapshot first ({command} SNAP {spec} ...)")


class NoSnapshotsYet(RefNotFound):
    def __init__(self, branch: str):
        CasError.__init__(self, f"branch {branch} has no snapshots yet: take one with "
                                "'cas snapshot'")


class NoSnapshotAt(RefNotFound):
    """A time before a branch's history begins: says when it begins."""

    def __init__(self, branch: str, when: str, first: str, first_when: str):
        CasError.__init__(self, f"no snapshot on {branch} at or before {when}: its first "
                                f"snapshot, {first}, is at {first_when}")


class WorktreeNotRecorded(CasError):
    """The store cannot record which snapshot the working tree shows."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, why: str):
        super().__init__(f"cannot record which snapshot the working tree shows ({why}): "
                         "cas status will compare it with the branch head")


class RestoreWouldLoseChanges(WouldLoseChanges):
    def __init__(self, paths: list[str]):
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        CasError.__init__(
            self, f"restore would overwrite changes that are in no snapshot: {shown} "
                  "(snapshot them first, keep them with --overwrite never, or use --force)")


class DiffContentUnreadable(CasError):
    """A working-tree file that went away or changed kind between the scan and the read."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: cannot be read for the diff ({why}); run the diff again")


class PathOutsideTree(CasError):
    """A path given for the tracked tree that lies outside it."""

    def __init__(self, path: str, tree: str | None):
        where = f"the tracked tree {tree}" if tree else "every directory this store tracks"
        super().__init__(f"{path} is outside {where}")


class NothingToRecordAt(CasError):
    """A path named for a snapshot that is neither on disk nor in the branch."""

    def __init__(self, path: str, branch: str, why: str = ""):
        super().__init__(f"{path}: {why or 'not on disk'} and not in the last snapshot of "
                         f"{branch}; nothing to record")


class TreeContainsItself(ManifestInvalid):
    """A stored tree reached again below itself: a walk would never end."""

    def __init__(self, tree: str, path: str):
        CasError.__init__(self, f"tree {tree} is invalid: it contains itself (again at {path}); "
                                "run 'cas verify' and restore from another snapshot")


class TreeTooManyPaths(ManifestInvalid):
    """A tree that names the same subtrees over and over, to more paths than a walk takes."""

    def __init__(self, tree: str, limit: int):
        CasError.__init__(self, f"tree {tree} reuses its subtrees to more than {limit:,} paths; "
                                "stopped (a crafted or damaged tree, not one recorded from disk)")


class RefIsAModel(RefNotFound):
    """A history command given a model's name: models have their own history."""

    def __init__(self, name: str):
        CasError.__init__(self, f"'{name}' is a model: see 'cas model log {name}'")


class TargetInStore(CasError):
    """A restore or checkout target at or below a store directory: a
    snapshot's files written there would mix with the store's own."""

    def __init__(self, target: str, store: str):
        super().__init__(f"{target} is inside the store {store}; a restore never writes into a "
                         "store (give a directory outside it with --to)")


class TargetInsideTree(CasError):
    """A restore into a directory of the tracked tree other than its root or
    the current directory: where the paths would land is ambiguous."""

    def __init__(self, target: str, tree: str):
        super().__init__(f"{target} lies inside the tracked tree {tree}: paths are restored where "
                         f"they live in it (use --to {tree} or --to . from where you are), or "
                         "give a directory outside the tree for a copy")


class PasswordRequired(CasError):
    """An encrypted store opened with no passphrase source."""

    def __init__(self, store: str):
        super().__init__(f"the store {store} is encrypted: give its passphrase in CAS_PASSWORD, "
                         "CAS_PASSWORD_FILE or CAS_PASSWORD_COMMAND, or run from a terminal to be asked")


class WrongPassword(CasError):
    def __init__(self, store: str):
        super().__init__(f"wrong passphrase for the store {store}: no key slot opens with it "
                         "(see 'cas key list')")


class KeySlotsUnusable(CasError):
    """An encrypted store with no readable key slot: nothing can unlock it."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, store: str, reasons: list[str]):
        why = "; ".join(reasons) if reasons else "keys/ holds no key slot"
        super().__init__(f"the encrypted store {store} has no usable key slot ({why}); restore "
                         "keys/ from a copy of the store to unlock it")


class LastKeySlot(CasError):
    def __init__(self, store: str, slot_id: str):
        super().__init__(f"key {slot_id} is the last key of {store}: removing it would lock the "
                         "store for good (add another with 'cas key add' first)")


class PasswordSourceFailed(CasError):
    """CAS_PASSWORD_FILE or CAS_PASSWORD_COMMAND could not give a passphrase."""

    def __init__(self, source: str, why: str):
        super().__init__(f"could not read the passphrase from {source}: {why}")


class StoreIsEncrypted(CasError):
    """An operation that would put plaintext on disk, refused in an encrypted store."""

    def __init__(self, what: str, hint: str):
        super().__init__(f"{what} would write plaintext into an encrypted store; {hint}")


class UnknownKeySlot(CasError):
    def __init__(self, store: str, slot_id: str, known: list[str]):
        have = ", ".join(known) if known else "none that open"
        super().__init__(f"the store {store} has no key {slot_id!r} (its keys: {have}; "
                         "see 'cas key list')")


class NewPasswordRefused(CasError):
    """A new passphrase that is empty, or typed differently the second time."""

    def __init__(self, why: str):
        super().__init__(f"no new passphrase: {why}")


class StoreNotEncrypted(CasError):
    def __init__(self, store: str):
        super().__init__(f"the store {store} is not encrypted, so it has no keys (an encrypted "
                         "store is made with 'cas init --encrypt')")


class SameStore(CasError):
    """``cas copy`` given one store as both source and target."""

    def __init__(self, store: str):
        super().__init__(f"{store} is both the source and the target of the copy: name another "
                         "store with --from (or --to)")


class RefsNotCopied(CasError):
    """``cas copy`` left refs or policies of the target as they were."""

    exit_code = EXIT_PROBLEM_FOUND

    def __init__(self, names: list[str]):
        super().__init__(f"{len(names)} differ in the target and were left as they are: "
                         f"{', '.join(names)} (every snapshot was copied; --force moves them)")


class SourcePasswordRequired(CasError):
    """``cas copy --from`` an encrypted store with no passphrase for it."""

    def __init__(self, store: str):
        super().__init__(f"the store copied from, {store}, is encrypted: give its passphrase in "
                         "CAS_FROM_PASSWORD, CAS_FROM_PASSWORD_FILE, CAS_FROM_PASSWORD_COMMAND or "
                         "--from-password-file, or run from a terminal to be asked")
