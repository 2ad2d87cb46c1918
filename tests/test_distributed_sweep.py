"""The sparsity sweep on Dask (neurosim.experiments.dask_sweep): a 2-worker LocalCluster gives the
serial sweep's records (timing fields aside), a killed worker's point is re-run and
recorded exactly once, and the options exit 2 naming the extra when Dask is missing."""
import json
import os
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from neurosim.cli import main
from neurosim.experiments import sparsity as S

SMALL = dict(base={"T": 6, "T_b": 8}, epochs=1, max_train=48, max_test=24, reps=1)


def _key(r):
    return (r["case"], r["impl"], r["metric"])


def _comparable(records):
    return sorted((S.comparable(r) for r in records), key=_key)


def _assert_same(recs, recs0):
    a, b = _comparable(recs), _comparable(recs0)
    assert [_key(r) for r in a] == [_key(r) for r in b]
    for x, y in zip(a, b):
        diff = {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}
        if "extra" in diff:
            diff["extra"] = {k: (x["extra"].get(k), y["extra"].get(k))
                             for k in set(x["extra"]) | set(y["extra"])
                             if x["extra"].get(k) != y["extra"].get(k)}
        assert not diff, (_key(x), diff)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install 'neurosim-events[dask]'")
    out = tmp_path_factory.mktemp("serial") / "s.jsonl"
    r = S.sweep("fsnn_mlp", "digits", params={"T": [4], "dropout": [0.2]}, out=out, **SMALL)
    return r, [json.loads(x) for x in out.read_text().splitlines()]


def test_two_worker_sweep_equals_the_serial_sweep(serial, tmp_path):
    r0, recs0 = serial
    out = tmp_path / "d.jsonl"
    msgs = []
    r = S.sweep("fsnn_mlp", "digits", params={"T": [4], "dropout": [0.2]}, out=out, workers=2,
                report=msgs.append, **SMALL)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == len(recs0) == 3 * 6
    _assert_same(recs, recs0)
    assert [p["params"] for p in r["points"]] == [p["params"] for p in r0["points"]]
    assert [p["accuracy"] for p in r["points"]] == [p["accuracy"] for p in r0["points"]]
    progress = [m for m in msgs if m.startswith("[")]
    assert progress[-1].startswith("[3/3]") and "ETA" in progress[-1]


def test_killed_worker_point_is_rerun_once(serial, tmp_path, monkeypatch):
    _, recs0 = serial
    marker = tmp_path / "paused"
    monkeypatch.setenv("NEUROSIM_TEST_PAUSE", f"sweep-point:1:{marker}")
    out = tmp_path / "k.jsonl"
    box = {}

    def run():
        try:
            box["r"] = S.sweep("fsnn_mlp", "digits", params={"T": [4], "dropout": [0.2]},
                               out=out, workers=2, **SMALL)
        except BaseException as e:          # reported by the main thread
            box["e"] = e

    th = threading.Thread(target=run)
    th.start()
    t_end = time.monotonic() + 240
    while not marker.exists() and time.monotonic() < t_end and th.is_alive():
        time.sleep(0.05)
    assert marker.exists(), box.get("e")
    time.sleep(0.3)                          # both workers reach the pause; the file names one
    pid = int(marker.read_text().split()[0])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)             # the worker dies inside its point
    (tmp_path / "paused.go").write_text("")  # the others (and the re-run) go on
    th.join(300)
    assert not th.is_alive()
    assert "e" not in box, box.get("e")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 18                   # every point exactly once
    assert sorted(map(_key, recs)) == sorted(set(map(_key, recs)))
    _assert_same(recs, recs0)


def test_options_without_dask_exit_2(monkeypatch):
    from neurosim.experiments import dask_sweep
    monkeypatch.setattr(dask_sweep, "available", lambda: False)
    r = CliRunner().invoke(main, ["bench", "sparsity", "--workers", "2", "--no-record"])
    assert r.exit_code == 2 and "neurosim-events[dask]" in r.output
    r = CliRunner().invoke(main, ["bench", "sparsity", "--workers", "2", "--scheduler", "x"])
    assert r.exit_code == 2 and "at most one of --scheduler and --workers" in r.output


def test_sweep_on_a_running_scheduler(serial, tmp_path):
    from distributed import LocalCluster
    _, recs0 = serial
    out = tmp_path / "a.jsonl"
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        S.sweep("fsnn_mlp", "digits", params={"T": [4], "dropout": [0.2]}, out=out,
                scheduler=cluster.scheduler_address, **SMALL)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    _assert_same(recs, recs0)
    with pytest.raises(S.SweepError, match="not both"):
        S.sweep(scheduler="tcp://127.0.0.1:1", workers=1)
