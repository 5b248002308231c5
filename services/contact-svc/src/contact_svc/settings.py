"""contact-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from contacts_shared.settings import ServiceSettings


class ContactSettings(ServiceSettings):
    service_name: str = "contact-svc"
    mongodb_database: str = "contact_svc"
    # Region of phone numbers written without a country code (ISO 3166-1 alpha-2).
    default_phone_region: str = Field(default="CL", pattern="^[A-Z]{2}$")
    profile_events_group: str = "contact-svc.profile-schemas"
    contact_commands_group: str = "contact-svc.commands"
    contact_events_group: str = "contact-svc.contact-events"  # suppressions and statistics
    # Webhook records a source may send a second, per process, and how many it may save up
    # while quiet; the burst holds at least one full request (1,000 records).
    webhook_records_per_second: float = Field(default=5000, gt=0)
    webhook_burst_records: int = Field(default=20000, ge=1000)
    # Webhook requests one process works on at once (each waits for Kafka's acknowledgements);
    # beyond it they are answered 429 at once, so a slow broker does not pile up requests.
    webhook_max_in_flight: int = Field(default=64, ge=1)
    # How long a process answers webhooks from the source and profile it read (0: read them for
    # every delivery); a rotated secret or a removed source is seen by other processes after it.
    webhook_source_cache_seconds: float = Field(default=1.0, ge=0)
    # How long a sender's delivery id is remembered, so that its redeliveries change nothing,
    # and a store's deleted customer, so that a late retry of its creation does not bring it
    # back (Shopify retries 8 times over 4 hours).
    webhook_delivery_ids_days: float = Field(default=7, gt=0)
    # A bulk action's sender renews its lease with every page; a job whose sender stopped for
    # this long is taken over by another process. Idle senders look for jobs this often.
    bulk_lease_seconds: float = Field(default=30, gt=0)
    bulk_poll_seconds: float = Field(default=2, gt=0)
    # Contacts of an older document shape are rewritten in the background (ADR 9, addendum 3):
    # this many a round, with this pause between rounds; one process at a time holds the work,
    # another takes it over once its holder has been silent this long.
    shape_backfill_batch_size: int = Field(default=500, ge=1, le=5000)
    shape_backfill_pause_seconds: float = Field(default=0.05, ge=0)
    shape_backfill_lease_seconds: float = Field(default=30, gt=0)
