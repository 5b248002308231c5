"""Stores' webhooks as the platforms sign and send them (Shopify, WooCommerce, VTEX, Standard
Webhooks), through the HTTP API onto the real Kafka and server. Every signature here is made by
the test itself, the way the platform makes it, never by the code under test. A refused or
acknowledged delivery is shown to have applied nothing by a later good one that must be
applied after it: for the same contact, or for a witness contact on the same partition of the
command topic (each partition's commands are applied in order). Payloads are the platforms'
documented samples (`tests/samples/`, by the `sample` fixture)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook

from contact_svc.settings import ContactSettings
from contacts_shared.commands import contact_partition_key
from contacts_shared.events import ContactDeleted, parse_event
from contacts_shared.kafka import partition_of

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]
Request = dict[str, Any]  # keyword arguments of httpx's post: content and headers
Sample = Callable[[str], dict[str, Any]]
FIELDS = [{"name": "Nombre"}, {"name": "Apellido"}, {"name": "Ciudad"}]
# The platforms whose admin shows the store's own signing secret, given to the source; a VTEX
# trigger and a generic (Standard Webhooks) sender take the one the source makes.
STORES_OWN_SECRET = {"shopify", "woocommerce"}


def store_secret() -> str:
    """A store's signing secret, as its admin copies it (64 hex characters)."""
    return secrets.token_hex(32)


def body_hmac(secret: str, body: bytes) -> str:
    """Shopify's and WooCommerce's signature: base64 of HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(secret: str, topic: str, payload: Any, *, webhook_id: str | None = None) -> Request:
    body = json.dumps(payload).encode()
    return {
        "content": body,
        "headers": {
            "content-type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": body_hmac(secret, body),
            "X-Shopify-Shop-Domain": "biller-shop.myshopify.com",
            "X-Shopify-API-Version": "2025-01",
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        },
    }


def woocommerce(secret: str, topic: str, payload: Any) -> Request:
    body = json.dumps(payload).encode()
    resource, event = topic.split(".")
    return {
        "content": body,
        "headers": {
            "content-type": "application/json",
            "User-Agent": "WooCommerce/9.5.1 Hookshot (WordPress/6.7.1)",
            "X-WC-Webhook-Source": "https://loja.example/",
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Signature": body_hmac(secret, body),
            "X-WC-Webhook-ID": "12",
            "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
        },
    }


def vtex(secret: str, payload: Any) -> Request:
    return {
        "content": json.dumps(payload).encode(),
        "headers": {"content-type": "application/json", "X-Webhook-Secret": secret},
    }


def standard(
    secret: str, payload: Any, *, msg_id: str | None = None, at: datetime | None = None
) -> Request:
    """Signed by the Standard Webhooks reference library."""
    body = json.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    sent_at = at or datetime.now(UTC)
    return {
        "content": body.encode(),
        "headers": {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, sent_at, body),
        },
    }


def spec_secret() -> str:
    """A Standard Webhooks secret, made as the spec says: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# How each format's sender signs and sends a delivery: shopify and woocommerce take (topic,
# payload), vtex and generic the payload alone.
SENT_AS: dict[str, Callable[..., Request]] = {
    "shopify": shopify,
    "woocommerce": woocommerce,
    "vtex": vtex,
    "generic": standard,
}


def consent(state: str) -> dict[str, Any]:
    return {
        "state": state,
        "opt_in_level": "single_opt_in",
        "consent_updated_at": datetime.now(UTC).isoformat(),
    }


def answered(
    response: httpx.Response, status: int, accepted: int, duplicate: bool = False, stale: int = 0
) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "accepted": accepted,
        "rejected": [],
        "stale": stale,
        "duplicate": duplicate,
    }


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, detail
    return detail


def named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda contact: bool(contact["fields"].get("Nombre") == name)


async def command_partitions(settings: ContactSettings) -> int:
    """How many partitions the command topic has, as Kafka tells."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        return len(await producer.partitions_for(settings.topic_contacts_commands))
    finally:
        await producer.stop()


class Contacts:
    """One profile's contacts, read through the API."""

    def __init__(self, client: httpx.AsyncClient, profile_id: str, eventually: Any) -> None:
        self.client, self.profile_id, self.eventually = client, profile_id, eventually

    def path(self, key: str) -> str:
        return f"/v1/profiles/{self.profile_id}/contacts/{key}"

    async def get(self, key: str) -> dict[str, Any] | None:
        read = await self.client.get(self.path(key))
        assert read.status_code in (200, 404), read.text
        return read.json() if read.status_code == 200 else None

    async def until(self, key: str, holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The contact once it is there and `holds(contact)`; fails after the `eventually`
        timeout."""
        last: list[dict[str, Any] | None] = [None]

        async def probe() -> bool:
            last[0] = found = await self.get(key)
            return found is not None and holds(found)

        assert await self.eventually(probe), (key, last[0])
        assert last[0] is not None
        return last[0]

    async def present(self, key: str) -> dict[str, Any]:
        return await self.until(key, lambda _: True)

    async def gone(self, key: str) -> None:
        async def absent() -> bool:
            return await self.get(key) is None

        assert await self.eventually(absent), f"{key} is still there"

    def witness(self, key: str, partitions: int, *, domain: str = "witness.example") -> str:
        """An email (a new contact's key) whose commands share `key`'s partition: once its
        creation is applied, whatever was sent for `key` before it has been applied too."""
        target = partition_of(contact_partition_key(self.profile_id, key), partitions)
        for n in count():
            email = f"w{n}@{domain}"
            if partition_of(contact_partition_key(self.profile_id, email), partitions) == target:
                return email
        raise AssertionError("unreachable")


@dataclass
class Store:
    """A profile's webhook source, and the store (or sender) that posts to it as its platform
    does."""

    client: httpx.AsyncClient
    format: str
    profile: dict[str, Any]
    source: dict[str, Any]
    secret: str
    contacts: Contacts

    @property
    def endpoint(self) -> str:
        return str(self.source["endpoint"])

    def signed(self, *message: Any, secret: str | None = None, **options: Any) -> Request:
        """`message` ((topic, payload), or the payload alone for vtex and generic) as the
        platform sends it, signed with the store's secret, or with `secret`."""
        return SENT_AS[self.format](secret or self.secret, *message, **options)

    async def post(self, request: Request) -> httpx.Response:
        return await self.client.post(self.endpoint, **request)

    async def send(
        self, *message: Any, secret: str | None = None, **options: Any
    ) -> httpx.Response:
        """Posts `message` to the source, signed as `signed` signs it."""
        return await self.post(self.signed(*message, secret=secret, **options))


StoreMaker = Callable[..., Awaitable[Store]]
Customer = Callable[..., dict[str, Any]]
Deletions = Callable[[set[str]], Awaitable[list[ContactDeleted]]]


@pytest.fixture
def store_source(services: Services, known_profile: Any, eventually: Any) -> StoreMaker:
    """Makes a webhook source of `format` with `mapping`, for `profile` or for a new profile
    (`fields=FIELDS`, with any other profile keys given). Its secret is `secret`; left out, the
    store's own one for Shopify and WooCommerce (made here), else the one the source makes and
    shows once."""
    _, client = services

    async def make(
        format: str,
        mapping: dict[str, str],
        *,
        secret: str | None = None,
        profile: dict[str, Any] | None = None,
        **profile_keys: Any,
    ) -> Store:
        if profile is None:
            profile = await known_profile(
                **{"name": f"{format} store", "fields": FIELDS, **profile_keys}
            )
        if secret is None and format in STORES_OWN_SECRET:
            secret = store_secret()
        body: dict[str, Any] = {"profile_id": profile["id"], "format": format, "mapping": mapping}
        if secret is not None:
            body["secret"] = secret
        created = await client.post("/v1/webhook-sources", json=body)
        assert created.status_code == 201, created.text
        source: dict[str, Any] = created.json()
        contacts = Contacts(client, profile["id"], eventually)
        return Store(client, format, profile, source, secret or source["secret"], contacts)

    return make


@pytest.fixture
def deletions(read_envelopes: Any, contact_settings: ContactSettings) -> Deletions:
    """Reads the ContactDeleted events of some contact ids from the events topic, once each of
    them has one."""

    async def read(contact_ids: set[str]) -> list[ContactDeleted]:
        def of(envelopes: list[Any]) -> list[ContactDeleted]:
            return [
                event
                for event in map(parse_event, envelopes)
                if isinstance(event, ContactDeleted) and event.contact_id in contact_ids
            ]

        envelopes = await read_envelopes(
            contact_settings.topic_contacts_events,
            until=lambda found: {event.contact_id for event in of(found)} == contact_ids,
        )
        return of(envelopes)

    return read


@pytest.fixture
def customer(sample: Sample) -> Customer:
    """Shopify's sample customer (customers/create) with some keys changed."""

    def changed(**changes: Any) -> dict[str, Any]:
        return {**sample("shopify/customers_create"), **changes}

    return changed


async def test_shopify_customers_are_created_unsubscribed_deduplicated_and_deleted(
    store_source: StoreMaker, customer: Customer, sample: Sample, deletions: Deletions
) -> None:
    shop = await store_source("shopify", {"first_name": "Nombre", "last_name": "Apellido"})
    source_id, contacts = shop.source["id"], shop.contacts
    assert shop.source["secret"] is None  # the store's own secret is never echoed
    assert (await shop.client.get(f"/v1/webhook-sources/{source_id}")).json()["secret"] is None
    bob = "bob@biller.com"

    created_id = str(uuid.uuid4())
    created = await shop.send("customers/create", customer(), webhook_id=created_id)
    answered(created, 202, accepted=1)
    contact = await contacts.present(bob)
    assert contact["fields"] == {"email": bob, "Nombre": "Bob", "Apellido": "Biller"}
    assert (contact["status"], contact["version"]) == ("active", 1)
    assert contact["source"] == f"webhook:{source_id}"

    # Shopify redelivers with the same X-Shopify-Webhook-Id (and here, other values): taken
    # before, so nothing is applied.
    redelivery = customer(first_name="Robert")
    answered(
        await shop.send("customers/create", redelivery, webhook_id=created_id),
        200,
        accepted=0,
        duplicate=True,
    )
    later = customer(last_name="Biller-Jones")
    answered(await shop.send("customers/update", later), 202, accepted=1)
    contact = await contacts.until(bob, lambda c: c["fields"]["Apellido"] == "Biller-Jones")
    assert contact["version"] == 2
    assert contact["fields"] == {"email": bob, "Nombre": "Bob", "Apellido": "Biller-Jones"}

    # Consent withdrawn in the store unsubscribes the contact, naming the consent.
    withdrawn = customer(email_marketing_consent=consent("unsubscribed"))
    answered(await shop.send("customers/update", withdrawn), 202, 1)
    contact = await contacts.until(bob, lambda c: c["status"] != "active")
    assert contact["status"] == "unsubscribed"
    assert "email_marketing_consent" in str(contact["status_reason"])

    # Consent given again in the store does not lift an unsubscribe; the values still change.
    given = customer(first_name="Bobby", email_marketing_consent=consent("subscribed"))
    answered(await shop.send("customers/update", given), 202, 1)
    contact = await contacts.until(bob, lambda c: c["fields"].get("Nombre") == "Bobby")
    assert contact["status"] == "unsubscribed"

    # customers/delete carries the id only; the contact the id arrived with goes.
    deletion = sample("shopify/customers_delete")
    answered(await shop.send("customers/delete", deletion), 202, accepted=1)
    await contacts.gone(bob)
    deleted = await deletions({f"{shop.profile['id']}:{bob}"})
    assert [(d.erased, d.source) for d in deleted] == [(False, f"webhook:{source_id}")]
    # A delete of a customer the source never brought deletes nothing: 200, nothing taken.
    answered(await shop.send("customers/delete", {**deletion, "id": 1}), 200, 0)


async def test_a_shopify_delete_names_every_email_the_customer_arrived_with(
    store_source: StoreMaker, customer: Customer, sample: Sample
) -> None:
    shop = await store_source("shopify", {"first_name": "Nombre"})
    answered(await shop.send("customers/create", customer()), 202, 1)
    answered(await shop.send("customers/update", customer(email="robert@biller.com")), 202, 1)
    await shop.contacts.present("bob@biller.com")
    await shop.contacts.present("robert@biller.com")

    answered(await shop.send("customers/delete", sample("shopify/customers_delete")), 202, 2)
    await shop.contacts.gone("bob@biller.com")
    await shop.contacts.gone("robert@biller.com")


async def test_a_late_retry_of_an_older_change_applies_nothing(
    store_source: StoreMaker,
    customer: Customer,
    sample: Sample,
    contact_settings: ContactSettings,
) -> None:
    """Shopify retries a failed delivery with its original payload for hours, after newer
    ones: a change older than one taken before for its customer (`updated_at`) is stale, and
    so is a creation older than the customer's deletion."""
    shop = await store_source("shopify", {"first_name": "Nombre"})
    contacts, bob = shop.contacts, "bob@biller.com"
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # before the deletion

    def change(name: str, minutes: int) -> dict[str, Any]:
        return customer(first_name=name, updated_at=(at + timedelta(minutes=minutes)).isoformat())

    older = shop.signed("customers/update", change("Old", 1))
    # Each applied before the next is sent: commands for one contact applied in one batch are
    # merged into one version.
    answered(await shop.send("customers/create", change("Bob", 0)), 202, 1)
    await contacts.present(bob)
    answered(await shop.send("customers/update", change("New", 2)), 202, 1)
    await contacts.until(bob, named("New"))
    # The retry of the delivery made at minute 1 comes after the one made at minute 2.
    answered(await shop.post(older), 200, 0, stale=1)
    # Same time as the newest is not older: taken (a create and an update of one second).
    answered(await shop.send("customers/update", change("Newer", 2)), 202, 1)
    contact = await contacts.until(bob, named("Newer"))
    assert contact["version"] == 3  # created, New, Newer: the stale one wrote nothing

    answered(await shop.send("customers/delete", sample("shopify/customers_delete")), 202, 1)
    await contacts.gone(bob)
    # A retry of its creation after the deletion does not bring the customer back.
    answered(await shop.send("customers/create", change("Bob", 0)), 200, 0, stale=1)
    partitions = await command_partitions(contact_settings)
    witness = contacts.witness(bob, partitions)
    answered(
        await shop.send("customers/create", customer(id=1, email=witness, first_name="W")), 202, 1
    )
    await contacts.present(witness)
    assert await contacts.get(bob) is None


async def test_shopify_redact_erases_and_data_request_changes_nothing(
    store_source: StoreMaker, customer: Customer, sample: Sample, deletions: Deletions
) -> None:
    shop = await store_source("shopify", {"first_name": "Nombre", "last_name": "Apellido"})
    client, contacts = shop.client, shop.contacts
    profile_contacts = f"/v1/profiles/{shop.profile['id']}/contacts"
    john = "john@example.com"
    made = await client.post(
        profile_contacts, json={"fields": {"email": john, "Nombre": "John", "Ciudad": "Ottawa"}}
    )
    assert made.status_code == 201, made.text
    created_at = made.json()["created_at"]

    # A data request is answered (200) and applied nowhere: a later update of the same contact
    # finds it as it was, one version on.
    asked = sample("shopify/customers_data_request")
    answered(await shop.send("customers/data_request", asked), 200, accepted=0)
    update = customer(id=191167, email=john, first_name="Johnny")
    answered(await shop.send("customers/update", update), 202, 1)
    contact = await contacts.until(john, lambda c: c["fields"]["Nombre"] != "John")
    assert (contact["version"], contact["created_at"]) == (2, created_at)
    assert contact["fields"] == {
        "email": john,
        "Nombre": "Johnny",
        "Apellido": "Biller",
        "Ciudad": "Ottawa",
    }

    # A contact that came by a create delivery, and one added through the API only: a redact
    # erases each (by the store's customer id or by the email it names).
    bob = customer()
    answered(await shop.send("customers/create", bob), 202, 1)
    await contacts.present("bob@biller.com")
    redact = sample("shopify/customers_redact")
    by_id = {**redact, "customer": {"id": bob["id"], "email": None, "phone": None}}
    answered(await shop.send("customers/redact", by_id), 202, 1)
    only_api = "ann@example.com"
    added = await client.post(profile_contacts, json={"fields": {"email": only_api}})
    assert added.status_code == 201, added.text
    by_email = {**redact, "customer": {"id": 777, "email": "Ann@Example.com"}}
    answered(await shop.send("customers/redact", by_email), 202, 1)
    # John arrived both ways: through the API, then as customer 191167.
    answered(await shop.send("customers/redact", redact), 202, 1)
    for key in ("bob@biller.com", only_api, john):
        await contacts.gone(key)

    erased = {f"{shop.profile['id']}:{key}" for key in ("bob@biller.com", only_api, john)}
    deleted = await deletions(erased)
    assert {(d.contact_id, d.erased) for d in deleted} == {
        (contact_id, True) for contact_id in erased
    }


async def test_a_withdrawn_consent_leaves_a_bounce_as_it_is(
    store_source: StoreMaker, customer: Customer
) -> None:
    """Every update of a customer who unsubscribed in the shop says so again: it unsubscribes
    an active contact, never turns a bounced (or otherwise suppressed) one into unsubscribed."""
    shop = await store_source("shopify", {"first_name": "Nombre"})
    contacts, bob = shop.contacts, "bob@biller.com"
    answered(await shop.send("customers/create", customer()), 202, 1)
    await contacts.present(bob)
    bounced = await shop.client.patch(
        contacts.path(bob), json={"status": "bounced", "status_reason": "550 mailbox unknown"}
    )
    assert bounced.status_code == 200, bounced.text
    withdrawn = customer(first_name="Bobby", email_marketing_consent=consent("unsubscribed"))
    answered(await shop.send("customers/update", withdrawn), 202, 1)
    contact = await contacts.until(bob, named("Bobby"))
    assert (contact["status"], contact["status_reason"]) == ("bounced", "550 mailbox unknown")


async def test_shopify_on_a_mobile_only_profile_uses_phone_and_sms_consent(
    store_source: StoreMaker, customer: Customer, sample: Sample
) -> None:
    shop = await store_source(
        "shopify", {"first_name": "Nombre"}, type="mobile_only", fields=[{"name": "Nombre"}]
    )
    phone = "+56987654321"
    mobile = customer(
        id=5021,
        email=None,
        phone=phone,
        first_name="Carla",
        # Withdrawn by email only: no bearing on an SMS contact.
        email_marketing_consent=consent("unsubscribed"),
        sms_marketing_consent={**consent("subscribed"), "consent_collected_from": "OTHER"},
    )
    answered(await shop.send("customers/create", mobile), 202, 1)
    contact = await shop.contacts.present(phone)
    assert contact["fields"] == {"phone": phone, "Nombre": "Carla"}
    assert contact["status"] == "active"

    withdrawn = {**mobile, "sms_marketing_consent": consent("unsubscribed")}
    answered(await shop.send("customers/update", withdrawn), 202, 1)
    contact = await shop.contacts.until(phone, lambda c: c["status"] != "active")
    assert contact["status"] == "unsubscribed"
    assert "sms_marketing_consent" in str(contact["status_reason"])

    gone = {**sample("shopify/customers_delete"), "id": 5021}
    answered(await shop.send("customers/delete", gone), 202, 1)
    await shop.contacts.gone(phone)


async def test_woocommerce_customers_are_created_updated_and_deleted(
    store_source: StoreMaker, sample: Sample
) -> None:
    woo = await store_source(
        "woocommerce",
        {"first_name": "Nombre", "last_name": "Apellido", "billing.city": "Ciudad"},
    )
    assert woo.source["secret"] is None
    john_doe = sample("woocommerce/customer_created")
    john = "john.doe@example.com"

    answered(await woo.send("customer.created", john_doe), 202, 1)
    contact = await woo.contacts.present(john)
    assert contact["fields"] == {
        "email": john,
        "Nombre": "John",
        "Apellido": "Doe",
        "Ciudad": "San Francisco",
    }

    answered(await woo.send("customer.updated", {**john_doe, "first_name": "Johnny"}), 202, 1)
    contact = await woo.contacts.until(john, lambda c: c["fields"]["Nombre"] == "Johnny")
    assert contact["version"] == 2
    assert contact["fields"]["Nombre"] == "Johnny"

    answered(await woo.send("customer.deleted", {"id": 25}), 202, 1)
    await woo.contacts.gone(john)


async def test_woocommerce_ping_is_answered_and_applies_nothing(
    store_source: StoreMaker, sample: Sample
) -> None:
    woo = await store_source("woocommerce", {})

    # Saving a webhook as active in WooCommerce posts this, unsigned; a webhook whose ping
    # fails cannot be saved.
    ping = await woo.post(
        {
            "content": b"webhook_id=12",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        }
    )
    answered(ping, 200, accepted=0)

    john_doe = sample("woocommerce/customer_created")
    answered(await woo.send("customer.created", john_doe), 202, 1)
    await woo.contacts.present(john_doe["email"])
    listed = (await woo.client.get(f"/v1/profiles/{woo.profile['id']}/contacts")).json()
    assert [item["key"] for item in listed["items"]] == [
        john_doe["email"]
    ]  # the ping added nothing


async def test_woocommerce_deliveries_in_the_same_second_are_all_applied(
    store_source: StoreMaker, sample: Sample
) -> None:
    woo = await store_source("woocommerce", {"first_name": "Nombre"})
    john_doe = sample("woocommerce/customer_created")
    # WC_Webhook::get_new_delivery_id(): wp_hash($this->get_id() . strtotime('now')), an
    # HMAC-MD5 under the site's salt; a registration fires customer.created, then
    # customer.updated as the checkout saves the billing address, within the same second.
    site_salt = secrets.token_bytes(32)
    delivery_id = hmac.new(site_salt, f"12{int(time.time())}".encode(), "md5").hexdigest()
    for topic, name in (("customer.created", "John"), ("customer.updated", "Johnny")):
        sent = woo.signed(topic, {**john_doe, "first_name": name})
        sent["headers"]["X-WC-Webhook-Delivery-ID"] = delivery_id
        answered(await woo.post(sent), 202, 1)
    await woo.contacts.until(john_doe["email"], named("Johnny"))


async def test_vtex_documents_with_the_shared_secret_never_resubscribe(
    store_source: StoreMaker, sample: Sample
) -> None:
    store = await store_source("vtex", {"firstName": "Nombre", "lastName": "Apellido"})
    assert store.source["secret"]  # ours, shown once, pasted into the trigger's headers
    contacts = store.contacts
    document = sample("vtex/client_document")
    ana = document["email"]

    answered(await store.send(document), 202, 1)
    contact = await contacts.present(ana)
    assert contact["fields"] == {"email": ana, "Nombre": "Ana", "Apellido": "Souza"}

    wrong = await store.send({**document, "firstName": "X"}, secret=store_secret())
    refused(wrong, 401, "X-Webhook-Secret")
    bare = await store.post({"json": {**document, "firstName": "X"}})
    refused(bare, 401)

    unsubscribed = await store.client.patch(
        contacts.path(ana), json={"status": "unsubscribed", "status_reason": "asked"}
    )
    assert unsubscribed.status_code == 200, unsubscribed.text
    # Created (1), unsubscribed (2); the refused deliveries changed nothing in between, and
    # the store's opt-in, false or true, never re-activates the contact.
    for version, name, opt_in in ((3, "Ana Maria", False), (4, "Ana Luisa", True)):
        answered(
            await store.send({**document, "firstName": name, "isNewsletterOptIn": opt_in}), 202, 1
        )
        contact = await contacts.until(ana, named(name))
        assert contact["version"] == version
        assert (contact["status"], contact["status_reason"]) == ("unsubscribed", "asked")


async def test_standard_webhooks_from_a_generic_sender(store_source: StoreMaker) -> None:
    mapping = {"data.email": "email", "data.first_name": "Nombre", "data.last_name": "Apellido"}
    sender = await store_source("generic", mapping)
    assert sender.source["secret"].startswith("whsec_")
    client, contacts = sender.client, sender.contacts

    def event(email: str, first_name: str, last_name: str = "Lovelace") -> dict[str, Any]:
        return {
            "type": "customer.created",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"email": email, "first_name": first_name, "last_name": last_name},
        }

    ada = "ada@analytical.example"
    msg_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    answered(await sender.send(event(ada, "Ada"), msg_id=msg_id), 202, 1)
    contact = await contacts.present(ada)
    assert contact["fields"] == {"email": ada, "Nombre": "Ada", "Apellido": "Lovelace"}

    # A retry: same webhook-id, signed anew (a new timestamp), other values: nothing applied.
    retry = await sender.send(event(ada, "Augusta"), msg_id=msg_id)
    answered(retry, 200, accepted=0, duplicate=True)
    # Sent ten minutes ago: refused.
    stale = await sender.send(event(ada, "Stale"), at=datetime.now(UTC) - timedelta(minutes=10))
    refused(stale, 401, "webhook-timestamp")
    # Signed with another key: refused.
    refused(await sender.send(event(ada, "Forged"), secret=spec_secret()), 401)
    answered(await sender.send(event(ada, "Ada", "King")), 202, 1)
    contact = await contacts.until(ada, lambda c: c["fields"]["Apellido"] == "King")
    assert contact["version"] == 2
    assert contact["fields"] == {"email": ada, "Nombre": "Ada", "Apellido": "King"}

    # A sender's own secret.
    theirs = await store_source("generic", mapping, secret=spec_secret(), profile=sender.profile)
    assert theirs.source["secret"] is None
    grace = "grace@cobol.example"
    answered(await theirs.send(event(grace, "Grace")), 202, 1)
    assert (await contacts.present(grace))["fields"]["Nombre"] == "Grace"

    for invalid in ("whsec_not*base64!", "abc", "whsec_" + base64.b64encode(b"short").decode()):
        answer = await client.post(
            "/v1/webhook-sources",
            json={"profile_id": sender.profile["id"], "mapping": mapping, "secret": invalid},
        )
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == ["secret"], answer.text
    rotated = await client.post(
        f"/v1/webhook-sources/{sender.source['id']}:rotate-secret", json={"secret": "abc"}
    )
    assert rotated.status_code == 422 and rotated.json()["errors"][0]["field"] == "secret"
    # The refused rotation left the secret as it was.
    answered(await sender.send(event(grace, "G", "Hopper")), 202, 1)
    await contacts.until(grace, lambda c: c["fields"].get("Apellido") == "Hopper")


async def test_bad_store_deliveries_are_refused_and_apply_nothing(
    store_source: StoreMaker,
    customer: Customer,
    sample: Sample,
    contact_settings: ContactSettings,
) -> None:
    partitions = await command_partitions(contact_settings)
    mapping = {"first_name": "Nombre", "last_name": "Apellido"}
    shop = await store_source("shopify", mapping)
    other = await store_source("shopify", mapping, profile=shop.profile)
    woo = await store_source("woocommerce", mapping)
    contacts, bob = shop.contacts, "bob@biller.com"
    answered(await shop.send("customers/create", customer()), 202, 1)
    await contacts.present(bob)

    mallory = customer(first_name="Mallory")
    newcomer = "new.buyer@biller.com"
    fresh = customer(id=9001, email=newcomer, first_name="New")
    # Signed with another source's secret.
    for payload in (mallory, fresh):
        forged = await shop.send("customers/update", payload, secret=other.secret)
        refused(forged, 401, "X-Shopify-Hmac-Sha256")
    # A body changed after signing.
    for payload in (mallory, fresh):
        tampered = shop.signed("customers/update", customer())
        tampered["content"] = json.dumps(payload).encode()
        refused(await shop.post(tampered), 401, "X-Shopify-Hmac-Sha256")
    # Unsigned.
    bare = shop.signed("customers/update", mallory)
    del bare["headers"]["X-Shopify-Hmac-Sha256"]
    refused(await shop.post(bare), 401)
    # A topic this source does not take, although correctly signed.
    order = {
        "id": 820982911946154508,
        "email": newcomer,
        "customer": {"id": 9001, "email": newcomer, "first_name": "New"},
    }
    refused(await shop.send("orders/create", order), 422, "orders/create")
    # A delete that does not say which customer.
    no_id = {k: v for k, v in sample("shopify/customers_delete").items() if k != "id"}
    no_id["email"] = bob
    refused(await shop.send("customers/delete", no_id), 422, "'id'")
    # Not JSON.
    garbled = shop.signed("customers/update", mallory)
    garbled["content"] = b"{not json"
    garbled["headers"]["X-Shopify-Hmac-Sha256"] = body_hmac(shop.secret, b"{not json")
    refused(await shop.post(garbled), 400)

    # Then good deliveries: Bob's own (same contact, so applied after anything sent for it)
    # and a witness on the newcomer's partition.
    answered(await shop.send("customers/update", customer(last_name="Later")), 202, 1)
    witness = contacts.witness(newcomer, partitions)
    answered(await shop.send("customers/create", customer(id=9002, email=witness)), 202, 1)
    contact = await contacts.until(bob, lambda c: c["fields"].get("Apellido") == "Later")
    assert (contact["version"], contact["fields"]["Nombre"]) == (2, "Bob")
    await contacts.present(witness)
    assert await contacts.get(newcomer) is None

    # A Shopify-signed delivery sent to a WooCommerce source: the wrong platform, refused.
    misdirected = shopify(woo.secret, "customers/create", fresh)
    refused(await woo.post(misdirected), 401, "X-WC-Webhook-Signature")
    woo_witness = woo.contacts.witness(newcomer, partitions)
    john_doe = sample("woocommerce/customer_created")
    answered(await woo.send("customer.created", {**john_doe, "email": woo_witness}), 202, 1)
    await woo.contacts.present(woo_witness)
    assert await woo.contacts.get(newcomer) is None


async def test_rotating_a_store_secret_keeps_the_old_one_for_the_time_asked(
    store_source: StoreMaker, customer: Customer
) -> None:
    shop = await store_source("shopify", {"first_name": "Nombre", "last_name": "Apellido"})
    old, rotate = shop.secret, f"/v1/webhook-sources/{shop.source['id']}:rotate-secret"
    client, contacts, bob = shop.client, shop.contacts, "bob@biller.com"

    new = store_secret()
    started = time.time()
    rotated = await client.post(rotate, json={"secret": new, "previous_valid_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] is None
    until = datetime.fromisoformat(rotated.json()["previous_secret_until"]).timestamp()
    assert started + 3590 < until < time.time() + 3610

    answered(await shop.send("customers/create", customer(), secret=old), 202, 1)
    await contacts.present(bob)
    by_new = customer(first_name="Bobby")
    answered(await shop.send("customers/update", by_new, secret=new), 202, 1)
    contact = await contacts.until(bob, lambda c: c["fields"]["Nombre"] == "Bobby")
    assert contact["version"] == 2

    newest = store_secret()
    rotated = await client.post(rotate, json={"secret": newest, "previous_valid_seconds": 0})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["previous_secret_until"] is None
    for stale in (old, new):
        sent = await shop.send("customers/update", customer(first_name="Stale"), secret=stale)
        refused(sent, 401)
    last = customer(first_name="Bobby", last_name="Newest")
    answered(await shop.send("customers/update", last, secret=newest), 202, 1)
    contact = await contacts.until(bob, lambda c: c["fields"]["Apellido"] == "Newest")
    assert (contact["version"], contact["fields"]["Nombre"]) == (3, "Bobby")
    source_now = (await client.get(f"/v1/webhook-sources/{shop.source['id']}")).json()
    assert source_now["previous_secret_until"] is None and source_now["secret"] is None
