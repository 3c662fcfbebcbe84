"""Server configuration: one pydantic-settings model read from the runbooks' environment names.

Every field's environment variable is its name upper-cased (``MAX_BATCH_SIZE``), except where the
runbooks use another (``UVICORN_WORKERS``). Command-line options override the environment, and
``modelserve serve --help`` lists each option with the variable behind it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelserve.cpus import available_cpus
from modelserve.credentials import load_jwks, load_public_key, parse_api_keys


class ModelControlMode(StrEnum):
    """How models get loaded: Triton's names, so its users know them."""

    NONE = "none"  # everything in the repository loads at start; load/unload requests are refused
    EXPLICIT = "explicit"  # models named by LOAD_MODELS load at start; the rest through the API
    ON_DEMAND = "on-demand"  # as explicit, and a request for a model not loaded loads it, evicting idle ones
    POLL = "poll"  # as none, and the repository is read again every REPOSITORY_POLL_SECS: changes load


class PrewarmPolicy(StrEnum):
    """Who decides which models to load ahead of their requests and which idle ones to evict (docs/PREWARM.md)."""

    NONE = "none"  # loads on demand only, evicting least recently used first
    LRU = "lru"
    HYBRID_HISTOGRAM = "hybrid-histogram"
    PREDICTIVE = "predictive"


class EndpointGroup(StrEnum):
    """Endpoints that AUTH_OPEN_ENDPOINTS can leave open to callers without credentials."""

    HEALTH = "health"  # /health, /health/*, /v2/health/*; gRPC ServerLive, ServerReady, ModelReady
    METRICS = "metrics"  # /metrics
    DOCS = "docs"  # /docs, /redoc, /openapi.json


# Never echoed in an error message: describe_error says which is wrong, not what it holds.
SECRETS = frozenset({"api_keys", "jwt_secret", "database_url"})

# Python's level names but NOTSET (which logs everything), lower-cased, each with the name it stands for:
# WARN and FATAL are the standard library's aliases of WARNING and CRITICAL.
_LEVEL_NUMBERS = logging.getLevelNamesMapping()
LOG_LEVELS = {name.lower(): logging.getLevelName(number).lower() for name, number in _LEVEL_NUMBERS.items() if number}
_LEVEL_NAMES = ", ".join(sorted(set(LOG_LEVELS.values()), key=lambda name: -_LEVEL_NUMBERS[name.upper()]))

# Back-ends the traffic history runs on, tested both; a DATABASE_URL naming another is refused at startup.
DATABASE_BACKENDS = ("sqlite", "postgresql")


# Variables the runbooks set that no setting reads, and why; logged at start, listed in CONFIGURATION.md.
UNHONOURED = {
    "ENFORCE_BATCH_SIZE": "batches never exceed a model's max_batch_size (MAX_BATCH_SIZE where config.yaml sets "
    "none); a request larger than it is refused with 400, so there is nothing to enforce",
    "MODEL_VERSION": "the version served is the model's version_policy (config.yaml) or a load request's; set "
    "version_policy: {specific: {versions: [N]}} to pin one",
    "NCCL_TIMEOUT": "NCCL's own, read by NCCL in distributed GPU inference (vLLM); modelserve runs no NCCL itself",
    "ENVIRONMENT": "a label of the deployment; modelserve behaves the same in every environment",
}
# Families of variables other programs read (OpenTelemetry, boto3, fsspec, the CLI clients, the router's
# commands): never mistaken for a misspelt setting.
_FOREIGN = ("OTEL_", "AWS_", "FSSPEC_", "MODELSERVE_", "ROUTER_", "PYTHON", "PIP_", "GRPC_DEFAULT", "SSL_")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each variable that looks like a setting but is none: a runbook's variable modelserve
    does not read (with why), or a near miss of a setting's name (``MAX_BATCH_SIZES``), which would
    otherwise be ignored without a word while its author thinks it took effect."""
    known = {Settings.env_name(field) for field in Settings.model_fields} | {"REQUEST_TIMEOUT"}
    warnings = []
    for name in sorted(environ):
        if name in known or name.startswith(_FOREIGN):
            continue
        if (why := UNHONOURED.get(name)) is not None:
            warnings.append(f"{name} is set but modelserve does not read it: {why}")
        elif closest := difflib.get_close_matches(name, known, n=1, cutoff=0.8):
            warnings.append(f"{name} is not a setting and is ignored; did you mean {closest[0]}?")
    return warnings


class Settings(BaseSettings):
    """Everything an operator can set, grouped by concern."""

    # No populate_by_name: with it, `workers` would also be read from a stray WORKERS variable.
    # Inputs are hidden from pydantic's own messages: API_KEYS and JWT_SECRET must never reach a log.
    model_config = SettingsConfigDict(extra="forbid", validate_default=True, hide_input_in_errors=True)

    # -- server ------------------------------------------------------------------------------------
    model_repository: str = Field(
        "", description="Path or URL (s3://bucket/models, any fsspec URL) of the model repository to serve."
    )
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a container).")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (Open Inference Protocol and /v1).")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (Open Inference Protocol); 0 turns gRPC off.")
    grpc_keepalive_time_ms: int = Field(
        7_200_000, ge=1000, description="Idle time after which the gRPC server pings a client to check it is there."
    )
    grpc_keepalive_timeout_ms: int = Field(
        20_000, ge=100, description="How long the gRPC server waits for a keepalive ping's answer before closing."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        validation_alias="UVICORN_WORKERS",
        description="HTTP worker processes sharing the port; each loads its own models.",
    )
    log_level: str = Field(
        "info", description="Log level of the server: critical, error, warning, info or debug, in any case."
    )
    log_format: str = Field(
        "json", pattern="^(json|console)$", description="json: one JSON object per line; console: for a terminal."
    )
    access_log_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Share of inference requests that get an access log line (0: none)."
    )
    trace_sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of new traces recorded when an OTLP endpoint is set (0: tracing off); "
        "a caller's sampled traceparent is always followed.",
    )

    # -- models ------------------------------------------------------------------------------------
    model_control_mode: ModelControlMode = Field(
        ModelControlMode.NONE,
        description="none: load every model at start; explicit: load LOAD_MODELS at start, the rest by API; "
        "on-demand: as explicit, and a request for a model not loaded loads it, evicting idle models "
        "least recently used first when memory is short; poll: as none, and the repository is read again "
        "every REPOSITORY_POLL_SECS, new models and versions loaded and removed ones unloaded.",
    )
    repository_poll_secs: float = Field(
        15.0,
        gt=0,
        description="In poll mode, seconds between two reads of the repository (Triton's --repository-poll-secs).",
    )
    load_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models to load at start in explicit mode (comma-separated; * means all).",
    )
    model_cache_dir: Path = Field(
        Path("/tmp/model_cache"),
        description="Where models of a remote repository are mirrored and verified; set without MODEL_REPOSITORY, "
        "the folder models are served from, as the runbooks use it.",
    )
    model_load_timeout: float = Field(
        30.0, gt=0, description="Seconds a model may take to load before it is marked failed."
    )
    inference_threads: int = Field(
        default_factory=lambda: max(2, available_cpus()),
        ge=1,
        le=256,
        description="Threads that run inference, shared by all models (default: the CPUs this process may use).",
    )

    # -- batching ----------------------------------------------------------------------------------
    max_batch_size: int = Field(
        32, ge=0, le=65536, description="Batch limit for models whose config does not set max_batch_size."
    )
    batch_timeout_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="Default wait for a batch to fill (ms); 0 batches only what queued while busy.",
    )
    max_queue_size: int = Field(2048, ge=0, description="Default bound of each model's request queue (0: unbounded).")
    inline_inference_us: float = Field(
        100.0,
        ge=0,
        le=10_000,
        description="Batches of models that compute faster than this (µs) run on the event loop; 0: never.",
    )

    # -- generative models (docs/GENERATIVE.md) ---------------------------------------------------
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Generations in a generative model's running batch, where its config.yaml's llm section "
        "sets no max_num_seqs (default there: 8).",
    )
    quantization: Literal["int8", "fp8"] | None = Field(
        None,
        description="Quantization of generative models whose llm section sets none: int8 on the CPU engine, fp8 "
        "on vLLM; a model whose engine cannot honour it fails to load, with the reason.",
    )
    vllm_gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of the GPU's memory vLLM takes for a generative model (weights and KV cache), where "
        "its llm section sets no gpu_memory_utilization; models on the CPU engine are left as they are.",
    )

    # -- limits ------------------------------------------------------------------------------------
    request_timeout_sec: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("REQUEST_TIMEOUT_SEC", "REQUEST_TIMEOUT"),
        description="Seconds a request may wait and run before it is answered 504 (REQUEST_TIMEOUT, the "
        "runbooks' name, is read too).",
    )
    max_input_size_mb: float = Field(64.0, gt=0, description="Largest request body accepted (MiB); larger is 413.")
    response_cache_mb: float = Field(
        256.0,
        ge=0,
        description="Bytes of answers the response cache keeps, all models together (MiB), for the models whose "
        "config.yaml sets response_cache: {enable: true}; least recently used out first (0: no cache).",
    )
    max_inflight_requests: int = Field(
        0,
        ge=0,
        description="Inference requests the process holds at once, all models together; more get 429 (0: no limit).",
    )
    grpc_stream_max_inflight: int = Field(
        64,
        ge=1,
        le=65536,
        description="Requests one gRPC stream (ModelStreamInfer) may have inside the server at once; the "
        "stream is read no further until their answers are sent.",
    )
    circuit_breaker_failures: int = Field(
        5,
        ge=0,
        description="Requests in a row failing in a model's runtime that open its circuit breaker "
        "(503 until the cool-down; 0: off).",
    )
    circuit_breaker_cooldown_sec: float = Field(
        30.0, gt=0, description="Seconds an open breaker refuses a model's requests before one goes through as a trial."
    )
    model_memory_budget_mb: float = Field(
        0.0,
        ge=0,
        description="Host memory (MiB) loaded models may hold together, each measured as it loads; a load "
        "beyond it evicts idle models in on-demand mode, else is refused with 507 (0: no budget).",
    )
    model_memory_budget_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Where MODEL_MEMORY_BUDGET_MB is 0: the budget as a share of the memory this process may "
        "hold, its container's limit (cgroup) or else the host's memory, read at start (0: no budget).",
    )
    gpu_memory_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of GPU 0's memory loaded models may hold together, as MODEL_MEMORY_BUDGET_MB "
        "does for host memory (0: no budget; ignored with a warning on a host without a GPU).",
    )
    prewarm_policy: PrewarmPolicy = Field(
        PrewarmPolicy.NONE,
        description="Pre-warming policy in on-demand mode with MODEL_MEMORY_BUDGET_MB: loads models ahead of "
        "the requests it expects and picks which idle models to evict (lru, hybrid-histogram, predictive; "
        "none: load on demand only).",
    )
    memory_soft_limit_mb: float = Field(
        0.0,
        ge=0,
        description="Process RSS (MiB) above which idle models are evicted in on-demand mode and loads are "
        "refused with 507 (0: no limit).",
    )
    memory_hard_limit_mb: float = Field(
        0.0,
        ge=0,
        description="Process RSS (MiB) above which /health/live fails, so the pod restarts before an OOM kill "
        "(0: no limit).",
    )
    shutdown_grace_sec: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, seconds in-flight and queued requests get to finish before the server exits.",
    )

    # -- security ----------------------------------------------------------------------------------
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys: comma-separated 'key', 'key:infer' or 'key:admin' entries, "
        "or the path of a file with one per line.",
    )
    jwt_secret: SecretStr = Field(
        SecretStr(""), description="Shared secret (at least 32 bytes) that verifies HS256 bearer tokens."
    )
    jwt_public_key_file: Path | None = Field(
        None, description="PEM file of the RSA public key that verifies RS256 bearer tokens."
    )
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS JSON file of RSA keys that verify RS256 bearer tokens; a token's kid picks one."
    )
    jwt_issuer: str = Field("", description="Issuer (iss) bearer tokens must name; empty: not checked.")
    jwt_audience: str = Field("", description="Audience (aud) bearer tokens must include; empty: not checked.")
    auth_open_endpoints: Annotated[list[EndpointGroup], NoDecode] = Field(
        default_factory=lambda: [EndpointGroup.HEALTH, EndpointGroup.METRICS],
        description="Endpoints that need no credentials when authentication is on: "
        "comma-separated health, metrics, docs; empty: none.",
    )

    # -- traffic history ---------------------------------------------------------------------------
    traffic_history: bool = Field(
        True, description="Record each inference request's arrival, latency and outcome in per-model time buckets."
    )
    database_url: SecretStr = Field(
        SecretStr(""),
        description="Database of the traffic history: postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or "
        "sqlite:///PATH; empty: a SQLite file in MODEL_CACHE_DIR.",
    )
    history_bucket_sec: int = Field(
        60,
        ge=1,
        le=86_400,
        description="Width of a traffic-history bucket (s): arrivals are counted per model per bucket.",
    )
    history_flush_interval_sec: float = Field(
        10.0, gt=0, le=3600, description="Seconds between writes of the traffic history's buckets to the database."
    )
    history_retention_days: float = Field(
        35.0, ge=0, description="Traffic-history buckets older than this many days are deleted (0: kept forever)."
    )
    history_max_pending_buckets: int = Field(
        60_000,
        ge=1,
        description="Traffic-history buckets kept in memory while the database cannot be written; older ones are "
        "dropped.",
    )
    db_pool_size: int = Field(
        5, ge=1, le=1000, description="Connections each database engine keeps open (SQLAlchemy's pool_size)."
    )
    db_max_overflow: int = Field(
        10,
        ge=0,
        le=1000,
        description="Connections an engine may open beyond DB_POOL_SIZE when all are busy; beyond both, callers wait.",
    )

    # -- regions -----------------------------------------------------------------------------------
    region: str = Field(
        "local",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Name of the region this server runs in (us-east-1, say): the label of its usage and cost.",
    )
    regions_file: Path | None = Field(
        None,
        description="Regions file (YAML) of `modelserve regions`: each region's model store, serving endpoints and "
        "priority (docs/REGIONS.md).",
    )
    prices_file: Path | None = Field(
        None,
        description="Price table (YAML) that prices the recorded usage for the cost metrics; none: no cost metrics.",
    )
    cost_refresh_sec: float = Field(
        60.0, gt=0, le=86_400, description="Seconds between two readings of the cost figures /metrics exports."
    )
    probe_model: str = Field(
        "",
        description="Model this server infers on in every other region of REGIONS_FILE, each PROBE_INTERVAL_SEC, "
        "to measure cross-region latency and availability (empty: no probes).",
    )
    probe_interval_sec: float = Field(15.0, gt=0, le=3600, description="Seconds between two rounds of region probes.")
    probe_timeout_sec: float = Field(
        5.0, gt=0, le=60, description="Seconds a region probe may take before it counts as failed."
    )

    @property
    def history_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file in MODEL_CACHE_DIR it defaults to."""
        return self.database_url.get_secret_value() or f"sqlite:///{self.model_cache_dir / 'history.sqlite3'}"

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on as soon as any credential is configured."""
        return bool(
            self.api_keys.get_secret_value()
            or self.jwt_secret.get_secret_value()
            or self.jwt_public_key_file
            or self.jwt_jwks_file
        )

    @property
    def max_input_bytes(self) -> int:
        """MAX_INPUT_SIZE_MB in bytes, the unit the protocols compare against."""
        return int(self.max_input_size_mb * 1024 * 1024)

    @classmethod
    def from_options(cls, **fields: Any) -> Settings:
        """Settings with some fields given by name (command-line options), the rest from the environment."""
        by_init_name: dict[str, Any] = {
            cls.env_name(k) if cls.model_fields[k].validation_alias else k: v for k, v in fields.items()
        }
        return cls(**by_init_name)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else field.upper()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        """Take LOG_LEVEL as Python's logging and most deployments write it (INFO, Warning, WARN), and keep
        the lower-case name its aliases stand for, which uvicorn requires."""
        if not isinstance(value, str):
            return value
        if (level := LOG_LEVELS.get(value.strip().lower())) is None:
            raise ValueError(f"not a log level; use one of {_LEVEL_NAMES} (any case; warn and fatal are aliases)")
        return level

    @model_validator(mode="after")
    def _cache_dir_alone_is_the_repository(self) -> Settings:
        """The runbooks point MODEL_CACHE_DIR at the folder they copy models into, and set no
        MODEL_REPOSITORY: that folder is then the repository."""
        if not self.model_repository and "model_cache_dir" in self.model_fields_set:
            self.model_repository = str(self.model_cache_dir)
        return self

    @field_validator("load_models", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        """Take LOAD_MODELS the way operators write it: ``a,b`` or ``a b``."""
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("auth_open_endpoints", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        """Take AUTH_OPEN_ENDPOINTS as ``health,metrics``; an empty value opens nothing."""
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    # The checks below load what the server will load, so a bad key stops startup, not the first request.

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value().encode()) < 32:
            raise ValueError("an HS256 secret must be at least 32 bytes long (RFC 7518); use a longer one")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        # Imported here: SQLAlchemy is only needed once a URL is given, not to read the other settings.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        text = value.get_secret_value()
        if not text:
            return value
        # The messages never quote the URL: it may hold a password.
        try:
            backend = make_url(text).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL; write postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
            ) from None
        if backend not in DATABASE_BACKENDS:
            raise ValueError(f"{backend} is not supported; use {' or '.join(DATABASE_BACKENDS)}")
        return value

    @field_validator("prewarm_policy")
    @classmethod
    def _prewarm_needs_a_budget(cls, value: PrewarmPolicy, info: ValidationInfo) -> PrewarmPolicy:
        if value is not PrewarmPolicy.NONE and (
            info.data.get("model_control_mode") is not ModelControlMode.ON_DEMAND
            or not (info.data.get("model_memory_budget_mb") or info.data.get("model_memory_budget_fraction"))
        ):
            raise ValueError(
                "a pre-warming policy loads and evicts models itself: set MODEL_CONTROL_MODE=on-demand and "
                "MODEL_MEMORY_BUDGET_MB (or MODEL_MEMORY_BUDGET_FRACTION) too"
            )
        return value

    @field_validator("prices_file")
    @classmethod
    def _check_prices(cls, value: Path | None) -> Path | None:
        if value is not None:
            from modelserve.regions.prices import load_prices  # pydantic and YAML only, read once at startup

            load_prices(value)
        return value

    @field_validator("probe_model")
    @classmethod
    def _probes_need_regions(cls, value: str, info: ValidationInfo) -> str:
        if value:
            from modelserve.regions.config import load_regions  # pydantic and YAML only, read once at startup

            path, region = info.data.get("regions_file"), info.data.get("region")
            if path is None:
                raise ValueError("probes go to the other regions of the regions file: set REGIONS_FILE too")
            names = load_regions(path).names
            if region not in names:
                raise ValueError(f"REGION is {region}, which {path} does not name; it names {', '.join(names)}")
        return value

    @field_validator("jwt_public_key_file", "jwt_jwks_file", "prices_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty JWT_*_FILE means none, as an unset one does (not the current directory)."""
        return None if value == "" else value

    @field_validator("jwt_public_key_file")
    @classmethod
    def _check_public_key(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_public_key(value)
        return value

    @field_validator("jwt_jwks_file")
    @classmethod
    def _check_jwks(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_jwks(value)
        return value


def describe_error(error: ValidationError) -> str:
    """A validation error as one line per bad setting, named by its environment variable."""
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        name = Settings.env_name(field) if field in Settings.model_fields else field.upper()
        value = problem.get("input")
        shown = "(hidden)" if field in SECRETS else repr(str(value) if isinstance(value, Path) else value)
        lines.append(f"invalid setting {name}={shown}: {problem['msg']}")
    return "\n".join(lines)
