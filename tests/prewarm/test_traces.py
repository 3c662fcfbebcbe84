"""Trace and model files, and the Azure Functions 2019 reader, on small hand-written files."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.prewarm.policy import ModelInfo
from modelserve.prewarm.traces import (
    AZURE_MINUTES,
    Trace,
    TraceFormatError,
    read_azure,
    read_models,
    read_trace,
    write_models,
    write_trace,
)

HEADER = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(m) for m in range(1, AZURE_MINUTES + 1))


def azure_row(owner: str, app: str, function: str, counts: dict[int, int]) -> str:
    minutes = [str(counts.get(m, 0)) for m in range(1, AZURE_MINUTES + 1)]
    return ",".join([owner, app, function, "http", *minutes])


def test_azure_counts_are_spread_evenly_within_their_minute(tmp_path: Path) -> None:
    day = tmp_path / "invocations_per_function_md.anon.d01.csv"
    day.write_text(
        "\n".join([HEADER, azure_row("o1", "a1", "f1", {1: 2, 3: 1}), azure_row("o1", "a1", "f2", {1440: 1})]) + "\n"
    )
    trace = read_azure([day])
    assert trace.times == [15.0, 45.0, 150.0, 1439 * 60 + 30.0]
    assert trace.models == ["o1.a1.f1", "o1.a1.f1", "o1.a1.f1", "o1.a1.f2"]
    by_app = read_azure([day], by="app")
    assert set(by_app.models) == {"o1.a1"}
    assert len(by_app) == 4
    assert read_azure([day], top=1).models == ["o1.a1.f1"] * 3


def test_azure_days_follow_one_another_in_the_order_given(tmp_path: Path) -> None:
    first, second = tmp_path / "d01.csv", tmp_path / "d02.csv"
    first.write_text(HEADER + "\n" + azure_row("o", "a", "f", {1: 1}) + "\n")
    second.write_text(HEADER + "\n" + azure_row("o", "a", "f", {1: 1}) + "\n")
    assert read_azure([first, second]).times == [30.0, 86400.0 + 30.0]


def test_an_azure_row_of_the_wrong_width_names_its_line(tmp_path: Path) -> None:
    day = tmp_path / "d01.csv"
    day.write_text(HEADER + "\no,a,f,http,1,2,3\n")
    with pytest.raises(TraceFormatError, match=r"line 2: expected 4 keys and 1440 minute counts, got 7 columns"):
        read_azure([day])
    day.write_text(HEADER + "\n" + azure_row("o", "a", "f", {2: -1}) + "\n")
    with pytest.raises(TraceFormatError, match="line 2: minute 2 must be a whole count >= 0, got '-1'"):
        read_azure([day])


def test_trace_and_models_files_round_trip(tmp_path: Path) -> None:
    trace = Trace.from_arrivals([(2.5, "b"), (1.0, "a")])
    write_trace(trace, tmp_path / "trace.csv")
    assert read_trace(tmp_path / "trace.csv") == Trace([1.0, 2.5], ["a", "b"])
    models = {"a": ModelInfo("a", 120.5, 3.0)}
    write_models(models, tmp_path / "models.csv")
    assert read_models(tmp_path / "models.csv") == models


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; expected a header line timestamp,model"),
        ("time,name\n1,a\n", "the first line must be the header timestamp,model"),
        ("timestamp,model\nsoon,a\n", "line 2: timestamp must be a number, got 'soon'"),
        ("timestamp,model\n", "has a header but no arrivals"),
        ("timestamp,model\nnan,a\n", "line 2: timestamp must be a number, got 'nan'"),
    ],
)
def test_a_bad_trace_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=message):
        read_trace(path)


def test_a_bad_models_file_says_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "models.csv"
    path.write_text("model,size_mb,load_seconds\na,0,1\n")
    with pytest.raises(TraceFormatError, match="line 2: model a: size_mb must be > 0"):
        read_models(path)
    path.write_text("model,size_mb,load_seconds\na,1,1\na,2,2\n")
    with pytest.raises(TraceFormatError, match="line 3: model a appears twice"):
        read_models(path)
