"""Safe, atomic checkpoint (and text file) I/O, and the lock file of a run's folder.

Every checkpoint in video_gc is read with ``torch.load(weights_only=True)``, so
no code in a file can run, and written to a temporary name and renamed, so an
interrupted save never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import socket
import tempfile
import time
import zipfile
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class LockedError(RuntimeError):
    """Another run holds the lock file; the message names it."""


_TMP_PREFIX = ".tmp_"
# mkstemp's names: the prefix, 8 random characters from [a-z0-9_], then the suffix (atomic_save's target name).
_TMP_NAME = re.compile(rf"^{re.escape(_TMP_PREFIX)}[a-z0-9_]{{8}}.")


def safe_torch_load(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it needs more than plain tensors and containers to unpickle "
            f"(weights_only=True). Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as err:
        # Bytes that are no zip archive reach the legacy unpickler, which fails in many ways.
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})"
        ) from err


def _umask() -> int:
    """The process's umask (os.umask only reads it by setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists, tuples): the least torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _size(num_bytes: int) -> str:
    return f"{num_bytes:,} bytes ({num_bytes / 2**20:,.1f} MiB)"


def _save_error(err: BaseException, path: str, obj: Any) -> CheckpointError:
    """One message for a failed save: the cause (torch wraps the OSError of a full disk in a
    RuntimeError), the folder, the bytes the state needs and, where it can be read, the space free."""
    cause = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__context__
    reason = (cause.strerror or str(cause)) if cause is not None else str(err).splitlines()[0]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f", which has {_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = ""
    return CheckpointError(f"cannot save {path}: {reason}. The file needs at least {_size(_tensor_bytes(obj))} in "
                           f"{folder}{free}; no existing file was changed.")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename.

    The file gets the permissions a plain ``open`` would give (the umask), not mkstemp's 0600,
    so a lab group can read checkpoints. A failure (full disk, unwritable folder) raises
    CheckpointError and leaves any earlier file at ``path`` as it was.
    """
    tmp = None
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as err:
        raise _save_error(err, path, obj) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temp_files(folder: str) -> list[str]:
    """Delete the temporary files that atomic_save leaves when its process is killed mid-save;
    returns their paths. Call it only while no other process saves into ``folder``."""
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if _TMP_NAME.match(name)]
    for path in stale:
        os.remove(path)
    return stale


def atomic_write_text(path: str, text: str) -> None:
    """Write a text file under a temporary name in the same folder, then rename it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Lock file: one run per folder
# ---------------------------------------------------------------------------
def _job_id() -> str:
    """The scheduler job this process belongs to (kept across a SLURM requeue and torchrun's
    restarts), "-" when none."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or "-"


def _holder_line() -> str:
    return f"{socket.gethostname()} {os.getpid()} {_job_id()}\n"


def _read_holder(path: str) -> tuple[str, int, str] | None:
    """(host, pid, job) written in a lock file; None when the file is gone."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        host, pid, *job = text.split()
        return host, int(pid), job[0] if job else "-"
    except (ValueError, IndexError):
        raise LockedError(f"{path} exists but does not name its holder (it holds {text[:80]!r}); if no run "
                          f"uses this folder, delete it") from None


def _holder_alive(host: str, pid: int, job: str) -> bool:
    """Whether the holder may still run. A process of another machine cannot be checked, so it
    may, unless it belongs to this very job: an earlier attempt of a requeued or restarted job is
    gone by the time the next one starts."""
    if host != socket.gethostname():
        return job == "-" or job != _job_id()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return True


def _dead_holder(path: str) -> tuple[str, int, str] | None:
    """The holder of the lock file ``path`` when it no longer runs; None when the file is gone;
    LockedError when the holder may still run or the file names none."""
    holder = _read_holder(path)
    if holder is not None and _holder_alive(*holder):
        host, pid, _ = holder
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
        raise LockedError(f"another run uses this OUTPUT_DIR: process {pid} on {host} holds {path} (since {since}). "
                          f"Wait for it to finish or choose another OUTPUT_DIR; if that process is not a video_gc "
                          f"run, delete {path}.")
    return holder


def _create_exclusively(path: str, mine: str) -> None:
    """Put the lock ``path`` in place with its content, FileExistsError when it exists. A hard link
    of a file written in full means no reader ever sees it empty; a file system without hard
    links gets an exclusive create instead."""
    try:
        os.link(mine, path)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_holder_line())


def acquire_lock(path: str) -> str | None:
    """Create the lock file ``path`` atomically holding this host, pid and job.

    A lock left by a dead process of this host, or by an earlier attempt of this job (SLURM
    requeue, torchrun restart) on any host, is taken over; the return value then describes it
    (for a warning), else it is None. A lock whose holder may still run raises LockedError
    naming it, as does one that names no holder: a lock is never taken over on a guess.
    """
    taken_over = None
    mine = f"{path}.{socket.gethostname()}.{os.getpid()}"
    with open(mine, "w", encoding="utf-8") as f:
        f.write(_holder_line())
    try:
        while True:
            try:
                _create_exclusively(path, mine)
                return taken_over
            except FileExistsError:
                dead = _dead_holder(path)
                # Looked at twice, removed only if unchanged: a run that took it over meanwhile keeps it.
                if dead is not None and _dead_holder(path) == dead:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
                    taken_over = f"process {dead[1]} on {dead[0]}, no longer running"
    finally:
        os.remove(mine)


def release_lock(path: str) -> None:
    """Remove the lock file if this process holds it."""
    try:
        mine = (_read_holder(path) or ())[:2] == (socket.gethostname(), os.getpid())
    except LockedError:
        mine = False
    if mine:
        os.remove(path)
