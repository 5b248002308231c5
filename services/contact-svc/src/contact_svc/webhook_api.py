"""HTTP routes of webhooks: sources registered and rotated, and the stores' deliveries."""

from __future__ import annotations

import time
from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contact_svc import webhook_handlers
from contact_svc.api import ItemOut, item_out
from contact_svc.contact_handlers import Outcome
from contact_svc.webhook_handlers import MAX_PREVIOUS_SECRET_SECONDS, WebhookIntake
from contact_svc.webhook_repository import StoreCustomerStore, WebhookSourceStore
from contact_svc.webhooks import RecentSources, SignatureError, WebhookFormat, WebhookSource
from contacts_shared.web import AccountId, InFlightLimit, Problem

webhook_router = APIRouter(tags=["webhooks"])
# Deliveries come as the stores send them: JSON, or WooCommerce's form-encoded ping.
delivery_router = APIRouter(tags=["webhooks"])

SECRET_DESCRIPTION = (
    "the signing secret the store shows (Shopify, WooCommerce; for `generic`, a Standard "
    "Webhooks `whsec_` secret); left out, one is generated and shown once"
)


class WebhookSourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile_id: str = Field(min_length=1, max_length=100)
    format: WebhookFormat = WebhookFormat.GENERIC
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="payload key or dotted path (`default_address.city`) -> profile field name",
    )
    secret: str | None = Field(
        default=None, min_length=1, max_length=500, description=SECRET_DESCRIPTION
    )


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(
        default=None, min_length=1, max_length=500, description=SECRET_DESCRIPTION
    )
    previous_valid_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_PREVIOUS_SECRET_SECONDS,
        description="how long the replaced secret still verifies: the time to change it at "
        "the store (0: it stops at once)",
    )


class WebhookSourceOut(BaseModel):
    id: str
    profile_id: str
    format: WebhookFormat
    mapping: dict[str, str]
    endpoint: str
    created_at: datetime
    previous_secret_until: datetime | None = Field(
        default=None, description="until when the secret replaced by a rotation verifies"
    )
    secret: str | None = Field(
        default=None, description="a generated secret, shown once: at creation or rotation"
    )

    @classmethod
    def of(cls, source: WebhookSource, *, with_secret: bool = False) -> WebhookSourceOut:
        until = source.previous_secret_until
        return cls(
            id=source.id,
            profile_id=source.profile_id,
            format=source.format,
            mapping=source.mapping,
            endpoint=f"/v1/webhooks/{source.id}",
            created_at=source.created_at,
            previous_secret_until=until if until and until.timestamp() > time.time() else None,
            secret=source.secret if with_secret else None,
        )


class WebhookAccepted(BaseModel):
    accepted: int = Field(description="records taken, or contacts a delete was sent for")
    rejected: list[ItemOut]
    stale: int = Field(
        default=0,
        description="store records older than a change of their customer sent before (a late "
        "retry): not applied",
    )
    duplicate: bool = Field(
        default=False, description="a redelivery of a delivery taken before: nothing applied"
    )


def sources_of(request: Request) -> WebhookSourceStore:
    sources: WebhookSourceStore = request.app.state.webhook_sources
    return sources


def intake_of(request: Request) -> WebhookIntake:
    intake: WebhookIntake = request.app.state.webhook_intake
    return intake


def recent_sources(request: Request) -> RecentSources:
    return intake_of(request).recent


@webhook_router.post("/v1/webhook-sources", status_code=status.HTTP_201_CREATED)
async def create_webhook_source(
    body: WebhookSourceIn, account_id: AccountId, request: Request
) -> WebhookSourceOut:
    """Register a store's customer webhook, with the store's signing secret or a new one."""
    source = await webhook_handlers.create_webhook_source(
        account_id=account_id,
        profile_id=body.profile_id,
        format=body.format,
        mapping=body.mapping,
        secret=body.secret,
        schemas=request.app.state.schemas,
        sources=sources_of(request),
    )
    return WebhookSourceOut.of(source, with_secret=body.secret is None)


@webhook_router.get("/v1/webhook-sources/{source_id}")
async def get_webhook_source(
    source_id: str, account_id: AccountId, request: Request
) -> WebhookSourceOut:
    """A webhook source, without its secret."""
    return WebhookSourceOut.of(
        await webhook_handlers.owned_source(sources_of(request), account_id, source_id)
    )


@webhook_router.post("/v1/webhook-sources/{source_id}:rotate-secret")
async def rotate_webhook_secret(
    source_id: str,
    account_id: AccountId,
    request: Request,
    body: SecretRotation | None = None,
) -> WebhookSourceOut:
    """Replace the signing secret by the store's new one, or a generated one (shown once).
    The replaced one stops at once, or after `previous_valid_seconds`, on the replica that
    answers; within `CONTACTS_WEBHOOK_SOURCE_CACHE_SECONDS` (1 s) on the others."""
    rotation = body or SecretRotation()
    source = await webhook_handlers.rotate_webhook_secret(
        account_id=account_id,
        source_id=source_id,
        secret=rotation.secret,
        previous_valid_seconds=rotation.previous_valid_seconds,
        sources=sources_of(request),
    )
    recent_sources(request).forget(source_id)
    return WebhookSourceOut.of(source, with_secret=rotation.secret is None)


@webhook_router.delete("/v1/webhook-sources/{source_id}", status_code=204)
async def delete_webhook_source(source_id: str, account_id: AccountId, request: Request) -> None:
    """Stop accepting this source's webhooks (within `CONTACTS_WEBHOOK_SOURCE_CACHE_SECONDS`
    on the other replicas), and forget the store customer ids it brought."""
    await webhook_handlers.owned_source(sources_of(request), account_id, source_id)
    await sources_of(request).remove(source_id)
    recent_sources(request).forget(source_id)
    customers: StoreCustomerStore = intake_of(request).customers
    await customers.forget_source(source_id)


@delivery_router.post("/v1/webhooks/{source_id}", status_code=status.HTTP_202_ACCEPTED)
async def receive_webhook(source_id: str, request: Request, response: Response) -> WebhookAccepted:
    """A store's delivery, signed as its platform signs (Shopify, WooCommerce, VTEX, Standard
    Webhooks) or with our own headers: 202 once every valid record (or delete) is durably on
    Kafka; invalid records are listed, not applied (422 when no record of a batch is valid).
    200 for a WooCommerce ping, a data request, a redelivery of a delivery id taken before,
    and a store's customer the profile cannot hold (listed in `rejected`): nothing applied."""
    in_flight: InFlightLimit = request.app.state.webhooks_in_flight
    try:
        with in_flight.slot():
            answer = await intake_of(request).receive(
                source_id, request.headers, await request.body(), time.time()
            )
    except SignatureError as exc:
        raise Problem(401, "Unauthorized", str(exc)) from exc
    results = answer.results
    rejected = [item_out(r) for r in results if r.outcome is Outcome.REJECTED]
    nothing_valid = bool(results) and len(rejected) == len(results)
    taken = sum(r.outcome is Outcome.ACCEPTED for r in results) + answer.deleting
    if nothing_valid and answer.delivery.topic is None:
        errors = [
            {"field": f"[{r.index}].{e['field']}", "message": e["message"]}
            for r in rejected
            for e in r.errors
        ]
        raise Problem(422, "No valid record", "Every record was rejected", errors)
    # A store's customer this profile cannot hold (no email) is refused in the answer, not
    # by an error: a platform drops a subscription whose deliveries fail time after time.
    store_took_nothing = answer.delivery.topic is not None and not taken
    if answer.duplicate or store_took_nothing:  # a ping or a data request takes nothing too
        response.status_code = status.HTTP_200_OK
    return WebhookAccepted(
        accepted=taken,
        rejected=rejected,
        stale=sum(r.outcome is Outcome.STALE for r in results),
        duplicate=answer.duplicate,
    )
