"""Writing a tool's output without ever leaving a half-written or stray file behind.

:func:`check_output_path` turns every problem with an output path (a folder where a file is expected, a
missing or read-only parent, a parent that is a file) into one :class:`OutputPathError` line that says what
to do. :func:`written_atomically` lets a tool write into a temporary path beside the destination and moves
the result into place only once it is complete; on an error, Ctrl-C or SIGTERM the temporary is removed.

Standard library only, so that every tool can use it before importing torch.
"""
import contextlib
import errno
import os
import os.path as osp
import shutil
import signal
import tempfile
import threading
from typing import Iterator, Optional

from .user_errors import UserError

# Suffix of the staging folders that :func:`written_atomically` creates beside a destination.
STAGING_SUFFIX = '.part'
# Why a write failed for lack of room, by errno: what the user can do about it.
_NO_ROOM = {
    errno.ENOSPC: 'no space left on the disk; free some space or choose another location',
    errno.EFBIG: 'the file would exceed the file size limit (ulimit -f); raise the limit or write elsewhere',
    errno.EDQUOT: 'the disk quota is exceeded; free some space or choose another location',
}


class OutputPathError(UserError, ValueError):
    """An output path that cannot be written; the message names the problem and what to do, on one line."""


class OutputExistsError(UserError, FileExistsError):
    """Something is at an output path, and the tool was not asked to overwrite it (``--force``)."""


def _exists_error(path: str) -> OutputExistsError:
    return OutputExistsError(f'{path} exists; pass --force to overwrite it')


def _parent_problem(folder: str) -> Optional[str]:
    """Why nothing can be created in ``folder``, or None if something can."""
    if osp.isdir(folder):
        if not os.access(folder, os.W_OK | os.X_OK):
            return f'its folder {folder} is not writable; choose another location or fix its permissions'
        return None
    existing = folder
    while not osp.exists(existing):  # the nearest part of the path that exists
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        return f'{existing} is a file, not a folder; choose another location'
    return f'its folder {folder} does not exist; create it first (mkdir -p {folder})'


def check_output_path(path: str, kind: str = 'file', overwrite: bool = True) -> str:
    """Check that a file or folder can be written at ``path``.

    Args:
        path (str): The output path, relative or absolute; ``~`` is expanded.
        kind (str): 'file' or 'folder', what the tool writes there. Defaults to 'file'.
        overwrite (bool): Whether something already at ``path`` may be replaced (a tool's ``--force``).
            Defaults to True.

    Returns:
        str: The absolute path.

    Raises:
        OutputPathError: ``path`` holds the other kind of thing, or its parent folder is missing, is a
            file or is not writable, or a file path ends with a separator (``newdir/``).
        OutputExistsError: something is at ``path`` (a dangling symbolic link too) and ``overwrite`` is
            False; a ``FileExistsError``.
    """
    if kind not in ('file', 'folder'):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    given = path
    path = osp.abspath(osp.expanduser(path))
    if kind == 'file' and given.endswith((os.sep, '/')) and not osp.isdir(path):
        hint = '' if osp.exists(path) else f' (create the folder first: mkdir -p {given})'
        raise OutputPathError(f'cannot write {given}: a path ending in "/" names a folder; give the path of a '
                              f'file in it, e.g. {osp.join(given, "out")}{hint}')
    if kind == 'file' and osp.isdir(path):
        raise OutputPathError(f'cannot write {path}: it is a folder; give the path of a file')
    if kind == 'folder' and osp.exists(path) and not osp.isdir(path):
        raise OutputPathError(f'cannot write {path}: it is a file; give the path of a folder')
    problem = _parent_problem(osp.dirname(path))
    if problem:
        raise OutputPathError(f'cannot write {path}: {problem}')
    if not overwrite and osp.lexists(path):
        raise _exists_error(path)
    return path


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While inside (main thread only), SIGTERM raises ``SystemExit(143)``, so ``finally`` clauses run."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # the exit status of a process killed by the signal

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Defer SIGINT and SIGTERM, so that a rename sequence is not split by an interrupt."""
    signals = {signal.SIGINT, signal.SIGTERM}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def written_atomically(path: str, overwrite: bool = True) -> Iterator[str]:
    """Write a file or folder at ``path`` whole or not at all.

    Yields a temporary path (that does not exist yet) in a private staging folder beside ``path``; write
    the file or folder there. When the block ends normally, it replaces whatever is at ``path`` (an
    existing folder is moved aside first and then deleted, so check with :func:`check_output_path`, and
    decide whether to overwrite, before entering). On an exception, Ctrl-C or SIGTERM, the staging folder
    and everything in it is removed and the exception propagates; SIGTERM arrives as ``SystemExit(143)``.
    Only a SIGKILL can leave the staging folder (``.<name>.<random>.part``) behind.

    Args:
        path (str): The destination.
        overwrite (bool): Whether something that is at ``path`` when the result is moved there may be
            replaced. If False, a file is put in place by a hard link, which fails when the name is taken
            (so of two tools writing one new path, one wins and the other is refused), and the temporary
            is removed. Defaults to True.

    Yields:
        str: The temporary path to write.

    Raises:
        OutputPathError: the staging folder cannot be created beside ``path``, the block fails for lack of
            room (full disk, ``ulimit -f``, quota), or the result cannot be moved into place (for example a
            file where a folder is, or the reverse).
        OutputExistsError: ``overwrite`` is False and something is at ``path`` when the result is complete.

    Example:
        >>> with written_atomically('model.pth') as temporary:
        ...     torch.save(state, temporary)
    """
    path = osp.abspath(osp.expanduser(path))
    folder, name = osp.split(path)
    with _sigterm_as_exit():
        try:
            staging = tempfile.mkdtemp(prefix=f'.{name}.', suffix=STAGING_SUFFIX, dir=folder)
        except OSError as err:
            raise OutputPathError(f'cannot write {path}: {_parent_problem(folder) or err.strerror}') from None
        try:
            temporary = osp.join(staging, name)
            try:
                yield temporary
            except Exception as err:
                room = no_room_reason(err)
                if room is None:
                    raise
                raise OutputPathError(f'cannot write {path}: {room}; nothing was written') from None
            if not osp.lexists(temporary):
                raise FileNotFoundError(f'nothing was written to the temporary {temporary}')
            with _signals_blocked():
                if overwrite:
                    _move_into_place(temporary, path, osp.join(staging, name + '.replaced'))
                else:
                    _move_into_free_place(temporary, path)
        finally:
            with _signals_blocked():  # a signal now is handled after the clean-up
                shutil.rmtree(staging, ignore_errors=True)


def no_room_reason(err: BaseException) -> Optional[str]:
    """What to do when ``err`` (or an error it was raised from) is a write that found no room: a full disk,
    the file size limit or the disk quota; None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _NO_ROOM:
            return _NO_ROOM[err.errno]
        err = err.__cause__ or err.__context__
    return None


def _move_into_free_place(temporary: str, path: str) -> None:
    """Put ``temporary`` at ``path`` only if nothing is there, atomically for a file (a hard link: the
    name is taken or not in one step); a folder, or a file where hard links are not supported, is checked
    and then renamed."""
    try:
        if not osp.isdir(temporary):
            try:
                os.link(temporary, path)  # the temporary itself is removed with the staging folder
                return
            except FileExistsError:
                raise _exists_error(path) from None
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
        if osp.lexists(path):
            raise _exists_error(path)
        os.rename(temporary, path)
    except OSError as err:
        if isinstance(err, OutputExistsError):
            raise
        raise OutputPathError(f'cannot write {path}: {err.strerror}') from None


def _move_into_place(temporary: str, path: str, aside: str) -> None:
    """``os.replace(temporary, path)``; an existing folder at ``path`` is moved to ``aside`` first and put
    back if the move fails."""
    replaced_folder = osp.isdir(path) and not osp.islink(path)
    try:
        if replaced_folder:
            os.replace(path, aside)
        try:
            os.replace(temporary, path)
        except OSError:
            if replaced_folder:
                os.replace(aside, path)
            raise
    except OSError as err:
        raise OutputPathError(f'cannot write {path}: {err.strerror}') from None
