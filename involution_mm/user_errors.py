"""What a user error is, and how every command-line tool reports it.

A *user error* is a problem with what the user gave a tool: a config, an argument, a file. Such a problem is
reported as one line, ``error: <message>`` on stderr, with exit status 2 (argparse's status for a bad
command line). Anything else that escapes a tool is a bug of ours and shows its traceback.

Errors become user errors in one of two ways:

- classes of ours subclass :class:`UserError` (next to the built-in type they have always been, so
  ``except ValueError`` keeps working): ``ConfigError``, ``CheckpointError``, ``OutputPathError``, ...;
- errors of other libraries that mean bad input *where they come from* (building a model from a config,
  reading a file) are caught there and re-raised as a :class:`UserError` subclass, never by catching broad
  types such as ``TypeError`` around a whole tool.

:func:`run_tool` is the one place that turns them into the one line and the exit status; Ctrl-C gives one
line and exit status 130. Standard library only, so that tools can use it before importing torch.
"""
import sys
from typing import Callable, Optional, Sequence

# Exit statuses of a tool run through :func:`run_tool`.
EXIT_USER_ERROR = 2  # as argparse exits for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


class UserError(Exception):
    """A problem with a tool's input (config, argument, file), explained in one line that says what to do.

    Subclass it together with the built-in type that fits (``class ConfigError(UserError, ValueError)``).
    """


class MissingFileError(UserError, FileNotFoundError):
    """An input file that does not exist."""


class MissingDependencyError(UserError, ImportError):
    """An optional package a tool needs is not installed; the message says what to install."""


class ToolWarning(UserWarning):
    """A warning that a tool prints as its own line (``warning: ...``); other libraries' warnings are shown
    the usual way, under their own names."""


def one_line(err: BaseException) -> str:
    """The message of another library's exception on one line (a ``KeyError`` without the quotes ``str``
    adds), to wrap it into a :class:`UserError`."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return ' '.join(lines) if lines else type(err).__name__


def run_tool(main: Callable[[Optional[Sequence[str]]], Optional[int]],
             argv: Optional[Sequence[str]] = None,
             interrupted: str = 'interrupted') -> int:
    """Run a tool's ``main(argv)`` and return its exit status.

    Args:
        main (Callable): The tool's main function; it returns an exit status (None means 0) or raises.
        argv (Sequence[str], optional): The arguments, ``sys.argv[1:]`` when None.
        interrupted (str): The line printed on Ctrl-C, unless the ``KeyboardInterrupt`` carries its own
            message (a tool that knows what state it left behind raises ``KeyboardInterrupt(message)``).
            Defaults to 'interrupted'.

    Returns:
        int: ``main``'s status; 2 after a :class:`UserError` (printed as ``error: <message>``: our messages
        are one line, except listings such as a converter's missing keys); 130 after
        Ctrl-C. Other exceptions propagate with their traceback: they are bugs.
    """
    try:
        status = main(argv)
    except UserError as err:
        message = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
        print(f'error: {str(message).strip()}', file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        print(str(err) if err.args else interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else status
