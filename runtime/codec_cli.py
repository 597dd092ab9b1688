"""``python -m runtime.codec``: encode audio files to ``.tokens``, decode them, or round-trip.

    python -m runtime.codec encode IN.wav OUT.tokens --codec BUNDLE
    python -m runtime.codec decode IN.tokens OUT.wav --codec BUNDLE [--rate 24000]
    python -m runtime.codec roundtrip IN.flac OUT.wav --codec BUNDLE

Input audio may be any soundfile format, rate and channel count (mixed to mono, resampled to the
codec rate). Errors are one line on stderr and exit status 1; Ctrl-C exits 130 (runtime/cli.py) and
never leaves a half-written output file.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from runtime.audio import AudioError
from runtime.bundle import BundleError
from runtime.cli import check_output_file, fatal, reraise_interrupt, run_cli
from runtime.tokens_file import TokensFileError, read_tokens, write_tokens


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.codec", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, in_help, out_help in (("encode", "input audio file", "output .tokens file"),
                                    ("decode", "input .tokens file", "output audio file (.wav/.flac/.ogg)"),
                                    ("roundtrip", "input audio file", "output audio file (.wav/.flac/.ogg)")):
        s = sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        s.add_argument("input", type=Path, help=in_help)
        s.add_argument("output", type=Path, help=out_help)
        s.add_argument("--codec", type=Path, required=True, help="codec bundle directory")
        s.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="onnxruntime provider")
        s.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
        s.add_argument("--force", action="store_true", help="overwrite the output file")
        if name != "encode":
            s.add_argument("--rate", type=int, default=None, help="output sample rate (default: the codec's, 16000)")
        if name == "decode":
            s.add_argument("--allow-other-bundle", action="store_true",
                           help="decode tokens written by another codec bundle of the same vocabulary")
    return p


def run(args: argparse.Namespace) -> int:
    from runtime.codec import CodecSession, ProviderFallbackWarning

    err = check_output_file(args.output, args.force)  # before any work, not after encoding
    if err:
        return fatal(err)
    if getattr(args, "rate", None) is not None and args.rate <= 0:
        return fatal(f"--rate must be positive, got {args.rate}")
    tokens = read_tokens(args.input) if args.command == "decode" else None  # fail on a bad file before loading
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProviderFallbackWarning)
        session = CodecSession(args.codec, provider=args.provider, threads=args.threads)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.command == "encode":
        write_tokens(args.output, session.encode_file(args.input))
    elif args.command == "decode" and tokens is not None:
        session.decode_to_file(tokens, args.output, args.rate, allow_other_bundle=args.allow_other_bundle)
    else:
        session.decode_to_file(session.encode_file(args.input), args.output, args.rate)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (AudioError, BundleError, TokensFileError) as e:
        return fatal(str(e))
    except ValueError as e:  # bad codes or shapes reaching the session
        return fatal(str(e))
    except RuntimeError as e:  # onnxruntime failures (a graph that does not load or run)
        return fatal(f"onnxruntime: {e}")
    except ImportError as e:
        reraise_interrupt(e)
        return fatal(f"{e} (install the runtime with `pip install '.[cpu]'`)")
    except OSError as e:
        return fatal(f"{e.filename or ''}: {e.strerror or e}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
