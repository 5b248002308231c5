"""A store's delivery read the way its platform sends it, pure: the signature it carries, the
topic, the customer records or the customers it names, and the consent they hold."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contact_svc.domain import ContactError
from contact_svc.webhooks import (
    SignatureError,
    WebhookFormat,
    WebhookSource,
    verify,
    verify_body_hmac,
    verify_shared_secret,
    verify_standard,
)
from contacts_shared.schema import ContactStatus, FieldType

MAX_WEBHOOK_RECORDS = 1000

# Our own scheme, which every format takes (batches of records, signed by the sender's code).
OWN_HEADERS = ("x-webhook-timestamp", "x-webhook-signature")
STANDARD_SIGNATURE = "webhook-signature"
SHOPIFY_SIGNATURE = "x-shopify-hmac-sha256"
WOOCOMMERCE_SIGNATURE = "x-wc-webhook-signature"
VTEX_SECRET = "x-webhook-secret"  # the header a VTEX trigger is configured to send

# What WooCommerce posts, unsigned and form-encoded, when a webhook is saved as active.
WOOCOMMERCE_PING = re.compile(rb"webhook_id=\d+")


class WebhookRejected(ContactError):
    """The webhook request is unusable as a whole (not JSON, too many records, too soon, an
    unknown topic, ...); `retry_after`: the seconds after which the same request would be
    taken."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class DeliveryAction(StrEnum):
    UPSERT = "upsert"  # customer records, to add or change
    DELETE = "delete"  # the store deleted these customers
    ERASE = "erase"  # a person's erasure request (GDPR redact): the contact and its history
    ACKNOWLEDGE = "acknowledge"  # a ping or a data request: answered, nothing applied


@dataclass(frozen=True)
class StoreCustomer:
    """A customer as a delete or a redact names it: the store's id, and the email or phone
    when the payload carries them."""

    id: str | None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Delivery:
    """What a request asks for. `id`: the sender's delivery id, the same on every redelivery
    of it (None where the platform sends none)."""

    action: DeliveryAction
    id: str | None = None
    topic: str | None = None
    records: tuple[Mapping[str, Any], ...] = ()
    customers: tuple[StoreCustomer, ...] = ()


SHOPIFY_TOPICS = {
    "customers/create": DeliveryAction.UPSERT,
    "customers/update": DeliveryAction.UPSERT,
    "customers/delete": DeliveryAction.DELETE,
    "customers/redact": DeliveryAction.ERASE,
    "customers/data_request": DeliveryAction.ACKNOWLEDGE,
}
WOOCOMMERCE_TOPICS = {
    "customer.created": DeliveryAction.UPSERT,
    "customer.updated": DeliveryAction.UPSERT,
    "customer.deleted": DeliveryAction.DELETE,
}

# Where each platform's customer carries the identity, when the mapping does not say.
IDENTITY_PATHS = {
    WebhookFormat.SHOPIFY: {FieldType.EMAIL: "email", FieldType.PHONE: "phone"},
    WebhookFormat.WOOCOMMERCE: {FieldType.EMAIL: "email", FieldType.PHONE: "billing.phone"},
    WebhookFormat.VTEX: {FieldType.EMAIL: "email", FieldType.PHONE: "phone"},
}
# Shopify's consent object per channel; its state `unsubscribed` is a withdrawal.
SHOPIFY_CONSENT = {
    FieldType.EMAIL: "email_marketing_consent",
    FieldType.PHONE: "sms_marketing_consent",
}


def read_delivery(
    source: WebhookSource, headers: Mapping[str, str], body: bytes, now: float
) -> Delivery:
    """Authenticate the request by the scheme its headers carry among those the source's
    platform uses (SignatureError otherwise), then read what it asks for (WebhookRejected when
    it is unusable). `headers`: looked up by lower-case name."""
    secrets = source.secrets_at(now)
    if any(name in headers for name in OWN_HEADERS):
        verify(secrets, headers.get(OWN_HEADERS[0]), headers.get(OWN_HEADERS[1]), body, now)
        return Delivery(DeliveryAction.UPSERT, records=records_of(body))
    format = source.format
    if format is WebhookFormat.GENERIC and STANDARD_SIGNATURE in headers:
        delivery_id = verify_standard(secrets, headers, body, now)
        return Delivery(DeliveryAction.UPSERT, id=delivery_id, records=records_of(body))
    if format is WebhookFormat.SHOPIFY and SHOPIFY_SIGNATURE in headers:
        verify_body_hmac(secrets, headers[SHOPIFY_SIGNATURE], body, "X-Shopify-Hmac-Sha256")
        return _store_delivery(SHOPIFY, headers, body)
    if format is WebhookFormat.WOOCOMMERCE and WOOCOMMERCE_SIGNATURE in headers:
        verify_body_hmac(secrets, headers[WOOCOMMERCE_SIGNATURE], body, "X-WC-Webhook-Signature")
        return _store_delivery(WOOCOMMERCE, headers, body)
    if format is WebhookFormat.WOOCOMMERCE and WOOCOMMERCE_PING.fullmatch(body.strip()):
        return Delivery(DeliveryAction.ACKNOWLEDGE, topic="ping")  # unsigned; changes nothing
    if format is WebhookFormat.VTEX and VTEX_SECRET in headers:
        verify_shared_secret(secrets, headers[VTEX_SECRET], "X-Webhook-Secret")
        return Delivery(DeliveryAction.UPSERT, records=records_of(body))
    raise SignatureError(f"a {format} source takes {_schemes(format)}")


def _schemes(format: WebhookFormat) -> str:
    own = "X-Webhook-Timestamp and X-Webhook-Signature"
    theirs = {
        WebhookFormat.GENERIC: "webhook-id, webhook-timestamp and webhook-signature",
        WebhookFormat.SHOPIFY: "X-Shopify-Hmac-Sha256",
        WebhookFormat.WOOCOMMERCE: "X-WC-Webhook-Signature",
        WebhookFormat.VTEX: "X-Webhook-Secret",
    }[format]
    return f"deliveries signed with {theirs}, or with {own}"


def _topic(headers: Mapping[str, str], header: str, topics: Mapping[str, DeliveryAction]) -> str:
    topic = headers.get(header.lower(), "").strip()
    if topic not in topics:
        raise WebhookRejected(
            422, f"{header} '{topic}' is not a topic this source takes: {', '.join(topics)}"
        )
    return topic


@dataclass(frozen=True)
class _Platform:
    """Where a platform's deliveries say their topic and their delivery id."""

    topic_header: str
    delivery_id_header: str | None
    topics: Mapping[str, DeliveryAction]


SHOPIFY = _Platform("X-Shopify-Topic", "x-shopify-webhook-id", SHOPIFY_TOPICS)
# WooCommerce's X-WC-Webhook-Delivery-ID hashes the webhook id and the second it was sent:
# two deliveries of one second share it. It names no delivery, so none is de-duplicated.
WOOCOMMERCE = _Platform("X-WC-Webhook-Topic", None, WOOCOMMERCE_TOPICS)


def _store_delivery(platform: _Platform, headers: Mapping[str, str], body: bytes) -> Delivery:
    """A store's delivery of one topic: a customer record, a deleted customer (by id), or a
    GDPR request naming its customer in `customer`."""
    topic = _topic(headers, platform.topic_header, platform.topics)
    action = platform.topics[topic]
    payload = _object(body)
    header = platform.delivery_id_header
    delivery_id = (headers.get(header) or None) if header else None
    if action is DeliveryAction.UPSERT:
        return Delivery(action, delivery_id, topic, records=(payload,))
    if action is DeliveryAction.DELETE:
        customer = _customer(payload, topic, id_required=True)
        return Delivery(action, delivery_id, topic, customers=(customer,))
    named = payload.get("customer")
    if not isinstance(named, Mapping):
        raise WebhookRejected(422, f"a {topic} payload names its customer in 'customer'")
    return Delivery(action, delivery_id, topic, customers=(_customer(named, topic),))


def _customer(
    payload: Mapping[str, Any], topic: str, *, id_required: bool = False
) -> StoreCustomer:
    """The customer a delete (its id, `id_required`) or a redact (id, email, phone) names."""
    customer_id, email, phone = (payload.get(name) for name in ("id", "email", "phone"))
    customer = StoreCustomer(
        id=str(customer_id) if isinstance(customer_id, int | str) and customer_id != "" else None,
        email=email if isinstance(email, str) and email else None,
        phone=phone if isinstance(phone, str) and phone else None,
    )
    if customer.id is None and id_required:
        raise WebhookRejected(422, f"a {topic} payload carries the customer's 'id'")
    if customer == StoreCustomer(None):
        raise WebhookRejected(422, f"a {topic} payload names the customer by id, email or phone")
    return customer


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected(400, f"the body is not JSON: {exc}") from exc


def _object(body: bytes) -> Mapping[str, Any]:
    payload = _json(body)
    if not isinstance(payload, dict):
        raise WebhookRejected(422, "this topic's body is one JSON object")
    return payload


def records_of(body: bytes) -> tuple[Mapping[str, Any], ...]:
    """A body of one customer object or a JSON array of up to 1,000."""
    payload = _json(body)
    records = payload if isinstance(payload, list) else [payload]
    if len(records) > MAX_WEBHOOK_RECORDS:
        raise WebhookRejected(413, f"at most {MAX_WEBHOOK_RECORDS} records per request")
    if not records or not all(isinstance(record, dict) for record in records):
        raise WebhookRejected(422, "send one customer object or a JSON array of them")
    return tuple(records)


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
    identity_type: FieldType,
) -> dict[str, Any]:
    """A customer record as contact values by field name: mapped paths that are present (other
    keys of the payload are ignored); a store's records bring their identity unmapped."""
    paths = dict(mapping)
    platform_paths = IDENTITY_PATHS.get(format)
    if platform_paths and identity_name not in paths.values():
        paths[platform_paths[identity_type]] = identity_name
    fields = {}
    for path, field_name in paths.items():
        value = _at(record, path)
        if value is not None:
            fields[field_name] = value
    return fields


def store_customer_id(format: WebhookFormat, record: Mapping[str, Any]) -> str | None:
    """The store's id of a customer record (Shopify, WooCommerce), kept so that the store's
    later delete, which carries only that id, finds the contact."""
    if format not in (WebhookFormat.SHOPIFY, WebhookFormat.WOOCOMMERCE):
        return None
    customer_id = record.get("id")
    return str(customer_id) if isinstance(customer_id, int | str) and customer_id != "" else None


# Where a platform's customer says when it last changed, in the signed body.
CHANGED_AT_PATHS = {
    WebhookFormat.SHOPIFY: "updated_at",
    WebhookFormat.WOOCOMMERCE: "date_modified_gmt",
}


def record_changed_at(format: WebhookFormat, record: Mapping[str, Any]) -> datetime | None:
    """When the store's customer last changed (a time without zone is UTC, as WooCommerce's
    `_gmt` times are), or None when the record does not say."""
    path = CHANGED_AT_PATHS.get(format)
    raw = record.get(path) if path else None
    if not isinstance(raw, str):
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def record_status(
    format: WebhookFormat, record: Mapping[str, Any], identity_type: FieldType
) -> tuple[ContactStatus, str] | None:
    """The status a record's consent sets, with its reason: only a withdrawal does (Shopify's
    `unsubscribed`). Consent given leaves the status as it is, so a contact suppressed in the
    account stays so; consent never given is not a withdrawal."""
    if format is not WebhookFormat.SHOPIFY:
        return None
    consent_key = SHOPIFY_CONSENT[identity_type]
    consent = record.get(consent_key)
    if isinstance(consent, Mapping) and consent.get("state") == "unsubscribed":
        return ContactStatus.UNSUBSCRIBED, f"unsubscribed in the store ({consent_key})"
    return None
