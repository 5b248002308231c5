"""Webhook ingestion rules, pure: signatures, and customer records mapped to contact fields."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from contacts_shared.profiles import ProfileSchema

MAX_CLOCK_SKEW_SECONDS = 300
SIGNATURE_PREFIX = "sha256="


class WebhookFormat(StrEnum):
    GENERIC = "generic"
    SHOPIFY = "shopify"


# Shopify's customer webhook (customers/create, customers/update) carries these paths; the
# identity comes from `email` (regular profiles) or `phone` (mobile-only) without any mapping.
SHOPIFY_IDENTITY_PATHS = {"email": "email", "phone": "phone"}


@dataclass(frozen=True)
class WebhookSource:
    """Where a store's customer webhooks land: one profile, a format and a field mapping."""

    id: str
    account_id: str
    profile_id: str
    format: WebhookFormat
    mapping: dict[str, str]  # payload path -> field name
    secret: str
    created_at: datetime


class SignatureError(Exception):
    """The request is not provably from the source's holder of the secret."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<raw body>"`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(secret: str, timestamp: str | None, signed: str | None, body: bytes, now: float) -> None:
    """Raise SignatureError unless `signed` is the body's signature under `secret`, made
    within five minutes of `now` (unix seconds)."""
    if not timestamp or not signed:
        raise SignatureError("X-Webhook-Timestamp and X-Webhook-Signature are required")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SignatureError("X-Webhook-Timestamp must be unix seconds") from exc
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureError("X-Webhook-Timestamp is more than five minutes away")
    if not hmac.compare_digest(signature(secret, timestamp, body), signed.strip()):
        raise SignatureError("X-Webhook-Signature does not match the body")


def _at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`default_address.city`), or None."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def record_fields(
    record: Mapping[str, Any],
    *,
    format: WebhookFormat,
    mapping: Mapping[str, str],
    identity_name: str,
) -> dict[str, Any]:
    """A customer record as contact values by field name: mapped paths that are present (other
    keys of the payload are ignored); Shopify records bring their identity unmapped."""
    paths = dict(mapping)
    if format is WebhookFormat.SHOPIFY and identity_name not in paths.values():
        paths[SHOPIFY_IDENTITY_PATHS.get(identity_name, identity_name)] = identity_name
    fields = {}
    for path, field_name in paths.items():
        value = _at(record, path)
        if value is not None:
            fields[field_name] = value
    return fields


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
