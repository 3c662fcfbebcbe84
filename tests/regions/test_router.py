"""`modelserve regions router-config`: an HAProxy configuration that `haproxy -c` accepts, from regions
files with HTTP, gRPC and TLS endpoints and a client map; what cannot be routed is named."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from typer.testing import CliRunner

from modelserve.regions.cli import app

REGIONS = {
    "regions": [
        {"name": "us-east-1", "priority": 1, "store": {"bucket": "models-us"},
         "endpoints": ["http://10.0.0.1:8000", "grpc://10.0.0.1:8001", "http://10.0.0.2:8000"]},
        {"name": "eu-west-1", "priority": 2, "store": {"bucket": "models-eu"},
         "endpoints": ["https://eu-west-1.ml.example.com", "grpcs://eu-west-1.ml.example.com:8443"]},
        {"name": "ap-southeast-1", "priority": 3, "store": {"bucket": "models-ap"},
         "endpoints": ["http://10.2.0.1:8000"]},
    ]
}  # fmt: skip


def router_config(tmp_path: Path, document: Mapping[str, object], *args: str) -> tuple[int, str]:
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(
        app,
        ["router-config", "--regions-file", str(path), "--runtime-socket", str(tmp_path / "api.sock"), *args],
        env={"COLUMNS": "300"},
    )
    return result.exit_code, result.output


def test_the_configuration_passes_haproxy_check_and_routes_by_priority(tmp_path: Path) -> None:
    clients = tmp_path / "clients.map"
    clients.write_text("# office networks\n10.10.0.0/16 eu-west-1\n192.168.7.0/24 ap-southeast-1\n")

    code, text = router_config(tmp_path, REGIONS, "--client-map", str(clients), "--server-timeout", "2")

    assert code == 0, text  # --check (the default) ran haproxy -c on it
    assert f"stats socket {tmp_path / 'api.sock'} mode 600 level admin" in text
    assert "timeout server 2000ms" in text
    assert f"src,map_ip({clients})" in text
    backend = text.split("\nbackend http_eu-west-1\n")[1].split("\n\n")[0]
    servers = [line.split()[1] for line in backend.splitlines() if line.strip().startswith("server ")]
    assert servers == ["eu-west-1_0", "us-east-1_0", "us-east-1_1", "ap-southeast-1_0"], "own first, then by priority"
    assert (
        "server eu-west-1_0 eu-west-1.ml.example.com:443 check observe layer7 error-limit 1 on-error mark-down"
        in backend
    )
    assert "server us-east-1_0 10.0.0.1:8000 backup track http_us-east-1/us-east-1_0" in backend
    grpc = text.split("\nbackend grpc_us-east-1\n")[1].split("\n\n")[0]
    assert "server us-east-1_grpc_0 10.0.0.1:8001 track http_us-east-1/us-east-1_0 proto h2" in grpc
    assert "server eu-west-1_grpc_0 eu-west-1.ml.example.com:8443 backup track http_eu-west-1/eu-west-1_0" in grpc
    assert "retry-on conn-failure empty-response junk-response response-timeout" in text


def test_the_runtime_api_may_listen_on_tcp(tmp_path: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(REGIONS))
    result = CliRunner().invoke(
        app, ["router-config", "--regions-file", str(path), "--runtime-socket", "10.0.0.9:9999"]
    )
    assert result.exit_code == 0, result.output
    assert "stats socket ipv4@10.0.0.9:9999 level admin" in result.output


def test_what_cannot_be_routed_is_named(tmp_path: Path) -> None:
    bad = {"regions": [{"name": "us-east-1", "store": {"bucket": "models-us"}, "endpoints": ["ftp://10.0.0.1"]}]}
    code, text = router_config(tmp_path, bad)
    assert code == 2
    assert "endpoint ftp://10.0.0.1 must start with http://, https://, grpc:// or grpcs://" in text

    clients = tmp_path / "clients.map"
    clients.write_text("10.0.0.0/8 mars-1\n")
    code, text = router_config(tmp_path, REGIONS, "--client-map", str(clients))
    assert code == 2
    assert "no region 'mars-1'" in text


def test_failover_says_what_is_wrong_before_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(REGIONS))
    runner = CliRunner()
    common = ["--regions-file", str(path), "--runtime-api", str(tmp_path / "absent.sock")]

    same = runner.invoke(app, ["failover", "--from-region", "us-east-1", "--to-region", "us-east-1", *common])
    assert same.exit_code == 1
    assert "the source and the target are the same region" in same.output

    unknown = runner.invoke(app, ["failover", "--from-region", "us-east-1", "--to-region", "mars-1", *common])
    assert unknown.exit_code == 2
    assert "no region 'mars-1'" in unknown.output

    no_router = runner.invoke(
        app, ["failover", "--from-region", "us-east-1", "--to-region", "eu-west-1", *common], env={"COLUMNS": "300"}
    )
    assert no_router.exit_code == 2
    assert f"cannot reach HAProxy's runtime API at {tmp_path / 'absent.sock'}" in no_router.output
