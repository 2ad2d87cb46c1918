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
"""
import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path

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


def check_destination(path, force=False):
    """Raise if ``path`` cannot be (over)written: a folder, a missing folder, or an existing
    file without ``force``.  Returns ``Path(path)``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {str(path)!r} is a directory; give a file name such "
                                "as run.h5")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist; create "
                                "it first or choose another output path")
    if path.exists() and not force:
        raise FileExistsError(f"output {str(path)!r} already exists; pass force=True "
                              "(--force on the command line) to overwrite it")
    return path


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
            raise FileExistsError(f"output {str(path)!r} appeared while writing; pass "
                                  "force=True to overwrite it") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise FileExistsError(f"output {str(path)!r} already exists") from None
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
