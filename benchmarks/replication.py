"""Verified replication against plain copies: one model version of 20 files (200 MiB) from region A to B.

    .venv/bin/python -m benchmarks.replication [--runs 3] [--size-mib 200] [--files 20]
                                               [--max-files 4] [--part-size-mib 8]
                                               [--source-layout cp|put] [--json]

Two moto S3 servers on loopback stand for the two regions' stores. The version is written to A as
``aws s3 cp`` writes files (``--source-layout cp``: parts of 8 MiB from 8 MiB on), or each file in one
PUT (``put``). Each run copies the same version, into a fresh prefix of B, in three ways, in turn:

- ``verified``: a replication job (modelserve.regions): sha256 of every byte against SHA256SUMS, every
  write's ETag against the MD5 of the bytes sent (the source's ETag where it vouches for it, else
  hashed: with ``put``, the files in parts), SHA256SUMS written last; the job's state in SQLite;
- ``boto3``: per file, ``get_object`` streamed into ``upload_fileobj`` (boto3's transfer manager, its
  defaults: multipart from 8 MiB, 10 threads per file); nothing verified;
- ``s3fs``: per file, ``open`` on A read into ``open(..., "wb")`` on B in 8 MiB blocks; nothing verified.

All three copy ``--max-files`` files at once. Reported: wall time and throughput (MiB/s), this
process's CPU milliseconds per MiB (user + system; the moto servers' CPU is the same work for all three
and is not counted), medians of ``--runs`` runs: the machine is shared and noisy; and ``vs plain``, the
median over runs of the method's throughput against the best plain copy of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3 import running_s3  # noqa: E402 - the tests' moto launcher, from the checkout

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
MODEL, VERSION = "bench", "1"


def client(url: str) -> Any:
    """A plain boto3 client, its defaults untouched."""
    return boto3.client("s3", endpoint_url=url, **KEYS)


def sizes(total_mib: int, files: int) -> list[int]:
    """Mixed file sizes adding up to ``total_mib``: a few large weight files and many small ones."""
    weights = [8 if i % 5 == 0 else 1 for i in range(files)]
    unit = total_mib * 1024 * 1024 // sum(weights)
    out = [w * unit for w in weights]
    out[0] += total_mib * 1024 * 1024 - sum(out)
    return out


def publish(url: str, bucket: str, file_sizes: list[int], layout: str) -> list[tuple[str, int]]:
    """The version in A, with its SHA256SUMS: ``(relative path, size)`` of each file.

    ``layout`` is how A's files were written: ``cp`` as ``aws s3 cp`` and boto3's ``upload_file`` write
    them (parts of 8 MiB from 8 MiB on), ``put`` each in one PUT whatever its size."""
    s3 = client(url)
    s3.create_bucket(Bucket=bucket)
    sums, files = [], []
    for index, size in enumerate(file_sizes):
        data = os.urandom(size)
        relative = f"{VERSION}/shard-{index:02d}.bin"
        if layout == "cp":
            s3.upload_fileobj(io.BytesIO(data), bucket, f"models/{MODEL}/{relative}")
        else:
            s3.put_object(Bucket=bucket, Key=f"models/{MODEL}/{relative}", Body=data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {relative}\n")
        files.append((relative, size))
    s3.put_object(Bucket=bucket, Key=f"models/{MODEL}/SHA256SUMS", Body="".join(sums).encode())
    return files


@contextmanager
def cpu_and_wall() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds (this process) spent in the block."""
    result: dict[str, float] = {}
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    yield result
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["wall_s"] = time.perf_counter() - started
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def copy_boto3(a: str, b: str, bucket: str, prefix: str, files: list[tuple[str, int]], workers: int) -> None:
    source, target = client(a), client(b)

    def one(relative: str) -> None:
        body = source.get_object(Bucket=bucket, Key=f"models/{MODEL}/{relative}")["Body"]
        target.upload_fileobj(body, bucket, f"{prefix}/{MODEL}/{relative}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, [r for r, _ in files]))


def copy_s3fs(a: str, b: str, bucket: str, prefix: str, files: list[tuple[str, int]], workers: int) -> None:
    import s3fs

    options = {"key": "testing", "secret": "testing", "skip_instance_cache": True}
    source = s3fs.S3FileSystem(endpoint_url=a, **options)
    target = s3fs.S3FileSystem(endpoint_url=b, **options)

    def one(relative: str) -> None:
        with (
            source.open(f"{bucket}/models/{MODEL}/{relative}", "rb", block_size=8 << 20) as reader,
            target.open(f"{bucket}/{prefix}/{MODEL}/{relative}", "wb", block_size=8 << 20) as writer,
        ):
            shutil.copyfileobj(reader, writer, 8 << 20)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, [r for r, _ in files]))


def copy_verified(regions_file: Path, database: str) -> None:
    from modelserve.regions.schema import State
    from modelserve.regions.service import open_context

    context = open_context(regions_file, database, owner="benchmark")
    [job] = context.replicator.plan(MODEL, VERSION, "a", ["b"], again=True)
    context.replicator.run_pending()
    [done] = [j for j in context.jobs.jobs(MODEL, VERSION) if j.id == job.id]
    if done.state != State.REPLICATED:
        raise SystemExit(f"the replication job ended {done.state}: {done.last_error}")
    context.engine.dispose()


def regions_file(
    folder: Path, a: str, b: str, bucket: str, prefix: str, max_files: int, max_parts: int, part_mib: float
) -> Path:
    def region(name: str, url: str, store_prefix: str) -> dict[str, Any]:
        store = {"endpoint_url": url, "bucket": bucket, "prefix": store_prefix}
        return {"name": name, "store": store}

    document = {
        "regions": [region("a", a, "models"), region("b", b, prefix)],
        "replication": {
            "max_files": max_files,
            "max_parts": max_parts,
            "part_size_mb": part_mib,
            "multipart_threshold_mb": part_mib,
        },
    }
    path = folder / f"regions-{prefix}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def empty(url: str, bucket: str, prefix: str) -> None:
    """Delete a run's copy, so that moto's memory holds one copy at a time."""
    s3 = client(url)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--max-files", type=int, default=4)
    parser.add_argument("--part-size-mib", type=float, default=8.0)
    parser.add_argument("--max-parts", type=int, default=8, help="Part buffers in flight (the copier's memory bound).")
    parser.add_argument(
        "--source-layout",
        choices=("cp", "put"),
        default="cp",
        help="How A's files were written: cp (as aws s3 cp: 8 MiB parts) or put (one PUT each).",
    )
    parser.add_argument("--json", action="store_true", help="One JSON object per method instead of a table.")
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    # Imported before any timing, as s3fs and boto3 are: a replicator process imports these once.
    import s3fs  # noqa: F401

    import modelserve.regions.service  # noqa: F401

    bucket = "models"
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replication-bench-")))
        a = stack.enter_context(running_s3(folder / "a.log"))
        b = stack.enter_context(running_s3(folder / "b.log"))
        client(b).create_bucket(Bucket=bucket)
        files = publish(a, bucket, sizes(args.size_mib, args.files), args.source_layout)
        total_mib = sum(size for _, size in files) / 1048576
        database = f"sqlite:///{folder / 'jobs.sqlite3'}"
        methods: dict[str, Callable[[str], None]] = {
            "verified": lambda prefix: copy_verified(
                regions_file(folder, a, b, bucket, prefix, args.max_files, args.max_parts, args.part_size_mib), database
            ),
            "boto3": lambda prefix: copy_boto3(a, b, bucket, prefix, files, args.max_files),
            "s3fs": lambda prefix: copy_s3fs(a, b, bucket, prefix, files, args.max_files),
        }
        measured: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
        for run in range(args.runs):
            for name, copy in methods.items():
                prefix = f"{name}-{run}"
                with cpu_and_wall() as result:
                    copy(prefix)
                measured[name].append(result)
                empty(b, bucket, prefix)
                print(f"run {run + 1} {name}: {result['wall_s']:.2f} s", file=sys.stderr, flush=True)
    rows = []
    for name, results in measured.items():
        wall = statistics.median(r["wall_s"] for r in results)
        cpu = statistics.median(r["cpu_s"] for r in results)
        rows.append(
            {
                "method": name,
                "mib": round(total_mib, 1),
                "files": len(files),
                "runs": len(results),
                "median_s": round(wall, 2),
                "mib_per_s": round(total_mib / wall, 1),
                "cpu_ms_per_mib": round(1000 * cpu / total_mib, 2),
            }
        )
    # Throughput against the best plain copy of the same run (the methods of a run follow each other within
    # seconds), the median of those ratios: steadier than a ratio of medians while the machine's load drifts.
    plain = [name for name in measured if name != "verified"]
    for row in rows:
        ratios = [
            min(measured[name][run]["wall_s"] for name in plain) / measured[row["method"]][run]["wall_s"]
            for run in range(args.runs)
        ]
        row["vs_best_plain"] = round(statistics.median(ratios), 2)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'method':<10} {'MiB':>6} {'files':>5} {'median s':>9} {'MiB/s':>7} {'CPU ms/MiB':>11} {'vs plain':>9}")
    for row in rows:
        print(
            f"{row['method']:<10} {row['mib']:>6} {row['files']:>5} {row['median_s']:>9} {row['mib_per_s']:>7} "
            f"{row['cpu_ms_per_mib']:>11} {row['vs_best_plain']:>9}"
        )


if __name__ == "__main__":
    main()
