"""`stepshot` command line: a thin dispatcher.

Each sub-command lives in the module that owns it and exposes
`register(parser: argparse.ArgumentParser) -> None` (a module serving several commands,
stepshot_trainer.entry, exposes `register_<command>` for each), which adds the command's
arguments and sets `parser.set_defaults(func=...)`; `func(args) -> int` is the exit code. A command
reports bad input by raising a `StepshotError` (stepshot/errors.py); `main` prints it.
Modules are imported lazily so that torch-free commands (arch, correlate,
render, crd) never pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from stepshot.errors import StepshotError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "arch": ("stepshot.arch_cli", "describe, validate and sample architecture codes"),
    "train": ("stepshot_trainer.entry", "run one training stage of a SupernetTraining (under torchrun)"),
    "snapshot": ("stepshot_trainer.entry", "freeze a stage's selected checkpoint as an immutable snapshot"),
    "evaluate": ("stepshot_trainer.entry", "BN-recalibrate and evaluate architectures with inherited weights"),
    "correlate": ("stepshot.correlate", "ranking correlation between predictions and ground truth"),
    "groundtruth": ("stepshot_trainer.groundtruth", "train architectures stand-alone for a ground truth"),
    "run": ("stepshot.local", "run a whole SupernetTraining on this machine"),
    "render": ("stepshot.render", "print the Kubernetes objects the operator would create"),
    "validate": ("stepshot.validate", "check SupernetTraining files as `stepshot run` (and the operator) would"),
    "crd": ("stepshot.spec.generate", "print the SupernetTraining CustomResourceDefinition"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {helptext}" for name, (_, helptext) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="stepshot",
        description="Step-by-step one-shot -> few-shot super-net training.",
        epilog=f"commands:\n{lines}\n\nRun `stepshot COMMAND --help` for a command's options, "
               "`stepshot --version` for the version.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"stepshot {importlib.metadata.version('stepshot')}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"stepshot: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"stepshot {name}", description=COMMANDS[name][1])
    register = getattr(module, f"register_{name}", None) or module.register
    register(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(args.func(args) or 0)
    except StepshotError as exc:    # the one exit-code policy (stepshot/errors.py)
        if str(exc):                # empty: a child process printed it already
            print(f"stepshot {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
