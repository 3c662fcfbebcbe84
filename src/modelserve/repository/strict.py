"""The base of config.yaml's sections: unknown fields are errors, and a read config does not change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config.yaml section: a misspelt field is refused with its name, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
