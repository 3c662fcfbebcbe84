"""``--verify-checksum``: every region's copy of a model read again and compared with the source's SHA256SUMS.

The source's SHA256SUMS is the truth. In every region (the source too) each file of each version is
read back whole and hashed, and the region's own SHA256SUMS must name it with the same digest: what
a server there would verify before loading. A version not published in a region is reported as such,
not as corrupt; any file that differs or is missing is a mismatch, counted on the region's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.regions.copier import sha256_of
from modelserve.regions.outcomes import ReplicationError
from modelserve.regions.replicator import Replicator
from modelserve.repository.remote import CHECKSUMS


@dataclass(frozen=True)
class Finding:
    """One file of one region's copy."""

    region: str
    version: str
    path: str
    status: str  # ok | mismatch | missing | unpublished
    detail: str = ""

    @property
    def bad(self) -> bool:
        """Whether this is corruption or loss (an unpublished version is neither)."""
        return self.status in ("mismatch", "missing")


def verify(replicator: Replicator, model: str, version: str | None, source: str, regions: list[str]) -> list[Finding]:
    """Findings for every file of ``model`` (one version or all) in each of ``regions``."""
    origin = replicator.regions.region(source)
    truth = replicator.manifest(origin, model)
    if not truth:
        raise ReplicationError(f"{origin.store.url}/{model}/{CHECKSUMS} does not exist: nothing to verify against")
    wanted = {p: d for p, d in truth.items() if version is None or p.startswith(f"{version}/")}
    if not wanted:
        raise ReplicationError(f"{model}:{version} is not published in {source}")
    findings: list[Finding] = []
    part = replicator.policy.part_size
    for name in regions:
        region = replicator.regions.region(name)
        store = replicator.store(region)
        published = replicator.manifest(region, model)
        for path, digest in sorted(wanted.items()):
            ver = path.split("/", 1)[0] if "/" in path else ""
            if path not in published:
                status = "unpublished" if ver and not any(p.startswith(f"{ver}/") for p in published) else "missing"
                findings.append(Finding(name, ver, path, status, f"not in {region.name}'s {CHECKSUMS}"))
                continue
            if published[path] != digest:
                findings.append(Finding(name, ver, path, "mismatch", f"{CHECKSUMS} says {published[path][:12]}…"))
                continue
            head = store.head(store.key(model, path))
            if head is None:
                findings.append(Finding(name, ver, path, "missing", "listed but not stored"))
                continue
            actual = sha256_of(store, store.key(model, path), int(head["ContentLength"]), part)
            if actual != digest:
                findings.append(Finding(name, ver, path, "mismatch", f"reads as {actual[:12]}…, not {digest[:12]}…"))
            else:
                findings.append(Finding(name, ver, path, "ok"))
    now = replicator.clock()
    for finding in findings:
        if finding.bad and finding.version and finding.region != source:
            replicator.jobs.note_mismatch(
                model, finding.version, finding.region, f"verify: {finding.path} {finding.status}", now
            )
    return findings
