"""Server settings: defaults, the runbooks' environment names, and errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn.config
from pydantic import ValidationError

from modelserve.config import UNHONOURED, EndpointGroup, ModelControlMode, Settings, describe_error, unknown_variables
from modelserve.models.memory import memory_limit_bytes
from modelserve.server.app import memory_budgets
from tests.server.credentials import API_KEYS, rsa_key, write_jwks, write_public_key


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the process environment; start every test without any of our variables."""
    for field in Settings.model_fields:
        monkeypatch.delenv(Settings.env_name(field), raising=False)
        monkeypatch.delenv(field, raising=False)


def _error(**kwargs: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**kwargs)  # type: ignore[arg-type]
    return describe_error(caught.value)


def test_defaults() -> None:
    settings = Settings()
    assert settings.model_repository == ""
    assert settings.host == "127.0.0.1"
    assert settings.http_port == 8000
    assert settings.workers == 1
    assert settings.log_level == "info"
    assert settings.model_control_mode is ModelControlMode.NONE
    assert settings.load_models == []
    assert settings.model_load_timeout == 30.0
    assert settings.inference_threads >= 2
    assert settings.max_batch_size == 32
    assert settings.batch_timeout_ms == 0.0
    assert settings.max_queue_size == 2048
    assert settings.request_timeout_sec == 60.0
    assert settings.max_input_size_mb == 64.0
    assert settings.max_input_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("MAX_BATCH_SIZE", "8", "max_batch_size", 8),
        ("BATCH_TIMEOUT_MS", "2.5", "batch_timeout_ms", 2.5),
        ("MAX_QUEUE_SIZE", "10", "max_queue_size", 10),
        ("MODEL_LOAD_TIMEOUT", "90", "model_load_timeout", 90.0),
        ("REQUEST_TIMEOUT_SEC", "5", "request_timeout_sec", 5.0),
        ("REQUEST_TIMEOUT", "300", "request_timeout_sec", 300.0),  # the runbooks' name
        ("MAX_NUM_SEQS", "128", "max_num_seqs", 128),
        ("QUANTIZATION", "int8", "quantization", "int8"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "0.85", "vllm_gpu_memory_utilization", 0.85),
        ("MAX_INPUT_SIZE_MB", "0.5", "max_input_size_mb", 0.5),
        ("UVICORN_WORKERS", "4", "workers", 4),
        ("MODEL_CONTROL_MODE", "explicit", "model_control_mode", ModelControlMode.EXPLICIT),
        ("MODEL_REPOSITORY", "/srv/models", "model_repository", "/srv/models"),
        ("HTTP_PORT", "9000", "http_port", 9000),
        ("LOG_LEVEL", "debug", "log_level", "debug"),
        ("INFERENCE_THREADS", "3", "inference_threads", 3),
    ],
)
def test_environment_names(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INFO", "info"),
        ("DEBUG", "debug"),
        ("Warning", "warning"),
        ("WARN", "warning"),
        ("warn", "warning"),
        ("error", "error"),
        ("Error", "error"),
        ("CRITICAL", "critical"),
        ("FATAL", "critical"),
    ],
)
def test_log_level_takes_pythons_level_names_in_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    level = Settings().log_level
    assert level == expected
    assert level in uvicorn.config.LOG_LEVELS  # uvicorn takes only its own lower-case names
    assert Settings.from_options(log_level=value).log_level == expected  # --log-level too


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a,b c", ["a", "b", "c"]), ("mlp", ["mlp"]), ("*", ["*"]), (" iris , simple ", ["iris", "simple"]), ("", [])],
)
def test_load_models_is_split_on_commas_and_spaces(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("LOAD_MODELS", value)
    assert Settings().load_models == expected


def test_load_models_as_a_list_keeps_it() -> None:
    assert Settings(load_models=["a", "b"]).load_models == ["a", "b"]


def test_max_input_bytes_follows_the_megabytes() -> None:
    assert Settings(max_input_size_mb=1.5).max_input_bytes == 1572864


def test_keyword_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("UVICORN_WORKERS", "2")
    monkeypatch.setenv("LOAD_MODELS", "a,b")
    monkeypatch.setenv("MODEL_CONTROL_MODE", "none")
    settings = Settings.from_options(max_batch_size=4, workers=3, load_models=["c"], model_control_mode="explicit")
    assert settings.max_batch_size == 4
    assert settings.workers == 3
    assert settings.load_models == ["c"]
    assert settings.model_control_mode is ModelControlMode.EXPLICIT


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MAX_BATCH_SIZE", "abc", "valid integer"),
        ("MAX_BATCH_SIZE", "-1", "greater than or equal to 0"),
        ("BATCH_TIMEOUT_MS", "20000", "less than or equal to 10000"),
        ("MODEL_LOAD_TIMEOUT", "0", "greater than 0"),
        ("REQUEST_TIMEOUT_SEC", "soon", "valid number"),
        ("MAX_INPUT_SIZE_MB", "-5", "greater than 0"),
        ("UVICORN_WORKERS", "0", "greater than or equal to 1"),
        ("MODEL_CONTROL_MODE", "sometimes", "'none', 'explicit', 'on-demand' or 'poll'"),
        ("LOG_LEVEL", "loud", "not a log level; use one of critical, error, warning, info, debug"),
        ("LOG_LEVEL", "notset", "not a log level"),
        ("HTTP_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_describe_error_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = _error()
    assert message.startswith(f"invalid setting {variable}={value!r}: ")
    assert problem in message


def test_describe_error_gives_one_line_per_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "many")
    monkeypatch.setenv("UVICORN_WORKERS", "0")
    lines = _error().splitlines()
    assert len(lines) == 2
    assert {line.split("=")[0] for line in lines} == {
        "invalid setting MAX_BATCH_SIZE",
        "invalid setting UVICORN_WORKERS",
    }


def test_describe_error_for_keyword_arguments_uses_the_environment_name() -> None:
    message = _error(max_batch_size=-3)
    assert message.startswith("invalid setting MAX_BATCH_SIZE=-3: ")


def test_unknown_keyword_is_refused() -> None:
    assert "MAX_BATCH_SISE" in _error(max_batch_sise=4)


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("workers", "UVICORN_WORKERS"),
        ("max_batch_size", "MAX_BATCH_SIZE"),
        ("batch_timeout_ms", "BATCH_TIMEOUT_MS"),
        ("model_load_timeout", "MODEL_LOAD_TIMEOUT"),
        ("request_timeout_sec", "REQUEST_TIMEOUT_SEC"),
        ("max_input_size_mb", "MAX_INPUT_SIZE_MB"),
        ("model_control_mode", "MODEL_CONTROL_MODE"),
        ("load_models", "LOAD_MODELS"),
    ],
)
def test_env_name(field: str, variable: str) -> None:
    assert Settings.env_name(field) == variable


def test_every_field_has_a_description() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert missing == []


# -- security ----------------------------------------------------------------------------------------------


def test_authentication_is_off_until_a_credential_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert not settings.auth_enabled
    assert settings.auth_open_endpoints == [EndpointGroup.HEALTH, EndpointGroup.METRICS]
    monkeypatch.setenv("API_KEYS", "a-key-of-sixteen-chars:admin")
    monkeypatch.setenv("JWT_ISSUER", "https://issuer.example")
    monkeypatch.setenv("JWT_AUDIENCE", "modelserve")
    settings = Settings()
    assert settings.auth_enabled
    assert settings.api_keys.get_secret_value() == "a-key-of-sixteen-chars:admin"
    assert "a-key-of-sixteen" not in repr(settings)
    assert (settings.jwt_issuer, settings.jwt_audience) == ("https://issuer.example", "modelserve")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("health,metrics,docs", ["health", "metrics", "docs"]), ("docs", ["docs"]), ("", []), (" health ", ["health"])],
)
def test_auth_open_endpoints_is_split_on_commas(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("AUTH_OPEN_ENDPOINTS", value)
    assert Settings().auth_open_endpoints == expected


def test_an_unknown_open_endpoint_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_OPEN_ENDPOINTS", "health,predict")
    message = _error()
    assert message.startswith("invalid setting AUTH_OPEN_ENDPOINTS=")
    assert "'health', 'metrics' or 'docs'" in message


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("API_KEYS", "a-secret-key-of-20-chars:root", "entry 1 ends with an unknown scope"),
        ("API_KEYS", "a-secret-key-of-20-chars,tiny-secret", "entry 2 is shorter than 16 characters"),
        ("JWT_SECRET", "a-secret-too-short", "must be at least 32 bytes"),
    ],
)
def test_a_bad_secret_is_named_but_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = _error()
    assert message.startswith(f"invalid setting {variable}=(hidden): ")
    assert problem in message
    assert value not in message
    assert value.split(",")[0] not in message


@pytest.mark.parametrize("variable", ["JWT_PUBLIC_KEY_FILE", "JWT_JWKS_FILE"])
def test_a_key_file_that_does_not_exist_stops_startup_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "absent"))
    message = _error()
    assert message.startswith(f"invalid setting {variable}='{tmp_path / 'absent'}': ")
    assert "No such file or directory" in message


@pytest.mark.parametrize(
    ("variable", "problem"), [("JWT_PUBLIC_KEY_FILE", "is not a PEM public key"), ("JWT_JWKS_FILE", "is not a JWKS")]
)
def test_a_key_file_that_does_not_parse_stops_startup_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, problem: str
) -> None:
    (tmp_path / "key").write_text("-----BEGIN NOTHING-----")
    monkeypatch.setenv(variable, str(tmp_path / "key"))
    message = _error()
    assert message.startswith(f"invalid setting {variable}=")
    assert problem in message


def test_an_empty_key_file_setting_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", "")
    monkeypatch.setenv("JWT_JWKS_FILE", "")
    settings = Settings()
    assert settings.jwt_public_key_file is None
    assert settings.jwt_jwks_file is None
    assert not settings.auth_enabled


def test_the_settings_check_credentials_without_importing_the_server_layer(tmp_path: Path) -> None:
    """Settings sit below the server: reading them, credentials checked and all, imports no server module."""
    environment = {
        "API_KEYS": API_KEYS,
        "JWT_PUBLIC_KEY_FILE": str(write_public_key(tmp_path, rsa_key("signer"))),
        "JWT_JWKS_FILE": str(write_jwks(tmp_path, {"one": rsa_key("signer")})),
    }
    script = (
        "import sys\n"
        "from modelserve.config import Settings\n"
        "assert Settings().auth_enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('modelserve.server')))\n"
    )
    result = subprocess.run(  # the environment is clean of our variables: see clean_environment
        [sys.executable, "-c", script], env={**os.environ, **environment}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- traffic history ---------------------------------------------------------------------------------------


def test_the_history_defaults_to_a_sqlite_file_in_the_model_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_CACHE_DIR", "/var/cache/modelserve")
    settings = Settings()
    assert settings.traffic_history is True
    assert settings.history_database_url == "sqlite:////var/cache/modelserve/history.sqlite3"
    assert (settings.history_bucket_sec, settings.history_flush_interval_sec) == (60, 10.0)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app:pw@db:5432/modelserve")
    assert Settings().history_database_url == "postgresql+psycopg://app:pw@db:5432/modelserve"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://app:s3cret-pw@db/modelserve", "mysql is not supported; use sqlite or postgresql"),
        ("s3cret-pw at db", "not a database URL; write postgresql+psycopg://"),
    ],
)
def test_a_bad_database_url_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch, url: str, message: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ValidationError) as caught:
        Settings()
    described = describe_error(caught.value)
    assert described.startswith("invalid setting DATABASE_URL=(hidden)")
    assert message in described
    assert "s3cret-pw" not in described
    assert "s3cret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"PREWARM_POLICY": "predictive"},
        {"PREWARM_POLICY": "lru", "MODEL_CONTROL_MODE": "on-demand"},
        {"PREWARM_POLICY": "lru", "MODEL_CONTROL_MODE": "explicit", "MODEL_MEMORY_BUDGET_MB": "512"},
    ],
)
def test_a_prewarm_policy_without_on_demand_loading_and_a_budget_is_refused(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]
) -> None:
    for variable, value in settings.items():
        monkeypatch.setenv(variable, value)
    message = _error()
    assert message.startswith(f"invalid setting PREWARM_POLICY={settings['PREWARM_POLICY']!r}: ")
    assert (
        "set MODEL_CONTROL_MODE=on-demand and MODEL_MEMORY_BUDGET_MB (or MODEL_MEMORY_BUDGET_FRACTION) too" in message
    )


def test_a_budget_fraction_serves_a_policy_and_takes_a_share_of_the_process_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in {"PREWARM_POLICY": "predictive", "MODEL_CONTROL_MODE": "on-demand"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("MODEL_MEMORY_BUDGET_FRACTION", "0.5")
    [budget] = memory_budgets(Settings())
    assert (budget.kind, budget.setting) == ("CPU", "MODEL_MEMORY_BUDGET_FRACTION")
    assert budget.limit_bytes == memory_limit_bytes() // 2
    monkeypatch.setenv("MODEL_MEMORY_BUDGET_FRACTION", "1")
    assert "MODEL_MEMORY_BUDGET_FRACTION" in _error()  # the whole limit leaves nothing for the server itself


def test_a_prewarm_policy_with_on_demand_loading_and_a_budget_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREWARM_POLICY", "predictive")
    monkeypatch.setenv("MODEL_CONTROL_MODE", "on-demand")
    monkeypatch.setenv("MODEL_MEMORY_BUDGET_MB", "512")
    assert Settings().prewarm_policy == "predictive"


def test_variables_that_look_like_settings_but_are_none_are_named() -> None:
    warnings = unknown_variables(
        {
            "REQUEST_TIMEOUT_SECS": "5",  # a near miss
            "MODEL_VERSION": "v1.0.0",  # a runbook's variable no setting reads
            "REQUEST_TIMEOUT": "300",  # read, under the runbooks' name
            "MAX_BATCH_SIZE": "8",
            "HTTP_PROXY": "http://proxy:3128",  # someone else's
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        }
    )
    assert warnings == [
        "MODEL_VERSION is set but modelserve does not read it: " + UNHONOURED["MODEL_VERSION"],
        "REQUEST_TIMEOUT_SECS is not a setting and is ignored; did you mean REQUEST_TIMEOUT_SEC?",
    ]
