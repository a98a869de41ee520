"""Micro-benchmarks of loading model weights from the store (pytest-benchmark).

Timed with:

    .venv/bin/python -m pytest tests/bench --benchmark-enable -p no:xdist
"""

import sys

import pytest

mx = pytest.importorskip("mlx.core")

from cas.mlx import load_weights  # noqa: E402
from cas.model.history import History  # noqa: E402
from cas.ops.models import import_model  # noqa: E402
from cas.storage.store import Store  # noqa: E402

from ..conftest import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import tiny_model  # noqa: E402

# About 34 MB of bf16: big enough that reading dominates, small enough for CI.
CONFIG = {**tiny_model.CONFIG, "vocab_size": 8192, "hidden_size": 1024,
          "intermediate_size": 2048, "num_hidden_layers": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    model, config = tiny_model.build(CONFIG, dtype="bfloat16")
    tiny_model.save(model, config, str(out))
    return out


@pytest.fixture
def store(tmp_path):
    s = Store.init(str(tmp_path / "store"))
    yield s
    s.close()


def _load_all(weights: dict) -> int:
    mx.eval(list(weights.values()))
    return sum(a.nbytes for a in weights.values())


def test_bench_mx_load_of_the_original(benchmark, model_dir):
    path = str(model_dir / "model.safetensors")
    assert benchmark(lambda: _load_all(mx.load(path))) > 30_000_000


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_bench_load_weights_from_the_store(benchmark, store, model_dir, chunked):
    import_model(History(store), str(model_dir), "m", chunked=chunked)
    assert benchmark(lambda: _load_all(load_weights("m", store=store))) > 30_000_000
