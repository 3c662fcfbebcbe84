"""The regions file: what it accepts, what it refuses with a message that says what to fix, and keys that
never show in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelserve.regions.config import Credentials, RegionsFileError, load_regions

STORE = {"bucket": "ml-models-us-east-1", "prefix": "/models/"}


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_regions_are_read_with_their_defaults_and_ordered_by_priority(tmp_path: Path) -> None:
    regions = load_regions(
        write(
            tmp_path / "regions.yaml",
            {
                "regions": [
                    {"name": "eu-west-1", "priority": 2, "store": {"bucket": "b-eu"}},
                    {"name": "us-east-1", "priority": 1, "store": STORE, "endpoints": ["https://us.example.com"]},
                ]
            },
        )
    )
    assert regions.names == ["us-east-1", "eu-west-1"]
    us = regions.region("us-east-1")
    assert us.store.prefix == "models"
    assert us.store.url == "s3://ml-models-us-east-1/models"
    assert us.store.key("m", "1", "model.onnx") == "models/m/1/model.onnx"
    assert regions.replication.part_size == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"regions": []}, "regions: List should have at least 1 item"),
        ({"regions": [{"name": "a b", "store": STORE}]}, "'a b' is not a region name"),
        ({"regions": [{"name": "x", "store": {}}]}, "regions.0.store.bucket: Field required"),
        ({"regions": [{"name": "x", "store": STORE}, {"name": "x", "store": STORE}]}, "region x is named more"),
        ({"regions": [{"name": "x", "store": STORE, "colour": 1}]}, "regions.0.colour: Extra inputs"),
        (
            {"regions": [{"name": "x", "store": {**STORE, "credentials": {"access_key_id_env": "K"}}}]},
            "access_key_id_env and secret_access_key_env go together",
        ),
        ({"regions": [{"name": "x", "store": STORE}], "replication": {"max_files": 0}}, "replication.max_files"),
    ],
)
def test_a_file_that_cannot_work_is_refused_saying_what_to_fix(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(RegionsFileError) as caught:
        load_regions(write(tmp_path / "regions.yaml", document))
    assert message in str(caught.value)
    assert str(tmp_path / "regions.yaml") in str(caught.value)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RegionsFileError, match="cannot read the regions file"):
        load_regions(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("regions: [\n")
    with pytest.raises(RegionsFileError, match="is not valid YAML"):
        load_regions(tmp_path / "broken.yaml")


def test_keys_come_from_the_environment_or_a_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("US_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("US_SECRET", "very-secret-value")
    by_env = Credentials(access_key_id_env="US_KEY", secret_access_key_env="US_SECRET")
    keys = by_env.resolve("us-east-1")
    assert keys.secret_access_key.get_secret_value() == "very-secret-value"
    assert "very-secret-value" not in repr(keys)
    assert "very-secret-value" not in repr(by_env)

    monkeypatch.delenv("US_SECRET")
    with pytest.raises(RegionsFileError) as caught:
        by_env.resolve("us-east-1")
    assert str(caught.value) == "region us-east-1: the environment variable US_SECRET is not set"

    (tmp_path / "credentials").write_text("[replication]\naws_access_key_id = AKIA2\naws_secret_access_key = s3cr3t\n")
    by_file = Credentials(file=tmp_path / "credentials", profile="replication")
    assert by_file.resolve("eu-west-1").access_key_id.get_secret_value() == "AKIA2"
    with pytest.raises(RegionsFileError, match=r"has no \[default\] section"):
        Credentials(file=tmp_path / "credentials").resolve("eu-west-1")
