"""Who calls the load tester: the namespace its bearer token stands for.

Two ways to know it, either or both:

- ``TokenHashes``: a directory with one file per namespace (a Secret mounted as a volume, one key per
  namespace) holding the SHA-256 of that namespace's token. Only hashes are on the load tester's disk,
  because the commands it runs (``curl -d @file``, ``hey -D file``) can read any file it can: a leaked
  hash lets nobody in.
- ``TokenReviewer`` (``token_review``): the caller's Kubernetes ServiceAccount token, checked with the
  TokenReview API; ``system:serviceaccount:NS:NAME`` calls for namespace ``NS``.

With authentication on, a command or gate acts for the caller's namespace, never for the namespace
the payload claims.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

# A namespace name is a DNS label, which is also a valid Secret key and file name.
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN_FILES = 10_000
MAX_TOKEN_FILE_BYTES = 4096
TOKEN_RELOAD_SECONDS = 10.0
MAX_TOKEN_BYTES = 16 * 1024  # a ServiceAccount JWT is ~1 KiB; anything far larger is not a token


@dataclass(frozen=True)
class Identity:
    namespace: str
    subject: str  # for logs: who this is, never the token


class Denied(Exception):
    """The token is not accepted; ``status`` is the HTTP answer (401 unknown, 403 not allowed, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Authenticator(Protocol):
    async def identify(self, token: str) -> Identity | None:
        """The caller this token belongs to, None when this authenticator does not know it."""
        ...


def token_hash(token: str) -> str:
    """What a token file holds for ``token``: ``printf %s "$TOKEN" | sha256sum``."""
    return hashlib.sha256(token.encode()).hexdigest()


def _read_hashes(directory: Path) -> dict[str, str]:
    """hash -> namespace from every ``<namespace>`` file; raises ValueError naming the bad file."""
    found: dict[str, str] = {}
    files = [p for p in sorted(directory.iterdir()) if not p.name.startswith(".") and p.is_file()]
    if len(files) > MAX_TOKEN_FILES:
        raise ValueError(f"{directory} holds {len(files)} token files, more than {MAX_TOKEN_FILES}")
    for path in files:
        if not NAMESPACE_NAME.match(path.name):
            raise ValueError(f"{path}: the file name must be the namespace the token is for")
        with path.open("rb") as stream:
            text = stream.read(MAX_TOKEN_FILE_BYTES + 1).decode(errors="replace")
        if len(text) > MAX_TOKEN_FILE_BYTES:
            raise ValueError(f"{path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip().lower()
            if not line or line.startswith("#"):
                continue
            if not SHA256_HEX.match(line):
                raise ValueError(
                    f"{path}:{number}: expected the hex SHA-256 of a token (64 characters), not a token"
                )
            if found.get(line, path.name) != path.name:
                raise ValueError(f"{path}:{number}: the same token also stands for {found[line]}")
            found[line] = path.name
    return found


class TokenHashes:
    """Tokens by the SHA-256 in ``<directory>/<namespace>``; several lines in a file allow rotation.

    Re-read at most every ``reload_seconds``, so a rotated Secret takes effect without a restart; a
    broken directory after start keeps the previous tokens (and says so in the log).
    """

    def __init__(self, directory: Path, reload_seconds: float = TOKEN_RELOAD_SECONDS) -> None:
        self.directory = directory
        self._reload_seconds = reload_seconds
        self._hashes = _read_hashes(directory)  # a broken directory at start is an error at start
        self._loaded = time.monotonic()

    def namespaces(self) -> set[str]:
        return set(self._hashes.values())

    def _current(self) -> dict[str, str]:
        if time.monotonic() - self._loaded >= self._reload_seconds:
            self._loaded = time.monotonic()
            try:
                self._hashes = _read_hashes(self.directory)
            except (OSError, ValueError) as exc:
                log.error("token files not reloaded, keeping the previous ones: %s", exc)
        return self._hashes

    async def identify(self, token: str) -> Identity | None:
        namespace = self._current().get(token_hash(token))
        return Identity(namespace, f"token of namespace {namespace}") if namespace else None


async def identify(authenticators: Sequence[Authenticator], token: str) -> Identity:
    """The first authenticator that knows the token wins; raises Denied(401) when none does."""
    if not token:
        raise Denied(401, "this load tester needs 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Denied(401, "the token is not valid")
    for authenticator in authenticators:
        found = await authenticator.identify(token)
        if found is not None:
            return found
    raise Denied(401, "the token is not valid")
