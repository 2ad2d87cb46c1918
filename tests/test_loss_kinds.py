"""The loss registry (neurosim.training.loss_kinds): the trainer asks each loss's entry, and
adding a loss is one entry (docs/architecture.md, "Where to add things")."""
import dataclasses

import numpy as np
import pytest

from neurosim import losses
from neurosim.training import loss_kinds, spide
from neurosim.training.loss_kinds import LOSS_KINDS, LossKind
from neurosim.training.spide import SPIDEConfig


def test_cli_lists_exactly_the_registered_losses():
    from neurosim.cli import train as train_cmd
    opt = next(p for p in train_cmd.params if p.name == "loss")
    assert tuple(opt.type.choices) == tuple(LOSS_KINDS) == spide.LOSSES


def test_only_the_cross_entropy_trains_a_readout_and_only_sliding_records():
    assert {k for k, v in LOSS_KINDS.items() if v.readout} == {"ce"}
    assert {k for k, v in LOSS_KINDS.items() if v.records_output} == {"spikemax-sliding"}
    fields = {f.name for f in dataclasses.fields(SPIDEConfig)}
    for kind in LOSS_KINDS.values():
        assert set(kind.options) <= fields, kind.name


def _count_l2(model, cfg, fwd, y):
    """A toy loss for the test: half the squared distance of the output rates from the
    one-hot label (batch mean), with its exact gradient with respect to the rates."""
    out = model.output
    a = fwd.rates(out)
    d = a - np.eye(a.shape[1])[y]
    B = a.shape[0]
    r = losses.LossResult(per_sample=0.5 * np.sum(d * d, 1) / B, grad=d / B)
    return r, r.grad, losses.predict(fwd.counts[out])


def test_a_registered_loss_trains_without_touching_the_trainer(tmp_path, monkeypatch):
    """One registry entry is all a new loss needs: the config accepts its name, the step
    runs its evaluate and its gradient moves the weights (differently from rate-mse)."""
    from neurosim.training.trainer import train
    kinds = dict(LOSS_KINDS)
    kinds["count-l2"] = LossKind("count-l2", readout=False, records_output=False, options=(),
                                 evaluate=_count_l2)
    monkeypatch.setattr(loss_kinds, "LOSS_KINDS", kinds)
    monkeypatch.setattr(spide, "LOSS_KINDS", kinds)
    import neurosim.training.checkpoint as ck
    monkeypatch.setattr(ck, "LOSS_KINDS", kinds)
    calls = []

    def spy(*a):
        calls.append(1)
        return _count_l2(*a)
    kinds["count-l2"] = dataclasses.replace(kinds["count-l2"], evaluate=spy)
    with pytest.raises(Exception, match="loss"):
        SPIDEConfig(loss="no-such-loss")
    assert SPIDEConfig(loss="count-l2").loss == "count-l2"
    s = train("fsnn_mlp_spiking", "digits", out=tmp_path / "c.h5",
              overrides=dict(epochs=1, loss="count-l2"), max_train=64, max_test=32)
    assert calls                       # the registered evaluate ran
    assert s["test_accuracy"] is not None
    mse = train("fsnn_mlp_spiking", "digits", out=tmp_path / "m.h5",
                overrides=dict(epochs=1, loss="rate-mse"), max_train=64, max_test=32)
    from neurosim.training.checkpoint import load_checkpoint
    w1 = {k: p.weight for k, p in load_checkpoint(tmp_path / "c.h5")[0].projections.items()}
    w2 = {k: p.weight for k, p in load_checkpoint(tmp_path / "m.h5")[0].projections.items()}
    assert any(not np.array_equal(w1[k], w2[k]) for k in w1)   # its gradient was used
