"""Every error the core raises is classified once, and every consumer reads that classification."""

from __future__ import annotations

import inspect

import grpc
import pytest

import modelserve.errors as errors
from modelserve.errors import CLASSIFICATION, SERVER_BUG, Classification, ModelserveError, classify
from modelserve.protocol.errors import grpc_status, http_status

ERROR_TYPES = [
    kind
    for _, kind in inspect.getmembers(errors, inspect.isclass)
    if issubclass(kind, ModelserveError) and kind is not ModelserveError
]


@pytest.mark.parametrize("kind", ERROR_TYPES, ids=lambda kind: kind.__name__)
def test_every_error_type_has_its_own_row(kind: type[ModelserveError]) -> None:
    # A subclass would inherit its parent's row; an explicit one shows its author decided.
    assert kind in CLASSIFICATION, f"classify {kind.__name__} in modelserve.errors.CLASSIFICATION"


@pytest.mark.parametrize("row", [*CLASSIFICATION.values(), SERVER_BUG])
def test_each_row_names_a_real_grpc_code_and_a_status_that_fits(row: Classification) -> None:
    assert row.grpc_code in grpc.StatusCode.__members__
    assert 400 <= row.http_status < 600
    # Only the server's own failures are 500s: anything a caller caused or can retry is not.
    assert (row.http_status == 500) == (row.grpc_code == "INTERNAL")


def test_the_protocols_answer_what_the_table_says() -> None:
    for kind, row in CLASSIFICATION.items():
        error = kind("x", scope="admin") if kind is errors.Forbidden else kind("x")
        assert http_status(error) == row.http_status
        assert grpc_status(error).name == row.grpc_code


def test_a_subclass_without_a_row_is_classified_as_its_parent_and_a_bug_as_a_500() -> None:
    class Stale(errors.ModelNotReady):
        pass

    assert classify(Stale("x")) is CLASSIFICATION[errors.ModelNotReady]
    assert classify(KeyError("x")) is SERVER_BUG
    assert errors.public_message(KeyError("x")).startswith("internal server error (KeyError)")


def test_only_the_runtime_failing_counts_against_the_breaker() -> None:
    at_fault = {kind for kind, row in CLASSIFICATION.items() if row.model_at_fault}
    assert at_fault == {errors.InferenceFailed}


def test_only_refusals_of_a_model_the_repository_holds_vouch_for_its_name() -> None:
    vouching = {kind for kind, row in CLASSIFICATION.items() if row.model_exists}
    # A store that did not answer says nothing of whether the model exists.
    assert vouching == {errors.ModelNotReady, errors.CircuitOpen}
