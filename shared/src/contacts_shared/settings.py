"""Settings common to every service: one env prefix (`CONTACTS_`), defaults that work locally."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Keys `make run` prints for local use; they must never reach a production deployment.
LOCAL_ONLY_API_KEYS = frozenset({"local-dev-key", "changeme", "test"})


class ServiceSettings(BaseSettings):
    """Infrastructure, topics and HTTP settings; each service subclasses it for its own."""

    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    environment: Literal["local", "test", "staging", "production"] = "local"
    service_name: str = "contacts"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_database: str = "contacts"
    # `key=account_id` pairs separated by commas: the local API key store.
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    topic_profiles_events: str = "profiles.events"
    topic_contacts_events: str = "contacts.events"
    topic_contacts_commands: str = "contacts.commands"
    topic_imports_events: str = "imports.events"
    topic_imports_results: str = "imports.results"  # contact-svc -> import-svc, per batch
    topic_segments_events: str = "segments.events"
    topic_partitions: int = Field(default=6, ge=1)
    # Of every topic (`contacts_shared.topics`): unset, 3 (one broker may fail), or 1 in local
    # and test (one broker); set it for any other cluster. min.insync.replicas follows.
    topic_replication_factor: int | None = Field(default=None, ge=1)
    dead_letter_suffix: str = ".dlq"

    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Every request is answered by then; past it, 503 with Retry-After (a server or broker that
    # does not answer holds no client for longer).
    request_deadline_seconds: float = Field(default=10.0, gt=0)
    # The longest one MongoDB round trip or one Kafka call may take: a wedged server or an
    # unreachable broker fails the call as an outage, which consumers wait out.
    mongodb_call_timeout_seconds: float = Field(default=20.0, gt=0)
    kafka_call_timeout_seconds: float = Field(default=8.0, gt=0)
    # /readyz gives each check this long.
    readiness_timeout_seconds: float = Field(default=3.0, gt=0)
    # How long after a profile's creation a request naming it, when this service has not heard
    # of it yet, waits for it to arrive from profiles.events before the answer is 404; an id
    # minted earlier is answered 404 at once (see `profiles.PatientSchemas`).
    profile_wait_seconds: float = Field(default=3.0, ge=0)
    # How often the outbox relay scans for events left by a crashed process.
    outbox_scan_seconds: float = Field(default=10.0, gt=0)
    outbox_batch_size: int = Field(default=200, ge=1)
    # How long a journal of bulk writes (ADR 12) is its writer's before the relay publishes and
    # removes what it left: far beyond the seconds a write round takes.
    journal_lease_seconds: float = Field(default=30.0, gt=0)
    # Records a consumer takes per poll, over all its partitions: each partition's share is
    # handled in a few bulk round trips, so a larger poll amortises them (docs/adr/0008).
    consumer_batch_records: int = Field(default=3000, ge=1)
    # Projections that may lag (statistics, suppressions, the audit trail) ask the broker to
    # hold each fetch until this much has gathered, or the wait is over: under load they take
    # batches of thousands instead of a hundred, each costing a few round trips.
    projection_fetch_min_bytes: int = Field(default=262_144, ge=1)
    projection_fetch_wait_ms: int = Field(default=250, ge=0)
    log_level: str = "INFO"

    @property
    def event_source(self) -> str:
        """The `source` of the events this service publishes."""
        return f"/{self.service_name}"

    @field_validator("api_keys", mode="before")
    @classmethod
    def parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, account = item.partition("=")
            if not sep or not key.strip() or not account.strip():
                raise ValueError(f"API key entry {item!r} is not of the form key=account_id")
            pairs[key.strip()] = account.strip()
        return pairs

    @model_validator(mode="after")
    def refuse_local_keys_outside_dev(self) -> ServiceSettings:
        if self.environment in {"staging", "production"}:
            weak = LOCAL_ONLY_API_KEYS & self.api_keys.keys()
            if weak:
                raise ValueError(f"API keys {sorted(weak)} are for local use only")
            if not self.api_keys:
                raise ValueError("CONTACTS_API_KEYS must be set outside local and test")
        return self
