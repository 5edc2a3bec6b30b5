"""The ``jambatalk`` command line: thin subcommands over the library API.

Argument definitions live here; each subcommand's work lives in the module that owns the
capability, imported only when that subcommand runs (so ``--help`` is instant).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys
import threading
import warnings

from . import __version__
from .errors import JambaTalkError, NotAvailableError

# subcommand -> "module:function" taking the parsed arguments and returning an exit status
HANDLERS = {
    "animate": "jambatalk.api:cli_animate",
    "demo": "jambatalk.demo:cli_demo",
    "render": "jambatalk.render.cli:cli_render",
    "preprocess": "jambatalk.data.preprocess:cli_preprocess",
    "synth": "jambatalk.synth.corpus:cli_synth",
    "train": "jambatalk.train:cli_train",
    "test": "jambatalk.evaluate:cli_test",
    "bench": "jambatalk.bench:cli_bench",
}


def _add_animate(sub):
    p = sub.add_parser("animate", help="animate a face from speech",
                       description="Animate a face from a speech recording and save the motion or a video.")
    p.add_argument("audio", help="speech file (wav, flac, mp3, ogg)")
    p.add_argument("--template", help="neutral face mesh (.ply/.obj/.npy or templates.pkl:SUBJECT); "
                                      "default: the model's own template")
    p.add_argument("--checkpoint", help="model folder (config.json + model.safetensors); default: the built-in model")
    p.add_argument("--out", required=True, help="output: .npy, .npz, .mp4, or a folder for per-frame meshes")
    p.add_argument("--mesh-format", choices=("obj", "ply"), default=None,
                   help="per-frame mesh files when --out is a folder (default: obj)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda when available)")
    p.add_argument("--stream", action="store_true", help="read the file as if it were live audio and report latency")
    p.add_argument("--chunk-ms", type=float, default=None, help="chunk size for --stream (default 100 ms)")
    p.add_argument("--silence-gate", choices=("on", "off"), default=None,
                   help="close the mouth in pauses of the speech (default: the model's setting; on for the "
                        "built-in model)")
    p.add_argument("--subject", default=None,
                   help="speaking style of a model trained with subjects: a training subject's name or its index "
                        "(default: neutral)")


def _add_demo(sub):
    p = sub.add_parser("demo", help="animate the built-in head and write an MP4",
                       description="Synthesise a sentence (or use --audio), animate the built-in head, write an MP4.")
    p.add_argument("--audio", help="speech file to animate instead of a synthesised sentence")
    p.add_argument("--text", help="sentence to synthesise with espeak-ng (default: a built-in sentence)")
    p.add_argument("--out", default="demo.mp4", help="output video (default: demo.mp4)")
    p.add_argument("--size", type=int, default=512, help="video width and height in pixels (default 512)")


def _add_render(sub):
    p = sub.add_parser("render", help="render a vertex sequence to an MP4",
                       description="Render a (T, V, 3) or (T, 3V) vertex sequence to an H.264 MP4.")
    p.add_argument("seq", help="vertex sequence (.npy, or .npz with a 'vertices' array)")
    p.add_argument("--template", help="mesh file with the faces (.ply/.obj); optional for an .npz that keeps them "
                                      "(jambatalk animate --out NAME.npz)")
    p.add_argument("--audio", help="speech to mux into the video")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: from the sequence or 30)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--size", type=int, default=800, help="width and height in pixels (default 800)")
    p.add_argument("--backend", default="auto", help="renderer: auto, moderngl, egl, osmesa or pyrender")
    p.add_argument("--camera", default="auto", help="camera: flame, biwi, a dataset spec name, or fit (framed on the mesh); "
                                                     "auto is fit (default: auto)")


def _add_preprocess(sub):
    p = sub.add_parser("preprocess", help="convert raw VOCASET or BIWI into the processed layout",
                       description="Convert a raw dataset into vertices_npy/, wav/ and templates.pkl.")
    p.add_argument("dataset", help="vocaset or biwi")
    p.add_argument("--src", required=True, help="folder with the raw dataset files")
    p.add_argument("--dst", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="redo sequences already written")


def _add_synth(sub):
    p = sub.add_parser("synth", help="generate the built-in speech-to-face corpus",
                       description="Generate the built-in synthetic corpus in the processed VOCASET layout.")
    p.add_argument("--dst", required=True, help="output folder")
    p.add_argument("--sentences", type=int, default=300, help="number of sentences (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--template", default=None, metavar="MESH[:REGIONS]",
                   help="another mesh to animate (.ply/.obj) with its regions file (.pkl/.json dict of region -> "
                        "vertex indices; needs 'lips'; default: FLAME_masks.pkl or regions.json beside the mesh); "
                        "default: the procedural head")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")


def _add_train(sub):
    p = sub.add_parser("train", help="train a model from a config file",
                       description="Train a model. Runs on one CPU, one GPU, or many under torchrun.")
    p.add_argument("--config", required=True, help="experiment config (configs/*.yaml)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("overrides", nargs="*", help="config overrides as section.key=value")


def _add_test(sub):
    p = sub.add_parser("test", help="evaluate a checkpoint on a test split",
                       description="Predict a split, write per-sequence .npy files, metrics (JSON) and plots.")
    p.add_argument("--config", required=True, help="experiment config (configs/*.yaml)")
    p.add_argument("--checkpoint", required=True, help="model folder, or a run folder (its best checkpoint)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint>/eval)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--silence-gate", choices=("on", "off"), default=None,
                   help="close the mouth in pauses of the speech (default: the model's setting; the report says "
                        "which)")
    p.add_argument("overrides", nargs="*", help="config overrides as section.key=value")


def _add_bench(sub):
    p = sub.add_parser("bench", help="run benchmarks and print a table",
                       description="Run a benchmark (or all of them) and print a table of figures.")
    p.add_argument("name", nargs="?", default=None,
                   help="scan, render, preprocess, long, stream, rtf, train or gpu (default: all of them; gpu "
                        "where torch sees a CUDA device)")
    p.add_argument("--json", default=None, help="also write the records to this JSON file")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jambatalk", description="Speech-driven 3D facial animation with a hybrid Mamba / Transformer decoder.")
    parser.add_argument("--version", action="version", version=f"jambatalk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_animate, _add_demo, _add_render, _add_preprocess, _add_synth, _add_train, _add_test, _add_bench):
        add(sub)
    for command in sub.choices.values():  # --debug after the command too (SUPPRESS keeps one given before it)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    parser.set_defaults(command_parsers=dict(sub.choices))
    return parser


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """The error for arguments ``parser`` (a command's) does not take, with the option meant where one is close."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    options = list(getattr(parser, "_option_string_actions", {}))
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.75)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message


def _handler(command: str):
    module_name, func = HANDLERS[command].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("jambatalk"):
            raise NotAvailableError(f"'jambatalk {command}' is not available yet in this version",
                                    "see the README for what this version provides") from exc
        raise
    return getattr(module, func)


def _format_warning(command: str):
    """warnings.formatwarning for the command line: one line, the command's name, no source line (--debug keeps
    Python's format)."""
    def one_line(message, category, filename, lineno, line=None) -> str:
        kind = "" if category is UserWarning else f"{category.__name__}: "
        return f"jambatalk {command}: warning: {kind}{message}\n"

    return one_line


class Terminated(BaseException):
    """SIGTERM during a command: raised in the main thread so that partial outputs are cleaned up on the way
    out, as after Ctrl-C (a BaseException, so that no ``except Exception`` in between swallows it)."""


def _sigterm_handler(owner: int):
    """The SIGTERM handler of process ``owner``: :class:`Terminated` there. A process forked from it (the
    workers of synth's multiprocessing pool, a DataLoader's) inherits the handler, and there SIGTERM ends
    the process as it would without one, so that a pool stopping its workers prints no traceback."""
    def on_sigterm(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    return on_sigterm


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list):  # overrides after a flag: train ... --resume k=v
        args.overrides += [a for a in extra if _is_override(a)]
        extra = [a for a in extra if not _is_override(a)]
    if extra:  # named by the command's own usage (the top-level one lists no command's options)
        command = args.command_parsers.get(args.command, parser) if args.command else parser
        command.error(_unrecognized(command, extra))
    if args.command is None:
        parser.print_help()
        return 2
    formatwarning = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _format_warning(args.command)
    sigterm = None
    if threading.current_thread() is threading.main_thread():
        sigterm = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    try:
        return int(_handler(args.command)(args) or 0)
    except Terminated as exc:
        print(f"jambatalk {args.command}: terminated{f'; {exc}' if str(exc) else ''}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except JambaTalkError as exc:
        if args.debug:
            raise
        print(f"jambatalk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"jambatalk {args.command}: interrupted{f'; {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if args.debug:
            raise
        # what reads the output stopped reading (`| head`): stop quietly, as other command-line tools do,
        # and keep Python from reporting the pipe again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback with --debug
        if args.debug:
            raise
        print(f"jambatalk {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = formatwarning
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


if __name__ == "__main__":
    sys.exit(main())
