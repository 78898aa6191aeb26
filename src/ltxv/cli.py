"""The `ltxv` command: one entry point with subcommands; the only module that reads argv."""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import sys
from collections.abc import Callable, Collection
from typing import NoReturn

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader went away


@functools.cache
def _help_width() -> int:
    """The terminal's width, asked once: argparse asks it again for every flag it adds (~270 times per
    start: 0.14 s of the parser's 0.17 s under a profiler, ~0.05 s of `ltxv generate`'s wall time)."""
    return shutil.get_terminal_size().columns - 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it says nothing (None, False) or the help already states it."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ):
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or action.default is False or "(default" in help_text:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the flag, the value, where help is), not the whole usage; exit code 2.
    Subcommand parsers are of this class too (argparse makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(commands: Collection[str] = ()) -> argparse.ArgumentParser:
    """The command line with the arguments of `commands` (every subcommand keeps its help line, which is all
    `ltxv --help` shows): adding every subcommand's flags and importing their modules takes ~0.1 s on a 2-core
    CPU (measured), and a run uses one subcommand, or none (`--help`, `--version`)."""
    parser = _Parser(
        prog="ltxv",
        description="Realtime video latent diffusion (LTX-Video family).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, formatter_class=_HelpFormatter)
        if name in commands:
            add(p)
    return parser


def _add_generate(p: argparse.ArgumentParser) -> None:
    from . import generate_cli

    generate_cli.add_arguments(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    from . import bench

    bench.add_arguments(p)
    p.set_defaults(handler=bench.run)


def _add_data(p: argparse.ArgumentParser) -> None:
    from .data import synth

    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    q = data_sub.add_parser(
        "synth", help="render a shapes-world dataset (mp4 + captions.jsonl)", formatter_class=_HelpFormatter
    )
    synth.add_arguments(q)
    q.set_defaults(handler=synth.run)
    q = data_sub.add_parser(
        "text-encoder",
        help="build a small random T5-style encoder + tokenizer trained on a dataset's captions (offline)",
        formatter_class=_HelpFormatter,
    )
    q.add_argument("out", help="folder to write (config.json, model.safetensors, tokenizer files)")
    q.add_argument("--captions", required=True, nargs="+", help="caption files or dataset folders (corpus)")
    q.add_argument("--d-model", type=int, default=64, help="hidden size (the DiT's caption_channels)")
    q.add_argument("--layers", type=int, default=2, help="encoder layers")
    q.add_argument("--heads", type=int, default=4, help="attention heads")
    q.add_argument("--vocab-size", type=int, default=300, help="sentencepiece pieces (at most)")
    q.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    q.add_argument(
        "--tokenizer",
        choices=("word", "unigram", "bpe"),
        default="word",
        help="sentencepiece model type (word: one piece per word of the corpus, for closed caption grammars)",
    )
    q.add_argument("--overwrite", action="store_true", help="replace OUT when it is an existing folder")
    q.set_defaults(handler=cmd_text_encoder)


def _add_eval(p: argparse.ArgumentParser) -> None:
    from . import evaluate

    evaluate.add_arguments(p)
    p.set_defaults(handler=evaluate.run)


def _add_preprocess(p: argparse.ArgumentParser) -> None:
    from .data import cache

    cache.add_preprocess_arguments(p)
    p.set_defaults(handler=cache.run_preprocess)


def _add_train(p: argparse.ArgumentParser) -> None:
    from .train import command as train_command

    train_command.add_stages(p, _HelpFormatter)


def _add_serve(p: argparse.ArgumentParser) -> None:
    from . import serve

    serve.add_arguments(p)


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", help="official .safetensors file, diffusers folder (root, vae/ or transformer/), or ltxv file"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(handler=cmd_info)


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint to read (any supported format)")
    p.add_argument("dst", help="file (ltxv, native) or new folder (diffusers) to write")
    p.add_argument("--to", required=True, choices=("ltxv", "native", "diffusers"), help="target format")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="cast floating tensors (default: keep)")
    p.set_defaults(handler=cmd_convert)


def _add_grow(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint to grow (any supported format)")
    p.add_argument("dst", help="new ltxv .safetensors file to write")
    p.add_argument(
        "--dit-layers",
        type=int,
        default=0,
        help="transformer blocks after growing (0: as now), a multiple of the current count: each block is "
        "preceded by copies of itself with zeroed output projections",
    )
    p.add_argument(
        "--encoder-res",
        action="store_true",
        help="a res stage (second convolution zero) after each VAE encoder compression that lacks one",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the new encoder stages' first convolutions")
    p.set_defaults(handler=cmd_grow)


# subcommand -> (its line in `ltxv --help`, what adds its arguments and handler), in the help's order
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "generate": ("generate a video from a prompt (and images/clips)", _add_generate),
    "bench": ("time the pipeline at a named shape (random weights by default)", _add_bench),
    "data": ("datasets: the synthetic shapes world", _add_data),
    "eval": ("score a model on the held-out shapes world", _add_eval),
    "preprocess": ("precompute VAE latents + T5 embeddings of a dataset", _add_preprocess),
    "train": ("train a stage of the model (vae, decoder, dit, joint, lora, distill)", _add_train),
    "serve": (
        "keep a model loaded behind a local web page and JSON endpoint (a video per request)",
        _add_serve,
    ),
    "info": ("show what a checkpoint contains", _add_info),
    "convert": ("convert a checkpoint between formats (tensors unchanged)", _add_convert),
    "grow": ("add layers that start as the identity (same outputs), to train on with --init", _add_grow),
}


def cmd_text_encoder(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.dataset import read_captions
    from .files import atomic_folder
    from .text import build_small_t5

    for flag in ("d_model", "layers", "heads", "vocab_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.d_model % args.heads:
        raise ValueError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    out = Path(args.out)
    if out.exists() and not (out.is_dir() and args.overwrite):
        raise ValueError(f"{out} already exists; give a new folder, or pass --overwrite to replace a folder")
    corpus = sorted({item.caption for source in args.captions for item in read_captions(source)})
    with atomic_folder(out, replace=args.overwrite) as tmp:  # nothing half-written on an error
        build_small_t5(
            tmp,
            corpus,
            "flat",
            args.d_model,
            args.layers,
            args.heads,
            args.vocab_size,
            args.seed,
            args.tokenizer,
        )
    print(f"wrote a {args.d_model}-d, {args.layers}-layer T5-style encoder to {out} ({len(corpus)} captions)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from . import convert
    from .config import to_dict
    from .weights import open_checkpoint, summarize

    ckpt = open_checkpoint(args.path)
    summary = summarize(ckpt)
    if args.json:
        print(json.dumps({**summary, "spec": to_dict(ckpt.spec)}, indent=2))
        return EXIT_OK
    print(f"path:     {ckpt.path}")
    print(f"format:   {ckpt.format}")
    print(f"version:  {ckpt.version}")
    native = {"vae": convert.vae_config_to_native, "transformer": convert.dit_config_to_native}
    for name, comp in summary["components"].items():
        print(
            f"{name + ':':9} {comp['params']:,} parameters, {comp['tensors']} tensors, dtype {comp['dtypes']}"
        )
        config = native[name](ckpt.vae.config if name == "vae" else ckpt.dit.config)
        print(f"          config (official schema) {json.dumps(config, separators=(',', ':'))}")
    print(f"schedule: {json.dumps(to_dict(ckpt.spec.scheduler))}")
    for note in ckpt.notes:
        print(f"note:     {note}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .weights import convert_checkpoint

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype or "")
    ckpt = convert_checkpoint(args.src, args.dst, args.to, dtype)
    parts = [n for n, c in (("vae", ckpt.vae), ("transformer", ckpt.dit)) if c is not None]
    print(f"wrote {args.dst} ({args.to}; {' + '.join(parts)} from {ckpt.format} {ckpt.version})")
    return EXIT_OK


def cmd_grow(args: argparse.Namespace) -> int:
    from .grow import GrowConfig, grow_checkpoint

    grown = grow_checkpoint(args.src, args.dst, GrowConfig(args.dit_layers, args.encoder_res, args.seed))
    parts = []
    if args.dit_layers:
        parts.append(f"{grown.spec.dit.num_layers} transformer blocks")
    if args.encoder_res:
        parts.append("encoder " + " ".join(b.kind for b in grown.spec.vae.encoder_blocks))
    print(f"wrote {args.dst}: {'; '.join(parts)}")
    for note in grown.notes:
        print(f"note: {note}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv[:1])  # only the subcommand named, if any
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return EXIT_OK
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    return run_handler(handler, args)


def console() -> None:
    """The `ltxv` executable: torch imported without the garbage collector (`_import_torch`) when a
    subcommand will need it, `main()`, then, after `generate`, leave without the interpreter's teardown:
    finalising torch's modules takes ~0.45 s on a 2-core CPU (measured), a fifth of the bundled model's whole
    run. Its output is complete by then (written to a temporary name, renamed) and the streams are flushed."""
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        _import_torch()
    code = main()
    if sys.argv[1:2] == ["generate"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _import_torch() -> None:
    """Import torch with the cyclic garbage collector off, then freeze what the import made: collections
    during it rescan its ~250,000 objects again and again (~0.2 s of the import's ~2 s on a 2-core CPU), and
    every full collection after it would too. The collector runs as usual for what comes after."""
    gc.disable()
    try:
        import torch  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Bad input -> one line on stderr and exit 2; anything else unexpected -> exit 1 with the traceback."""
    try:
        code = handler(args)
        sys.stdout.flush()  # here, so that a reader gone away is met below and not at the interpreter's exit
        return code
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
        print(f"ltxv {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ltxv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`ltxv info FILE | head`): stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _one_line(err: BaseException) -> str:
    """The error's message; for one re-raised from a DataLoader worker (the worker's whole traceback in the
    message), its last line, the original message."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith(f"{type(err).__name__}: ") else last


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the last flush at exit does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests), or already closed
        pass


if __name__ == "__main__":
    console()
