"""segment-svc settings (CONTACTS_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from contacts_shared.settings import ServiceSettings


class SegmentSettings(ServiceSettings):
    service_name: str = "segment-svc"
    mongodb_database: str = "segment_svc"
    # The faust app's id: its consumer group, and the prefix of the topics faust keeps.
    segment_worker_id: str = "segment-svc"
    # The worker's own web server (faust's): liveness for orchestrators, nothing else.
    segment_worker_host: str = "127.0.0.1"
    segment_worker_port: int = 8114
    # Contact events taken per batch, and how long a batch waits to fill.
    segment_batch_events: int = Field(default=1000, ge=1)
    segment_batch_seconds: float = Field(default=0.02, gt=0)
    # How long a worker that died without a goodbye keeps its partitions from the others.
    segment_session_timeout_seconds: float = Field(default=10.0, ge=6.0)
    # Pages of a rebuild (500 contacts each) evaluated and written at once.
    rebuild_pages_in_flight: int = Field(default=4, ge=1, le=32)
    # How often the worker looks for a rebuild to run and for a new UTC day.
    rebuild_poll_seconds: float = Field(default=1.0, gt=0)
    # Contacts a rules preview checks: every one of a profile holding at most this many, else
    # about this many in whole sample buckets, for an estimate (ADR 11, addendum of 2026-12:
    # at a million contacts p95 202-224 ms at 10,000, 412-467 ms at 20,000; goal 300 ms).
    preview_budget: int = Field(default=10_000, ge=1, le=100_000)
    # The worker's background pass giving projected contacts written before sample buckets
    # were kept their bucket (`sample_backfill`): documents a round, the pause between rounds
    # (the projection's writers come first), and how long a holder that died keeps the work.
    sample_backfill_batch_size: int = Field(default=1000, ge=1, le=10_000)
    sample_backfill_pause_seconds: float = Field(default=0.05, ge=0)
    sample_backfill_lease_seconds: float = Field(default=30, gt=0)
