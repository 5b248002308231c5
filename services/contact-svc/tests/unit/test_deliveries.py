"""Stores' deliveries read as each platform signs and sends them, without I/O. Signatures are
made here with the standard library or the Standard Webhooks package, never by the code under
test; payloads are the platforms' documented samples (`tests/samples/`, by the `sample`
fixture)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from contact_svc.deliveries import (
    DeliveryAction,
    StoreCustomer,
    WebhookRejected,
    read_delivery,
    record_changed_at,
    record_fields,
    record_status,
    store_customer_id,
)
from contact_svc.webhooks import (
    SecretInvalid,
    SignatureError,
    WebhookFormat,
    WebhookSource,
    checked_secret,
    new_secret,
)
from contacts_shared.schema import ContactStatus, FieldType

NOW = 1_780_000_000.0
SHOP_SECRET = "8f1c0b5e9d7a43c2b6e1f0a9d8c7b6a5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9"
Sample = Callable[[str], dict[str, Any]]


def source(format: WebhookFormat, secret: str = SHOP_SECRET, **rotated: Any) -> WebhookSource:
    return WebhookSource(
        id="s1",
        account_id="a1",
        profile_id="p1",
        format=format,
        mapping={},
        secret=secret,
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        **rotated,
    )


def body_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(topic: str, payload: Any, secret: str = SHOP_SECRET) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    return {
        "x-shopify-topic": topic,
        "x-shopify-hmac-sha256": body_hmac(secret, body),
        "x-shopify-webhook-id": "b54557e4-8a5f-4f7d-9bcd-043fe3d5d6d0",
        "x-shopify-triggered-at": "2026-12-05T10:00:00Z",
        "x-shopify-shop-domain": "example.myshopify.com",
        "x-shopify-api-version": "2025-01",
    }, body


def woocommerce(topic: str, payload: Any) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    resource, _, event = topic.partition(".")
    return {
        "x-wc-webhook-topic": topic,
        "x-wc-webhook-resource": resource,
        "x-wc-webhook-event": event,
        "x-wc-webhook-signature": body_hmac(SHOP_SECRET, body),
        "x-wc-webhook-id": "12",
        "x-wc-webhook-delivery-id": "9c7a3d1e0b",
        "x-wc-webhook-source": "https://shop.example/",
    }, body


def test_shopify_customer_topics_are_read_with_their_webhook_id(sample: Sample) -> None:
    customer = sample("shopify/customers_create")
    for topic in ("customers/create", "customers/update"):
        delivery = read_delivery(source(WebhookFormat.SHOPIFY), *shopify(topic, customer), NOW)
        assert delivery.action is DeliveryAction.UPSERT
        assert delivery.records == (customer,)
        assert delivery.id == "b54557e4-8a5f-4f7d-9bcd-043fe3d5d6d0"
        assert delivery.topic == topic


def test_a_shopify_delete_names_the_customer_by_id_and_a_redact_by_id_and_email(
    sample: Sample,
) -> None:
    shop = source(WebhookFormat.SHOPIFY)
    delete = sample("shopify/customers_delete")
    redact = sample("shopify/customers_redact")
    data_request = sample("shopify/customers_data_request")
    deleted = read_delivery(shop, *shopify("customers/delete", delete), NOW)
    assert deleted.action is DeliveryAction.DELETE
    assert deleted.customers == (StoreCustomer("706405506930370084"),)
    erased = read_delivery(shop, *shopify("customers/redact", redact), NOW)
    assert erased.action is DeliveryAction.ERASE
    assert erased.customers == (StoreCustomer("191167", "john@example.com", "555-625-1199"),)
    request = read_delivery(shop, *shopify("customers/data_request", data_request), NOW)
    assert request.action is DeliveryAction.ACKNOWLEDGE


@pytest.mark.parametrize(
    ("topic", "payload", "status", "fragment"),
    [
        ("orders/create", {"id": 1}, 422, "'orders/create' is not a topic"),
        ("", {"id": 1}, 422, "X-Shopify-Topic '' is not"),
        ("customers/delete", {"phone": None}, 422, "carries the customer's 'id'"),
        ("customers/redact", {"shop_id": 1}, 422, "in 'customer'"),
        ("customers/create", [{"id": 1}], 422, "one JSON object"),
    ],
)
def test_unusable_shopify_deliveries_are_refused(
    topic: str, payload: Any, status: int, fragment: str
) -> None:
    with pytest.raises(WebhookRejected, match=fragment) as refused:
        read_delivery(source(WebhookFormat.SHOPIFY), *shopify(topic, payload), NOW)
    assert refused.value.status == status


def test_forged_tampered_and_foreign_deliveries_are_not_authenticated(sample: Sample) -> None:
    shop = source(WebhookFormat.SHOPIFY)
    customer = sample("shopify/customers_create")
    headers, body = shopify("customers/create", customer, secret="another shop's secret")
    with pytest.raises(SignatureError, match="X-Shopify-Hmac-Sha256 does not match"):
        read_delivery(shop, headers, body, NOW)
    headers, body = shopify("customers/create", customer)
    with pytest.raises(SignatureError):
        read_delivery(shop, headers, body.replace(b"bob@biller.com", b"eve@biller.com"), NOW)
    # A Shopify delivery sent to a WooCommerce source, and the other way round.
    with pytest.raises(SignatureError, match="a woocommerce source takes"):
        read_delivery(source(WebhookFormat.WOOCOMMERCE), headers, body, NOW)
    woo_customer = sample("woocommerce/customer_created")
    with pytest.raises(SignatureError, match="a shopify source takes"):
        read_delivery(shop, *woocommerce("customer.created", woo_customer), NOW)
    with pytest.raises(SignatureError, match="a shopify source takes"):
        read_delivery(shop, {}, body, NOW)


def test_woocommerce_topics_and_its_unsigned_ping(sample: Sample) -> None:
    store = source(WebhookFormat.WOOCOMMERCE)
    customer = sample("woocommerce/customer_created")
    created = read_delivery(store, *woocommerce("customer.created", customer), NOW)
    # Its X-WC-Webhook-Delivery-ID is the same for all deliveries of one second: not an id.
    assert (created.action, created.id) == (DeliveryAction.UPSERT, None)
    deleted = read_delivery(store, *woocommerce("customer.deleted", {"id": 25}), NOW)
    assert deleted.customers == (StoreCustomer("25"),)
    ping = read_delivery(
        store, {"content-type": "application/x-www-form-urlencoded"}, b"webhook_id=12", NOW
    )
    assert ping.action is DeliveryAction.ACKNOWLEDGE
    # Anything else unsigned is not a ping.
    with pytest.raises(SignatureError):
        read_delivery(store, {}, b"webhook_id=12&email=eve@x.example", NOW)
    with pytest.raises(WebhookRejected, match="'product.created' is not a topic"):
        read_delivery(store, *woocommerce("product.created", {"id": 1}), NOW)


def test_vtex_documents_come_with_the_shared_secret(sample: Sample) -> None:
    secret = new_secret()
    store = source(WebhookFormat.VTEX, secret)
    document = sample("vtex/client_document")
    delivery = read_delivery(
        store, {"x-webhook-secret": secret}, json.dumps(document).encode(), NOW
    )
    assert delivery.records == (document,) and delivery.id is None
    with pytest.raises(SignatureError, match="not this source's secret"):
        read_delivery(store, {"x-webhook-secret": new_secret()}, b"{}", NOW)


def test_standard_webhooks_signed_by_the_spec_library_are_read_once_per_id() -> None:
    secret = new_secret()
    generic = source(WebhookFormat.GENERIC, secret)
    body = json.dumps([{"mail": "a@x.example"}, {"mail": "b@x.example"}]).encode()
    sent_at = datetime.fromtimestamp(NOW, UTC)

    def headers(at: datetime, signed_with: str = secret) -> dict[str, str]:
        return {
            "webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(signed_with).sign(
                "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", at, body
            ),
        }

    delivery = read_delivery(generic, headers(sent_at), body, NOW)
    assert delivery.id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W" and len(delivery.records) == 2
    # Several signatures, as during the sender's own rotation: one that matches is enough.
    several = headers(sent_at)
    several["webhook-signature"] = "v1,bm9wZQ== " + several["webhook-signature"]
    assert read_delivery(generic, several, body, NOW).id == delivery.id
    with pytest.raises(SignatureError, match="five minutes"):
        read_delivery(generic, headers(sent_at - timedelta(minutes=10)), body, NOW)
    with pytest.raises(SignatureError, match="no v1 signature"):
        read_delivery(generic, headers(sent_at, signed_with=new_secret()), body, NOW)
    with pytest.raises(SignatureError, match="no v1 signature"):
        read_delivery(generic, headers(sent_at), body + b" ", NOW)


def test_a_rotated_secret_verifies_until_its_window_ends(sample: Sample) -> None:
    until = datetime.fromtimestamp(NOW + 60, UTC)
    shop = source(
        WebhookFormat.SHOPIFY,
        "the shop's new secret",
        previous_secret=SHOP_SECRET,
        previous_secret_until=until,
    )
    customer = sample("shopify/customers_create")
    signed_before = shopify("customers/update", customer)
    assert read_delivery(shop, *signed_before, NOW).action is DeliveryAction.UPSERT
    with pytest.raises(SignatureError):
        read_delivery(shop, *signed_before, NOW + 61)
    signed_after = shopify("customers/update", customer, secret="the shop's new secret")
    assert read_delivery(shop, *signed_after, NOW + 61).action is DeliveryAction.UPSERT


def test_secrets_given_by_people_are_checked_for_their_scheme() -> None:
    spec_secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    assert checked_secret(WebhookFormat.GENERIC, spec_secret) == spec_secret
    assert checked_secret(WebhookFormat.GENERIC, spec_secret.rstrip("=")) == spec_secret.rstrip("=")
    assert checked_secret(WebhookFormat.SHOPIFY, f" {SHOP_SECRET} ") == SHOP_SECRET
    for format, secret, fragment in [
        (WebhookFormat.GENERIC, SHOP_SECRET, "starts with whsec_"),
        (WebhookFormat.GENERIC, "whsec_not*base64", "in base64"),
        (WebhookFormat.GENERIC, "whsec_" + base64.b64encode(b"short").decode(), "24 to 64"),
        (WebhookFormat.WOOCOMMERCE, "short", "at least 16"),
    ]:
        with pytest.raises(SecretInvalid, match=fragment):
            checked_secret(format, secret)


def test_store_records_bring_their_identity_unmapped(sample: Sample) -> None:
    assert record_fields(
        sample("shopify/customers_create"),
        format=WebhookFormat.SHOPIFY,
        mapping={"first_name": "Nombre", "default_address.city": "Ciudad"},
        identity_name="email",
        identity_type=FieldType.EMAIL,
    ) == {"email": "bob@biller.com", "Nombre": "Bob"}
    assert record_fields(
        sample("woocommerce/customer_created"),
        format=WebhookFormat.WOOCOMMERCE,
        mapping={},
        identity_name="Celular",
        identity_type=FieldType.PHONE,
    ) == {"Celular": "(555) 555-5555"}
    # Generic records are read only as mapped.
    assert record_fields(
        {"mail": "a@b.co", "profile": {"city": "Lima", "zip": None}, "email": "x@y.z"},
        format=WebhookFormat.GENERIC,
        mapping={"mail": "email", "profile.city": "Ciudad", "profile.zip": "Zip"},
        identity_name="email",
        identity_type=FieldType.EMAIL,
    ) == {"email": "a@b.co", "Ciudad": "Lima"}


def test_only_a_withdrawn_consent_sets_a_status(sample: Sample) -> None:
    customer = sample("shopify/customers_create")

    def consent(state: str | None, channel: str = "email_marketing_consent") -> dict[str, Any]:
        return {**customer, channel: None if state is None else {"state": state}}

    assert record_status(WebhookFormat.SHOPIFY, consent("unsubscribed"), FieldType.EMAIL) == (
        ContactStatus.UNSUBSCRIBED,
        "unsubscribed in the store (email_marketing_consent)",
    )
    for state in ("subscribed", "not_subscribed", "pending", "redacted", None):
        assert record_status(WebhookFormat.SHOPIFY, consent(state), FieldType.EMAIL) is None
    # Mobile-only profiles follow the SMS consent, not the email one.
    sms_withdrawn = consent("unsubscribed", "sms_marketing_consent")
    assert record_status(WebhookFormat.SHOPIFY, sms_withdrawn, FieldType.EMAIL) is None
    assert record_status(WebhookFormat.SHOPIFY, sms_withdrawn, FieldType.PHONE) == (
        ContactStatus.UNSUBSCRIBED,
        "unsubscribed in the store (sms_marketing_consent)",
    )
    vtex = sample("vtex/client_document")  # "isNewsletterOptIn": false is not a withdrawal
    assert record_status(WebhookFormat.VTEX, vtex, FieldType.EMAIL) is None


def test_store_customer_ids_are_kept_for_the_platforms_that_delete_by_id(sample: Sample) -> None:
    shopify_customer = sample("shopify/customers_create")
    assert store_customer_id(WebhookFormat.SHOPIFY, shopify_customer) == "706405506930370084"
    woo_customer = sample("woocommerce/customer_created")
    assert store_customer_id(WebhookFormat.WOOCOMMERCE, woo_customer) == "25"
    assert store_customer_id(WebhookFormat.GENERIC, {"id": 7}) is None
    assert store_customer_id(WebhookFormat.SHOPIFY, {"id": None}) is None


def test_a_store_record_says_when_its_customer_changed(sample: Sample) -> None:
    shopify_at = record_changed_at(WebhookFormat.SHOPIFY, sample("shopify/customers_create"))
    assert shopify_at == datetime(2022, 1, 1, 0, 0, tzinfo=UTC)  # 19:00 at -05:00
    woo = sample("woocommerce/customer_created")
    assert woo["date_modified_gmt"] == "2017-03-21T19:09:30"  # a time without zone: UTC
    assert record_changed_at(WebhookFormat.WOOCOMMERCE, woo) == datetime(
        2017, 3, 21, 19, 9, 30, tzinfo=UTC
    )
    # Only the _gmt time counts: without it (its site-local date_modified left), no time.
    del woo["date_modified_gmt"]
    assert record_changed_at(WebhookFormat.WOOCOMMERCE, woo) is None
    assert record_changed_at(WebhookFormat.SHOPIFY, {"updated_at": "yesterday"}) is None
    assert record_changed_at(WebhookFormat.VTEX, {"updated_at": "2026-12-05T10:00:00Z"}) is None
