"""``python -m runtime.stream``: real-time streaming of every task, from a microphone or a file.

    python -m runtime.stream --task denoise                              # microphone -> speakers
    python -m runtime.stream --task codec --input speech.flac --output out.wav --fast
    python -m runtime.stream --task classify --input street.wav --window-ms 1000 --hop-ms 500 --json
    echo "an audio of 3" | python -m runtime.stream --task tts --output three.wav

Audio is captured (or read) at its native rate, mixed to mono, resampled to the codec rate with a
streaming resampler and processed chunk by chunk, each chunk whole 120 ms codec groups; the output
is resampled back to the speaker's rate or written to a file as it is produced. Files are paced in
real time unless ``--fast``. Ctrl-C stops, processes what was captured, and leaves complete output
files (a second Ctrl-C aborts). Errors are one line on stderr (exit 1).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import runtime.threads  # noqa: E402,F401  (the one thread environment: set before numpy/llama.cpp)

from runtime.cli import EXIT_INTERRUPTED, check_output_file, fatal, reraise_interrupt, run_cli  # noqa: E402
from runtime.lm_flags import add_llm_flags  # noqa: E402

TASKS = ("denoise", "codec", "classify", "tts", "text2sound")
AUDIO_IN = ("denoise", "codec", "classify")
AUDIO_OUT = ("denoise", "codec", "tts", "text2sound")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except None/False (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.stream", description=__doc__.split("\n\n")[0],
                                formatter_class=_Formatter)
    p.add_argument("--task", choices=TASKS, default=None, help="what to run (codec: round trip, no LLM)")
    p.add_argument("--input", default="mic", help="'mic' or an audio file (any format, rate, channels)")
    p.add_argument("--output", default="speaker", help="'speaker' or an audio file (.wav/.flac/.ogg)")
    p.add_argument("--device", default=None,
                   help="PortAudio device (index or name, e.g. 'pulse') for input and output, or IN,OUT")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--chunk-ms", type=float, default=None,
                   help="codec: chunk per step (default 120 = one group); denoise: the prompt chunk "
                        "(default: the demonstrations' clip length); rounded up to whole 120 ms groups")
    p.add_argument("--window-ms", type=float, default=None, help="classify: window (default: the demos' clip)")
    p.add_argument("--hop-ms", type=float, default=500.0, help="classify: hop between windows")
    p.add_argument("--text", action="append", default=None,
                   help="tts/text2sound prompt (repeatable); default: one prompt per line of stdin")
    p.add_argument("--record-input", default=None, type=Path,
                   help="also write the input as the worker received it (mono, codec rate) to this file")
    p.add_argument("--gather", type=int, default=1,
                   help="denoise, live input: wait for N whole chunks and decode them side by side: latency "
                        "x N for a lower real-time factor (README \"Live from the microphone\")")
    p.add_argument("--fast", action="store_true", help="process a file as fast as possible (no pacing)")
    p.add_argument("--max-lag-ms", type=float, default=None,
                   help="live input: drop the oldest whole chunks when more than this waits "
                        "(default: max(1000, gather + 1 chunks))")
    p.add_argument("--quiet", action="store_true", help="no status line and no final table")
    p.add_argument("--json", action="store_true", help="classify: one JSON object per window")
    p.add_argument("--stats-json", type=Path, default=None, help="write the latency statistics here")
    p.add_argument("--model", type=Path, default=None, help="LLM GGUF (default: models/default/llm.gguf)")
    p.add_argument("--codec", type=Path, default=None, help="codec bundle (default: models/default/codec)")
    p.add_argument("--demos", type=Path, default=None, help="demonstrations (default: models/default/demos/TASK)")
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu", help="onnxruntime provider")
    p.add_argument("--threads", type=int, default=None, help="LLM and onnxruntime threads")
    p.add_argument("--n-ctx", type=int, default=2048, help="LLM context size in tokens")
    p.add_argument("--shots", type=int, default=None, help="demonstrations per label (classify) or in total")
    p.add_argument("--method", choices=("score", "greedy", "calibrated"), default="score", help="classify decoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    add_llm_flags(p)
    return p


def resolve_paths(a: argparse.Namespace) -> str | None:
    """Fill --model/--codec/--demos from models/default (checked: a missing default says to run
    `make models`); an error for a given path that does not exist."""
    from runtime.defaults import DefaultsError, default_codec, resolve

    given = [(p, f) for p, f in ((a.model, "--model"), (a.codec, "--codec"), (a.demos, "--demos")) if p is not None]
    try:
        if a.task == "codec":  # the pure codec round trip needs no LLM and no demonstrations
            a.codec = a.codec or default_codec()
        else:
            a.model, a.codec, a.demos = resolve(a.task, a.model, a.codec, a.demos)
    except DefaultsError as e:
        return str(e)
    for path, flag in given:
        if not path.exists():
            return f"{flag} {path} does not exist"
    return None


def check_args(a: argparse.Namespace) -> str | None:
    """An error for inconsistent arguments, before anything is loaded."""
    if a.task is None:
        return f"pass --task, one of {', '.join(TASKS)}"
    for name in ("chunk_ms", "window_ms", "hop_ms", "max_lag_ms"):
        v = getattr(a, name)
        if v is not None and v <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {v}"
    if a.gather < 1 or (a.gather > 1 and a.task != "denoise"):
        return f"--gather must be >= 1, and more than 1 only for --task denoise (got {a.gather} for {a.task})"
    return _check_input(a) or _check_outputs(a) or resolve_paths(a)


def _check_input(a: argparse.Namespace) -> str | None:
    if a.task in AUDIO_IN and a.input != "mic":
        if not Path(a.input).exists():
            return f"input {a.input} does not exist (use --input mic for the microphone)"
        if not Path(a.input).is_file():
            return f"input {a.input} is a directory or special file, not an audio file"
    if a.fast and (a.task not in AUDIO_IN or a.input == "mic"):
        return "--fast needs --input FILE (a microphone cannot go faster than real time)"
    return None


def _check_outputs(a: argparse.Namespace) -> str | None:
    if a.task == "classify" and a.output != "speaker":
        return "classify prints one label line per window to stdout; it writes no --output"
    if a.record_input is not None and a.task not in AUDIO_IN:
        return f"--record-input needs an audio-input task, not {a.task}"
    files = [Path(a.output)] if a.task in AUDIO_OUT and a.output != "speaker" else []
    files += [a.record_input] if a.record_input is not None else []
    for path in files:
        err = check_output_file(path, a.force)
        if err:
            return err
    return None


@contextmanager
def graceful_sigint(stop: threading.Event, quiet: bool) -> Iterator[None]:
    """First Ctrl-C sets ``stop`` (the worker drains and finishes its files); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if not quiet:
            print("\nstopping: finishing the output (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from runtime.audio_io import AudioIOError

    if a.list_devices:
        try:
            from runtime.audio_io import list_devices

            print(list_devices())
            return 0
        except AudioIOError as e:
            return fatal(str(e))
    err = check_args(a)
    if err:
        return fatal(err)
    from runtime.stream_app import run_stream

    known = _known_errors()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            stop = threading.Event()
            with graceful_sigint(stop, a.quiet):
                result = run_stream(a, stop, caught)
    except known as e:
        return fatal(str(e))
    except ImportError as e:
        reraise_interrupt(e)
        return fatal(f"{e} (install the runtime with `pip install '.[cpu]'`)")
    return finish(a, result)


def _known_errors() -> tuple[type[BaseException], ...]:
    from runtime.audio import AudioError
    from runtime.audio_io import AudioIOError
    from runtime.bundle import BundleError
    from runtime.lm import ModelLoadError
    from runtime.lm_errors import ContextOverflowError, VocabularyMismatchError
    from runtime.tasks import DemoError, TaskError

    return (AudioError, AudioIOError, BundleError, ModelLoadError, ContextOverflowError, VocabularyMismatchError,
            DemoError, TaskError, FileNotFoundError)


def finish(a: argparse.Namespace, result) -> int:
    """Report the run (table, JSON) and choose the exit status from how it ended."""
    stats, reason = result.stats, result.reason
    if not a.quiet:
        print(stats.table(), file=sys.stderr)
    if a.stats_json is not None:
        stats.write_json(a.stats_json, {"task": a.task, "input": a.input, "output": a.output,
                                        "end": reason, "chunk_samples": result.chunk})
    where = f" to {a.output}" if a.output != "speaker" and a.task in AUDIO_OUT else ""
    secs = stats.audio_out_samples / stats.rate
    if stats.nonfinite_samples:
        print(f"warning: {stats.nonfinite_samples} NaN/infinite input samples were replaced by silence",
              file=sys.stderr)
    if reason == "device lost":
        return fatal(f"the audio input device stopped delivering audio (disconnected?); "
                     f"kept {secs:.2f} s{where}")
    if reason == "stopped" and a.input != "mic" and a.task in AUDIO_IN:
        print(f"interrupted: wrote {secs:.2f} s{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
