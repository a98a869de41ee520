"""The layering rules, checked on the source: imports run one way."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "cas"
LAYERS = {"storage": 1, "model": 2, "ops": 3, "cli": 4, "mlx": 4}


def modules():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        yield rel, ast.parse(path.read_text())


def imported(tree, rel):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel.parts[:-1])
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                yield ".".join(["cas", *base, *(node.module or "").split(".")]).rstrip(".")
            else:
                yield node.module or ""


def layer_of(parts):
    return LAYERS.get(parts[0], 0) if len(parts) > 1 else 0


def test_imports_only_point_down_the_layers():
    for rel, tree in modules():
        mine = layer_of(rel.parts)
        for name in imported(tree, rel):
            parts = name.split(".")
            if parts[0] != "cas" or len(parts) < 2:
                continue
            theirs = LAYERS.get(parts[1], 0)
            assert theirs <= mine, f"{rel} imports {name} from a higher layer"


def test_each_backend_library_is_imported_in_one_module():
    # The ciphers and the keyed BLAKE3 (sub-keys, the audit trail's MAC) live
    # in the storage layer's key modules and the audit log.
    owners = {"blake3": ("objectid.py", "storage/crypto.py", "storage/audit.py"), "lmdb": "storage/index.py",
              "zstandard": "storage/encoding.py", "click": "cli/", "rich": "cli/",
              "watchdog": "ops/watch.py", "mlx": "mlx/", "plotext": "cli/cmd_stats.py",
              "pygal": "ops/report.py", "cryptography": ("storage/crypto.py", "storage/keys.py")}
    for rel, tree in modules():
        for name in imported(tree, rel):
            root = name.split(".")[0]
            if root in owners:
                assert str(rel).startswith(owners[root]), f"{rel} imports {root}"


def test_only_the_cli_reads_the_environment():
    # passwords.py reads the CAS_PASSWORD* sources for the CLI and the MLX
    # loader alike, and only they import it.
    for rel, tree in modules():
        if rel.parts[0] == "cli" or str(rel) == "passwords.py":
            continue
        src = ast.unparse(tree)
        assert "os.environ" not in src and "getenv" not in src, rel


def test_only_the_cli_and_the_loader_ask_for_passphrases():
    for rel, tree in modules():
        if rel.parts[0] in ("cli", "mlx"):
            continue
        assert "cas.passwords" not in set(imported(tree, rel)), rel
