"""Webhook sources and how their deliveries are authenticated, pure: the secrets, the
signature schemes the stores use, and the caches and limits a process keeps per source."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from contacts_shared.profiles import ProfileSchema

MAX_CLOCK_SKEW_SECONDS = 300
SIGNATURE_PREFIX = "sha256="
STANDARD_SECRET_PREFIX = "whsec_"
# Standard Webhooks: "secrets SHOULD be between 24 bytes and 64 bytes".
STANDARD_KEY_BYTES = (24, 64)
# A store's own secret is pasted by a person: long enough not to be guessed.
MIN_STORE_SECRET_CHARS = 16


class WebhookFormat(StrEnum):
    GENERIC = "generic"
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"
    VTEX = "vtex"


@dataclass(frozen=True)
class WebhookSource:
    """Where a store's customer webhooks land: one profile, a format and a field mapping.
    After a rotation the previous secret still verifies until `previous_secret_until`."""

    id: str
    account_id: str
    profile_id: str
    format: WebhookFormat
    mapping: dict[str, str]  # payload path -> field name
    secret: str
    created_at: datetime
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None

    def secrets_at(self, now: float) -> tuple[str, ...]:
        """The secrets a delivery may be signed with at `now` (unix seconds), newest first."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None and now < until.timestamp():
            return self.secret, self.previous_secret
        return (self.secret,)


class SignatureError(Exception):
    """The request is not provably from the source's holder of the secret."""


class SecretInvalid(ValueError):
    """A secret given for a source that its scheme cannot use."""


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes, as Standard Webhooks defines a secret."""
    return STANDARD_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def checked_secret(format: WebhookFormat, secret: str) -> str:
    """A secret given by a person for a source of `format`, or SecretInvalid saying why."""
    secret = secret.strip()
    if format is WebhookFormat.GENERIC:
        standard_key(secret)
    elif len(secret) < MIN_STORE_SECRET_CHARS or not secret.isprintable():
        raise SecretInvalid(f"at least {MIN_STORE_SECRET_CHARS} printable characters")
    return secret


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64 of 24 to 64 bytes)."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        raise SecretInvalid(f"a Standard Webhooks secret starts with {STANDARD_SECRET_PREFIX}")
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:  # padding is optional, as the spec's own libraries read it
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise SecretInvalid("after whsec_ comes the key in base64") from exc
    if not STANDARD_KEY_BYTES[0] <= len(key) <= STANDARD_KEY_BYTES[1]:
        raise SecretInvalid("the key is 24 to 64 bytes")
    return key


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Our own scheme: `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<raw body>"`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def _fresh(timestamp: str, now: float, header: str) -> None:
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SignatureError(f"{header} must be unix seconds") from exc
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureError(f"{header} is more than five minutes away")


def verify(
    secrets: tuple[str, ...], timestamp: str | None, signed: str | None, body: bytes, now: float
) -> None:
    """Our own scheme: raise SignatureError unless `signed` is the body's signature under one
    of `secrets`, made within five minutes of `now` (unix seconds)."""
    if not timestamp or not signed:
        raise SignatureError("X-Webhook-Timestamp and X-Webhook-Signature are required")
    _fresh(timestamp, now, "X-Webhook-Timestamp")
    if not any(
        hmac.compare_digest(signature(secret, timestamp, body), signed.strip())
        for secret in secrets
    ):
        raise SignatureError("X-Webhook-Signature does not match the body")


def verify_standard(
    secrets: tuple[str, ...], headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Standard Webhooks: raise SignatureError unless one of the `v1,<base64>` signatures of
    `webhook-signature` is HMAC-SHA256 of `"<webhook-id>.<webhook-timestamp>.<body>"` under
    one of `secrets`, sent within five minutes; the delivery's `webhook-id`."""
    delivery_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    if not delivery_id or not timestamp:
        raise SignatureError("webhook-id and webhook-timestamp are required")
    _fresh(timestamp, now, "webhook-timestamp")
    offered = [
        value.encode()
        for version, _, value in (
            entry.partition(",") for entry in headers.get("webhook-signature", "").split()
        )
        if version == "v1"
    ]
    content = f"{delivery_id}.{timestamp}.".encode() + body
    for secret in secrets:
        try:
            key = standard_key(secret)
        except SecretInvalid:
            continue  # a secret of our own scheme only, from before Standard Webhooks
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
        if any(hmac.compare_digest(expected, given) for given in offered):
            return delivery_id
    raise SignatureError("no v1 signature in webhook-signature matches the body")


def verify_body_hmac(secrets: tuple[str, ...], signed: str, body: bytes, header: str) -> None:
    """Shopify's and WooCommerce's scheme: `signed` is base64 of HMAC-SHA256 of the raw body
    under the secret, as is."""
    given = signed.strip().encode()
    if not any(
        hmac.compare_digest(
            base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()), given
        )
        for secret in secrets
    ):
        raise SignatureError(f"{header} does not match the body")


def verify_shared_secret(secrets: tuple[str, ...], given: str, header: str) -> None:
    """A secret sent as is in a header (VTEX triggers), over TLS."""
    if not any(hmac.compare_digest(secret.encode(), given.strip().encode()) for secret in secrets):
        raise SignatureError(f"{header} is not this source's secret")


@dataclass
class RecentSources:
    """Webhook sources, each with its profile's schema, as read in the last `seconds`, in this
    process: a store's deliveries come many a second, and each would otherwise wait for two
    reads on a busy server. A source this process rotates or removes is forgotten at once;
    other processes see such a change, or a changed profile, within `seconds`. The command
    consumer checks values against the profile as it stands when it applies them."""

    seconds: float
    max_sources: int = 10_000
    _read: dict[str, tuple[float, WebhookSource, ProfileSchema]] = field(default_factory=dict)

    def get(self, source_id: str, now: float) -> tuple[WebhookSource, ProfileSchema] | None:
        entry = self._read.get(source_id)
        if entry is None or not 0 <= now - entry[0] < self.seconds:
            return None
        return entry[1], entry[2]

    def keep(self, source: WebhookSource, schema: ProfileSchema, now: float) -> None:
        if len(self._read) >= self.max_sources:
            self._read.clear()  # bounded: the sources past it are read again
        self._read[source.id] = (now, source, schema)

    def forget(self, source_id: str) -> None:
        self._read.pop(source_id, None)


@dataclass
class SourceRateLimits:
    """How many records each source may send: `rate` a second, saved up to `burst` while it is
    quiet (token buckets, per source, in this process). A store that floods the endpoint is
    told to come back later instead of starving the others and the command consumer."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, as of

    def take(self, source_id: str, records: int, now: float) -> float:
        """Take `records` tokens: 0.0 if they were there, else the seconds until they will be
        (and none are taken)."""
        tokens, as_of = self._buckets.get(source_id, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - as_of) * self.rate)
        if records <= tokens:
            self._buckets[source_id] = (tokens - records, now)
            return 0.0
        self._buckets[source_id] = (tokens, now)
        return (records - tokens) / self.rate
