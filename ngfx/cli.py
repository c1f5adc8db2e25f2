"""The one command-line interface, ``ngfx``. Thin: parse arguments, call one library function, print.

Each subsystem registers its subcommands in its own ``_add_*`` function below; library code never
imports this module.
"""

from __future__ import annotations

import argparse
import sys


def _resolution(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 1920x1080, got {text!r}") from None
    if w <= 0 or h <= 0 or w * h > 8192 * 8192:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is out of range (1x1 .. 8192x8192 pixels)")
    return w, h


# --- demo (issue: the main job) -------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, render, trace and simulate on embedded procedural scenes")
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick", help="small sizes (CPU default)")
    size.add_argument("--full", action="store_const", dest="size", const="full", help="real sizes (GPU)")
    size.add_argument("--smoke", action="store_const", dest="size", const="smoke", help="tiny sizes, for CI")
    p.add_argument("--data", default=None, help="folder of real scenes for --full (e.g. ../shared/scenes)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ngfx.demo import run_demo

    run_demo(out_dir=args.out, size=args.size, data_dir=args.data)
    return 0


# --- render: train / render (issue: the four applications) ----------------------------------------
def _add_render(sub: argparse._SubParsersAction) -> None:
    pass


# --- nelf: distill / mobile-report (issue: NeLF) --------------------------------------------------
def _add_nelf(sub: argparse._SubParsersAction) -> None:
    pass


# --- ngpc_sim: trace / sim (issue: NGPC simulator) ------------------------------------------------
def _add_sim(sub: argparse._SubParsersAction) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ngfx", description="Neural graphics toolkit and NGPC simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_render, _add_nelf, _add_sim):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # NgfxInputError and config errors: one clear line, no traceback
        print(f"ngfx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ngfx {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
