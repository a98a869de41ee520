"""Shell completion of refs, paths in snapshots and model names.

click runs these when the shell asks (``_CAS_COMPLETE=bash_complete``):
no command callback has run then, so the store is found and opened here,
without the warnings a command prints. A completion must never print a
traceback or hang the shell: any failure (no store, a locked or damaged
one, a name that resolves to nothing) gives no completions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import click
from click.shell_completion import CompletionItem

from ..errors import CasError

# The completions offered for one word at most: a directory of a million
# files must not stall the shell.
_MOST = 500


@contextlib.contextmanager
def _history(ctx: click.Context) -> Iterator:
    from ..model.history import History
    from ..passwords import environment_source
    from ..storage.store import Store, find_store, locate_store
    store_path = ctx.find_root().params.get("store_path") or os.environ.get("CAS_STORE")
    path = locate_store(store_path) if store_path else find_store(os.getcwd())
    # The command group's callback, which sets the process's passphrase
    # source, has not run: the passphrase comes from CAS_PASSWORD* here,
    # never from a prompt on the shell's terminal.
    with Store.open(path, password=environment_source) as store:
        yield History(store)


def _safely(find: Callable[[click.Context, str], list[CompletionItem]]):
    """A click ``shell_complete`` that gives nothing instead of failing."""
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return find(ctx, incomplete)[:_MOST]
        except (CasError, OSError, ValueError, UnicodeError, LookupError):
            return []
    return complete


def _ref_names(history, incomplete: str) -> list[CompletionItem]:
    names = ["HEAD", *sorted(history.refs.branches()), *sorted(history.refs.tags())]
    return [CompletionItem(n) for n in dict.fromkeys(names) if n.startswith(incomplete)]


def _paths_in(history, snap, base: str, incomplete: str, shown_prefix: str = "") -> list[CompletionItem]:
    """Entries of ``snap`` below the tree directory ``base`` that complete
    ``incomplete`` (a path from ``base``); directories end in '/'."""
    from ..model.tree import DIR
    head, _, start = incomplete.rpartition("/")
    where = "/".join(p for p in (base, head) if p)
    entry = history.entry_at(snap.tree, os.fsencode(where)) if where else None
    if where and (entry is None or entry.kind != DIR):
        return []
    tree = history.load_tree(snap.tree if entry is None else entry.oid)
    found = []
    for e in tree.entries:
        name = os.fsdecode(e.name)
        if name.startswith(start):
            text = shown_prefix + (f"{head}/" if head else "") + name + ("/" if e.kind == DIR else "")
            found.append(CompletionItem(text))
        if len(found) >= _MOST:
            break
    return found


def _here(history) -> str:
    """The current directory's place in the tracked tree ('' at its root or outside it)."""
    from .history_args import place_in, tracked_trees
    return place_in(tracked_trees(history)).here or ""


def _ref_or_snapshot_path(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """SNAP or SNAP:PATH (``cas ls``, ``cas du``, ``cas cat``): PATH from the tree's root."""
    with _history(ctx) as history:
        if ":" not in incomplete:
            return _ref_names(history, incomplete)
        ref, _, path = incomplete.partition(":")
        snap = history.resolve(ref or "HEAD")
        return _paths_in(history, snap, "", path, ref + ":")


def _ref(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    with _history(ctx) as history:
        return _ref_names(history, incomplete)


def _ref_then_paths(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``cas restore SNAP PATH...`` and the like: a ref first, then paths of
    that snapshot, from the current directory as the command reads them
    (with ``--at``, paths from the start, of HEAD: close enough to offer)."""
    given = [a for a in ctx.params.get("args") or () if a != "--"]
    with _history(ctx) as history:
        if ctx.params.get("at_ns") is not None:
            given = ["HEAD", *given]
        if not given:
            return _ref_names(history, incomplete)
        snap = history.resolve(given[0])
        return _paths_in(history, snap, _here(history), incomplete)


def _snapshot_paths(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Paths of the snapshot in ``ctx.params['spec']`` (``cas checkout SNAP PATH``)."""
    with _history(ctx) as history:
        snap = history.resolve(ctx.params.get("spec") or "HEAD")
        return _paths_in(history, snap, _here(history), incomplete)


def _branch(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    with _history(ctx) as history:
        return [CompletionItem(n) for n in sorted(history.refs.branches()) if n.startswith(incomplete)]


def _tag(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    with _history(ctx) as history:
        return [CompletionItem(n) for n in sorted(history.refs.tags()) if n.startswith(incomplete)]


def _model(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    with _history(ctx) as history:
        return [CompletionItem(n) for n in sorted(history.refs.models()) if n.startswith(incomplete)]


def _registered_store(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    from . import user_config
    return [CompletionItem(n) for n in sorted(user_config.registered_stores()) if n.startswith(incomplete)]


complete_ref = _safely(_ref)
complete_ref_or_path = _safely(_ref_or_snapshot_path)
complete_ref_then_paths = _safely(_ref_then_paths)
complete_snapshot_paths = _safely(_snapshot_paths)
complete_branch = _safely(_branch)
complete_tag = _safely(_tag)
complete_model = _safely(_model)
complete_store_name = _safely(_registered_store)
