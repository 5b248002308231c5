"""Webhook signatures and record mapping, without I/O."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from contact_svc.webhooks import (
    RecentSources,
    SignatureError,
    SourceRateLimits,
    WebhookFormat,
    WebhookSource,
    new_secret,
    signature,
    verify,
)
from contacts_shared.profiles import ProfileSchema

BODY = b'{"email": "a@example.com"}'


def test_a_signed_body_verifies_within_five_minutes() -> None:
    secret = new_secret()
    signed = signature(secret, "1700000000", BODY)
    # As a sender's own code computes it, from the documented recipe.
    recipe = hmac.new(secret.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signed == "sha256=" + recipe
    verify((secret,), "1700000000", signed, BODY, now=1700000000 + 299)


@pytest.mark.parametrize(
    ("timestamp", "tamper", "now", "fragment"),
    [
        ("1700000000", b"", 1700000000 + 301, "five minutes"),
        ("1700000000", b"", 1700000000 - 301, "five minutes"),
        ("1700000000", b" ", 1700000000, "does not match"),
        ("yesterday", b"", 1700000000, "unix seconds"),
        (None, b"", 1700000000, "required"),
    ],
)
def test_bad_signatures_are_refused(
    timestamp: str | None, tamper: bytes, now: int, fragment: str
) -> None:
    secret = new_secret()
    signed = signature(secret, "1700000000", BODY)
    with pytest.raises(SignatureError, match=fragment):
        verify((secret,), timestamp, signed, BODY + tamper, now=now)


def test_another_secret_does_not_verify() -> None:
    signed = signature(new_secret(), "1700000000", BODY)
    with pytest.raises(SignatureError):
        verify((new_secret(),), "1700000000", signed, BODY, now=1700000000)


def test_a_source_spends_its_burst_then_waits_for_its_rate() -> None:
    limits = SourceRateLimits(rate=100, burst=1000)
    assert limits.take("s1", 1000, now=0.0) == 0.0
    assert limits.take("s1", 50, now=0.0) == 0.5  # refused: 50 records at 100 a second
    assert limits.take("s2", 1000, now=0.0) == 0.0  # another source has its own bucket
    assert limits.take("s1", 50, now=0.5) == 0.0
    assert limits.take("s1", 10, now=0.5) == 0.1
    # Quiet for long, it saves up no more than the burst.
    assert limits.take("s1", 1000, now=3600.0) == 0.0
    assert limits.take("s1", 1, now=3600.0) == 0.01


def source(source_id: str) -> WebhookSource:
    return WebhookSource(
        id=source_id,
        account_id="a1",
        profile_id="p1",
        format=WebhookFormat.GENERIC,
        mapping={"mail": "email"},
        secret=new_secret(),
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def test_a_source_read_is_kept_for_its_seconds_then_read_again(
    regular_schema: ProfileSchema,
) -> None:
    recent = RecentSources(seconds=1.0)
    s1 = source("s1")
    assert recent.get("s1", now=100.0) is None
    recent.keep(s1, regular_schema, now=100.0)
    assert recent.get("s1", now=100.9) == (s1, regular_schema)
    assert recent.get("s1", now=101.0) is None  # stale: read again
    assert recent.get("s1", now=99.0) is None  # the clock went back: read again
    assert recent.get("s2", now=100.5) is None


def test_a_forgotten_source_is_read_again_and_none_is_kept_when_disabled(
    regular_schema: ProfileSchema,
) -> None:
    recent = RecentSources(seconds=1.0)
    recent.keep(source("s1"), regular_schema, now=100.0)
    recent.forget("s1")
    assert recent.get("s1", now=100.1) is None
    disabled = RecentSources(seconds=0)
    disabled.keep(source("s1"), regular_schema, now=100.0)
    assert disabled.get("s1", now=100.0) is None


def test_the_sources_kept_are_bounded(regular_schema: ProfileSchema) -> None:
    recent = RecentSources(seconds=10.0, max_sources=2)
    for name in ("s1", "s2", "s3"):
        recent.keep(source(name), regular_schema, now=100.0)
    assert recent.get("s3", now=100.0) is not None
    assert recent.get("s1", now=100.0) is None
