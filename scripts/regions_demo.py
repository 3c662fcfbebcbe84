"""`make run-regions`: the example models served by two regions behind HAProxy, on this machine.

Each region is a moto S3 store holding the example repository (published with its SHA256SUMS, as
replication leaves it) and a `modelserve serve` on it that probes the other region; HAProxy runs on
the configuration `modelserve regions router-config` writes, on ``--port``. It prints the commands to
try (requests by region, a failover and back) and runs until Ctrl-C. Development only: it uses the
tests' launchers (moto, free ports) from the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import tempfile
from contextlib import ExitStack, suppress
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.server import free_port  # noqa: E402 - the tests' launchers, from the checkout
from tests.regions.conftest import Endpoint  # noqa: E402
from tests.regions.routing import regional_servers, router_settings, running_router, write_regions  # noqa: E402
from tests.s3 import running_s3  # noqa: E402

REGIONS = ("us-east-1", "eu-west-1")


def upload(url: str, bucket: str, repository: Path) -> None:
    """Every model of ``repository`` into ``bucket`` below models/, each with the SHA256SUMS a server verifies."""
    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client.create_bucket(Bucket=bucket)
    for model in sorted(p for p in repository.iterdir() if p.is_dir()):
        sums = []
        for path in sorted(p for p in model.rglob("*") if p.is_file()):
            relative = path.relative_to(model).as_posix()
            data = path.read_bytes()
            client.put_object(Bucket=bucket, Key=f"models/{model.name}/{relative}", Body=data)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  {relative}\n")
        client.put_object(Bucket=bucket, Key=f"models/{model.name}/SHA256SUMS", Body="".join(sums).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="The router's HTTP port.")
    parser.add_argument("--repository", type=Path, default=ROOT / "examples" / "model_repository")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="modelserve-regions-"))
    os.environ.update(REGION_ACCESS_KEY="testing", REGION_SECRET_KEY="testing")
    with ExitStack() as stack:
        stores = {}
        for name in REGIONS:
            url = stack.enter_context(running_s3(folder / f"{name}-moto.log"))
            upload(url, f"models-{name}", args.repository)
            stores[name] = Endpoint(name, url, None, f"models-{name}")  # type: ignore[arg-type]  # no fault proxy
        servers = stack.enter_context(regional_servers(stores, folder, "*"))
        path = write_regions(folder / "regions.yaml", stores, servers)
        settings = router_settings(http_port=args.port, metrics_port=free_port(), server_timeout_s=5.0)
        router = stack.enter_context(running_router(path, folder, settings))
        keys = "REGION_ACCESS_KEY=testing REGION_SECRET_KEY=testing"  # the regions file's store credentials
        env = f"REGIONS_FILE={path} ROUTER_RUNTIME_API={router.socket} {keys}"
        print(
            f"""
router:   {router.url}   (HAProxy {folder / "haproxy.cfg"}, stats http://127.0.0.1:{settings.metrics_port}/stats)
regions:  {", ".join(f"{n} {s.url}" for n, s in servers.items())}

curl -s -H 'X-Client-Region: eu-west-1' {router.url}/v2/models/mlp -D - -o /dev/null | grep X-Served-By
{env} .venv/bin/python -m src.failover.failover_controller --from-region us-east-1 --to-region eu-west-1
{env} .venv/bin/python -m src.failover.failover_controller --from-region us-east-1 --to-region eu-west-1 --back

Ctrl-C stops it all.""",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
