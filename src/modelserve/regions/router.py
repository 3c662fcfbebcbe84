"""The regions' router: an HAProxy configuration written from the regions file.

HAProxy does the routing, health checking, retrying and failing over; this module only says how.
Each region gets an HTTP backend and, where its endpoints name gRPC ones, a gRPC (h2) backend:

- its own servers are the primaries; every other region's servers follow as ``backup`` servers in
  priority order, and HAProxy sends to the first backup that is up once no primary is, so a region
  that dies, hangs or is drained passes its traffic to the next healthy region by priority;
- one health check per endpoint (``GET /health/ready``): the backup copies ``track`` it, so a
  region's state, and an operator's ``drain`` or ``maint`` on it, is the same in every backend;
- ``observe layer7`` with ``on-error mark-down`` takes a server out on its first errors in live traffic,
  before the next check; ``retry-on`` with ``redispatch`` sends a request that failed on one
  server to another (inference is idempotent); each try waits at most ``server_timeout_s``;
- the client's region picks the backend: the ``X-Client-Region`` header, else its source address
  through a map file of ``CIDR region`` lines (``--client-map``), else the first region by priority.

The runtime API socket (``stats socket``) is what ``modelserve regions failover`` drives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from modelserve.regions.config import Region, RegionsFile, RegionsFileError

CLIENT_REGION_HEADER = "X-Client-Region"
SERVED_BY_HEADER = "X-Served-By"  # the server that answered, as the router names it (<region>_<n>)
DEFAULT_SOCKET = Path("/run/modelserve/haproxy.sock")
HTTP_SCHEMES = {"http": 80, "https": 443}
GRPC_SCHEMES = {"grpc": 80, "grpcs": 443}


@dataclass(frozen=True)
class RouterSettings:
    """Where the router listens and how quickly it gives up on a server; each is a ``router-config`` option."""

    runtime_socket: Path = DEFAULT_SOCKET
    bind_host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081  # 0: no gRPC frontend
    metrics_port: int = 8404  # HAProxy's Prometheus exporter and stats page; 0: none
    connect_timeout_ms: int = 1000
    server_timeout_s: float = 60.0  # one try; the server answers 504 itself after REQUEST_TIMEOUT_SEC
    client_timeout_s: float = 300.0
    check_interval_ms: int = 250
    check_timeout_ms: int = 500
    fall: int = 2
    rise: int = 2
    error_limit: int = 1
    retries: int = 3
    maxconn: int = 4096  # HAProxy needs two file descriptors per connection: keep it under ulimit -n / 2
    client_map: Path | None = None


@dataclass(frozen=True)
class Server:
    """One endpoint of one region, as the router names it."""

    region: str
    name: str
    host: str
    port: int
    tls: bool
    grpc: bool

    @property
    def address(self) -> str:
        """host:port, with IPv6 literals bracketed as HAProxy wants them."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def backend(region: str, grpc: bool = False) -> str:
    """The name of ``region``'s backend."""
    return f"{'grpc' if grpc else 'http'}_{region}"


def servers(region: Region) -> list[Server]:
    """``region``'s endpoints as router servers: http(s):// ones serve HTTP, grpc(s):// ones gRPC."""
    found: list[Server] = []
    for url in region.endpoints:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in HTTP_SCHEMES and scheme not in GRPC_SCHEMES:
            raise RegionsFileError(
                f"region {region.name}: endpoint {url} must start with http://, https://, grpc:// or grpcs://"
            )
        if not parts.hostname:
            raise RegionsFileError(f"region {region.name}: endpoint {url} names no host")
        grpc = scheme in GRPC_SCHEMES
        port = parts.port or (GRPC_SCHEMES if grpc else HTTP_SCHEMES)[scheme]
        count = sum(1 for s in found if s.grpc == grpc)
        name = f"{region.name}_{'grpc_' if grpc else ''}{count}"
        found.append(Server(region.name, name, parts.hostname, port, scheme.endswith("s"), grpc))
    return found


def _holder(region: Region, server: Server) -> str:
    """``backend/server`` whose state ``server`` has: its own, or, for a gRPC server on the host of one of
    its region's HTTP servers, that HTTP server's (the gRPC port has no /health/ready of its own)."""
    for other in servers(region):
        if server.grpc and not other.grpc and other.host == server.host:
            return f"{backend(region.name)}/{other.name}"
    return f"{backend(region.name, server.grpc)}/{server.name}"


def primaries(regions: RegionsFile, region: str) -> list[tuple[str, str]]:
    """(backend, server) of each server of ``region`` that holds a state of its own: the ones the runtime
    API sets, every other copy of them (backups in other regions' backends, gRPC servers) following."""
    own = regions.region(region)
    held = {_holder(own, s) for s in servers(own)}
    return [(b, n) for b, n in (h.split("/", 1) for h in sorted(held))]


def check_client_map(path: Path, regions: RegionsFile) -> None:
    """Check the ``CIDR region`` lines of a client map (HAProxy reads it itself): a bad network or an unknown
    region is named."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegionsFileError(f"cannot read the client map {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise RegionsFileError(f"{path}:{number}: write one 'CIDR region' pair per line")
        try:
            ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            raise RegionsFileError(f"{path}:{number}: {words[0]} is not an IP network (10.0.0.0/8, say)") from None
        regions.region(words[1])


def _server_line(server: Server, track: str | None, backup: bool, settings: RouterSettings) -> str:
    words = ["server", server.name, server.address]
    if backup:
        words.append("backup")
    if track:
        words += ["track", track]
    else:
        words += ["check", "observe", "layer7", "error-limit", str(settings.error_limit), "on-error", "mark-down"]
    if server.grpc:
        words += ["proto", "h2"]
    if server.tls:
        words += ["ssl", "verify", "required", "ca-file", "@system-ca", "sni", f"str({server.host})"]
        words += ["check-sni", server.host, *(["alpn", "h2"] if server.grpc else [])]
    return "    " + " ".join(words)


def _backend(regions: RegionsFile, region: Region, grpc: bool, settings: RouterSettings) -> list[str]:
    lines = [
        f"backend {backend(region.name, grpc)}",
        "    mode http",
        "    balance roundrobin",
        f"    retries {settings.retries}",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response junk-response response-timeout 0rtt-rejected 502 503",
    ]
    if not grpc:
        lines += [
            "    option httpchk",
            "    http-check send meth GET uri /health/ready",
            "    http-check expect status 200",
        ]
    for other in [region, *(r for r in regions.by_priority if r.name != region.name)]:
        for server in (s for s in servers(other) if s.grpc == grpc):
            holder = _holder(other, server)
            checked = other is region and holder == f"{backend(other.name, grpc)}/{server.name}"
            lines.append(_server_line(server, None if checked else holder, other is not region, settings))
    return lines


def _frontend(name: str, port: int, regions: RegionsFile, grpc: bool, settings: RouterSettings) -> list[str]:
    available = [r for r in regions.by_priority if any(s.grpc == grpc for s in servers(r))]
    bind = f"    bind {settings.bind_host}:{port}" + (" proto h2" if grpc else "")
    lines = [f"frontend {name}", "    mode http", bind, "    option httplog"]
    lines.append(f"    http-request set-var(txn.client_region) req.hdr({CLIENT_REGION_HEADER})")
    lines.append(f"    http-response set-header {SERVED_BY_HEADER} %[srv_name]")
    if settings.client_map is not None:
        lines.append(
            f"    http-request set-var(txn.client_region) src,map_ip({settings.client_map.resolve()}) "
            "if !{ var(txn.client_region) -m found }"
        )
    for region in available:
        lines.append(
            f"    use_backend {backend(region.name, grpc)} if {{ var(txn.client_region) -m str {region.name} }}"
        )
    lines.append(f"    default_backend {backend(available[0].name, grpc)}")
    return lines


def _socket(address: Path) -> str:
    """A Unix socket only its owner may use, or ``host:port`` on TCP (no authentication: a private address)."""
    text = str(address)
    if "/" not in text and text.rpartition(":")[2].isdigit():
        return f"ipv4@{text}"
    return f"{text} mode 600"


def render(regions: RegionsFile, settings: RouterSettings) -> str:
    """The whole HAProxy configuration; a RegionsFileError says what in the regions file cannot be routed."""
    if not any(not s.grpc for r in regions.regions for s in servers(r)):
        raise RegionsFileError("no region names an http:// or https:// endpoint: there is nothing to route to")
    if settings.client_map is not None:
        check_client_map(settings.client_map, regions)
    check_s, inter = settings.check_timeout_ms, settings.check_interval_ms
    lines = [
        "# Written by `modelserve regions router-config` from the regions file; edit that file, not this one.",
        "global",
        f"    maxconn {settings.maxconn}",
        f"    stats socket {_socket(settings.runtime_socket)} level admin",
        "    stats timeout 30s",
        "    log stderr format short local0 info",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    option http-keep-alive",
        f"    timeout connect {settings.connect_timeout_ms}ms",
        f"    timeout server {int(settings.server_timeout_s * 1000)}ms",
        f"    timeout client {int(settings.client_timeout_s * 1000)}ms",
        f"    timeout http-request {int(settings.client_timeout_s * 1000)}ms",
        f"    timeout queue {int(settings.server_timeout_s * 1000)}ms",
        f"    timeout check {check_s}ms",
        f"    default-server init-addr last,libc,none inter {inter}ms fastinter {max(50, inter // 2)}ms "
        f"downinter {inter * 2}ms fall {settings.fall} rise {settings.rise}",
        "",
        *_frontend("http_in", settings.http_port, regions, False, settings),
        "",
    ]
    has_grpc = any(s.grpc for r in regions.regions for s in servers(r))
    if settings.grpc_port and has_grpc:
        lines += [*_frontend("grpc_in", settings.grpc_port, regions, True, settings), ""]
    for region in regions.by_priority:
        if any(not s.grpc for s in servers(region)):
            lines += [*_backend(regions, region, False, settings), ""]
        if settings.grpc_port and any(s.grpc for s in servers(region)):
            lines += [*_backend(regions, region, True, settings), ""]
    if settings.metrics_port:
        lines += [
            "frontend metrics",
            f"    bind {settings.bind_host}:{settings.metrics_port}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 5s",
            "",
        ]
    return "\n".join(lines)
