"""Use cases of webhooks: sources registered and rotated, deliveries taken onto the command
topic; the command consumer applies them (`batch_handlers.apply_upserts`,
`deletion_handlers.apply_deletes`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bson import ObjectId

from contact_svc.batch_handlers import ItemResult, validate_item
from contact_svc.contact_handlers import Outcome, writable_schema
from contact_svc.deliveries import (
    Delivery,
    DeliveryAction,
    WebhookRejected,
    read_delivery,
    record_changed_at,
    record_fields,
    record_status,
    store_customer_id,
)
from contact_svc.domain import ContactError
from contact_svc.webhook_repository import (
    CustomerSeen,
    DeliveryStore,
    StoreCustomerStore,
    WebhookSourceStore,
)
from contact_svc.webhooks import (
    RecentSources,
    SecretInvalid,
    SignatureError,
    SourceRateLimits,
    WebhookFormat,
    WebhookSource,
    checked_secret,
    new_secret,
)
from contacts_shared.commands import DeleteContact, UpsertContact, upserts_records
from contacts_shared.kafka import EventPublisher, OutgoingMessage, partition_of
from contacts_shared.mongo import bson_now
from contacts_shared.profiles import ProfileSchema, SchemaStore
from contacts_shared.schema import FieldType
from contacts_shared.values import FieldProblem, ValuesInvalid

log = logging.getLogger(__name__)

MAX_MAPPING_ENTRIES = 200
MAX_PREVIOUS_SECRET_SECONDS = 7 * 24 * 3600


class WebhookSourceNotFound(ContactError):
    def __init__(self, source_id: str) -> None:
        super().__init__(f"webhook source {source_id} does not exist")


class SecretChanged(ContactError):
    """The source's secret changed while this rotation ran: rotate again if still wanted."""

    def __init__(self, source_id: str) -> None:
        super().__init__(f"the secret of webhook source {source_id} changed meanwhile")


def _given_secret(format: WebhookFormat, secret: str | None) -> str | None:
    try:
        return None if secret is None else checked_secret(format, secret)
    except SecretInvalid as exc:
        raise ValuesInvalid([FieldProblem("secret", str(exc))]) from exc


async def create_webhook_source(
    *,
    account_id: str,
    profile_id: str,
    format: WebhookFormat,
    mapping: Mapping[str, str],
    secret: str | None,
    schemas: SchemaStore,
    sources: WebhookSourceStore,
) -> WebhookSource:
    """A new source whose mapping targets this profile's fields, signed with `secret` (the
    store's own, pasted by its admin) or with one generated here."""
    schema = await writable_schema(schemas, account_id, profile_id)
    problems = []
    canonical: dict[str, str] = {}
    for path, field_name in mapping.items():
        spec = schema.field_named(field_name)
        if not path.strip() or spec is None:
            problems.append(
                FieldProblem(f"mapping.{path}", f"no field '{field_name}' in the profile")
            )
        else:
            canonical[path.strip()] = spec.name
    if len(mapping) > MAX_MAPPING_ENTRIES:
        problems.append(FieldProblem("mapping", f"at most {MAX_MAPPING_ENTRIES} entries"))
    identity = schema.identity.name
    if format is WebhookFormat.GENERIC and identity not in canonical.values():
        problems.append(FieldProblem("mapping", f"map a payload key to '{identity}'"))
    try:
        given = _given_secret(format, secret)
    except ValuesInvalid as exc:
        problems.extend(exc.problems)
        given = None
    if problems:
        raise ValuesInvalid(problems)
    source = WebhookSource(
        id=str(ObjectId()),
        account_id=account_id,
        profile_id=profile_id,
        format=format,
        mapping=canonical,
        secret=given or new_secret(),
        created_at=bson_now(),
    )
    await sources.add(source)
    return source


async def owned_source(
    sources: WebhookSourceStore, account_id: str, source_id: str
) -> WebhookSource:
    source = await sources.get(source_id)
    if source is None or source.account_id != account_id:
        raise WebhookSourceNotFound(source_id)
    return source


async def rotate_webhook_secret(
    *,
    account_id: str,
    source_id: str,
    secret: str | None,
    previous_valid_seconds: int,
    sources: WebhookSourceStore,
) -> WebhookSource:
    """Replace the secret by `secret` (the store's new one) or a generated one; the previous
    one still verifies for `previous_valid_seconds`, the time to change it at the sender."""
    source = await owned_source(sources, account_id, source_id)
    new = _given_secret(source.format, secret) or new_secret()
    until = bson_now() + timedelta(seconds=previous_valid_seconds)
    if not await sources.set_secret(source, new, until if previous_valid_seconds else None):
        raise SecretChanged(source_id)
    rotated = await sources.get(source_id)
    if rotated is None:
        raise WebhookSourceNotFound(source_id)
    return rotated


@dataclass(frozen=True)
class WebhookAnswer:
    """What became of a delivery: per-record results of an upsert, the contacts a delete or
    an erasure was sent for, or a redelivery answered as already taken."""

    delivery: Delivery
    results: tuple[ItemResult, ...] = ()
    deleting: int = 0
    duplicate: bool = False


@dataclass
class WebhookIntake:
    """Takes stores' deliveries onto the command topic: authenticated, checked against the
    source's rate, de-duplicated by the sender's delivery id, validated; answered once Kafka
    has every command. The source and its profile come from `recent` when it has them."""

    sources: WebhookSourceStore
    customers: StoreCustomerStore
    deliveries: DeliveryStore
    schemas: SchemaStore
    publisher: EventPublisher
    limits: SourceRateLimits
    recent: RecentSources
    topic: str
    region: str

    async def receive(
        self, source_id: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> WebhookAnswer:
        kept = self.recent.get(source_id, now)
        source = kept[0] if kept else await self.sources.get(source_id)
        if source is None:
            raise SignatureError("unknown webhook source")  # no hint whether the id exists
        delivery = read_delivery(source, headers, body, now)
        if delivery.action is DeliveryAction.ACKNOWLEDGE:
            log.info(
                "webhook acknowledged, nothing to apply",
                extra={
                    "source_id": source.id,
                    "topic": delivery.topic,
                    "delivery_id": delivery.id,
                    "customer_ids": [c.id for c in delivery.customers],
                },
            )
            return WebhookAnswer(delivery)
        wait = self.limits.take(source.id, max(1, len(delivery.records)), now)
        if wait:
            raise WebhookRejected(
                429,
                f"source {source.id} is over its {self.limits.rate:g} records a second; "
                "retry later",
                retry_after=wait,
            )
        if kept:
            schema = kept[1]
        else:
            schema = await writable_schema(self.schemas, source.account_id, source.profile_id)
            self.recent.keep(source, schema, now)
        if delivery.action is DeliveryAction.UPSERT:
            results = await self._upsert(source, schema, delivery)
            if results is None:
                return WebhookAnswer(delivery, duplicate=True)
            answer = WebhookAnswer(delivery, results=tuple(results))
            applied = any(r.outcome in (Outcome.ACCEPTED, Outcome.STALE) for r in results)
        else:
            if await self._taken(source, delivery):
                return WebhookAnswer(delivery, duplicate=True)
            answer = WebhookAnswer(delivery, deleting=await self._delete(source, schema, delivery))
            applied = True
        if delivery.id and applied:
            await self.deliveries.take(source.id, delivery.id)
        return answer

    async def _taken(self, source: WebhookSource, delivery: Delivery) -> bool:
        """Whether the delivery's id was taken before: a redelivery."""
        return bool(delivery.id) and await self.deliveries.taken(source.id, str(delivery.id))

    async def _upsert(
        self, source: WebhookSource, schema: ProfileSchema, delivery: Delivery
    ) -> list[ItemResult] | None:
        """Validate every record; the valid ones go onto the command topic, each with the
        status its consent sets. A store's customer is kept with its key first; a record older
        than a change of its customer kept before (a late retry) is stale, and left out. None:
        the delivery was taken before, nothing is published (keeping a redelivery's customers
        again, side by side with that lookup, changes nothing and saves a round trip)."""
        identity = schema.identity
        received_at = bson_now()
        results: list[ItemResult] = []
        commands: dict[int, UpsertContact] = {}  # by the index of its result
        seen: list[tuple[int, CustomerSeen]] = []
        for index, record in enumerate(delivery.records):
            fields = record_fields(
                record,
                format=source.format,
                mapping=source.mapping,
                identity_name=identity.name,
                identity_type=identity.type,
            )
            try:
                key, values = validate_item(schema, fields, self.region)
            except ValuesInvalid as exc:
                results.append(ItemResult(index, Outcome.REJECTED, errors=tuple(exc.problems)))
                continue
            status, reason = record_status(source.format, record, identity.type) or (None, None)
            commands[len(results)] = UpsertContact(
                command_id=str(uuid.uuid4()),
                account_id=source.account_id,
                profile_id=source.profile_id,
                key=key,
                values=values,
                source=f"webhook:{source.id}",
                received_at=received_at,
                status=status,
                status_reason=reason,
            )
            if customer_id := store_customer_id(source.format, record):
                changed_at = record_changed_at(source.format, record)
                seen.append((len(results), CustomerSeen(customer_id, key, changed_at)))
            results.append(ItemResult(index, Outcome.ACCEPTED, key))
        taken, stales = await asyncio.gather(
            self._taken(source, delivery), self.customers.remember(source.id, [c for _, c in seen])
        )
        if taken:
            return None
        for stale in stales:
            position = seen[stale][0]
            del commands[position]
            results[position] = ItemResult(
                results[position].index, Outcome.STALE, seen[stale][1].key
            )
        await self._publish(commands.values())
        return results

    async def _delete(
        self, source: WebhookSource, schema: ProfileSchema, delivery: Delivery
    ) -> int:
        """Send a delete (an erasure) for every contact the named customers arrived with, and
        for an erasure also the contact of the email or phone it names; the customers are then
        marked gone. How many contacts it was sent for."""
        customer_ids = [c.id for c in delivery.customers if c.id]
        keys = set(await self.customers.keys_of(source.id, customer_ids))
        erase = delivery.action is DeliveryAction.ERASE
        if erase:
            keys.update(self._identity_keys(schema, delivery))
        await self._publish(
            DeleteContact(
                command_id=str(uuid.uuid4()),
                account_id=source.account_id,
                profile_id=source.profile_id,
                key=key,
                source=f"webhook:{source.id}",
                erase=erase,
            )
            for key in sorted(keys)
        )
        await self.customers.mark_gone(source.id, customer_ids, bson_now())
        return len(keys)

    def _identity_keys(self, schema: ProfileSchema, delivery: Delivery) -> Iterable[str]:
        """The contact keys of the emails (phones, on a mobile-only profile) a delivery names;
        one that is not a valid identity names no contact."""
        by_phone = schema.identity.type is FieldType.PHONE
        for customer in delivery.customers:
            raw = customer.phone if by_phone else customer.email
            if raw:
                try:
                    yield schema.identity_key(raw, self.region)
                except ValuesInvalid:
                    continue

    async def _publish(self, commands: Iterable[UpsertContact | DeleteContact]) -> None:
        """Onto the command topic, on each contact's partition: a partition's upserts in as
        few records as fit (ADR 13), deletes one a record; returns once Kafka has them all."""
        listed: Sequence[UpsertContact | DeleteContact] = list(commands)
        if not listed:
            return
        partitions = await self.publisher.partitions_of(self.topic)
        upserts: dict[int, list[UpsertContact]] = {}
        messages: list[OutgoingMessage] = []
        for command in listed:
            partition = partition_of(command.partition_key, partitions)
            if isinstance(command, UpsertContact):
                upserts.setdefault(partition, []).append(command)
            else:
                value = command.model_dump_json().encode()
                messages.append(
                    OutgoingMessage(self.topic, command.partition_key, value, partition=partition)
                )
        messages.extend(
            OutgoingMessage(self.topic, group[0].partition_key, record, partition=partition)
            for partition, group in upserts.items()
            for record in upserts_records(group)
        )
        await self.publisher.publish(messages)
