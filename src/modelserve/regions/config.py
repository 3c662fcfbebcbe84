"""The regions file: each region's model store, serving endpoints and priority, and how replication runs.

```yaml
regions:
  - name: us-east-1
    priority: 1                        # lower is preferred; the default source of replication
    store:
      endpoint_url: https://s3.us-east-1.amazonaws.com   # optional: AWS's own endpoint when absent
      bucket: ml-models-us-east-1
      prefix: models                   # the repository's root in the bucket, as MODEL_REPOSITORY names it
      credentials:                     # optional: boto3's default chain when absent
        access_key_id_env: US_EAST_1_ACCESS_KEY_ID
        secret_access_key_env: US_EAST_1_SECRET_ACCESS_KEY
        # or: file: /etc/modelserve/us-east-1.credentials   (AWS's INI format), profile: default
    endpoints: [https://us-east-1.ml.example.com]
replication: {part_size_mb: 8, max_files: 4, max_parts: 8, max_attempts: 5}
```

Credentials are read when a client is built and kept in SecretStr, so no message, log line or repr of
a region shows them; the file names variables and files, never secrets.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelserve.repository.layout import VALID_NAME


class RegionsFileError(ValueError):
    """The regions file is missing, unreadable or says something that cannot work; the message says what."""


class Credentials(BaseModel):
    """Where a store's keys come from: environment variables, or an AWS credentials file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    session_token_env: str | None = None
    file: Path | None = None
    profile: str = "default"

    @model_validator(mode="after")
    def _one_source(self) -> Credentials:
        by_env = self.access_key_id_env is not None or self.secret_access_key_env is not None
        if by_env and self.file is not None:
            raise ValueError("give either access_key_id_env/secret_access_key_env or file, not both")
        if by_env and (self.access_key_id_env is None or self.secret_access_key_env is None):
            raise ValueError("access_key_id_env and secret_access_key_env go together")
        return self

    def resolve(self, region: str) -> Keys:
        """The keys themselves, read now; a RegionsFileError names the variable or file that lacks them."""
        if self.file is not None:
            parser = configparser.ConfigParser()
            try:
                with self.file.open() as handle:
                    parser.read_file(handle)
            except (OSError, configparser.Error) as exc:
                raise RegionsFileError(f"region {region}: cannot read credentials file {self.file}: {exc}") from None
            if not parser.has_section(self.profile):
                raise RegionsFileError(f"region {region}: {self.file} has no [{self.profile}] section")
            section = parser[self.profile]
            key_id, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
            if not key_id or not secret:
                raise RegionsFileError(
                    f"region {region}: [{self.profile}] of {self.file} needs aws_access_key_id "
                    "and aws_secret_access_key"
                )
            token = section.get("aws_session_token")
            return Keys(SecretStr(key_id), SecretStr(secret), SecretStr(token) if token else None)
        names = [n for n in (self.access_key_id_env, self.secret_access_key_env) if n]
        if missing := [n for n in names if not os.environ.get(n)]:
            raise RegionsFileError(f"region {region}: the environment variable {', '.join(missing)} is not set")
        token = os.environ.get(self.session_token_env) if self.session_token_env else None
        return Keys(
            SecretStr(os.environ[self.access_key_id_env or ""]),
            SecretStr(os.environ[self.secret_access_key_env or ""]),
            SecretStr(token) if token else None,
        )

    @property
    def given(self) -> bool:
        """Whether the file names any credentials (else boto3's default chain finds them)."""
        return self.file is not None or self.access_key_id_env is not None


@dataclass(frozen=True)
class Keys:
    """A store's credentials, never shown."""

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None


class Store(BaseModel):
    """A region's model repository on S3 (or an S3-compatible store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = Field(None, description="The bucket's AWS region, when it is not the region's name.")
    credentials: Credentials = Credentials()

    @field_validator("prefix")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip("/")

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` below the repository's root."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def url(self) -> str:
        """The repository as MODEL_REPOSITORY names it (s3://bucket/prefix)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


class Region(BaseModel):
    """One region: where its models are stored and where it serves them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    store: Store
    endpoints: list[str] = []
    priority: int = 100

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not VALID_NAME.match(value):
            raise ValueError(f"'{value}' is not a region name: letters, digits, '.', '_' and '-'")
        return value


class Replication(BaseModel):
    """How copies run: part size, concurrency, and how long to keep retrying before dead-lettering a job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part_size_mb: float = Field(
        8.0, ge=0.0625, le=5120.0, description="Multipart part size; S3 refuses parts under 5 MiB but the last."
    )
    multipart_threshold_mb: float = Field(
        8.0, gt=0, description="Files larger than this are copied in parts; smaller ones are held whole, once each."
    )
    max_files: int = Field(4, ge=1, le=64, description="Files of one job copied at once.")
    max_parts: int = Field(8, ge=1, le=256, description="Parts in flight at once, all files together.")
    request_attempts: int = Field(8, ge=1, le=50, description="Tries of one S3 call before the job attempt fails.")
    backoff_initial_s: float = Field(0.2, gt=0, description="First retry's wait; doubles each time, with jitter.")
    backoff_max_s: float = Field(10.0, gt=0, description="Longest wait between two tries of one call.")
    max_attempts: int = Field(5, ge=1, le=100, description="Attempts of a job before it is dead-lettered.")
    job_backoff_s: float = Field(30.0, ge=0, description="Wait before a failed job's next attempt; doubles each time.")
    lease_s: float = Field(
        120.0, gt=0, description="A job whose replicator stopped renewing it (it died) is taken up after this long."
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)

    @property
    def part_size(self) -> int:
        """Part size in bytes."""
        return int(self.part_size_mb * 1024 * 1024)

    @property
    def multipart_threshold(self) -> int:
        """Threshold in bytes."""
        return int(self.multipart_threshold_mb * 1024 * 1024)


class RegionsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regions: list[Region] = Field(min_length=1)
    replication: Replication = Replication()

    @model_validator(mode="after")
    def _unique(self) -> RegionsFile:
        names = [r.name for r in self.regions]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"region {', '.join(duplicates)} is named more than once")
        return self

    def region(self, name: str) -> Region:
        """The region called ``name``; a RegionsFileError lists the known ones otherwise."""
        for region in self.regions:
            if region.name == name:
                return region
        raise RegionsFileError(f"no region '{name}' in the regions file; it names {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        """Region names, by priority."""
        return [r.name for r in self.by_priority]

    @property
    def by_priority(self) -> list[Region]:
        """Regions, preferred first."""
        return sorted(self.regions, key=lambda r: (r.priority, r.name))


def load_regions(path: Path | str) -> RegionsFile:
    """Read and check a regions file; every problem is a RegionsFileError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RegionsFileError(f"cannot read the regions file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RegionsFileError(f"{path} is not valid YAML: {exc}") from None
    try:
        return RegionsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}" for error in exc.errors()
        )
        raise RegionsFileError(f"{path}: {problems}") from None
