"""The ``modelserve convert`` command: options in, a rich progress line per step, the report out."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelserve.convert.precision import Precision
from modelserve.repository.config import Platform
from modelserve.terminal import err


def convert(
    source: Annotated[
        str,
        typer.Argument(
            help="A TorchScript file, an ONNX file, package.module:function returning an nn.Module, "
            "or the name of a model in --repository."
        ),
    ],
    repository: Annotated[
        Path | None,
        typer.Option(envvar="MODEL_REPOSITORY", help="Model repository to write into (and to find SOURCE in)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name to write; default: SOURCE's name and precision.")] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Version folder; default: the next free one.")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write only this file instead (.onnx, or .plan/.trt/.engine for TensorRT); no config."),
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(help="Shape of an input, batch first (1,3,224,224); once per input. Torch sources need it."),
    ] = None,
    input_name: Annotated[list[str] | None, typer.Option(help="Name of an input; once per input.")] = None,
    input_datatype: Annotated[str, typer.Option(help="Datatype of torch inputs (FP32, INT64, ...).")] = "FP32",
    output_name: Annotated[list[str] | None, typer.Option(help="Name of an output; once per output.")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32, fp16 or int8.")] = Precision.FP32,
    fp16_io: Annotated[bool, typer.Option(help="FP16 inputs and outputs too (default: they stay FP32).")] = False,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            help="Samples (.npz by input name, or .npy) for static INT8; one in four is kept out of calibration "
            "and measures the accuracy."
        ),
    ] = None,
    optimization_level: Annotated[
        int | None, typer.Option(help="ONNX Runtime graph optimisation 0..3 (default 1); TensorRT builder 0..5 (3).")
    ] = None,
    engine: Annotated[str, typer.Option(help="onnx, or tensorrt (needs the tensorrt package and a GPU).")] = "onnx",
    max_batch_size: Annotated[int, typer.Option(min=1, help="max_batch_size of the generated config.yaml.")] = 32,
    tolerance: Annotated[
        float | None,
        typer.Option(help="Largest max abs error allowed; default 1e-4 (fp32), 1e-2 (fp16), 1e-1 (int8)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Write the model even when its error exceeds --tolerance.")] = False,
    samples: Annotated[int, typer.Option(min=1, help="Sample inputs the accuracy is measured on.")] = 32,
    speed_runs: Annotated[int, typer.Option(min=1, help="Timed calls of each model for the speed-up.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Convert a model to ONNX (FP32, FP16 or INT8) or a TensorRT engine, check it against its source,
    and write it into a model repository with its config.yaml."""
    from modelserve.convert import output as destinations
    from modelserve.convert.pipeline import Options, RefusedError
    from modelserve.convert.pipeline import convert as run
    from modelserve.convert.source import ConversionError, open_source

    if output is not None and output.suffix in destinations.ENGINE_SUFFIXES:
        engine = "tensorrt"
    if engine not in ("onnx", "tensorrt"):
        _fail(f"--engine {engine}: choose onnx or tensorrt", 2)
    levels = range(6) if engine == "tensorrt" else range(4)
    level = optimization_level if optimization_level is not None else (3 if engine == "tensorrt" else 1)
    if level not in levels:
        _fail(f"--optimization-level {level}: {engine} takes 0..{levels[-1]}", 2)
    platform = Platform.TENSORRT if engine == "tensorrt" else Platform.ONNX
    try:
        shapes = [_shape(text) for text in input_shape or []]
        with _progress() as step:
            with step("read the source"):
                model = open_source(
                    source, repository=repository, input_shapes=shapes, input_names=input_name or [],
                    input_datatype=input_datatype, output_names=output_name or [],
                )  # fmt: skip
            stem = Path(source).stem if Path(source).is_file() else source.partition(":")[0].rpartition(".")[2]
            destination = destinations.choose(repository, output, name, version, f"{stem}-{precision}", platform)
            options = Options(
                precision=precision, optimization_level=level, keep_io_types=not fp16_io,
                calibration=calibration_data, engine=engine, tolerance=tolerance, force=force,
                samples=samples, speed_runs=speed_runs, max_batch_size=max_batch_size,
            )  # fmt: skip
            report = run(model, options, destination, step)
    except RefusedError as exc:
        _print(exc.report.as_dict(), as_json)
        _fail(str(exc), 1)
    except ConversionError as exc:
        _fail(str(exc), 1)
    _print(report.as_dict(), as_json)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in re.split(r"[,x]", text))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        _fail(f"--input-shape {text!r}: give positive sizes, batch first, like 1,3,224,224", 2)
    return dims


@contextmanager
def _progress() -> Iterator[Callable[[str], AbstractContextManager[None]]]:
    """A ``step(title)`` context manager per conversion step, each shown with its spinner and time."""
    columns = (SpinnerColumn(finished_text="[green]✓[/green]"), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:

        @contextmanager
        def step(title: str) -> Iterator[None]:
            task = progress.add_task(title, total=1)
            try:
                yield
            except BaseException:
                progress.update(task, description=f"[red]{title}: failed[/red]")
                progress.stop_task(task)
                raise
            progress.update(task, completed=1)

        yield step


def _print(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    table = Table("output", "max abs error", "max |reference|", "top-1 agreement", title=str(report["source"]))
    outputs = report["outputs"]
    assert isinstance(outputs, list)
    for item in outputs:
        top1 = item["top1_agreement"]
        table.add_row(
            item["name"],
            f"{item['max_abs_error']:.3g}",
            f"{item['max_abs_reference']:.3g}",
            "-" if top1 is None else f"{top1:.1%}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"{report['precision']}, optimisation level {report['optimization_level']}, {report['samples']} samples "
        f"({report['accuracy_on']}); "
        f"batch {report['speed_batch']}: {report['converted_ms']:.3f} ms vs FP32 ONNX {report['baseline_ms']:.3f} ms "
        f"(speed-up {report['speedup']}x)"
    )
    for advice in report["advice"] or []:  # type: ignore[attr-defined]
        console.print(f"[yellow]advice:[/yellow] {escape(advice)}")
    for path in report["written"] or []:  # type: ignore[attr-defined]
        console.print(f"wrote {path}")


def _fail(message: str, code: int) -> None:
    err.print(f"[red]{escape(message)}[/red]")
    raise typer.Exit(code)
