"""Training results do not depend on the number of threads (docs/decisions.md, 58).

Every float sum over the samples of a batch (weight and bias gradients) is taken over fixed
blocks of samples combined in a fixed tree (``kernels.spide.block_bounds``, ``tree_sum``),
so ``--threads 1``, ``2`` and ``3`` give the same bits.  Numba fixes its largest thread
count at import, so the runs at 3 threads happen in a subprocess started with
``NUMBA_NUM_THREADS=3`` (the machine may have fewer cores: threads are then oversubscribed,
which changes only the time).
"""
import hashlib
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.local_rule import projection_grads
from reference import batch_sum, weight_grad

HERE = os.path.dirname(os.path.abspath(__file__))
T, T_B, THETA_B, THETA = 12, 20, 0.75, 0.7


def _projections():
    rng = np.random.default_rng(5)
    w = lambda shape: rng.normal(0.0, 0.3, shape)
    wide = 40                                     # >= SPARSE_MIN_C: the packed-row path too
    return [ns.Dense(w((9, 7)), bias=w(7)),
            ns.Sparse.fixed_probability(8, 6, 0.4, 1.0, seed=5),
            ns.Conv2d(w((3, 2, 3, 3)), pre_shape=(2, 5, 6), stride=2, padding=1, bias=w(3)),
            ns.Conv2d(w((wide, 2, 3, 3)), pre_shape=(2, 4, 4), stride=1, padding=1),
            ns.ConvTranspose2d(w((2, 3, 3, 3)), pre_shape=(2, 3, 4), stride=2, padding=1,
                               output_padding=1)]


def cases():
    """(projection, pre rates, post errors) for batch sizes 1..17: SPIDE's factors from
    random spike counts (pre ``n / T``; post ``((Θ_b (n₊ - n₋)) / T_b) / Θ``, gated), whose
    products and sums round (no dyadic grid): any change of summation order shows."""
    rng = np.random.default_rng(11)
    for pr in _projections():
        for B in range(1, 18):
            a = rng.integers(0, T + 1, (B, pr.n_pre)) * (rng.random((B, pr.n_pre)) < 0.6) / T
            n = rng.integers(-T_B, T_B + 1, (B, pr.n_post)) * (rng.random((B, pr.n_post)) < 0.3)
            yield pr, a, ((THETA_B * n) / T_B) / THETA


def grads_digest():
    """sha256 over every gradient and op count of :func:`cases` (this process's threads)."""
    h = hashlib.sha256()
    for pr, a, d in cases():
        g, ops = projection_grads(pr, a, d)
        for k in sorted(g):
            h.update(np.ascontiguousarray(g[k]).tobytes())
        h.update(ops.tobytes())
    return h.hexdigest()


def _python(code, threads=3, timeout=900):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE,
                                           os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=HERE,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_weight_grad_equals_its_twin_bit_for_bit():
    """The kernel's blocked sums are the twin's (sample order within a block, the fixed
    tree across blocks), bit for bit on rounding values, for batch sizes 1..17; the bias
    gradient is the twin's batch_sum."""
    n_bias = 0
    for pr, a, d in cases():
        g, ops = projection_grads(pr, a, d)
        G, ops_ref = weight_grad(pr, a, d)
        np.testing.assert_array_equal(g["weight"], G, err_msg=f"{pr!r} B={a.shape[0]}")
        np.testing.assert_array_equal(ops - np.count_nonzero(d, axis=1) * (pr.bias is not None),
                                      ops_ref)
        if pr.bias is not None:
            s = batch_sum(d)
            want = s.reshape(-1, pr.post_shape[0]).sum(0) if len(pr.post_shape) == 3 else s
            np.testing.assert_array_equal(g["bias"], want)
            n_bias += 1
    assert n_bias == 2 * 17


def test_weight_grad_same_bits_for_1_2_3_threads():
    out = _python("""
        from neurosim.kernels import threads
        import test_determinism as t
        for n in (1, 2, 3):
            threads.set_threads(n)
            print(n, t.grads_digest())
    """, timeout=600)
    digests = dict(line.split() for line in out.strip().splitlines())
    assert sorted(digests) == ["1", "2", "3"]
    assert len(set(digests.values())) == 1, digests
    assert digests["1"] == grads_digest()            # and this process's thread count


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def _assert_same_run(a, b):
    da, db = _datasets(a), _datasets(b)
    assert set(da) == set(db)
    for k in ("training/optimizer/W1.weight", "training/history/fwd_synops",
              "training/history/update_macs", "training/history/train_loss",
              "training/history/test_accuracy", "training/readout_weight"):
        assert k in da, (k, sorted(da))
    for k in da:
        if k == "training/history/wall_s":
            continue
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """2 epochs of the default digits training (400 / 200 samples) at 1, 2 and 3 threads;
    and a run of 1 epoch at 2 threads resumed to 2 epochs at 3 threads."""
    d = tmp_path_factory.mktemp("det")
    _python(f"""
        from neurosim.training.trainer import train
        kw = dict(max_train=400, max_test=200, seed=0, handle_signals=False)
        for n in (1, 2, 3):
            train(out={str(d)!r} + f"/t{{n}}.h5", overrides=dict(epochs=2), n_threads=n, **kw)
        train(out={str(d)!r} + "/resumed.h5", overrides=dict(epochs=1), n_threads=2, **kw)
        train(out={str(d)!r} + "/resumed.h5", overrides=dict(epochs=2), n_threads=3,
              resume=True, **kw)
    """)
    return d


@pytest.mark.parametrize("threads", [2, 3])
def test_digits_training_same_bits_for_any_threads(digits_runs, threads):
    """Weights, optimizer state, history (losses, accuracies, op totals): every dataset of
    the run files equal except the wall times."""
    _assert_same_run(digits_runs / "t1.h5", digits_runs / f"t{threads}.h5")


def test_resume_with_other_threads_continues_bit_for_bit(digits_runs):
    _assert_same_run(digits_runs / "t1.h5", digits_runs / "resumed.h5")


@pytest.fixture(scope="module")
def bn_runs(tmp_path_factory):
    """2 epochs of digits training with batch norm on the input map (400 / 200 samples)
    at 1 and 2 threads."""
    d = tmp_path_factory.mktemp("detbn")
    _python(f"""
        from neurosim.training.trainer import train
        kw = dict(max_train=400, max_test=200, seed=0, handle_signals=False)
        for n in (1, 2):
            train(out={str(d)!r} + f"/t{{n}}.h5", n_threads=n, overrides=dict(
                epochs=2, batch_norm=["F"]), **kw)
    """)
    return d


def test_batch_norm_training_same_bits_for_1_and_2_threads(bn_runs):
    assert "training/batch_norm/F/running_var" in _datasets(bn_runs / "t1.h5")
    _assert_same_run(bn_runs / "t1.h5", bn_runs / "t2.h5")
