"""Who may call what: API keys, JWT bearer tokens, and the scope each HTTP path or gRPC method needs.

Two scopes: ``infer`` (inference, metadata, statistics) and ``admin`` (model control, shared memory,
the profiler, the pre-warming plan), which implies ``infer``. Credentials come as
``Authorization: Bearer <API key or JWT>`` (gRPC: ``authorization`` metadata), and the protocols ask
``Guard.check`` before routing, so a refused request is answered before its body is read.

API keys are kept only as SHA-256 digests, and a presented key is compared with every one of them
in constant time, so neither memory nor timing tells how close a guess came. A token is verified with
the algorithm pinned to the key that checks it (HS256 for JWT_SECRET, RS256 for RSA keys): its header
only chooses among those, so ``alg: none`` and HS256 tokens signed with the RSA public key are refused.
A verified token is remembered until its ``exp``: a client that re-sends one token pays the signature
check once, not on every request. Nothing here puts a key or a token in a message. The configured
keys are parsed and loaded by ``modelserve.credentials``, which the settings check at startup too.

Who a request authenticated as (``caller``) is what the access log names as its ``user_id``: a token's
``sub``, or an API key's name (``alice=key`` in API_KEYS). A key given without a name goes by its
fingerprint, ``key-`` and the first 12 hex digits of its SHA-256 digest: an operator holding the key
finds it with ``printf %s "$KEY" | sha256sum | cut -c1-12``, and the log never holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from modelserve.config import EndpointGroup, Settings
from modelserve.credentials import SCOPES, ApiKey, Scope, granted, load_jwks, load_public_key, parse_api_keys
from modelserve.errors import Forbidden, Unauthenticated

# Scope and the credential loaders are the guard's vocabulary too: its callers import them from here.
__all__ = [
    "ApiKey",
    "Guard",
    "Scope",
    "TokenVerifier",
    "caller",
    "key_name",
    "load_jwks",
    "load_public_key",
    "parse_api_keys",
]

SEND = "send Authorization: Bearer <API key or JWT>"
TOKEN_CACHE_SIZE = 4096  # verified tokens remembered; the oldest goes first

# Endpoints each group opens, as exact paths and as path prefixes.
_OPEN: dict[EndpointGroup, tuple[frozenset[str], tuple[str, ...]]] = {
    EndpointGroup.HEALTH: (frozenset({"/health"}), ("/health/", "/v2/health/")),
    EndpointGroup.METRICS: (frozenset({"/metrics"}), ()),
    EndpointGroup.DOCS: (frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}), ()),
}
_OPEN_RPCS = {EndpointGroup.HEALTH: frozenset({"ServerLive", "ServerReady", "ModelReady"})}
# Prefixes without a trailing slash: a look-alike path needs admin too, never less.
_ADMIN_PATHS = ("/v2/repository", "/v2/systemsharedmemory", "/v2/cudasharedmemory", "/v2/prewarm", "/debug", "/ui")
# The web console's files (script, styles, its sign-in page): code of the package, no data, and what a browser
# must fetch before it can send a key. The console's page and figures stay admin, as the control it calls.
_CONSOLE_FILES = "/ui/static/"
_MODEL_CONTROL = re.compile(r"^/v1/models/[^/]+/(?:load|unload)$")
_ADMIN_RPCS = frozenset({"TraceSetting", "LogSettings"})
FINGERPRINT_DIGITS = 12  # hex digits of a key's digest in its name: 48 bits tell thousands of keys apart
# Set by ``Guard.check`` in the request's own context (its task), which its handler runs in, HTTP or gRPC.
_CALLER: ContextVar[str | None] = ContextVar("modelserve_caller", default=None)
Principal = tuple[frozenset[Scope], str | None]  # a credential's scopes, and the name of who holds it


def caller() -> str | None:
    """Who the request being handled authenticated as: its token's ``sub`` or its API key's name; None
    while authentication is off (or the token names no subject)."""
    return _CALLER.get()


def key_name(key: ApiKey) -> str:
    """The name an API key goes by in the access log: the one API_KEYS gives it, else its fingerprint;
    never the key."""
    return key.name or "key-" + key.digest.hex()[:FINGERPRINT_DIGITS]


class TokenVerifier:
    """Verifies JWT bearer tokens and remembers the ones that passed until they expire."""

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        public_key: RSAPublicKey | None = None,
        jwks: dict[str | None, RSAPublicKey] | None = None,
        issuer: str = "",
        audience: str = "",
    ) -> None:
        self._secret = secret
        self._public_key = public_key
        self._jwks = jwks or {}
        self._issuer = issuer
        self._audience = audience
        pinned = (["HS256"] if secret else []) + (["RS256"] if public_key or self._jwks else [])
        self.algorithms = " or ".join(pinned)  # the only ones accepted, whatever a token's header says
        self._verified: dict[str, tuple[float, Principal]] = {}  # token → (exp, (scopes, sub))

    def verify(self, token: str) -> Principal:
        """The scopes and subject (``sub``) of a valid token; Unauthenticated saying what is wrong with any other."""
        if (seen := self._verified.get(token)) is not None:
            if time.time() < seen[0]:
                return seen[1]
            del self._verified[token]
        expires, principal = self._check(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (expires, principal)
        return principal

    def _check(self, token: str) -> tuple[float, Principal]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("token is not a valid JWT") from None
        algorithm = header.get("alg")
        try:
            claims = jwt.decode(
                token,
                self._key(algorithm, header.get("kid")),
                algorithms=[str(algorithm)],  # one of the pinned pair: _key refused any other
                issuer=self._issuer or None,
                audience=self._audience or None,
                options={"require": ["exp"], "verify_aud": bool(self._audience), "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(self._problem(exc)) from None
        scope, scopes = claims.get("scope"), claims.get("scopes")
        names: list[object] = [
            *(scope.split() if isinstance(scope, str) else []),
            *(scopes if isinstance(scopes, list) else []),
        ]
        scopes = granted(SCOPES[n] for n in names if isinstance(n, str) and n in SCOPES)
        subject = claims.get("sub")
        return float(claims["exp"]), (scopes, subject if isinstance(subject, str) and subject else None)

    def _key(self, algorithm: object, kid: object) -> bytes | RSAPublicKey:
        if algorithm == "HS256" and self._secret:
            return self._secret
        if algorithm == "RS256" and (self._public_key or self._jwks):
            if (kid is None or isinstance(kid, str)) and kid in self._jwks:
                return self._jwks[kid]
            if self._public_key is not None:
                return self._public_key
            if kid is None and len(self._jwks) == 1:
                return next(iter(self._jwks.values()))
            raise _invalid("token key id (kid) names none of the server's keys; sign with one of them")
        raise _invalid(f"token algorithm is not accepted; this server verifies {self.algorithms} tokens")

    def _problem(self, error: jwt.PyJWTError) -> str:
        """What is wrong with a token, in words a client can act on."""
        if isinstance(error, jwt.ExpiredSignatureError):
            return "token has expired; get a new one"
        if isinstance(error, jwt.ImmatureSignatureError):
            return "token is not valid yet (nbf or iat is in the future); check the issuer's clock"
        missing = error.claim if isinstance(error, jwt.MissingRequiredClaimError) else None
        if missing == "exp":
            return "token has no expiry (exp); this server accepts only tokens that expire"
        if isinstance(error, jwt.InvalidIssuerError) or missing == "iss":
            return f"token issuer (iss) is not {self._issuer!r}"
        if isinstance(error, jwt.InvalidAudienceError) or missing == "aud":
            return f"token audience (aud) does not include {self._audience!r}"
        if isinstance(error, jwt.InvalidSignatureError):
            return "token signature is not valid; it was not signed by a key this server trusts"
        return "token is not a valid JWT"


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, invalid_token=True)


class Guard:
    """The server's credentials and open endpoints: decides the scope a request needs, and checks it."""

    def __init__(
        self, keys: list[ApiKey], tokens: TokenVerifier | None, open_groups: Iterable[EndpointGroup] = ()
    ) -> None:
        self._keys = [(key.digest, (key.scopes, key_name(key))) for key in keys]
        self._tokens = tokens
        groups = set(open_groups)
        self._open_paths = frozenset().union(*(_OPEN[g][0] for g in groups))
        self._open_prefixes = tuple(prefix for g in groups for prefix in _OPEN[g][1])
        self._open_rpcs = frozenset().union(*(_OPEN_RPCS.get(g, frozenset()) for g in groups))

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard | None:
        """The server's guard, or None while no credential is configured (everything is open)."""
        if not settings.auth_enabled:
            return None
        secret = settings.jwt_secret.get_secret_value().encode()
        public_key = load_public_key(settings.jwt_public_key_file) if settings.jwt_public_key_file else None
        jwks = load_jwks(settings.jwt_jwks_file) if settings.jwt_jwks_file else {}
        tokens = None
        if secret or public_key or jwks:
            tokens = TokenVerifier(
                secret=secret or None,
                public_key=public_key,
                jwks=jwks,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )
        keys = parse_api_keys(settings.api_keys.get_secret_value())
        return cls(keys, tokens, settings.auth_open_endpoints)

    def summary(self) -> str:
        """What the server accepts and leaves open, for its startup log line (no key material)."""
        admins = sum(Scope.ADMIN in scopes for _, (scopes, _name) in self._keys)
        accepted = [f"{len(self._keys)} API key(s), {admins} with admin"] if self._keys else []
        if self._tokens is not None:
            accepted.append(f"{self._tokens.algorithms} tokens")
        opened = sorted(self._open_paths) + [f"{prefix}*" for prefix in self._open_prefixes]
        return f"accepting {' and '.join(accepted)}; open without credentials: {', '.join(opened) or 'nothing'}"

    def http_scope(self, path: str) -> Scope | None:
        """The scope an HTTP path needs, or None when it is open. Unknown paths need ``infer``, so only
        callers with credentials learn what does not exist."""
        if path in self._open_paths or path.startswith(self._open_prefixes) or path.startswith(_CONSOLE_FILES):
            return None
        if path.startswith(_ADMIN_PATHS) or _MODEL_CONTROL.match(path):
            return Scope.ADMIN
        return Scope.INFER

    def grpc_scope(self, method: str) -> Scope | None:
        """The scope a gRPC method (``/package.Service/Method``) needs, or None when it is open."""
        name = method.rpartition("/")[2]
        if name in self._open_rpcs:
            return None
        if name.startswith("Repository") or "SharedMemory" in name or name in _ADMIN_RPCS:
            return Scope.ADMIN
        return Scope.INFER

    def check(self, authorization: str | None, needed: Scope) -> None:
        """Refuse a request whose ``Authorization`` value does not grant ``needed``; let one that does go on
        as its ``caller``."""
        scopes, name = self._identify(authorization)
        if needed not in scopes:
            held = ", ".join(sorted(scopes)) or "none"
            raise Forbidden(
                f"this endpoint needs the '{needed}' scope; the credentials sent have: {held}", scope=needed
            )
        _CALLER.set(name)

    def authenticate(self, authorization: str | None) -> frozenset[Scope]:
        """The scopes of the credentials in an ``Authorization`` value; Unauthenticated when they grant none."""
        return self._identify(authorization)[0]

    def _identify(self, authorization: str | None) -> Principal:
        if authorization is None:
            raise Unauthenticated(f"credentials required: {SEND}")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(f"malformed Authorization header: {SEND}")
        if self._keys and (principal := self._key(credential)) is not None:
            return principal
        if self._tokens is not None and credential.count(".") == 2:
            return self._tokens.verify(credential)
        raise _invalid(f"API key or token not accepted: {SEND} with a valid one")

    def _key(self, credential: str) -> Principal | None:
        digest = hashlib.sha256(credential.encode()).digest()
        found: Principal | None = None
        for known, principal in self._keys:  # every key, match or not: the time taken says nothing of which matched
            if hmac.compare_digest(digest, known):
                found = principal
        return found
