"""The vendored schemas are the upstream files schemas/README.md records, each beside its licence."""

from __future__ import annotations

import hashlib
import re

from tests.deploy.crd_schemas import SCHEMAS

README = SCHEMAS / "README.md"


def test_each_vendored_schema_is_the_file_the_readme_records() -> None:
    text = README.read_text()
    recorded = set(re.findall(r"\b[0-9a-f]{64}\b", text))
    vendored = [path for path in SCHEMAS.iterdir() if path.suffix in {".json", ".yaml"}]
    assert len(vendored) >= 5
    for path in vendored:
        assert f"`{path.name}`" in text, f"{README.name} does not say where {path.name} comes from"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in recorded, f"{path.name} differs from the upstream file {README.name} records"


def test_every_licence_the_readme_names_is_vendored() -> None:
    named = set(re.findall(r"`((?:LICENSE|NOTICE)\.[\w-]+)`", README.read_text()))
    assert {"LICENSE.kserve", "LICENSE.flagger", "LICENSE.prometheus-operator"} <= named
    for name in named:
        assert (SCHEMAS / name).is_file(), name
