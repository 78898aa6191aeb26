"""The `ltxv` command: one entry point with subcommands; the only module that reads argv."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ltxv", description="Realtime video latent diffusion (LTX-Video family).", formatter_class=fmt
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="show what a checkpoint contains", formatter_class=fmt)
    p.add_argument(
        "path", help="official .safetensors file, diffusers folder (root, vae/ or transformer/), or ltxv file"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser(
        "convert", help="convert a checkpoint between formats (tensors unchanged)", formatter_class=fmt
    )
    p.add_argument("src", help="checkpoint to read (any supported format)")
    p.add_argument("dst", help="file (ltxv, native) or new folder (diffusers) to write")
    p.add_argument("--to", required=True, choices=("ltxv", "native", "diffusers"), help="target format")
    p.set_defaults(handler=cmd_convert)
    return parser


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
    from .weights import convert_checkpoint

    ckpt = convert_checkpoint(args.src, args.dst, args.to)
    parts = [n for n, c in (("vae", ckpt.vae), ("transformer", ckpt.dit)) if c is not None]
    print(f"wrote {args.dst} ({args.to}; {' + '.join(parts)} from {ckpt.format} {ckpt.version})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
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


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Bad input -> one line on stderr and exit 2; anything else unexpected -> exit 1 with the traceback."""
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
        print(f"ltxv {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ltxv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
