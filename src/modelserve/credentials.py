"""The server's credentials as configured: API keys parsed, RSA public keys and JWKS documents loaded.

Settings and the server's guard read them the same way: ``config.py`` runs these at startup, so a
bad key stops the server before it listens, and ``server/auth.py`` builds its guard from what they
return. It lives outside ``server/`` because the settings must not depend on the server layer.

API keys are kept only as SHA-256 digests. Errors name an entry by its position or a file by its
path, never by what it holds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key


class Scope(StrEnum):
    """What a credential allows; ``admin`` implies ``infer``."""

    INFER = "infer"
    ADMIN = "admin"


MIN_KEY_LENGTH = 16  # characters of an API key: shorter ones can be guessed
MIN_RSA_BITS = 2048  # NIST SP 800-131A
SCOPES = {scope.value: scope for scope in Scope}
# ``name=key``: a name for the access log's user_id. A key's own '=' (base64 padding) ends it, so the part
# after a name's '=' must be a whole key for the entry to be read as named.
_NAMED = re.compile(r"^([A-Za-z][A-Za-z0-9_.@-]{0,63})=(.+)$")


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its SHA-256 digest (the key itself is not kept), what it allows, and the
    name its holder goes by in the access log, where the entry gives one."""

    digest: bytes
    scopes: frozenset[Scope]
    name: str | None = None


def granted(names: Iterable[Scope]) -> frozenset[Scope]:
    """The scopes a credential holds, ``admin`` bringing ``infer`` with it."""
    scopes = set(names)
    if Scope.ADMIN in scopes:
        scopes.add(Scope.INFER)
    return frozenset(scopes)


def parse_api_keys(value: str) -> list[ApiKey]:
    """API_KEYS: comma-separated entries, or the path of a file with one entry per line (blank lines and
    lines starting with ``#`` skipped). An entry is ``key``, ``key:infer`` or ``key:admin``, optionally
    named: ``alice=key:infer``.
    Errors name an entry by its position, never by its text."""
    if _names_file(value):
        try:
            text = Path(value).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the API key file: {exc}") from None
        lines = enumerate(text.splitlines(), 1)
        entries = [
            (f"line {n}", line.strip()) for n, line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
        if not entries:
            raise ValueError("the API key file holds no key")
    elif value.startswith(("/", "./", "../", "~")):
        raise ValueError("looks like a file path, but no such file exists; give the path of the key file")
    else:
        entries = [(f"entry {n}", item.strip()) for n, item in enumerate(value.split(","), 1) if item.strip()]
    keys: list[ApiKey] = []
    for where, entry in entries:
        key, _, scope = entry.rpartition(":") if ":" in entry else (entry, "", "infer")
        name = None
        if (named := _NAMED.match(key)) is not None and len(named.group(2)) >= MIN_KEY_LENGTH:
            name, key = named.group(1), named.group(2)
        if scope not in SCOPES:
            raise ValueError(f"{where} ends with an unknown scope; write key, key:infer or key:admin")
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"{where} is shorter than {MIN_KEY_LENGTH} characters; use a random key (openssl rand -hex 32)"
            )
        digest = hashlib.sha256(key.encode()).digest()
        if any(known.digest == digest for known in keys):
            raise ValueError(f"{where} repeats a key given before; give each key once, with its scope")
        keys.append(ApiKey(digest, granted([SCOPES[scope]]), name))
    return keys


def _names_file(value: str) -> bool:
    try:
        return bool(value) and Path(value).is_file()
    except (OSError, ValueError):  # a long list of keys is no valid file name
        return False


def load_public_key(path: Path) -> RSAPublicKey:
    """The RSA public key of a PEM file (JWT_PUBLIC_KEY_FILE)."""
    pem = _read(path)
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise ValueError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__.lstrip('_')}; RS256 needs an RSA public key")
    return _strong(key, str(path))


def load_jwks(path: Path) -> dict[str | None, RSAPublicKey]:
    """The RS256 keys of a JWKS file (JWT_JWKS_FILE) by key id; keys of other kinds or uses are skipped."""
    document = _read(path)
    try:
        keyset = jwt.PyJWKSet.from_json(document.decode())
    except (ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"{path} is not a JWKS document ({exc})") from None
    keys = {
        jwk.key_id: _strong(jwk.key, f"{path} key {jwk.key_id!r}")
        for jwk in keyset
        if jwk.algorithm_name == "RS256" and isinstance(jwk.key, RSAPublicKey) and jwk.public_key_use != "enc"
    }
    if not keys:
        raise ValueError(f"{path} holds no RSA public key for RS256 signatures (kty RSA, alg RS256 or none)")
    return keys


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _strong(key: RSAPublicKey, where: str) -> RSAPublicKey:
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"{where} is a {key.key_size}-bit RSA key; use at least {MIN_RSA_BITS} bits")
    return key
