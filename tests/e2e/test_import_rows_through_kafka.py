"""Import rows as import-svc sends them, on the command topic, applied by a real contact-svc:
each row's outcome comes back on `imports.results` with its sequence and line, each change is
told once as ContactImported, and the statistics count the imported contacts."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contacts_shared.commands import ImportAction, ImportContact, ImportRowsApplied, RowOutcome
from contacts_shared.events import ContactImported, EventEnvelope, parse_event
from contacts_shared.kafka import partition_of

pytestmark = pytest.mark.integration

ROWS = 300  # keys r0..r299; the last 20 rows repeat r0..r19


async def test_rows_come_back_with_their_outcomes_and_events(
    infrastructure: Any,
    unique: str,
    service_process: Any,
    platform_env: Any,
    profile_known_to_contacts: Any,
) -> None:
    envs = platform_env("rows")
    profile_env, contact_env = envs["profile"], envs["contact"]
    profile_svc = service_process("profile_svc.app:create_app", profile_env)
    contact_svc = service_process("contact_svc.app:create_app", contact_env)
    profile_svc.start()
    contact_svc.start()
    async with httpx.AsyncClient(headers={"Authorization": "Bearer rows-key"}, timeout=30) as api:
        profile = await profile_known_to_contacts(
            api, profile_svc.url, contact_svc.url, {"name": "Rows", "fields": [{"name": "Nombre"}]}
        )
        results = AIOKafkaConsumer(
            contact_env["CONTACTS_TOPIC_IMPORTS_RESULTS"],
            contact_env["CONTACTS_TOPIC_CONTACTS_EVENTS"],
            bootstrap_servers=infrastructure.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap_servers)
        await producer.start()
        await results.start()
        try:
            # One sequence per partition, as import-svc numbers its rows.
            commands = contact_env["CONTACTS_TOPIC_CONTACTS_COMMANDS"]
            partitions = len(await producer.partitions_for(commands))
            next_sequence = dict.fromkeys(range(partitions), 0)
            sent: dict[tuple[int, int], int] = {}  # (partition, sequence) -> line
            for index in range(ROWS + 20):
                key = f"r{index % ROWS}@rows.example"
                row = ImportContact(
                    import_id="imp-1",
                    account_id=f"acct-{unique}",
                    profile_id=profile["id"],
                    key=key,
                    values={"nombre": f"N{index}"},
                    action=ImportAction.APPEND_OR_UPDATE,
                    line=index + 2,
                    sequence=0,
                )
                partition = partition_of(row.partition_key, partitions)
                row = row.model_copy(update={"sequence": next_sequence[partition]})
                sent[(partition, next_sequence[partition])] = row.line
                next_sequence[partition] += 1
                metadata = await producer.send_and_wait(
                    commands, row.model_dump_json().encode(), key=row.partition_key.encode()
                )
                assert metadata.partition == partition  # as Kafka's partitioner chose

            outcomes: dict[tuple[int, int], tuple[int, RowOutcome]] = {}
            told: dict[str, ContactImported] = {}
            deadline = time.monotonic() + 60
            while len(outcomes) < len(sent) or len(told) < ROWS:
                assert time.monotonic() < deadline, f"{len(outcomes)} outcomes, {len(told)} events"
                for records in (await results.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.topic == contact_env["CONTACTS_TOPIC_IMPORTS_RESULTS"]:
                            applied = ImportRowsApplied.model_validate_json(record.value or b"")
                            for sequence, line, outcome in applied.rows:
                                outcomes[(applied.partition, sequence)] = (line, outcome)
                        else:
                            event = parse_event(
                                EventEnvelope.model_validate_json(record.value or b"")
                            )
                            assert isinstance(event, ContactImported)
                            told[event.contact.key] = event
        finally:
            await results.stop()
            await producer.stop()

        assert {position: line for position, (line, _) in outcomes.items()} == sent
        by_line = dict(outcomes.values())
        assert [by_line[line] for line in range(2, ROWS + 2)] == [RowOutcome.CREATED] * ROWS
        assert [by_line[line] for line in range(ROWS + 2, ROWS + 22)] == [RowOutcome.DUPLICATE] * 20
        assert told["r0@rows.example"].contact.fields["nombre"] == f"N{ROWS}"  # the last row won
        assert all(event.import_id == "imp-1" for event in told.values())

        stats_url = f"{contact_svc.url}/v1/profiles/{profile['id']}/stats"
        while (stats := (await api.get(stats_url)).json())["total"] < ROWS:
            assert time.monotonic() < deadline, stats
        assert stats["total"] == stats["added_last_7_days"] == ROWS
