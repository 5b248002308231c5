"""Signed webhook batches: accepted once on Kafka, applied by the command consumer."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind

from contact_svc.settings import ContactSettings
from contact_svc.webhooks import signature
from contacts_shared.kafka import Record

pytestmark = pytest.mark.integration

Services = tuple[httpx.AsyncClient, httpx.AsyncClient]
FIELDS = [{"name": "Nombre"}, {"name": "Ciudad"}, {"name": "Compras", "type": "number"}]


def signed(secret: str, payload: Any, *, at: float | None = None) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    timestamp = str(int(at if at is not None else time.time()))
    return {
        "content": body,
        "headers": {
            "content-type": "application/json",
            "x-webhook-timestamp": timestamp,
            "x-webhook-signature": signature(secret, timestamp, body),
        },
    }


async def test_generic_records_are_accepted_then_applied(
    services: Services, known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Store", fields=FIELDS)
    created = await contacts.post(
        "/v1/webhook-sources",
        json={
            "profile_id": profile["id"],
            "format": "generic",
            "mapping": {
                "mail": "email",
                "name": "Nombre",
                "address.city": "Ciudad",
                "orders_count": "Compras",
            },
        },
    )
    assert created.status_code == 201, created.text
    source = created.json()
    assert source["secret"].startswith("whsec_")
    assert (await contacts.get(f"/v1/webhook-sources/{source['id']}")).json()["secret"] is None

    records = [
        {
            "mail": f"Buyer{i}@Shop.example",
            "name": f"B{i}",
            "address": {"city": "Lima"},
            "orders_count": i,
            "ignored": {"deep": True},
        }
        for i in range(20)
    ] + [{"mail": "not-an-email", "orders_count": "many"}]
    response = await contacts.post(source["endpoint"], **signed(source["secret"], records))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 20
    assert [(r["index"], {e["field"] for e in r["errors"]}) for r in body["rejected"]] == [
        (20, {"email"})
    ]

    base = f"/v1/profiles/{profile['id']}/contacts"

    async def all_applied() -> bool:
        page = (await contacts.get(base, params={"limit": 100})).json()
        return len(page["items"]) == 20

    assert await eventually(all_applied)
    buyer = (await contacts.get(f"{base}/buyer7@shop.example")).json()
    assert buyer["fields"] == {
        "email": "buyer7@shop.example",
        "Nombre": "B7",
        "Ciudad": "Lima",
        "Compras": 7,
    }
    assert buyer["source"] == f"webhook:{source['id']}"

    # The same delivery again (a store's retry) changes nothing.
    again = await contacts.post(source["endpoint"], **signed(source["secret"], records[7]))
    assert again.status_code == 202
    await asyncio.sleep(1)
    assert (await contacts.get(f"{base}/buyer7@shop.example")).json()["version"] == 1
    # A later record with new values updates only what it carries.
    update = {"mail": "buyer7@shop.example", "orders_count": 8}
    assert (await contacts.post(source["endpoint"], **signed(source["secret"], update))).is_success

    async def updated() -> bool:
        found = (await contacts.get(f"{base}/buyer7@shop.example")).json()
        return bool(found["fields"]["Compras"] == 8 and found["fields"]["Nombre"] == "B7")

    assert await eventually(updated)


async def test_shopify_customer_webhooks_bring_their_email(
    services: Services, known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Shopify", fields=FIELDS)
    source = (
        await contacts.post(
            "/v1/webhook-sources",
            json={
                "profile_id": profile["id"],
                "format": "shopify",
                "mapping": {
                    "first_name": "Nombre",
                    "default_address.city": "Ciudad",
                    "orders_count": "Compras",
                },
            },
        )
    ).json()
    customer = {  # the shape of Shopify's customers/create payload (abridged)
        "id": 706405506930370084,
        "email": "bob@biller.example",
        "first_name": "Bob",
        "last_name": "Biller",
        "orders_count": 3,
        "state": "enabled",
        "phone": None,
        "default_address": {"city": "Valparaíso", "country": "Chile"},
        "email_marketing_consent": {"state": "subscribed"},
    }
    response = await contacts.post(source["endpoint"], **signed(source["secret"], customer))
    assert response.status_code == 202, response.text
    path = f"/v1/profiles/{profile['id']}/contacts/bob@biller.example"

    async def arrived() -> bool:
        return (await contacts.get(path)).status_code == 200

    assert await eventually(arrived)
    assert (await contacts.get(path)).json()["fields"] == {
        "email": "bob@biller.example",
        "Nombre": "Bob",
        "Ciudad": "Valparaíso",
        "Compras": 3,
    }


async def test_unsigned_stale_and_malformed_deliveries_are_refused(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Guarded", fields=FIELDS)
    source = (
        await contacts.post(
            "/v1/webhook-sources", json={"profile_id": profile["id"], "mapping": {"email": "email"}}
        )
    ).json()
    record = {"email": "a@example.com"}
    endpoint = source["endpoint"]

    wrong = signed("whsec_wrong", record)
    assert (await contacts.post(endpoint, **wrong)).status_code == 401
    stale = signed(source["secret"], record, at=time.time() - 600)
    assert (await contacts.post(endpoint, **stale)).status_code == 401
    bare = await contacts.post(endpoint, json=record)
    assert bare.status_code == 401 and bare.headers["content-type"].startswith(
        "application/problem+json"
    )
    unknown = signed(source["secret"], record)
    assert (
        await contacts.post("/v1/webhooks/000000000000000000000000", **unknown)
    ).status_code == 401

    not_json = signed(source["secret"], record)
    not_json["content"] = b"{nope"
    timestamp = not_json["headers"]["x-webhook-timestamp"]
    not_json["headers"]["x-webhook-signature"] = signature(source["secret"], timestamp, b"{nope")
    assert (await contacts.post(endpoint, **not_json)).status_code == 400
    too_many = signed(source["secret"], [record] * 1001)
    assert (await contacts.post(endpoint, **too_many)).status_code == 413
    all_bad = await contacts.post(endpoint, **signed(source["secret"], [{"email": "x"}]))
    assert all_bad.status_code == 422 and all_bad.json()["errors"][0]["field"] == "[0].email"

    rotated = await contacts.post(f"/v1/webhook-sources/{source['id']}:rotate-secret")
    new_secret = rotated.json()["secret"]
    assert (await contacts.post(endpoint, **signed(source["secret"], record))).status_code == 401
    assert (await contacts.post(endpoint, **signed(new_secret, record))).status_code == 202


async def test_sources_must_map_to_real_fields_and_the_identity(
    services: Services, known_profile: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Mapped", fields=FIELDS)
    missing_identity = await contacts.post(
        "/v1/webhook-sources", json={"profile_id": profile["id"], "mapping": {"name": "Nombre"}}
    )
    assert missing_identity.status_code == 422
    unknown_field = await contacts.post(
        "/v1/webhook-sources",
        json={"profile_id": profile["id"], "mapping": {"mail": "email", "x": "Color"}},
    )
    assert unknown_field.status_code == 422
    assert unknown_field.json()["errors"][0]["field"] == "mapping.x"
    foreign = await contacts.post(
        "/v1/webhook-sources",
        json={"profile_id": profile["id"], "mapping": {"m": "email"}},
        headers={"Authorization": "Bearer key-b"},
    )
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    "contact_settings",
    [{"webhook_records_per_second": 0.01, "webhook_burst_records": 1000}],
    indirect=True,
)
async def test_a_source_over_its_rate_gets_429_with_retry_after(
    services: tuple[httpx.AsyncClient, httpx.AsyncClient], known_profile: Any, eventually: Any
) -> None:
    _, contacts = services
    profile = await known_profile(name="Busy store", fields=[{"name": "Nombre"}])
    source = (
        await contacts.post(
            "/v1/webhook-sources",
            json={"profile_id": profile["id"], "mapping": {"email": "email"}},
        )
    ).json()
    burst = [{"email": f"b{i}@shop.example"} for i in range(1000)]
    accepted = await contacts.post(source["endpoint"], **signed(source["secret"], burst))
    assert accepted.status_code == 202, accepted.text

    refused = await contacts.post(
        source["endpoint"], **signed(source["secret"], [{"email": "late@shop.example"}])
    )
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    assert source["id"] in refused.json()["detail"]

    base = f"/v1/profiles/{profile['id']}"

    async def burst_applied() -> bool:
        stats = (await contacts.get(f"{base}/stats")).json()
        return bool(stats["total"] == 1000)

    assert await eventually(burst_applied)
    assert (await contacts.get(f"{base}/contacts/late@shop.example")).status_code == 404


async def test_one_delivery_is_one_trace_from_the_request_to_its_events_publication(
    spans: InMemorySpanExporter,
    services: Services,
    contact_settings: ContactSettings,
    known_profile: Any,
    eventually: Any,
    read_records: Any,
) -> None:
    """The request's span, the command's publication, its consumer's batch, the batch's write
    and the publication of the ContactCreated it wrote share one trace; so does the event's
    record, read back from Kafka."""
    _, contacts = services
    commands = contact_settings.topic_contacts_commands
    events = contact_settings.topic_contacts_events
    profile = await known_profile(name="Traced", fields=FIELDS)
    source = (
        await contacts.post(
            "/v1/webhook-sources",
            json={"profile_id": profile["id"], "mapping": {"mail": "email", "name": "Nombre"}},
        )
    ).json()
    delivery = {"mail": "traced@shop.example", "name": "T"}
    response = await contacts.post(source["endpoint"], **signed(source["secret"], delivery))
    assert response.status_code == 202, response.text

    [request] = [s for s in spans.get_finished_spans() if s.name.startswith("POST /v1/webhooks/")]
    assert request.name == "POST /v1/webhooks/{source_id}"
    assert request.kind is SpanKind.SERVER and request.parent is None
    assert dict(request.attributes or {})["http.response.status_code"] == 202
    trace_id = _context(request).trace_id

    def traced(name: str) -> list[ReadableSpan]:
        return [
            span
            for span in spans.get_finished_spans()
            if span.name == name and _context(span).trace_id == trace_id
        ]

    async def published() -> bool:
        return bool(traced(f"send {events}"))

    assert await eventually(published)
    [command_sent] = traced(f"send {commands}")
    [command_processed] = traced(f"process {commands}")
    [event_sent] = traced(f"send {events}")
    # The batch's write (the projections of the event may write in this trace too, later).
    writes = [w for w in traced("bulkWrite contacts") if _parent(w) == _ids(command_processed)]
    # Each the child of the one before: the consumer's of the record's context (remote).
    assert command_sent.kind is SpanKind.PRODUCER and _parent(command_sent) == _ids(request)
    assert command_processed.kind is SpanKind.CONSUMER
    assert _parent(command_processed) == _ids(command_sent)
    assert len(writes) == 1 and dict(writes[0].attributes or {})["db.collection.name"] == "contacts"
    assert event_sent.kind is SpanKind.PRODUCER
    assert _parent(event_sent) == _ids(command_processed)

    # The records carry the spans' contexts: the command's and the event's.
    def traceparent(record: Record) -> str:
        return str(dict(record.headers)["traceparent"].decode())

    [command] = await read_records(commands, until=lambda read: len(read) >= 1)
    assert traceparent(command) == _traceparent(command_sent)
    [event] = await read_records(events, until=lambda read: len(read) >= 1)
    assert json.loads(event.value or b"")["type"] == "contacts.contact.created"
    assert traceparent(event) == _traceparent(event_sent)
    assert traceparent(event).split("-")[1] == f"{trace_id:032x}"


def _context(span: ReadableSpan) -> SpanContext:
    context: SpanContext | None = span.context
    assert context is not None
    return context


def _ids(span: ReadableSpan) -> tuple[int, int]:
    """The (trace id, span id) of a span."""
    return _context(span).trace_id, _context(span).span_id


def _parent(span: ReadableSpan) -> tuple[int, int] | None:
    """The (trace id, span id) of a span's parent."""
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def _traceparent(span: ReadableSpan) -> str:
    context = _context(span)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
