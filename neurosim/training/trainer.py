"""The training driver behind ``neurosim train`` / ``neurosim eval``.

``train(...)`` loads a model file and a data set, runs SPIDE epochs (:func:`spide_step`),
evaluates on the test set after every epoch, and writes a training run file after every
epoch.  The file holds the network with its current weights (the run-file schema's
``/network``), and ``/training``: the configuration, the readout, the optimizer's momentum
buffers, the random generator's state, the epoch/iteration counters and the per-epoch
history of metrics and operation counts (``docs/training.md``; written, read and restored
by :mod:`neurosim.training.checkpoint`).

The run is composed of parts: :func:`resolve_run` turns a request (fresh or resumed) into a
frozen :class:`RunSpec` (what the run is) and a :class:`~neurosim.training.loop.TrainState`
(where it stands); :func:`~neurosim.training.loop.run_epochs` runs the epochs with hooks
(progress, health, diagnostics, checkpoints, the epoch report, all in this module); the
data set normalises and augments its own images (:meth:`neurosim.datasets.Dataset.normalised`,
:meth:`~neurosim.datasets.Dataset.augment`).  The library speaks its own parameter names:
a resumed run that conflicts with its file raises :class:`ResumeError` with the option,
the value given and the value stored; the CLI words it with its option names.

Reliability (``docs/reliability.md``):

* every write is atomic (:func:`neurosim.io.runfile.atomic_h5`): a crash never leaves a
  half-written file, and the previous checkpoint stays intact until the new one is
  complete;
* ``resume=True`` continues from the file and reaches the same final weights, metrics and
  op counts as an uninterrupted run with the same seed (same batches, same dropout masks,
  same momentum).  Options that would change the run (a different learning rate, data
  set, seed, ...) are refused on resume;
* SIGINT (Ctrl-C) and SIGTERM stop the run within one time step of the running phase
  (:mod:`neurosim._interrupt`; the batch is abandoned before its update) or between
  batches, write a **mid-epoch checkpoint** of the last completed batch
  (``/training/progress``: the epoch's batch order, the next batch and the epoch's running
  sums) and raise :class:`TrainingInterrupted`; ``resume`` continues with the next batch,
  bit-identically.  A second signal stops at once (the file on disk is then the previous
  checkpoint).  ``checkpoint_every`` seconds also writes mid-epoch checkpoints;
* NaN / inf in potentials, gradients or parameters stops training with
  :class:`~neurosim.training.health.NumericalError` naming the array, the epoch and the
  batch, without writing a checkpoint: the file keeps the last good one;
* a population firing at every step (runaway activity) gives a
  :class:`~neurosim.training.health.RunawayActivityWarning` once per epoch.
"""
import dataclasses
import hashlib
import signal
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import _interrupt
from .. import _validate as V
from .. import datasets as D
from .. import memory
from .. import kernels
from ..io import atomic
from ..io.model_file import read_model_file, resolve_model_path
from ..io.sources import open_network
from ..network import Network
from . import diagnose as _diagnostics
from . import health
from .checkpoint import OPS, restore, save_checkpoint
from .loop import TrainState, evaluate, model_input, run_epochs
from .spide import SGD, SPIDEConfig, build_model

#: the model ``neurosim train`` uses when none is given
DEFAULT_MODEL = "fsnn_mlp"
TRAINING_KEYS = {f.name for f in dataclasses.fields(SPIDEConfig)} | {
    "readout", "dataset", "output"}


class TrainingError(V.NeurosimError):
    """A training run cannot start or continue (bad options, incompatible checkpoint)."""


class ResumeError(TrainingError):
    """A resumed run conflicts with its run file (structured, so that a front end can word
    it with its own option names).

    Attributes: ``problem`` — ``"missing"`` (no run file), ``"differs"`` (``option`` was
    given as ``given`` but the run stored ``stored``), ``"fewer_epochs"`` (``epochs``
    ``given`` is below the ``stored`` epochs done), ``"data"`` (the data read now differ:
    ``given`` / ``stored`` training-sample counts); ``path`` (the run file).  Options are
    :func:`train`'s parameter names and :class:`SPIDEConfig` fields."""

    def __init__(self, problem, path, option=None, given=None, stored=None, message=None):
        self.problem, self.path = problem, Path(path)
        self.option, self.given, self.stored = option, given, stored
        p = str(path)
        if message is None:
            message = {
                "missing": f"resume: {p!r} does not exist; start a new run instead",
                "differs": f"resume: {option} {given!r} differs from the run's {stored!r} "
                           f"stored in {p!r}; a resumed run keeps its settings (only epochs "
                           "may change); leave {option} out or start a new run in another file",
                "fewer_epochs": f"resume: epochs {given} is fewer than the {stored} epochs "
                                f"already done in {p!r}",
            }[problem].replace("{option}", str(option))
        super().__init__(message)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (full disk, lost permissions); the previous one on
    disk is intact.  A runtime failure (exit code 1)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint.

    Attributes: ``signum``, ``exit_code`` (128 + signum: 130 for SIGINT, 143 for SIGTERM),
    ``out`` (the run file; continue with ``train(out=out, resume=True)``), ``epoch``
    (completed epochs), ``batch`` (batches done in the next epoch) and ``resumable``
    (False when the run stopped in its first batch and nothing was written)."""

    def __init__(self, message, signum, out, epoch, batch, resumable=True):
        super().__init__(message)
        self.signum, self.out, self.epoch, self.batch = signum, out, epoch, batch
        self.exit_code = 128 + int(signum)
        self.resumable = resumable

    def __str__(self):
        return self.args[0]


# ======================================================================================
# data and configuration
# ======================================================================================
def load_data(name, data_dir=None):
    """(data set, x_train, y_train, x_test, y_test): data set ``name`` (from ``data_dir``;
    the bundled digits need none), normalised as SPIDE does
    (:meth:`neurosim.datasets.Dataset.normalised`)."""
    ds = D.load(name, data_dir) if name != "digits" else D.load("digits")
    return (ds,) + ds.normalised()


class TrainData(NamedTuple):
    """The data of a run: the :class:`~neurosim.datasets.Dataset` (for augmentation), its
    normalised splits cut to the run's subsets, and ``info`` (subset sizes and the data
    fingerprint, stored in the run file)."""
    dataset: object
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict


def _check_meta(net, meta, where):
    """The model's [training] readout / output / dataset entries and projection names."""
    ro = meta.get("readout")
    if ro is not None:
        if not isinstance(ro, dict) or set(ro) - {"classes"}:
            raise TrainingError(f"{where}: readout must be a table {{ classes = K }}, got {ro!r}")
        if "classes" in ro:
            c = ro["classes"]
            if isinstance(c, bool) or not isinstance(c, int) or c < 2:
                raise TrainingError(f"{where}: readout.classes must be an integer >= 2, got {c!r}")
    for key in ("output", "dataset"):
        if key in meta and not isinstance(meta[key], str):
            raise TrainingError(f"{where}: {key} must be a string, got {meta[key]!r}")


def config_for(net, overrides):
    """SPIDEConfig from the model file's ``[training]`` table and explicit overrides.

    Errors in the table name the model file; errors in ``overrides`` name the option."""
    md = getattr(net, "metadata", None) or {}
    where = f"{md.get('source', 'model')}: [training]"
    table = md.get("training", {}) or {}
    if not isinstance(table, dict):
        raise TrainingError(f"{where} must be a table, got {table!r}")
    table = dict(table)
    unknown = sorted(set(table) - TRAINING_KEYS)
    if unknown:
        raise TrainingError(f"{where} has unknown key(s) {unknown}; allowed: "
                            f"{sorted(TRAINING_KEYS)}")
    meta = {k: table.pop(k) for k in ("readout", "dataset", "output") if k in table}
    _check_meta(net, meta, where)
    try:
        SPIDEConfig.from_dict(table)
    except V.NeurosimError as e:
        raise TrainingError(f"{where}: {e}") from e
    table.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SPIDEConfig.from_dict(table)
    for key in ("dropout", "norm_cap"):
        for name in getattr(cfg, key):
            if name not in net.projections:
                raise TrainingError(f"{where}: {key} names projection {name!r}, which does not "
                                    f"exist; projections: {list(net.projections)}")
            if key == "norm_cap" and not net.projections[name].has_weights:
                raise TrainingError(f"{where}: norm_cap names projection {name!r}, which has "
                                    "no weights")
    return cfg, meta


def _check_data_fits(model, model_name, ds_name, x, y, classes):
    """The data set's images and labels fit the model's input population and classes."""
    shape = model.net.populations[model.input].shape
    img = tuple(x.shape[1:])
    fits = (int(np.prod(img)) == int(np.prod(shape))) if len(shape) == 1 else img == tuple(shape)
    if not fits:
        raise TrainingError(
            f"model {model_name!r} takes inputs of shape {tuple(shape)} (population "
            f"{model.input!r}) but data set {ds_name!r} has images of shape {img}; choose a "
            f"model made for {ds_name} (--model) or another data set (--dataset)")
    if y.size and int(y.max()) >= classes:
        raise TrainingError(
            f"model {model_name!r} has {classes} classes but data set {ds_name!r} has labels up "
            f"to {int(y.max())}; set [training] readout = {{ classes = {int(y.max()) + 1} }} in "
            "the model file or choose another data set")


def _fingerprint(*arrays):
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _read_data(ds_name, data_dir, max_train, max_test):
    ds, xtr, ytr, xte, yte = load_data(ds_name, data_dir)
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    info = dict(max_train=max_train, max_test=max_test, n_train=int(len(xtr)),
                n_test=int(len(xte)), fingerprint=_fingerprint(xtr, ytr, xte, yte))
    return TrainData(ds, xtr, ytr, xte, yte, info)


# ======================================================================================
# the run: specification and resolution
# ======================================================================================
@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """What a training run is, resolved once and never changed: ``model`` (name),
    ``dataset`` (name), ``cfg`` (the :class:`SPIDEConfig`; its ``epochs`` the run's target),
    ``meta`` (the model file's ``[training]`` readout / output / dataset entries),
    ``classes``, ``data`` (:class:`TrainData`: the subsets ``max_train`` / ``max_test``
    are in ``data.info``), ``out`` (the run file) and ``command`` (stored in the file)."""
    model: str
    dataset: str
    cfg: SPIDEConfig
    meta: dict
    classes: int
    data: TrainData
    out: Path
    command: str = ""

    @property
    def seed(self):
        return self.cfg.seed

    def record(self):
        """The spec's entries of the checkpoint's state dict."""
        return dict(model=self.model, dataset=self.dataset, classes=self.classes,
                    meta=self.meta, data=self.data.info, command=self.command)


def _resume_conflicts(out, st, cfg, model, dataset, seed, overrides, max_train, max_test):
    """The first option that would make a resumed run differ from the stored one, as a
    :class:`ResumeError` (None: no conflict)."""
    def differs(opt, given, stored):
        return ResumeError("differs", out, opt, given, stored)
    if model is not None and str(model) != st["model"]:
        try:                                    # a model file whose name is the stored one
            p = resolve_model_path(model)
            same = read_model_file(p).get("name", p.stem) == st["model"]
        except V.NeurosimError:
            same = False
        if not same:
            return differs("model", str(model), st["model"])
    if dataset is not None:
        key = str(dataset).strip().lower().replace("_", "-")
        if D._ALIASES.get(key, key) != st["dataset"]:
            return differs("dataset", dataset, st["dataset"])
    if seed is not None and seed != cfg.seed:
        return differs("seed", seed, cfg.seed)
    stored = cfg.to_dict()
    for k, v in overrides.items():
        if k == "epochs":
            continue
        s = stored.get(k)
        same = (list(v) == list(s)) if k == "milestones" else v == s
        if not same:
            return differs(k, v, s)
    data = st.get("data") or {}
    for key, given in (("max_train", max_train), ("max_test", max_test)):
        if given is not None and key in data and given != data[key]:
            return differs(key, given, data[key])
    return None


def resolve_run(model=None, dataset=None, *, out, data_dir=None, overrides=None, resume=False,
                force=False, seed=None, max_train=None, max_test=None, command=None):
    """A training request resolved into ``(RunSpec, TrainState)``.

    Fresh start: the model (a name, path or :class:`~neurosim.Network`), its
    configuration (the model file's ``[training]`` table under ``overrides``), the data
    set, a new :class:`~neurosim.training.spide.SPIDEModel`, optimizer and generator.
    ``resume``: all of it from the run file ``out``; anything given that differs from the
    stored run raises :class:`ResumeError` (only ``overrides["epochs"]`` may change, and
    not below the epochs done).  Parameters as in :func:`train`."""
    out = Path(out)
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    if resume:
        if out.is_dir():
            raise IsADirectoryError(f"output {str(out)!r} is a directory; give the run file")
        if not out.exists():
            raise ResumeError("missing", out)
        net, model_obj, cfg, st = restore(out)
        conflict = _resume_conflicts(out, st, cfg, model, dataset, seed, overrides, max_train,
                                     max_test)
        if conflict is not None:
            raise conflict
        if "epochs" in overrides:
            epochs = V.check_int(overrides["epochs"], "epochs", low=0)
            if epochs < st["epoch"]:
                raise ResumeError("fewer_epochs", out, "epochs", epochs, st["epoch"])
            cfg = dataclasses.replace(cfg, epochs=epochs)
        meta = st["meta"]
        net.metadata = net.metadata or {"name": st["model"]}   # keep the stored model spec
        model_name, ds_name = st["model"], st["dataset"]
        stored = st.get("data") or {}
        max_train = stored.get("max_train", max_train)
        max_test = stored.get("max_test", max_test)
    else:
        if out.is_file() and not force:
            raise FileExistsError(f"output {str(out)!r} already exists; pass --force to overwrite "
                                  "it or --resume to continue it")
        atomic.check_destination(out, force)
        if isinstance(model, Network):       # built in code (e.g. neurosim.experiments.sparsity)
            net = model
        else:
            net = open_network(DEFAULT_MODEL if model is None else model,
                               seed=0 if seed is None else seed)
        overrides.setdefault("seed", 0 if seed is None else seed)
        cfg, meta = config_for(net, overrides)
        model_name = net.metadata.get("model") or net.name
        ds_name = dataset or meta.get("dataset") or "digits"
        st = None
    for what, v in (("max_train", max_train), ("max_test", max_test)):
        if v is not None:
            V.check_int(v, what, low=1)
    data = _read_data(ds_name, data_dir, max_train, max_test)
    if st is not None and (st.get("data") or {}).get("fingerprint") not in (None, data.info["fingerprint"]):
        raise ResumeError(
            "data", out, "data", len(data.x_train), st["data"].get("n_train"),
            message=f"resume: the {ds_name} data read now differ from the data the run in "
                    f"{str(out)!r} was trained on ({len(data.x_train)} training samples now, "
                    f"{st['data'].get('n_train')} then); resume with the same data folder "
                    "and files")
    if st is not None:
        classes = int(st["classes"])
    else:
        classes = int(meta.get("readout", {}).get("classes", data.dataset.n_classes)) if \
            isinstance(meta.get("readout"), dict) else data.dataset.n_classes
        model_obj = build_model(net, cfg, meta, classes)
    _check_data_fits(model_obj, model_name, ds_name, data.x_train,
                     np.concatenate([data.y_train, data.y_test]), classes)
    spec = RunSpec(model=model_name, dataset=ds_name, cfg=cfg, meta=meta, classes=classes,
                   data=data, out=Path(out), command=command or "")
    state = TrainState(model=model_obj, opt=SGD(cfg.momentum, cfg.weight_decay),
                       rng=np.random.default_rng(cfg.seed))
    if st is not None:
        state.opt.load_state(st["optimizer"])
        state.rng.bit_generator.state = st["rng"]
        state.history.update({k: list(v) for k, v in st["history"].items()})
        state.epoch, state.iteration = int(st["epoch"]), int(st["iteration"])
        state.progress = st["progress"]
        if state.progress is not None and len(state.progress["perm"]) != len(data.x_train):
            raise ResumeError(
                "data", out, "data", len(data.x_train), len(state.progress["perm"]),
                message=f"resume: the mid-epoch checkpoint in {str(out)!r} covers "
                        f"{len(state.progress['perm'])} training samples, the data have "
                        f"{len(data.x_train)}")
    return spec, state


# ======================================================================================
# hooks of the epoch loop
# ======================================================================================
class Checkpointer:
    """Writes the run file (:func:`~neurosim.training.checkpoint.save_checkpoint`) for
    :func:`~neurosim.training.loop.run_epochs`: after every epoch, mid-epoch when
    ``every`` seconds have passed or on a stop request; words the errors that say what
    the file on disk then holds."""

    def __init__(self, spec, state, every=None, resumed=False):
        self.spec, self.every = spec, every
        self.what = None                       # the last checkpoint of this run, in words
        if resumed:
            p = state.progress
            self.what = (f"after epoch {state.epoch}" if p is None else
                         f"epoch {state.epoch + 1}, batch {p['batch']}/{p['n_batches']}")
        self.resumed = resumed
        self.t = time.perf_counter()

    def due(self):
        return self.every is not None and time.perf_counter() - self.t >= self.every

    def save(self, state, part=None):
        spec = self.spec
        rec = dict(spec.record(), **state.record(spec.cfg.epochs, part))
        try:
            save_checkpoint(spec.out, state.model, spec.cfg, rec, force=True, partial=part)
        except (KeyboardInterrupt, FileExistsError, IsADirectoryError):
            raise
        except OSError as e:
            prev = (f"the previous checkpoint ({self.what}) is intact" if self.what
                    else "no checkpoint of this run was written before")
            where = (f"after epoch {state.epoch}" if part is None else
                     f"in epoch {state.epoch + 1} after batch {part['batch']}")
            raise CheckpointError(
                f"could not write the checkpoint {where} to {str(spec.out)!r} "
                f"({e.strerror or e}); {prev}; fix the cause (disk space, permissions) and "
                "resume the run") from e
        self.what = (f"after epoch {state.epoch}" if part is None else
                     f"epoch {state.epoch + 1}, batch {part['batch']}/{part['n_batches']}")
        self.t = time.perf_counter()

    def interrupted(self, stop, epoch_done, batch, n_batches, signum=None, written=True):
        signum = stop.signum or signum or signal.SIGINT
        name = _interrupt.signal_name(signum)
        out = self.spec.out
        if not written:
            return TrainingInterrupted(
                f"interrupted by {name}: stopped in the first batch, nothing was written",
                signum, out, epoch_done, batch, resumable=False)
        where = (f"after epoch {epoch_done}" if batch == 0 else
                 f"after batch {batch}/{n_batches} of epoch {epoch_done + 1}")
        return TrainingInterrupted(
            f"interrupted by {name}: stopped {where}, checkpoint written to {str(out)!r}",
            signum, out, epoch_done, batch)

    def diverged(self, e, state, epoch, bi, nb):
        out = self.spec.out
        keep = (f"{str(out)!r} keeps the last good checkpoint ({self.what or 'as found at the start'})"
                if self.what or self.resumed else
                f"no checkpoint was written ({str(out)!r} is unchanged)")
        return health.NumericalError(f"{e.detail} at epoch {epoch + 1}, batch {bi + 1}/{nb} "
                                     f"(iteration {state.iteration + 1}): training diverged and "
                                     f"was stopped; {keep}", what=e.what, name=e.name,
                                     hint=e.hint)


class ProgressHook:
    """Says when the first batch (which compiles the kernels) is done and hands
    ``progress`` a dict per batch with the ETA measured from the batches after it."""

    def __init__(self, progress, say, compiling):
        self.progress, self.say, self.compiling = progress, say, compiling
        self.rate0 = None

    def epoch_start(self, state, epoch, t0):
        self.rate0 = None    # (time, batches done) the ETA is measured from: after compiling

    def batch_end(self, state, info):
        done, t0 = info["done"], info["t0"]
        if self.compiling:
            self.compiling = False
            self.rate0 = (time.perf_counter(), done)
            self.say(f"first batch done in {self.rate0[0] - t0:.1f} s (compilation included)")
        if self.progress is not None:
            t_r, d_r = (t0, 0) if self.rate0 is None else self.rate0
            el = time.perf_counter() - t_r
            nb = info["n_batches"]
            eta = (el / (done - d_r) * (nb - info["batch"]) if done > d_r else float("nan"))
            self.progress(dict(epoch=info["epoch"], epochs=info["epochs"], batch=info["batch"],
                               n_batches=nb, loss=info["loss"], accuracy=info["accuracy"],
                               eta_s=eta))


class HealthHook:
    """A :class:`~neurosim.training.health.RunawayActivityWarning` per epoch and
    population that fired at every forward step (the loop's activity monitor)."""

    def __init__(self, monitor, T):
        self.monitor, self.T = monitor, T

    def epoch_end(self, state, record):
        for pop, frac in self.monitor.runaway():
            warnings.warn(
                f"runaway activity in population {pop!r}: {100 * frac:.1f} % of its neurons "
                f"fired at every one of the T = {self.T} forward steps in epoch "
                f"{record['epoch']} (its rates carry no information and SPIDE's mask stops its "
                "gradients); lower the learning rate or the input scale, or raise its "
                "threshold v_th", health.RunawayActivityWarning, stacklevel=2)


class DiagnoseHook:
    """After every epoch, the backward diagnostics on the first ``n`` training samples
    (:func:`neurosim.training.diagnose.diagnose`), kept in ``state.diagnostics`` (and so in
    the checkpoint)."""

    def __init__(self, spec, n, n_threads):
        self.spec, self.n, self.n_threads = spec, n, n_threads

    def epoch_end(self, state, record):
        spec, model = self.spec, state.model
        x = model_input(model.net, model.input, spec.data.x_train[:self.n])
        d = _diagnostics.diagnose(model, spec.cfg, x, spec.data.y_train[:self.n],
                                  seed=spec.cfg.seed, n_threads=self.n_threads)
        d["epoch"] = record["epoch"]
        state.diagnostics = d


class EpochReport:
    """One line per epoch (after its checkpoint), preceded by the diagnostics table when
    one was computed."""

    def __init__(self, say, epochs, diagnose):
        self.say, self.epochs, self.diagnose = say, epochs, diagnose

    def epoch_saved(self, state, r):
        if self.diagnose and state.diagnostics is not None:
            for line in _diagnostics.format_table(state.diagnostics):
                self.say(line)
        self.say(f"epoch {r['epoch']}/{self.epochs}: loss {r['train_loss']:.4f}, train acc "
                 f"{r['train_accuracy']:.4f}, test acc {r['test_accuracy']:.4f} "
                 f"({r['wall_s']:.1f} s)")


# ======================================================================================
# training
# ======================================================================================
def default_memory(net):
    """(description, parts) of the run ``neurosim info`` reports: a training step at the
    model file's ``[training]`` batch, T and T_b (SPIDE's defaults where it gives none)
    when the network can be trained, else simulating one sample for 100 steps."""
    tr = dict((getattr(net, "metadata", None) or {}).get("training") or {})
    trainable = tr and sum(p.kind == "input" for p in net.populations.values()) == 1 and \
        all(not p.neuron.forward_only for p in net.spiking_populations)
    if trainable:
        d = SPIDEConfig()
        B, T, Tb = (int(tr.get(k, getattr(d, k))) for k in ("batch_size", "T", "T_b"))
        classes = (tr.get("readout") or {}).get("classes") if isinstance(
            tr.get("readout"), dict) else None
        masks = [k for k, p in (tr.get("dropout") or {}).items() if p > 0]
        parts = memory.estimate_run_bytes(net, "train", B, T, Tb, masks=masks, classes=classes)
        return f"a training step at batch {B} (T {T}, T_b {Tb})", parts
    parts = memory.estimate_run_bytes(net, "simulate", 1, 100)
    return "simulating 1 sample x 100 steps", parts


def check_memory(spec, state, n_threads=None):
    """Refuse (one line) a run whose memory estimate (:func:`neurosim.memory.estimate_run_bytes`,
    task ``"train"``) exceeds ``NEUROSIM_MAX_RUN_MB``; returns the estimate."""
    cfg, d = spec.cfg, spec.data
    masks = [k for k, p in cfg.dropout.items() if p > 0]
    est = memory.estimate_run_bytes(
        state.model.net, "train", min(cfg.batch_size, max(1, len(d.x_train))), cfg.T, cfg.T_b,
        masks=masks, n_threads=n_threads,
        classes=spec.classes if state.model.readout else None,
        data_bytes=memory.arrays_bytes(d),       # the data set and the run's subsets
        eval_batch=min(memory.EVAL_BATCH, max(1, len(d.x_test))))
    return memory.check_run_memory(
        est, f"training {spec.model!r} (batch {cfg.batch_size}, T {cfg.T}, T_b {cfg.T_b})",
        "lower batch_size, T or T_b ([training] in the model file, or --batch-size), or "
        "--max-train / --max-test")


def train(model=None, dataset=None, *, data_dir=None, out="train-run.h5", overrides=None,
          resume=False, force=False, seed=None, max_train=None, max_test=None, report=None,
          progress=None, n_threads=None, command=None, checkpoint_every=None,
          handle_signals=True, engine=None, diagnose=None):
    """Train a model file on a data set with SPIDE; returns the summary dict.

    Parameters
    ----------
    model : str or Network, optional
        Model name (``neurosim/data/models/*.toml``) or path; default :data:`DEFAULT_MODEL`; or a
        :class:`~neurosim.Network` built in code (with ``metadata`` as :func:`neurosim.models.load_model`
        sets it; trained in place).  With ``resume`` the run file holds the network; a
        model given then must be the stored one.
    dataset : str, optional
        Default: the model's ``[training] dataset`` (``digits`` if none).
    overrides : dict, optional
        :class:`SPIDEConfig` fields overriding the model's ``[training]`` table.  With
        ``resume`` only ``epochs`` may differ from the stored configuration.
    resume : bool
        Continue the run stored in ``out`` (after its last complete epoch, or in the middle
        of an epoch for a checkpoint written on SIGINT or by ``checkpoint_every``).
    force : bool
        Without ``resume``: replace an existing ``out`` (its content is kept until the first
        checkpoint of the new run is complete).
    seed : int, optional
        Seed of weights, batches and dropout (default 0; on resume the stored one).
    max_train, max_test : int, optional
        Use only the first samples of each split (quick runs, tests).  Stored in the run
        file and reused on resume.
    report : callable(str), optional
        Receives one line per epoch (and notes such as removed temporary files).
    progress : callable(dict), optional
        Receives a dict after every batch (epoch, batch, n_batches, loss, accuracy, eta_s).
        ``eta_s`` is measured from the batches after the one that compiled the kernels
        (NaN right after that batch, when nothing is measured yet).
    checkpoint_every : float, optional
        Also write a mid-epoch checkpoint when this many seconds have passed since the last
        one (long epochs).  Checkpoints never change the results.
    handle_signals : bool
        Catch SIGINT / SIGTERM (main thread only) to stop within a step of the running
        phase (abandoning its batch) or between batches, with a checkpoint of the last
        completed batch, raising :class:`TrainingInterrupted`.
    engine : optional
        Runs every batch's SPIDE step sharded (data parallel over MPI ranks:
        :class:`neurosim.training.distributed.ShardedEngine`, on rank 0: phases, loss and
        gradient block sums on every rank, reduced in a fixed order); batch order, masks,
        update and checkpoints run here as in one process, so the run is the same bit for
        bit (``docs/distributed.md``).
    diagnose : int, optional
        After every epoch, compare the spiking backward phase with the exact linear solve
        on the first ``diagnose`` training samples (:func:`neurosim.training.diagnose.diagnose`,
        dropout masks from the run's seed): the per-layer table goes to ``report`` and the
        last epoch's numbers to ``/training/diagnostics`` of the run file (and
        ``summary["diagnostics"]``).  Does not change the training.

    Raises
    ------
    TrainingError
        Bad options, a model that does not fit the data, an incompatible run file
        (:class:`ResumeError`: structured, option / given / stored).
    NumericalError
        NaN / inf during training (the run file keeps the last good checkpoint).
    CheckpointError
        A checkpoint could not be written (the previous one is intact).
    TrainingInterrupted
        SIGINT / SIGTERM; a checkpoint was written.
    """
    say = report if report is not None else (lambda msg: None)
    if checkpoint_every is not None:
        checkpoint_every = V.check_real(checkpoint_every, "checkpoint_every", positive=True)
    t_start = time.perf_counter()
    # one run owns the output from before it is read (--resume, the exists check) until
    # after its last checkpoint (docs/reliability.md, "One run per output")
    with atomic.output_lock(out, command):
        spec, state = resolve_run(model, dataset, out=out, data_dir=data_dir, overrides=overrides,
                                  resume=resume, force=force, seed=seed, max_train=max_train,
                                  max_test=max_test, command=command)
        atomic.check_writable(spec.out)
        check_memory(spec, state, n_threads)
        for p in atomic.remove_stale_temps(spec.out):
            say(f"removed {p.name}, a temporary file left by an interrupted write")
        if diagnose is not None:
            diagnose = min(V.check_int(diagnose, "diagnose", low=1), len(spec.data.x_train))
        net = state.model.net
        monitor = health.ActivityMonitor([p.name for p in net.spiking_populations])
        checkpoint = Checkpointer(spec, state, checkpoint_every, resumed=resume)
        compiling = not kernels.cache_warm("engine.run_phase", "spide.weight_grad", cuba=False)
        hooks = [ProgressHook(progress, say, compiling), HealthHook(monitor, spec.cfg.T)]
        if diagnose:
            hooks.append(DiagnoseHook(spec, diagnose, n_threads))
        hooks.append(EpochReport(say, spec.cfg.epochs, bool(diagnose)))
        if engine is not None:
            engine.start(state.model)
        # SIGINT / SIGTERM: a stop request, honoured within a step inside a phase (not
        # for the sharded engine: its other ranks would wait for this one's shard)
        with _interrupt.stop_on_signals(handle_signals, in_phase=engine is None) as stop, \
                _interrupt.compile_note(lambda: f"{str(spec.out)!r} holds the checkpoint "
                                        f"{checkpoint.what}" if checkpoint.what else
                                        "nothing was written"):
            if compiling:
                where = "" if kernels.CACHE_DIR is None else " in " + str(kernels.CACHE_DIR)
                later = (f"later runs load them from the cache{where}" if kernels.CACHE_PERSISTENT
                         else "no writable cache folder (NUMBA_CACHE_DIR, the package, "
                              "~/.cache): every run compiles")
                say("compiling the engine's kernels during the first batch (once after "
                    f"installing or updating neurosim: 30-50 s on 2 cores; {later})")
            epoch0 = state.epoch
            run_epochs(spec, state, hooks, checkpoint, stop, monitor=monitor, n_threads=n_threads,
                       engine=engine)
        h = state.history
        if epoch0 >= spec.cfg.epochs and not h["epoch"]:
            raise TrainingError("nothing to do: 0 epochs")
        return dict(model=spec.model, dataset=spec.dataset, seed=spec.seed, epochs=spec.cfg.epochs,
                    test_accuracy=h["test_accuracy"][-1] if h["test_accuracy"] else None,
                    train_accuracy=h["train_accuracy"][-1] if h["train_accuracy"] else None,
                    wall_s=time.perf_counter() - t_start, train_wall_s=float(sum(h["wall_s"])),
                    n_train=int(len(spec.data.x_train)), n_test=int(len(spec.data.x_test)),
                    out=str(spec.out),
                    ops_per_sample={k: h[k][-1] for k in OPS} if h["epoch"] else {},
                    config=spec.cfg.to_dict(), diagnostics=state.diagnostics)


def evaluate_run(path, dataset=None, *, data_dir=None, max_test=None, n_threads=None):
    """Test accuracy and forward op counts of a training run file."""
    net, model, cfg, st = restore(path)
    ds_name = dataset or st["dataset"]
    _, _, _, xte, yte = load_data(ds_name, data_dir)
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    _check_data_fits(model, st["model"], ds_name, xte, yte, int(st["classes"]))
    xte = model_input(net, model.input, xte)
    d = evaluate(model, cfg, xte, yte, n_threads=n_threads)
    d.update(dataset=ds_name, n_test=int(len(xte)), epoch=int(st["epoch"]))
    return d
