"""API tokens: created, listed and revoked from the CLI, the API (/api/v1/tokens) and the
dashboard (/tokens), checked on every API request.

A token is 32 random bytes (URL-safe base64, with a `bm_` prefix that secret scanners can
match). Only its SHA-256 is stored: the token itself is printed once, at creation. A fast hash is
right here because the token is random, not a password a person chose; there is nothing to
brute-force. Lookups go by that hash, and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.visible import quote
from service.db.engine import claimed
from service.db.models import ApiToken

TOKEN_PREFIX = "bm_"  # noqa: S105 (a prefix, not a secret)
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"  # noqa: S105

Access = Literal["read-write", "read-only"]


class TokenError(Exception):
    """A token operation a user asked for cannot be done (message says why)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be told of a stored token: never the token, never its hash."""

    name: str
    read_only: bool
    created_at: datetime
    id: int = 0

    @property
    def access(self) -> Access:
        return "read-only" if self.read_only else "read-write"


def secret_bytes(text: str) -> bytes:
    """A secret as it came in a header or cookie: aiohttp keeps bytes that are not UTF-8 as
    surrogates, which a plain `.encode()` refuses (a 500 for any stranger who sends one)."""
    return text.encode("utf-8", "surrogateescape")


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    return hmac.compare_digest(secret_bytes(given), secret_bytes(expected))


def hash_token(token: str) -> str:
    return hashlib.sha256(secret_bytes(token)).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(
    session: AsyncSession, name: str, *, read_only: bool, now: datetime | None = None
) -> str:
    """Store a new token under `name` and return it (the only time it is ever visible)."""
    _, token = await issue_token(session, name, read_only=read_only, now=now)
    return token


async def issue_token(
    session: AsyncSession, name: str, *, read_only: bool, now: datetime | None = None
) -> tuple[TokenInfo, str]:
    """Store a new token under `name` and return what may be told of it, with the token itself
    (the only time it is ever visible: only its hash is kept). Raises TokenError for a bad or
    taken name."""
    if not re.fullmatch(TOKEN_NAME_PATTERN, name):
        raise TokenError(
            f"{quote(name)} is not a valid token name: letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit, at most 100 characters"
        )
    token = new_token()
    row = ApiToken(
        name=name,
        token_hash=hash_token(token),
        read_only=read_only,
        created_at=now or datetime.now(UTC),
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise TokenError(
            f"a token named {quote(name)} already exists; revoke it first or choose another name"
        ) from None
    return TokenInfo(row.name, row.read_only, row.created_at, row.id), token


async def list_tokens(session: AsyncSession) -> list[TokenInfo]:
    rows = await session.execute(
        select(ApiToken.name, ApiToken.read_only, ApiToken.created_at, ApiToken.id).order_by(
            ApiToken.name
        )
    )
    return [TokenInfo(*row) for row in rows]


async def revoke_token(session: AsyncSession, name: str) -> None:
    deleted = await claimed(session, delete(ApiToken).where(ApiToken.name == name))
    await session.commit()
    if not deleted:
        raise TokenError(f"no token named {quote(name)} (see `backup-monitor tokens list`)")


async def revoke_token_id(session: AsyncSession, token_id: int) -> TokenInfo | None:
    """Revoke the token with this id at once (the next request with it is refused, on every
    replica: tokens are checked against the database each time); None when there is none."""
    row = await session.get(ApiToken, token_id)
    if row is None:
        return None
    info = TokenInfo(row.name, row.read_only, row.created_at, row.id)
    deleted = await claimed(session, delete(ApiToken).where(ApiToken.id == token_id))
    await session.commit()
    return info if deleted else None


async def token_hashes(session: AsyncSession) -> list[str]:
    """The stored tokens' hashes, in a stable order (a secret every replica can read)."""
    return list(await session.scalars(select(ApiToken.token_hash).order_by(ApiToken.token_hash)))


async def any_token(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(ApiToken.id.is_not(None)))))


@dataclass(frozen=True, slots=True)
class Grant:
    """What a presented token grants, and whose it is (shown as `created_by` on what it makes)."""

    access: Access
    name: str


# The name that stands for API_TOKEN, the token that lives outside the database.
BOOTSTRAP_NAME = "API_TOKEN"
# Who acts when no token exists at all and the API is open (loopback, --insecure-no-auth).
OPEN_ACCESS_NAME = "anonymous"


def bootstrap_grant(presented: str, bootstrap: str | None) -> Grant | None:
    """What a presented token grants when it is `bootstrap`, API_TOKEN from the environment: a
    read-write token that lives outside the database (None: it is not)."""
    if bootstrap is not None and hmac.compare_digest(hash_token(presented), hash_token(bootstrap)):
        return Grant("read-write", BOOTSTRAP_NAME)
    return None


async def grant_of(session: AsyncSession, presented: str) -> Grant | None:
    """The access a presented token of the database grants and its name, or None when it is
    not a valid token (API_TOKEN is bootstrap_grant's)."""
    digest = hash_token(presented)
    row = (
        await session.execute(
            select(ApiToken.token_hash, ApiToken.read_only, ApiToken.name).where(
                ApiToken.token_hash == digest
            )
        )
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Grant("read-only" if row.read_only else "read-write", row.name)
