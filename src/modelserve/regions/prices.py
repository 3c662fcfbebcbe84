"""The price table (PRICES_FILE, YAML): what a unit of usage costs in each region, and the budgets.

```yaml
currency: USD
regions:
  us-east-1:
    cpu_second: 0.0000136          # one second of a model instance computing on the CPU
    gpu_second:                    # by GPU type: the longest key the device's name contains
      H100: 0.00114
      A10G: 0.000306
      default: 0.0006              # any other GPU
    memory_gb_hour: 0.0057         # host memory a loaded version holds, 1 GB = 10^9 bytes
    gpu_memory_gb_hour: 0          # GPU memory held (often priced into gpu_second instead)
    transfer_gb: 0.02              # bytes replicated out of this region into another
  "*": {...}                       # every region not named
budgets:
  - {region: us-east-1, model: resnet50, daily: 25}
  - {monthly: 5000}                # every region and model together
anomaly: {window_days: 14, threshold: 3.5}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelserve.regions.usage import CPU, GPU_PREFIX, NETWORK, Usage

ANY = "*"  # a budget's region or model that covers all of them; the price entry of unnamed regions
GB = 1e9
HOUR_S = 3600.0

Price = Annotated[float, Field(ge=0)]


class PriceError(ValueError):
    """The price table cannot be read or does not price some usage; the message says what to fix."""


class RegionPrices(BaseModel):
    """What a unit of usage costs in one region."""

    model_config = ConfigDict(extra="forbid")

    cpu_second: Price = 0.0
    gpu_second: dict[str, Price] = Field(default_factory=dict)
    memory_gb_hour: Price = 0.0
    gpu_memory_gb_hour: Price = 0.0
    transfer_gb: Price = 0.0

    def gpu(self, device: str, region: str) -> float:
        """The price of a second of ``device`` (``gpu:<type>``): the longest key its type contains."""
        kind = device.removeprefix(GPU_PREFIX).lower()
        matches = [key for key in self.gpu_second if key != "default" and key.lower() in kind]
        if matches:
            return self.gpu_second[max(matches, key=len)]
        if "default" in self.gpu_second:
            return self.gpu_second["default"]
        raise PriceError(
            f"the price table has no gpu_second for {device.removeprefix(GPU_PREFIX)!r} in {region}: "
            "add its type (a part of its name, such as H100) or a default"
        )


class Budget(BaseModel):
    """An amount not to exceed per UTC day or month, for one region and model, or all of either."""

    model_config = ConfigDict(extra="forbid")

    region: str = ANY
    model: str = ANY
    # Above zero: spending of 0 would be "at" a budget of 0, and the alert would never clear.
    daily: Annotated[float, Field(gt=0)] | None = None
    monthly: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_period(self) -> Budget:
        if (self.daily is None) == (self.monthly is None):
            raise ValueError("give a budget exactly one of daily or monthly")
        return self

    @property
    def period(self) -> str:
        """``day`` or ``month``."""
        return "day" if self.daily is not None else "month"

    @property
    def amount(self) -> float:
        """What the period may cost."""
        return self.daily if self.daily is not None else self.monthly or 0.0

    def covers(self, region: str, model: str) -> bool:
        """Whether usage of ``model`` in ``region`` counts against this budget."""
        return self.region in (ANY, region) and self.model in (ANY, model)


class Anomaly(BaseModel):
    """How a day's cost is judged against the days before it."""

    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(14, ge=3, le=90)  # the trailing days the median and MAD are taken over
    min_days: int = Field(7, ge=3, le=90)  # days of history a model needs before it is judged
    threshold: float = Field(3.5, gt=0)  # |z| above which a day is anomalous (Iglewicz and Hoaglin)


class PriceTable(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    regions: dict[str, RegionPrices]
    budgets: list[Budget] = Field(default_factory=list)
    anomaly: Anomaly = Field(default_factory=Anomaly)

    def region(self, name: str) -> RegionPrices:
        """The prices of ``name``, or of ``*``."""
        prices = self.regions.get(name) or self.regions.get(ANY)
        if prices is None:
            raise PriceError(f"the price table has no prices for region {name!r}: add it, or a '*' entry")
        return prices


@dataclass(frozen=True, slots=True)
class Cost:
    """What some usage cost, by what it paid for."""

    compute: float = 0.0
    memory: float = 0.0
    transfer: float = 0.0

    @property
    def total(self) -> float:
        """Everything together."""
        return self.compute + self.memory + self.transfer

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.compute + other.compute, self.memory + other.memory, self.transfer + other.transfer)


def cost_of(table: PriceTable, region: str, device: str, usage: Usage) -> Cost:
    """What ``usage`` on ``device`` in ``region`` cost at ``table``'s prices."""
    prices = table.region(region)
    if device == NETWORK:
        return Cost(transfer=usage.transfer_bytes / GB * prices.transfer_gb)
    per_second = prices.cpu_second if device == CPU else prices.gpu(device, region)
    memory = (
        usage.memory_byte_seconds * prices.memory_gb_hour + usage.gpu_memory_byte_seconds * prices.gpu_memory_gb_hour
    ) / (GB * HOUR_S)
    return Cost(compute=usage.compute_seconds * per_second, memory=memory)


def load_prices(path: Path) -> PriceTable:
    """Read and check the price table at ``path``."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PriceError(f"cannot read the price table {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PriceError(f"{path} is not YAML: {exc}") from None
    try:
        return PriceTable.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise PriceError(f"{path}: {problems}") from None
