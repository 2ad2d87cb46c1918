"""BLAS on one thread inside neurosim's training steps (neurosim/_blas.py, decision 44)."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from neurosim import _blas
from neurosim.models import load_model
from neurosim.training import spide
from neurosim.training.trainer import config_for


def _blas_threads():
    return [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """Every BLAS library at 2 threads for the test (whatever the machine's default)."""
    from threadpoolctl import threadpool_limits
    if not _blas_threads():
        pytest.skip("no BLAS library loaded")
    with threadpool_limits(2, user_api="blas"):
        yield


def test_single_threaded_limits_nests_and_restores(two_blas_threads):
    before = _blas_threads()
    assert all(n == 2 for _, n in before)
    with _blas.single_threaded():
        assert all(n == 1 for _, n in _blas_threads())
        with _blas.single_threaded():
            assert all(n == 1 for _, n in _blas_threads())
        assert all(n == 1 for _, n in _blas_threads())      # the inner exit keeps the limit
    assert _blas_threads() == before
    with pytest.raises(RuntimeError):
        with _blas.single_threaded():
            raise RuntimeError("boom")
    assert _blas_threads() == before


def test_spide_step_runs_blas_on_one_thread(two_blas_threads, monkeypatch):
    seen = []
    real = spide.output_loss

    def spy(*a, **k):
        seen.append(_blas_threads())
        return real(*a, **k)
    monkeypatch.setattr(spide, "output_loss", spy)
    net = load_model("fsnn_mlp", seed=0)
    cfg, _ = config_for(net, {"T": 5, "T_b": 5})
    model = spide.SPIDEModel(net, 10, readout=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((4, net.populations[model.input].n))
    before = _blas_threads()
    spide.spide_step(model, x, np.arange(4), cfg, rng, 0.01, spide.SGD(cfg.momentum, 0.0))
    assert seen and all(n == 1 for _, n in seen[0])
    assert _blas_threads() == before
