"""How every command ends on a failure its user can act on: one line, not a traceback.

A run that stops on a dataset that is not built, a damaged shard, a full disk, a config
knob or a malformed Panoptic file should say so in one line that names the file, shard or
directory and what to do, not in tracebacks through the libraries beneath that bury it
(a disk that fills during an orbax checkpoint write logs one per thread). Such failures
are ``ActionableError``s (a mixin beside the builtin class that says what kind, so code
that catches ``FileNotFoundError`` or ``ValueError`` still does) or ``OSError``s (a
missing file, a permission, a disk: Python's messages name the file). Every command's
``main`` is wrapped by ``one_line_failures`` and its flags include ``--verbose``
(``define_verbose_flag``), which lets the exception and its traceback through.

Standard library and absl only: every layer raises these, and the commands import it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from absl import flags
from absl import logging as absl_logging

T = TypeVar("T")

flags.disclaim_key_flags()  # --verbose belongs to the command that defines it (its --helpshort)


class ActionableError(Exception):
    """A failure the user can act on; the message names the file, shard or directory and
    what to do. Subclasses also derive from the builtin class of their kind."""


class ConfigError(ActionableError, ValueError):
    """Settings that cannot work (a config knob, a dataset build's options); the message
    says which."""


ONE_LINE = (ActionableError, OSError)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the members of exception groups in it."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]


def is_no_space(error: BaseException) -> bool:
    """Whether a full disk is behind ``error``: an OSError ENOSPC anywhere in its chain, or
    a message with the system's text for it (TensorStore, which writes orbax's arrays,
    raises ``ValueError: RESOURCE_EXHAUSTED: ... No space left on device``)."""
    text = os.strerror(errno.ENOSPC)
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or text in str(e)
               for e in _chain(error))


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def define_verbose_flag() -> None:
    """``--verbose``: every command defines it (in its ``define_flags``)."""
    flags.DEFINE_bool("verbose", False, "On a failure, show the exception's traceback instead of "
                      "one line.")


def _drop_full_disk_tracebacks(record: logging.LogRecord) -> bool:
    """A log filter: the tracebacks that orbax's threads and asyncio log for a write that
    ran out of space are dropped; the command reports the failure once, in its line."""
    return not (record.exc_info and record.exc_info[1] is not None
                and is_no_space(record.exc_info[1]))


def one_line_failures(main: Callable[[list[str]], T]) -> Callable[[list[str]], T]:
    """``main`` (a command's) ending on an ``ONE_LINE`` failure with ``error: <message>``
    on stderr and exit status 1; with ``--verbose`` the exception goes through. Unless
    verbose, tracebacks logged for a full disk are dropped for the rest of the process
    (asyncio logs some at exit, after the line)."""

    @functools.wraps(main)
    def run(argv: list[str]) -> Any:
        verbose = flags.FLAGS.verbose
        if not verbose:
            absl_logging.get_absl_handler().python_handler.addFilter(_drop_full_disk_tracebacks)
        try:
            return main(argv)
        except ONE_LINE as e:
            if verbose:
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    return run
