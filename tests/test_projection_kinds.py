"""The per-kind projection interface (neurosim.connectivity): registry, stored form,
kernel layout structure, kernel count maps, and no class dispatch outside the package.

Counts, nonzero degrees and gradients per kind are checked through their users
(test_counting.py, test_ops.py, test_spide_gradients.py); this file covers the rest."""
import re
from pathlib import Path

import numpy as np
import pytest

import neurosim as ns
from neurosim import _validate as V
from neurosim import config
from neurosim import connectivity as K
from neurosim.kernels.layout import N_GEO, SPATIAL_KINDS


def _one_of_each():
    rng = np.random.default_rng(0)
    return [
        K.Dense(rng.normal(size=(6, 4)), bias=rng.normal(size=4), delay=1, port=2),
        K.Sparse.fixed_probability(6, 5, 0.4, 0.5, seed=1, bias=np.ones(5)),
        K.Conv2d(rng.normal(size=(3, 2, 3, 2)), pre_shape=(2, 6, 5), stride=2, padding=1,
                 bias=rng.normal(size=3)),
        K.ConvTranspose2d(rng.normal(size=(2, 3, 2, 3)), pre_shape=(2, 3, 4), stride=2,
                          padding=1, output_padding=1),
        K.AvgPool2d(2, pre_shape=(3, 5, 6), stride=1, delay=2),
        K.SumPool2d(3, pre_shape=(2, 7, 7), stride=2),
    ]


def test_registry_names_every_kind_once():
    assert set(K.PROJECTION_KINDS) == {"dense", "sparse", "conv2d", "conv_transpose2d",
                                       "avgpool2d", "sumpool2d"}
    for kind, cls in K.PROJECTION_KINDS.items():
        assert cls.kind == kind and issubclass(cls, K.Projection)
    assert {type(p) for p in _one_of_each()} == set(K.PROJECTION_KINDS.values())


@pytest.mark.parametrize("pr", _one_of_each(), ids=lambda p: p.kind)
def test_stored_form_round_trips(pr):
    geometry, arrays = pr.to_stored()
    assert geometry["kind"] == pr.kind
    assert set(arrays) == set(pr.stored_arrays) | ({"bias"} if pr.bias is not None else set())
    q = K.PROJECTION_KINDS[pr.kind].from_stored(geometry, dict(arrays), delay=pr.delay, port=pr.port)
    assert type(q) is type(pr) and q.params() == pr.params()
    g2, a2 = q.to_stored()
    assert g2 == geometry and list(a2) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(a2[k], arrays[k])
        assert a2[k].dtype == arrays[k].dtype
    for bk in (False, True):
        for x, y in zip(pr.kernel_layout(bk), q.kernel_layout(bk)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("pr", _one_of_each(), ids=lambda p: p.kind)
@pytest.mark.parametrize("backward", [False, True])
def test_kernel_layout_structure(pr, backward):
    lay = pr.kernel_layout(backward)
    assert isinstance(lay, K.KernelLayout)
    assert lay.weights.dtype == np.float64 and lay.weights.ndim == 1
    assert lay.indptr.dtype == np.int64 and lay.indices.dtype == config.INDEX_DTYPE
    assert lay.geo.dtype == np.int64 and lay.geo.shape == (N_GEO,)
    assert lay.table.dtype == np.int64 and lay.table.shape[1] == 4
    if pr.spatial:
        assert lay.kind in SPATIAL_KINDS
        send = pr.post_shape if backward else pr.pre_shape
        assert lay.table.shape[0] == send[1] * send[2]
        np.testing.assert_array_equal(lay.table, K.kernel_table(lay.kind, lay.geo))
        if not pr.has_weights:
            assert lay.weights.tolist() == [pr.weight_value]
        else:
            assert lay.weights.size == pr.weight.size
    else:
        assert lay.kind not in SPATIAL_KINDS and lay.table.shape == (0, 4)
        # the kernel matrix of the phase is the dense matrix (transposed backward)
        n_send, n_recv = (pr.n_post, pr.n_pre) if backward else (pr.n_pre, pr.n_post)
        M = np.zeros((n_send, n_recv))
        if lay.indptr.size:
            rows = np.repeat(np.arange(n_send), np.diff(lay.indptr))
            np.add.at(M, (rows, lay.indices.astype(np.int64)), lay.weights)
        else:
            M = lay.weights.reshape(n_send, n_recv)
        np.testing.assert_array_equal(M, pr.to_dense().T if backward else pr.to_dense())


@pytest.mark.parametrize("pr", [p for p in _one_of_each() if p.spatial], ids=lambda p: p.kind)
def test_kernel_count_maps(pr):
    sent = np.arange(pr.n_pre) % 5
    per_kw = pr.kernel_weight_counts(sent)
    off, chan = pr.kernel_count_maps(per_kw)
    assert off.shape == tuple(pr.kernel_shape)
    assert int(off.sum()) == int(per_kw.sum()) == int(pr.synapse_counts(sent).sum())
    if pr.has_weights:
        assert per_kw.shape == pr.weight.shape
        assert chan.shape == (pr.post_shape[0], pr.pre_shape[0]) and chan.sum() == off.sum()
    else:
        assert chan is None and per_kw.shape == tuple(pr.kernel_shape)


@pytest.mark.parametrize("pr", [p for p in _one_of_each() if not p.spatial], ids=lambda p: p.kind)
def test_kernel_counts_need_a_spatial_kind(pr):
    with pytest.raises(V.NeurosimError, match=f"is {pr.kind}"):
        pr.kernel_weight_counts(np.zeros(pr.n_pre, np.int64))


def _dispatch_hits(pat, home, allow=()):
    """``file:line`` of every line of neurosim/ outside the package ``home`` that matches
    ``pat``, less the substrings in ``allow``."""
    root = Path(ns.__file__).parent
    return [f"{p.relative_to(root).as_posix()}:{i}" for p in sorted(root.rglob("*.py"))
            if home not in p.relative_to(root).parts
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if pat.search(line) and not any(a in line for a in allow)]


def test_no_projection_class_dispatch_outside_connectivity():
    """The engine-unification rule: per-kind logic lives in neurosim/connectivity/ only."""
    names = "|".join(c.__name__ for c in K.PROJECTION_KINDS.values())
    pat = re.compile(rf"isinstance\([^)]*\b({names}|Projection|SpatialProjection|ConvProjection|Pool2d)\b")
    assert _dispatch_hits(pat, "connectivity", ("isinstance(projection, Projection)",)) == []


#: files outside neurosim/neurons/ that may still dispatch on neuron kinds: none (issue 28).
NEURON_DISPATCH_LEFT = set()


def test_no_neuron_class_dispatch_outside_neurons():
    """The same rule for neuron models: per-model logic lives in neurosim/neurons/ only
    (isinstance on a model class, or a comparison of a kind / model string with a model's
    stored name); code elsewhere uses the NeuronModel interface and NEURON_KINDS."""
    from neurosim.neurons import BACKWARD_MODEL, NEURON_KINDS
    classes = list(NEURON_KINDS.values()) + [BACKWARD_MODEL]
    names = "|".join(c.__name__ for c in classes)
    kinds = "|".join(c.kind for c in classes)
    pat = re.compile(rf"isinstance\([^)]*\b({names})\b"
                     rf"|\b(kind|model)\b\s*[!=]=\s*['\"]({kinds})['\"]"
                     rf"|['\"]({kinds})['\"]\s*[!=]=\s*[\w.]*\b(kind|model)\b"
                     rf"|\b(kind|model)\b\s+(not\s+)?in\s+\([^)]*['\"]({kinds})['\"]")
    hits = _dispatch_hits(pat, "neurons")
    assert [h for h in hits if h.rsplit(":", 1)[0] not in NEURON_DISPATCH_LEFT] == []
