"""`python scripts/convert_model.py --model NAME --precision fp16|int8 [--output FILE] [--optimization-level N]`,
as the runbooks write it: `modelserve convert` under the runbooks' flag names.

``--model`` is a model of MODEL_REPOSITORY (or a model file, or module:callable); ``--output`` a single
file (``.trt``/``.plan`` builds a TensorRT engine). Every other `modelserve convert` option passes through.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
if SOURCE.is_dir():  # in a checkout, run the checkout's modelserve
    sys.path.insert(0, str(SOURCE))

from modelserve.cli import app  # noqa: E402


def arguments(argv: list[str]) -> list[str]:
    """`modelserve convert` arguments for the runbook's: ``--model X`` becomes the SOURCE argument."""
    args = list(argv)
    for flag in ("--model", "-m"):
        if flag in args:
            at = args.index(flag)
            if at + 1 >= len(args):
                sys.exit(f"{flag} needs a model name, file or module:callable")
            source = args.pop(at + 1)
            args.pop(at)
            return ["convert", source, *args]
    for at, arg in enumerate(args):
        if arg.startswith("--model="):
            args.pop(at)
            return ["convert", arg.partition("=")[2], *args]
    return ["convert", *args]


if __name__ == "__main__":
    app(arguments(sys.argv[1:]), prog_name="convert_model.py")
