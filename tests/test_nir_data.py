"""A run's spike trains as NIR data (neurosim/io/nir_data.py, `neurosim export-nir-data`;
issue 31 item 5): written with nir's data classes, read back with nir's own reader and
compared with the run file's recordings exactly."""
import numpy as np
import pytest

nir = pytest.importorskip("nir")
if not hasattr(nir, "NIRGraphData"):                      # pragma: no cover
    pytest.skip("the installed nir has no data classes (nir >= 1.0.8)", allow_module_level=True)

from click.testing import CliRunner                      # noqa: E402

from neurosim.cli import main                            # noqa: E402
from neurosim.io import read_run                         # noqa: E402
from neurosim.io import nir_data as nd                   # noqa: E402


def _c_order(a, shape):
    """[..., n] neurosim order -> NIR's C-order of ``shape`` (independent of io.nir)."""
    if len(shape) != 3:
        return a
    C, H, W = shape
    return np.moveaxis(a.reshape(a.shape[:-1] + (H, W, C)), -1, -3).reshape(a.shape)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """test_conv (conv-transpose feedback, (C, H, W) populations), both phases."""
    d = tmp_path_factory.mktemp("nirdata")
    args = ["simulate", "--model", "test_conv", "--input", "digits", "--n-samples", "3",
            "--steps", "12", "--backward-steps", "15", "--grad", "random"]
    for rec, name in ((["--record"], "rec.h5"), ([], "norec.h5")):
        res = CliRunner().invoke(main, args + rec + ["--out", str(d / name)])
        assert res.exit_code == 0, res.output
    return d


@pytest.mark.parametrize("events", [False, True])
def test_export_nir_data_round_trip(conv_run, tmp_path, events):
    run = read_run(conv_run / "rec.h5")
    net = run.network
    out = tmp_path / "acts.nir"
    res = CliRunner().invoke(main, ["export-nir-data", str(conv_run / "rec.h5"), "--out",
                                    str(out), "--dt", "0.001"] + (["--events"] if events else []))
    assert res.exit_code == 0, res.output
    assert "NIR data: dt = 0.001" in res.output
    g = nir.read_data(str(out))
    # the node names are those of the network's NIR export
    res = CliRunner().invoke(main, ["export-nir", "--run", str(conv_run / "rec.h5"), "--out",
                                    str(tmp_path / "net.nir")])
    assert res.exit_code == 0, res.output
    assert set(g.nodes) <= set(nir.read(tmp_path / "net.nir").nodes)
    n_fwd = n_bwd = 0
    for name, p in net.populations.items():
        want_f = run.forward.spikes.get(name)
        want_b = run.backward.spikes.get(name)
        if want_f is None:
            assert name not in g.nodes
            continue
        obs = g.nodes[name].observables
        wf = _c_order(want_f, p.shape)
        wb = _c_order(want_b, p.shape)
        if not events:
            f, b = obs["spikes"], obs["spikes_backward"]
            assert isinstance(f, nir.TimeGriddedData) and f.data.dtype == bool and f.dt == 0.001
            np.testing.assert_array_equal(f.data, wf.astype(bool))
            np.testing.assert_array_equal(b.data, wb)
        else:
            f, b = obs["spikes"], obs["spikes_backward"]
            assert type(f) is nir.EventData and type(b) is nir.ValuedEventData
            assert f.n_neurons == p.n and f.t_max == pytest.approx(12 * 0.001)
            for s in range(run.forward.batch):
                t, j = np.nonzero(wf[s])                       # step-major, as documented
                k = len(t)
                np.testing.assert_array_equal(f.idx[s, :k], j)
                np.testing.assert_array_equal(f.time[s, :k], t * 0.001)
                assert np.all(f.idx[s, k:] == -1) and np.all(np.isinf(f.time[s, k:]))
                t, j = np.nonzero(wb[s])
                np.testing.assert_array_equal(b.idx[s, :len(t)], j)
                np.testing.assert_array_equal(b.value[s, :len(t)], wb[s, t, j])
        back = nd.read_nir_data(out, dt=0.001, net=net)
        np.testing.assert_array_equal(back["spikes"][name], want_f)
        np.testing.assert_array_equal(back["spikes_backward"][name], want_b)
        n_fwd += int(want_f.sum())
        n_bwd += int(np.abs(want_b).sum())
    assert n_fwd > 0 and n_bwd > 0 and np.any(run.backward.spikes["c0"] < 0)


def test_a_run_without_recorded_spikes_is_resimulated(conv_run, tmp_path):
    out = tmp_path / "a.nir"
    res = CliRunner().invoke(main, ["export-nir-data", str(conv_run / "norec.h5"),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "NIR data: dt = 0.001" in res.output       # export-nir's default
    rec = read_run(conv_run / "rec.h5")
    back = nd.read_nir_data(out, net=rec.network)
    for name, s in rec.forward.spikes.items():
        np.testing.assert_array_equal(back["spikes"][name], s)


def test_bad_input(conv_run, tmp_path):
    r = CliRunner()
    out = tmp_path / "x.nir"
    out.write_bytes(b"keep")
    for args in (["export-nir-data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "y.nir")],
                 ["export-nir-data", str(conv_run / "rec.h5"), "--out", str(out)]):
        res = r.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert "Error:" in res.output
    assert out.read_bytes() == b"keep" and not (tmp_path / "y.nir").exists()
    with pytest.raises(nd.NIRError, match="must hold only"):
        nd.to_nir_data(read_run(conv_run / "rec.h5").network,
                       {"c0": np.full((1, 2, 256), 2, np.int8)}, dt=1.0)
