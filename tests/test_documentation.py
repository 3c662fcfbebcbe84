"""Operator documentation stays in step with the code it describes."""

from __future__ import annotations

from pathlib import Path

from modelserve.config import UNHONOURED, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_with_its_variable_and_option() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    for field in Settings.model_fields:
        assert f"| `{Settings.env_name(field)}` |" in text, f"{Settings.env_name(field)} missing from CONFIGURATION.md"
        option = "--load-model" if field == "load_models" else f"--{field.replace('_', '-')}"
        assert f"`{option}`" in text, f"{option} missing from CONFIGURATION.md"


def test_every_runbook_variable_not_read_is_listed_with_why() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text().split("## Variables modelserve does not read", 1)[1]
    for name in UNHONOURED:
        assert f"| `{name}` |" in text, f"{name} missing from CONFIGURATION.md's variables not read"


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in ("docs/API.md", "docs/MODEL_REPOSITORY.md", "docs/CONFIGURATION.md", "docs/ARCHITECTURE.md"):
        assert f"]({target})" in readme
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"
