"""Event streams in tonic's convention, binned to frames for SPIDE-style inputs.

An event stream is a numpy structured array with fields ``x, y, t, p`` (tonic's default
dtype: int16, int16, int64, bool) or, for audio sensors, ``t, x, p``.  ``t`` is an integer
time in microseconds, ``p`` the polarity (bool or an integer in ``[0, P)``).  The sensor is
described by ``sensor_size = (W, H, P)`` (width, height, polarities); audio sensors have
``H = 1``.  With ``P = 1`` polarities are merged (tonic does the same).

* :func:`check_events` validates fields, dtypes and ranges;
* :func:`to_frames` counts events per pixel into ``n_frames`` frames, float32
  ``[n_frames, P, H, W]``: ``'equal_count'`` as SpikingJelly's ``split_by='number'`` (used
  by SPIDE for CIFAR10-DVS, 30 frames) or ``'equal_time'`` (equal-duration bins);
* :func:`resize_frames` resizes frames bilinearly (numpy only), e.g. 128 -> 48 as SPIDE;
* :func:`save_events` / :func:`load_events` store a stream in a ``.npz`` (or read a tonic
  ``.npy``) without pickle.
"""
import numbers
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import DataError
from .._validate import NeurosimError

#: tonic's default event dtype (``events_struct``)
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
#: tonic's audio event dtype
AUDIO_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("p", bool)])
FRAME_MODES = ("equal_count", "equal_time")
#: what numpy and zipfile raise on damaged .npy / .npz bytes (found by tests/test_fuzz.py)
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
                IndexError, AttributeError, SyntaxError, tokenize.TokenError, MemoryError,
                TypeError, UnicodeError, struct.error, OverflowError, NotImplementedError,
                RuntimeError)   # zipfile: "File ... is encrypted, password required"


def check_sensor_size(sensor_size):
    """``(W, H, P)`` as a tuple of three positive ints."""
    try:
        ss = tuple(sensor_size)
    except TypeError:
        ss = None
    if (ss is None or len(ss) != 3
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in ss)
            or not all(s >= 1 for s in ss)):
        raise NeurosimError(f"sensor_size must be (W, H, P), three positive ints (tonic order: "
                            f"width, height, polarities; e.g. (128, 128, 2) for CIFAR10-DVS, "
                            f"(700, 1, 1) for audio), got {sensor_size!r}")
    return tuple(int(s) for s in ss)


def make_events(x, t, p=None, y=None):
    """Build a tonic structured array from columns (audio form when ``y`` is None)."""
    x = np.asarray(x)
    t = np.asarray(t)
    p = np.zeros(x.shape, bool) if p is None else np.asarray(p)
    if y is None:
        ev = np.empty(x.shape[0], AUDIO_DTYPE)
    else:
        ev = np.empty(x.shape[0], EVENT_DTYPE)
        ev["y"] = y
    ev["x"], ev["t"], ev["p"] = x, t, p
    return ev


def check_events(events, sensor_size, source="events"):
    """Validate a tonic event array against ``sensor_size = (W, H, P)``.

    Returns ``(events, sensor_size)``.  Raises :class:`DataError` (naming ``source``, e.g. the
    file) for missing fields, non-integer coordinates or times and out-of-range values."""
    W, H, P = check_sensor_size(sensor_size)
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        got = (f"array of dtype {events.dtype}" if isinstance(events, np.ndarray)
               else type(events).__name__)
        raise DataError(f"{source}: events must be a structured numpy array with fields "
                        f"(x, y, t, p) or (t, x, p) as tonic produces, got {got}; build one "
                        f"with neurosim.datasets.events.make_events(x, t, p, y)")
    if events.ndim != 1:
        raise DataError(f"{source}: events must be 1-D (one record per event), got shape "
                        f"{events.shape}; use events.ravel()")
    names = events.dtype.names
    need = ("x", "y", "t") if "y" in names else ("t", "x")
    if P > 1:
        need = need + ("p",)
    missing = [f for f in need if f not in names]
    if missing:
        raise DataError(f"{source}: events lack field(s) {missing}; fields present: "
                        f"{list(names)}; tonic events have (x, y, t, p) or, for audio, (t, x, p)"
                        + ("; without 'p' use P = 1 in sensor_size" if missing == ["p"] else ""))
    if "y" not in names and H != 1:
        raise DataError(f"{source}: audio-form events (t, x, p) need sensor_size (W, 1, P), got "
                        f"H = {H}")
    for f in ("x", "y"):
        if f in names and events.dtype[f].kind not in "iu":
            raise DataError(f"{source}: field '{f}' must be an integer pixel index, got dtype "
                            f"{events.dtype[f]}")
    if events.dtype["t"].kind not in "iu":
        raise DataError(f"{source}: field 't' must hold integer microseconds (tonic uses "
                        f"int64), got dtype {events.dtype['t']}; convert seconds with "
                        f"np.round(t * 1e6).astype(np.int64)")
    if "p" in names and events.dtype["p"].kind not in "biu":
        raise DataError(f"{source}: field 'p' must be bool or integer, got dtype "
                        f"{events.dtype['p']}")
    limits = [("x", W, "W")] + ([("y", H, "H")] if "y" in names else [])
    if P > 1:
        limits.append(("p", P, "P"))
    for f, n, sym in limits:
        col = events[f]
        if col.size == 0:
            continue
        bad = (col < 0) | (col >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            hint = ("; map -1/+1 polarities to 0/1 with p = (p > 0)"
                    if f == "p" and int(col[i]) < 0 else "")
            raise DataError(f"{source}: {f} = {int(col[i])} at event {i} is outside [0, {n}) "
                            f"given by sensor_size {sym} = {n} ({int(bad.sum())} events out of "
                            f"range); check sensor_size = (W, H, P){hint}")
    return events, (W, H, P)


def to_frames(events, sensor_size, n_frames, mode="equal_count"):
    """Count events per pixel into ``n_frames`` frames: float32 ``[n_frames, P, H, W]``.

    ``mode='equal_count'`` (SpikingJelly ``split_by='number'``, SPIDE's CIFAR10-DVS): with
    ``N`` events in stream order and ``d = N // n_frames``, frame ``k < n_frames - 1`` holds
    events ``[k d, (k + 1) d)`` and the last frame the rest (so it gets the remainder, and all
    events when ``N < n_frames``).  Times must be non-decreasing.

    ``mode='equal_time'``: the span ``[t_min, t_max]`` is split into ``n_frames`` bins of
    equal duration ``(t_max - t_min + 1) / n_frames`` µs; event ``t`` goes to frame
    ``floor((t - t_min) * n_frames / (t_max - t_min + 1))``.

    Every event lands in exactly one frame, so per-polarity totals are conserved.  Audio
    events (``t, x, p``) give ``[n_frames, P, 1, W]``.
    """
    events, (W, H, P) = check_events(events, sensor_size)
    if isinstance(n_frames, bool) or not isinstance(n_frames, numbers.Integral) or n_frames < 1:
        raise NeurosimError(f"n_frames must be a positive int, got {n_frames!r}")
    n_frames = int(n_frames)
    if mode not in FRAME_MODES:
        raise NeurosimError(f"mode must be one of {list(FRAME_MODES)}, got {mode!r}")
    n = events.shape[0]
    if n == 0:
        return np.zeros((n_frames, P, H, W), np.float32)
    t = events["t"].astype(np.int64)
    if mode == "equal_count":
        if np.any(t[1:] < t[:-1]):
            i = int(np.flatnonzero(t[1:] < t[:-1])[0])
            raise DataError(f"events: times must be non-decreasing for mode='equal_count' "
                            f"(t[{i}] = {t[i]} > t[{i + 1}] = {t[i + 1]}); sort with "
                            f"events[np.argsort(events['t'], kind='stable')]")
        d = n // n_frames
        idx = np.arange(n, dtype=np.int64)
        frame = np.full(n, n_frames - 1, np.int64) if d == 0 else np.minimum(idx // d,
                                                                              n_frames - 1)
    else:
        t0 = int(t.min())
        span = int(t.max()) - t0 + 1
        if span * n_frames >= 2 ** 62:
            raise NeurosimError(f"events span {span} µs; with {n_frames} frames the bin index "
                                f"overflows int64; check that t is in microseconds")
        frame = ((t - t0) * n_frames) // span
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64) if "y" in events.dtype.names else np.zeros(n, np.int64)
    p = events["p"].astype(np.int64) if P > 1 else np.zeros(n, np.int64)
    flat = ((frame * P + p) * H + y) * W + x
    counts = np.bincount(flat, minlength=n_frames * P * H * W)
    return counts.reshape(n_frames, P, H, W).astype(np.float32)


def _resize_weights(n_in, n_out, antialias):
    """``[n_out, n_in]`` linear-interpolation weights with half-pixel centres."""
    scale = n_in / n_out
    support = max(scale, 1.0) if antialias else 1.0
    centres = (np.arange(n_out) + 0.5) * scale
    src = np.arange(n_in) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centres[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def resize_frames(frames, size, antialias=True):
    """Bilinear resize of the last two axes of ``frames`` (``[..., H, W]``) to ``size``.

    ``size`` is an int (square) or ``(h, w)``.  Pixel centres are aligned at half-pixel
    positions.  With ``antialias=True`` (default) a downscale widens the triangle filter by
    the scale factor, which is what PIL's ``Image.resize(..., BILINEAR)`` does (and so
    torchvision's ``Resize`` on PIL images, the path SPIDE's CIFAR10-DVS pipeline takes);
    ``antialias=False`` gives ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False)``.  Upscaling is the same either way.  Returns float32 (float64 for
    float64 input); totals are not conserved (it interpolates values, not counts).
    """
    f = np.asarray(frames)
    if f.ndim < 2:
        raise NeurosimError(f"resize_frames: frames must be [..., H, W], got shape {f.shape}")
    if f.dtype.kind not in "biuf":
        raise TypeError(f"resize_frames: frames must be numeric, got dtype {f.dtype}")
    if isinstance(size, numbers.Integral):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise NeurosimError(f"resize_frames: size must be an int or (h, w), got {size!r}") from None
    if h < 1 or w < 1 or 0 in f.shape[-2:]:
        raise NeurosimError(f"resize_frames: sizes must be positive, got input "
                            f"{f.shape[-2:]} and size {(h, w)}")
    out_dtype = np.float64 if f.dtype == np.float64 else np.float32
    wy = _resize_weights(f.shape[-2], h, antialias)
    wx = _resize_weights(f.shape[-1], w, antialias)
    out = wy @ f.astype(np.float64) @ wx.T
    return out.astype(out_dtype)


def save_events(path, events, sensor_size, *, force=False):
    """Write ``events`` and ``sensor_size`` to ``path`` (``.npz``, no pickle), atomically
    (:mod:`neurosim.io.atomic`); an existing ``path`` is replaced only with ``force``."""
    from ..io.atomic import atomic_open
    events, ss = check_events(events, sensor_size)
    with atomic_open(path, "wb", force=force) as fh:
        np.savez(fh, events=events, sensor_size=np.asarray(ss, np.int64))
    return Path(path)


def load_events(path, sensor_size=None):
    """Read an event stream: ``.npz`` from :func:`save_events` (keys ``events`` and
    ``sensor_size``) or a ``.npy`` holding a tonic structured array (then ``sensor_size`` is
    required).  Pickled objects are refused.  Returns ``(events, sensor_size)``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file" + (f" (folder {p.parent} exists)"
                                                if p.parent.is_dir() else ""))
    try:
        obj = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{p}: cannot read it without pickle ({e}); event files must hold "
                            f"a plain structured array") from e
        raise DataError(f"{p}: not a readable .npy/.npz file ({e})") from e
    except _READ_ERRORS as e:
        raise DataError(f"{p}: not a readable .npy/.npz file ({type(e).__name__}: {e})") from e
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            if "events" not in obj.files:
                raise DataError(f"{p}: key 'events' is missing (keys: {obj.files}); write "
                                f"event files with neurosim.datasets.save_events")
            try:
                events = obj["events"]
                stored = obj["sensor_size"] if "sensor_size" in obj.files else None
            except _READ_ERRORS as e:
                raise DataError(f"{p}: cannot read its arrays ({type(e).__name__}: {e}); the "
                                "file is truncated or damaged") from e
        if stored is not None:
            if stored.dtype.kind not in "iu" or stored.size != 3 or np.any(stored < 1):
                raise DataError(f"{p}: the stored sensor_size must be three positive integers "
                                f"(W, H, P), got {stored!r}; the file is damaged or was not "
                                "written by save_events")
            stored = tuple(int(s) for s in np.ravel(stored))
            if sensor_size is not None and tuple(sensor_size) != stored:
                raise DataError(f"{p}: stored sensor_size {stored} differs from the "
                                f"sensor_size {tuple(sensor_size)} passed; pass None to use "
                                f"the stored one")
            sensor_size = stored
    else:
        events = obj
    if sensor_size is None:
        raise DataError(f"{p}: the file stores no sensor_size; pass sensor_size=(W, H, P)")
    return check_events(events, sensor_size, source=str(p))
