"""Shared plumbing for the ``python -m ...`` command-line tools: one-line errors, Ctrl-C, atomic outputs.

Every CLI's ``__main__`` block is ``sys.exit(run_cli(main))``: a ``KeyboardInterrupt`` anywhere in
``main`` (finally blocks and :func:`atomic_path` have already removed partial outputs by then) prints
one ``interrupted`` line to stderr and exits 130 (128 + SIGINT, what a shell reports), never a
traceback. Standard library only: the torch-free runtime imports it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Sequence

EXIT_INTERRUPTED = 130


def fatal(msg: str) -> int:
    """Print ``error: msg`` to stderr; returns exit status 1 (``return fatal(...)`` from ``main``)."""
    print(f"error: {msg}", file=sys.stderr)
    return 1


def die(msg: str) -> NoReturn:
    """:func:`fatal`, then ``SystemExit(1)``: for helpers deep inside a CLI."""
    raise SystemExit(fatal(msg))


def interrupted(detail: str = "") -> int:
    """Print the one-line Ctrl-C message; returns 130."""
    print("interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
    return EXIT_INTERRUPTED


def reraise_interrupt(e: BaseException) -> None:
    """Re-raise a Ctrl-C that a library wrapped into another exception: pybind11 modules (onnxruntime)
    turn a KeyboardInterrupt during their import into ``ImportError("initialization failed")``,
    which a CLI would otherwise report as a missing install."""
    seen: BaseException | None = e
    for _ in range(8):  # the cause/context chain, bounded
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return
        if isinstance(seen, KeyboardInterrupt):
            raise KeyboardInterrupt from None


def run_cli(main: Callable[..., int], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with Ctrl-C turned into :func:`interrupted` (exit status 130).

    SIGINT gets Python's default handler even when the process started with it ignored (a job put in
    the background by a non-interactive shell inherits SIG_IGN, and Python then never raises
    KeyboardInterrupt), so an interrupt always stops the tool cleanly."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main(argv)
    except KeyboardInterrupt:
        return interrupted()


def quiet_interrupt_while_importing() -> None:
    """Call first in a CLI module's ``if __name__ == "__main__"`` prologue when its top-level imports are
    slow (torch: seconds): a Ctrl-C before ``run_cli`` is reached then also exits 130 with one line.

    It wraps ``sys.excepthook``, which only sees exceptions nothing else caught; ``os._exit`` because
    an uncaught KeyboardInterrupt would otherwise make the interpreter re-kill itself with SIGINT.
    """
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:  # type: ignore[no-untyped-def]
        if issubclass(kind, KeyboardInterrupt):
            interrupted()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        previous(kind, value, tb)

    sys.excepthook = hook


def partial_name(path: Path) -> Path:
    """The temporary sibling an output is written under: hidden, same suffix (soundfile picks the
    container from it), unique per process."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed onto ``path``, on any
    exception (Ctrl-C included) it is deleted, so ``path`` is never half-written."""
    path = Path(path)
    tmp = partial_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_file(path: Path, force: bool) -> str | None:
    """Why ``path`` cannot be written as a new output file (checked before any work), else None."""
    if path.is_dir():
        return f"output {path} is a directory; give a file name"
    if path.exists() and not force:
        return f"{path} exists (pass --force to overwrite)"
    if not path.parent.is_dir():
        return f"cannot write {path}: directory {path.parent} does not exist"
    return None
