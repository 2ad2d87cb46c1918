"""Atomic, durable output files: a reader sees the old file or the new one, never half of one.

Every file neurosim writes goes through here (HDF5 through
:func:`neurosim.io.runfile.atomic_h5`, anything else through :func:`atomic_open`):

1. the destination is checked first: not a folder, its folder exists, and an existing
   file is only replaced with ``force=True`` (:func:`check_destination`);
2. the content is written to a temporary file **in the same folder** (so the final rename
   never crosses file systems), named ``.<name>.tmp-<host>-<pid>-<random>``;
3. the temporary file is flushed and ``fsync``'ed, then renamed over the destination
   (``os.replace``; without ``force`` a hard link, which fails instead of overwriting a
   file that appeared meanwhile), and the folder is ``fsync``'ed;
4. on any exception, including ``KeyboardInterrupt``, the temporary file is removed and
   the destination is untouched.

A process killed between 2 and 3 (SIGKILL, power loss) leaves its temporary file behind,
never a partial destination.  :func:`remove_stale_temps` deletes such leftovers: those
whose host is this machine and whose process no longer runs (a live writer's file is never
touched).  Every atomic write of a destination calls it first, so a resumed training run
cleans up after the run that was killed.

One run owns an output at a time: :func:`output_lock` holds an OS lock (``flock``) on
``<out>.lock`` for the whole command (a training run: from before it reads ``--out`` to
after its last checkpoint); a second process asking for the same output is refused at
once with :class:`OutputLockedError`, naming the owner (pid, host, command, start time,
written into the lock file).  The operating system releases the lock when its process
ends, however it ends, so a killed run never blocks the next one.

Space: :func:`check_free_space` compares a file's size with the free space of its folder
before it is written, so a full disk is one clear error (``OSError`` ENOSPC) instead of a
half-written temporary file.
"""
import contextlib
import errno
import json
import os
import re
import shlex
import socket
import sys
import tempfile
import time
from pathlib import Path

from .. import _interrupt
from .. import _validate as V

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")[:32]


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder):
    """fsync a folder (makes a rename durable); silently skipped where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_folder(path):
    """Raise if ``path`` is a folder or its folder does not exist."""
    if path.is_dir():
        raise IsADirectoryError(f"output {str(path)!r} is a directory; give a file name such "
                                "as run.h5")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist; create "
                                "it first or choose another output path")


def check_destination(path, force=False):
    """Raise if ``path`` cannot be (over)written: a folder, a missing folder, or an existing
    file without ``force``.  Returns ``Path(path)``."""
    path = Path(path)
    _check_folder(path)
    if path.exists() and not force:
        raise OutputExistsError(path)
    return path


class OutputExistsError(FileExistsError):
    """The output exists and ``force`` was not given.  ``str()`` speaks to a Python caller
    (``force=True``); the command line prints :attr:`cli_message` (``--force``)."""

    def __init__(self, path, how="already exists"):
        self.path = Path(path)
        self.how = how
        super().__init__(f"output {str(path)!r} {how}; pass force=True to overwrite it")

    @property
    def cli_message(self):
        return f"output {str(self.path)!r} {self.how}; pass --force to overwrite it"


def check_writable(path):
    """Raise :class:`PermissionError` now, rather than after hours of work, if no file can be
    created in the folder of ``path`` (tries to create and delete a temporary file)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=path.parent)
    except OSError as e:
        raise PermissionError(f"cannot create files in the output folder {str(path.parent)!r} "
                              f"({e.strerror or e}); choose another output path") from e
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def temp_prefix(path, pid=None):
    """Prefix of the temporary files of ``path`` written by process ``pid`` on this host."""
    path = Path(path)
    return f".{path.name}.tmp-{_HOST}-{os.getpid() if pid is None else pid}-"


def new_temp(path):
    """Create an empty temporary file next to ``path``, with the usual permissions."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the usual mode
    except OSError:  # pragma: no cover - chmod of our own fresh file does not fail
        pass
    return Path(tmp)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    return True


def stale_temps(path):
    """Temporary files of ``path`` left by dead processes of this host."""
    path = Path(path)
    pat = re.compile(re.escape(f".{path.name}.tmp-{_HOST}-") + r"(\d+)-")
    out = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return out
    for e in entries:
        m = pat.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            out.append(Path(e.path))
    return out


def remove_stale_temps(path):
    """Delete :func:`stale_temps` of ``path``; returns the deleted paths."""
    removed = []
    for p in stale_temps(path):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def commit(tmp, path, force=False):
    """fsync the complete temporary file ``tmp`` and move it to ``path`` atomically."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if force:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # atomic and never overwrites
        except FileExistsError:
            raise OutputExistsError(path, "appeared while writing") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise OutputExistsError(path) from None
            os.replace(tmp, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path, *, force=False):
    """A temporary file name in ``path``'s folder, for writers that take a file name
    (``nir.write``, ``h5py``); on success it becomes ``path`` atomically::

        with atomic_path("graph.nir", force=force) as tmp:
            nir.write(tmp, graph)

    On an exception inside the block the temporary file is removed and ``path`` is
    untouched.  Without ``force`` an existing ``path`` raises :class:`FileExistsError`.
    """
    path = check_destination(path, force)
    remove_stale_temps(path)
    tmp = new_temp(path)
    try:
        yield tmp
        commit(tmp, path, force)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="wb", *, force=False, encoding=None, newline=None):
    """Open a temporary file for writing; on success it becomes ``path`` atomically.

    ``mode`` is ``"wb"`` or ``"w"`` (text, with ``encoding`` / ``newline``).  Use for every
    non-HDF5 output (CSV, JSON, PNG, ``.npz``)::

        with atomic_open("table.csv", "w", force=force) as fh:
            fh.write(text)

    On an exception inside the block the temporary file is removed and ``path`` is
    untouched.  Without ``force`` an existing ``path`` raises :class:`FileExistsError`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    kw = {} if mode == "wb" else dict(encoding=encoding or "utf-8", newline=newline)
    with atomic_path(path, force=force) as tmp:
        with open(tmp, mode, **kw) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(path, data, *, force=False):
    """Write ``data`` (bytes) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", force=force) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path, text, *, force=False, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", force=force, encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


# --------------------------------------------------------------------------------------
# free space
# --------------------------------------------------------------------------------------
#: bytes kept free beyond a file's own size (the file system's metadata, the folder entry).
SPACE_MARGIN = 1 << 20


def free_bytes(folder):
    """Bytes an unprivileged process may still write in ``folder`` (``statvfs``); None where
    the file system does not say."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):     # pragma: no cover - not POSIX
        return None
    return st.f_bavail * st.f_frsize


def _human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def check_free_space(path, nbytes):
    """Raise ``OSError(ENOSPC)`` with one clear line if the folder of ``path`` has less than
    ``nbytes`` (+ :data:`SPACE_MARGIN`) free; nothing is written."""
    path = Path(path)
    free = free_bytes(path.parent)
    if free is not None and free < nbytes + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"not enough space to write {str(path)!r}: it needs "
                      f"{_human(nbytes)}, the file system of {str(path.parent)!r} has "
                      f"{_human(free)} free; free some space or choose another output path")


def write_all(fd, data, path):
    """``os.write`` all of ``data`` to ``fd``; a failure (ENOSPC, EIO, ...) raises an
    ``OSError`` naming ``path``."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view[:1 << 24])
            view = view[n:]
    except OSError as e:
        raise OSError(e.errno, f"writing {str(path)!r} failed: {e.strerror or e}; the "
                      "destination is unchanged") from None


# --------------------------------------------------------------------------------------
# one run per output
# --------------------------------------------------------------------------------------
class OutputLockedError(V.NeurosimError):
    """Another live process owns the output (it holds :func:`output_lock` on it)."""

    def __init__(self, path, owner):
        self.path, self.owner = Path(path), dict(owner or {})
        o = self.owner
        who = (f"pid {o.get('pid', '?')} on host {o.get('host', '?')}, started "
               f"{o.get('started', '?')}: {o.get('command', '?')}") if o else "owner unknown"
        super().__init__(f"output {str(path)!r} is being written by another neurosim process "
                         f"({who}); wait for it to finish, stop it, or choose another output "
                         "path")


def lock_path(path):
    """The lock file of output ``path``: ``<path>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _read_owner(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        d = json.loads(raw.decode("utf-8", "replace") or "{}")
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def output_lock(path, command=None):
    """Own output ``path`` for the duration of the block: an exclusive, non-blocking
    ``flock`` on ``<path>.lock``.  If another process holds it, raise
    :class:`OutputLockedError` naming it (pid, host, command, start time).  The lock file
    is removed when the block ends; the OS releases the lock if the process dies (a stale
    lock file is then reused).  Raises the usual destination errors first (a folder, a
    missing folder, a folder without write permission)."""
    import fcntl
    path = Path(path)
    _check_folder(path)
    lp = lock_path(path)
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise PermissionError(f"cannot create the lock file {str(lp)!r} beside the output "
                                  f"({e.strerror or e}); choose another output path") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = _read_owner(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLockedError(path, owner) from None
            raise
        # the holder before us may have removed the file after we opened it: then our lock
        # is on an unlinked inode, and a third process could lock a new file; try again
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lp))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        owner = dict(pid=os.getpid(), host=socket.gethostname(),
                     started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     command=command or shlex.join(["neurosim"] + sys.argv[1:]))
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):      # the owner's description is a courtesy
            os.write(fd, json.dumps(owner).encode())
        _interrupt.LOCK_FILES.add(str(lp))      # removed by an exit during a compilation
        yield lp
    finally:
        _interrupt.LOCK_FILES.discard(str(lp))
        with contextlib.suppress(OSError):
            os.unlink(lp)                        # while still holding the lock
        os.close(fd)


def owns_output(fn):
    """Decorator: run ``fn`` holding :func:`output_lock` on its ``out`` keyword argument
    (when given; ``command``, if passed, is recorded as the owner's command)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        out = kw.get("out")
        if out is None:
            return fn(*args, **kw)
        with output_lock(out, kw.get("command")):
            return fn(*args, **kw)
    return wrapper
