"""Imports through import-svc, contact-svc and Kafka, as a user makes them: real-world CSVs
(Windows-1252 accents, semicolons, quoted fields, `d/m/yy` dates, local phone formats, a BOM,
pasted tab-separated text), the counts and refused rows they end with, and bad input refused
with a clear problem."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contacts_shared.events import EventEnvelope

pytestmark = pytest.mark.integration

FIELDS = [
    {"name": "Nombre"},
    {"name": "Teléfono", "type": "phone"},
    {"name": "Fecha de Nacimiento", "type": "date"},
    {"name": "Compras", "type": "number"},
]

# As a Chilean store's spreadsheet saves it: Windows-1252, semicolons, CRLF, quoted fields.
EXPORT = (
    "email;Nombre;Teléfono;Fecha de Nacimiento;Compras\r\n"
    'ana@example.cl;"Muñoz; Ana";9 8765 4321;05/07/85;3\r\n'
    "JOSE@EXAMPLE.CL;José Pérez;+56 2 2345 6789;31/12/1990;1,5\r\n"
    "not-an-email;Nadie;;;\r\n"
    "\r\n"
    "bea@example.cl;Beatriz;12;31/02/2020;x\r\n"
    'ana@example.cl;"Ana ""la jefa"" Muñoz";;;4\r\n'
).encode("windows-1252")


async def finished(api: httpx.AsyncClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        state: dict[str, Any] = (await api.get(url)).json()
        if state["finished_at"]:
            return state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.2)


@pytest.fixture
async def platform(service_process: Any, platform_env: Any, profile_known_to_contacts: Any) -> Any:
    envs = platform_env("imports")
    services = {
        name: service_process(f"{name}_svc.app:create_app", envs[name])
        for name in ("profile", "contact", "import")
    }
    for service in services.values():
        service.start()
    async with httpx.AsyncClient(
        headers={"Authorization": "Bearer imports-key"}, timeout=30
    ) as api:
        profile = await profile_known_to_contacts(
            api,
            services["profile"].url,
            services["contact"].url,
            {"name": "Clientes", "fields": FIELDS},
            import_url=services["import"].url,
        )
        yield api, services, profile, envs


async def test_a_spreadsheet_export_is_imported_and_every_refusal_explained(
    platform: Any, read_envelopes: Any, service_process: Any
) -> None:
    api, services, profile, envs = platform
    log_svc = service_process("log_svc.app:create_app", envs["log"])
    log_svc.start()
    imports = f"{services['import'].url}/v1/imports"
    accepted = await api.post(
        imports,
        data={"profile_id": profile["id"], "action": "append_or_update", "reference": "Feria"},
        files={"file": ("clientes.csv", EXPORT, "text/csv")},
    )
    assert accepted.status_code == 202, accepted.text
    state = await finished(api, f"{imports}/{accepted.json()['id']}")
    assert state["status"] == "completed_with_errors", state
    assert state["reference"] == "Feria" and state["file_name"] == "clientes.csv"
    counts = state["counts"]
    assert (counts["read"], counts["refused"], counts["applied"]) == (5, 2, 3)
    assert (counts["created"], counts["duplicate"]) == (2, 1)

    contacts = f"{services['contact'].url}/v1/profiles/{profile['id']}/contacts"
    ana = (await api.get(f"{contacts}/ana@example.cl")).json()
    assert ana["fields"] == {
        "email": "ana@example.cl",
        "Nombre": 'Ana "la jefa" Muñoz',  # the last row wins
        "Teléfono": "+56987654321",  # the empty cell of the later row cleared nothing
        "Fecha de Nacimiento": "1985-07-05",
        "Compras": 4,
    }
    jose = (await api.get(f"{contacts}/jose@example.cl")).json()
    assert jose["fields"]["Compras"] == 1.5 and jose["fields"]["Teléfono"] == "+56223456789"

    # Its life, told on imports.events: queued, started, progress, completed with the counts,
    # and the refused rows.
    def told(envelopes: list[EventEnvelope]) -> bool:
        return any(e.type == "contacts.import.completed" for e in envelopes)

    envelopes = await read_envelopes(envs["import"]["CONTACTS_TOPIC_IMPORTS_EVENTS"], until=told)
    told_rows = [e for e in envelopes if e.type == "contacts.import.rows_refused"]
    assert [row["line"] for e in told_rows for row in e.data["rows"]] == [4, 6]
    kinds = [
        e.type.removeprefix("contacts.import.")
        for e in envelopes
        if e.subject == state["id"] and e not in told_rows
    ]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "completed"
    assert set(kinds[2:-1]) <= {"progressed"}
    last = envelopes[-1].data["import"]
    assert last["counts"] == state["counts"] and last["status"] == "completed_with_errors"

    # ... and kept in the import log.
    logged = f"{log_svc.url}/v1/logs/imports/{state['id']}"
    deadline = time.monotonic() + 30
    while (log := (await api.get(logged)).json()).get("status") != "completed_with_errors":
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.2)
    assert log["counts"] == state["counts"] and log["reference"] == "Feria"
    listed = (
        await api.get(f"{log_svc.url}/v1/logs/imports", params={"profile_id": profile["id"]})
    ).json()
    assert [item["id"] for item in listed["items"]] == [state["id"]]

    # ... with each refused row, its reasons and its cells as uploaded, to fix and import again.
    refused = (await api.get(f"{logged}/refused")).text
    rows = list(csv.reader(io.StringIO(refused)))
    assert rows[0] == [
        "line",
        "problems",
        "email",
        "Nombre",
        "Teléfono",
        "Fecha de Nacimiento",
        "Compras",
    ]
    assert [row[0] for row in rows[1:]] == ["4", "6"]
    assert "email 'not-an-email'" in rows[1][1]
    assert all(
        name in rows[2][1] for name in ("Teléfono '12'", "Fecha de Nacimiento", "Compras 'x'")
    )
    assert rows[2][2:] == ["bea@example.cl", "Beatriz", "12", "31/02/2020", "x"]  # as uploaded

    # Each contact's audit trail names what changed it: the import's row, then the API.
    await api.patch(f"{contacts}/ana@example.cl", json={"status": "unsubscribed"})
    trail_url = f"{log_svc.url}/v1/logs/contacts/{profile['id']}/ana@example.cl"
    while len(trail := (await api.get(trail_url)).json()["items"]) < 2:
        assert time.monotonic() < deadline, trail
        await asyncio.sleep(0.2)
    assert [(e["change"], e["source"]) for e in trail] == [
        ("created", f"import:{state['id']}"),
        ("status_changed", "api"),
    ]
    assert trail[0]["line"] == 7 and trail[1]["previous_status"] == "active"


async def test_a_profile_is_usable_the_moment_profile_svc_answers(platform: Any) -> None:
    """contact-svc and import-svc learn of a new profile from profiles.events, a moment after
    profile-svc answered; a client using it at once waits that moment instead of a 404."""
    api, services, _, _ = platform
    for attempt in range(3):  # each a new profile, used at once
        created = await api.post(
            f"{services['profile'].url}/v1/profiles",
            json={"name": f"Al tiro {attempt}", "fields": [{"name": "Nombre"}]},
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]
        contact = await api.post(
            f"{services['contact'].url}/v1/profiles/{profile_id}/contacts",
            json={"fields": {"email": f"ya{attempt}@x.cl", "Nombre": "Ya"}},
        )
        assert contact.status_code == 201, contact.text
        other = await api.post(
            f"{services['profile'].url}/v1/profiles",
            json={"name": f"Al tiro import {attempt}", "fields": [{"name": "Nombre"}]},
        )
        upload = await api.post(
            f"{services['import'].url}/v1/imports",
            data={"profile_id": other.json()["id"], "action": "append"},
            files={"file": ("a.csv", b"email,Nombre\nuno@x.cl,Uno\n")},
        )
        assert upload.status_code == 202, upload.text
    unknown = await api.post(
        f"{services['contact'].url}/v1/profiles/no-such-profile/contacts",
        json={"fields": {"email": "x@x.cl"}},
    )
    assert unknown.status_code == 404  # after the wait


async def test_pasted_text_with_a_bom_and_loose_headers_unsubscribes(platform: Any) -> None:
    api, services, profile, envs = platform
    imports = f"{services['import'].url}/v1/imports"
    first = await api.post(
        imports,
        data={"profile_id": profile["id"], "action": "append"},
        files={"file": ("a.csv", "\ufeffEMAIL,nombre\nuno@x.cl,Uno\ndos@x.cl,Dos\n".encode())},
    )
    state = await finished(api, f"{imports}/{first.json()['id']}")
    assert state["status"] == "completed" and state["counts"]["created"] == 2
    assert state["notices"] == [
        "column 'EMAIL' taken as field 'email' (case or accents differ)",
        "column 'nombre' taken as field 'Nombre' (case or accents differ)",
    ]
    pasted = await api.post(
        imports,
        data={
            "profile_id": profile["id"],
            "action": "unsubscribe",
            "text": "email\tNombre\ndos@x.cl\t\ntres@x.cl\t\n",
        },
    )
    state = await finished(api, f"{imports}/{pasted.json()['id']}")
    assert (state["counts"]["unsubscribed"], state["counts"]["not_found"]) == (1, 1)
    contacts = f"{services['contact'].url}/v1/profiles/{profile['id']}/contacts"
    dos = (await api.get(f"{contacts}/dos@x.cl")).json()
    assert dos["status"] == "unsubscribed" and dos["status_source"] == f"import:{state['id']}"
    assert dos["fields"]["Nombre"] == "Dos"  # nothing else changed
    assert (await api.get(f"{contacts}/tres@x.cl")).status_code == 404


async def test_a_header_planned_before_the_upload_is_imported_as_the_person_confirmed(
    platform: Any,
) -> None:
    """The console's flow: the file's first KB planned, the columns the plan could not match
    mapped by the person, planned again, then imported with that mapping and date order."""
    api, services, profile, envs = platform
    imports = f"{services['import'].url}/v1/imports"
    rows = [
        "ana@example.cl;Ana Muñoz;9 8765 4321;31/12/1990;vip",
        "jose@example.cl;José Pérez;;05/07/1985;",
    ] + [f"c{n}@example.cl;Cliente {n};;{13 + n % 15}/0{1 + n % 9}/1990;" for n in range(60)]
    export = "\r\n".join(["Correo;Nombre completo;Teléfono;Nacimiento;Notas", *rows, ""])
    data = export.encode("windows-1252")
    assert len(data) > 1024

    async def plan(**form: str) -> dict[str, Any]:
        response = await api.post(
            f"{imports}:plan",
            data={"profile_id": profile["id"], **form},
            files={"file": ("clientes.csv", data[:1024], "text/csv")},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = await plan()
    assert (first["encoding"], first["delimiter"]) == ("windows-1252", ";")
    assert first["missing_identity"] == "email" and first["ready"] is False
    assert first["unknown_columns"] == ["Correo", "Nombre completo", "Nacimiento", "Notas"]
    assert first["date_order"] == "unknown"  # no column fills a date field yet
    edited = {**first["mapping"], "Correo": "email", "Nombre completo": "Nombre"}
    edited["Nacimiento"] = "Fecha de Nacimiento"
    confirmed = await plan(mapping=json.dumps(edited))
    assert confirmed["ready"] is True and confirmed["date_order"] == "day_first"
    assert confirmed["mapping"] == {
        "Correo": "email",
        "Nombre completo": "Nombre",
        "Teléfono": "Teléfono",
        "Nacimiento": "Fecha de Nacimiento",
        "Notas": None,
    }
    assert 0 < confirmed["rows_sampled"] < len(rows)  # the first KB, its cut row left out

    accepted = await api.post(
        imports,
        data={
            "profile_id": profile["id"],
            "action": "append",
            "mapping": json.dumps(confirmed["mapping"]),
            "date_order": confirmed["date_order"],
        },
        files={"file": ("clientes.csv", data, "text/csv")},
    )
    assert accepted.status_code == 202, accepted.text
    state = await finished(api, f"{imports}/{accepted.json()['id']}")
    assert state["status"] == "completed", state
    assert state["counts"]["created"] == len(rows)
    contacts = f"{services['contact'].url}/v1/profiles/{profile['id']}/contacts"
    ana = (await api.get(f"{contacts}/ana@example.cl")).json()
    assert ana["fields"] == {
        "email": "ana@example.cl",
        "Nombre": "Ana Muñoz",
        "Teléfono": "+56987654321",
        "Fecha de Nacimiento": "1990-12-31",
    }
    jose = (await api.get(f"{contacts}/jose@example.cl")).json()
    assert jose["fields"]["Fecha de Nacimiento"] == "1985-07-05"


async def test_a_header_that_does_not_match_fails_the_import_naming_each_column(
    platform: Any,
) -> None:
    api, services, profile, envs = platform
    imports = f"{services['import'].url}/v1/imports"
    response = await api.post(
        imports,
        data={"profile_id": profile["id"], "action": "append"},
        files={"file": ("x.csv", b"Nombre,Color,Nombre\nAna,red,Ana\n")},
    )
    state = await finished(api, f"{imports}/{response.json()['id']}")
    assert state["status"] == "failed"
    assert {p["column"] for p in state["problems"]} == {"Color", "email", "Nombre"}
    assert state["counts"]["applied"] == 0


@pytest.mark.parametrize(
    ("form", "files", "status"),
    [
        ({"action": "append"}, {}, 422),  # neither file nor text
        ({"action": "append", "text": "email\na@x.cl"}, {"file": ("a.csv", b"email\n")}, 422),
        ({"action": "replace_all", "text": "email\na@x.cl"}, {}, 422),
        ({"action": "append"}, {"file": ("empty.csv", b"")}, 422),
        ({"action": "append", "profile_id": "no-such-profile", "text": "email\n"}, {}, 404),
    ],
)
async def test_bad_uploads_get_a_clear_problem(
    platform: Any, form: dict[str, str], files: dict[str, Any], status: int
) -> None:
    api, services, profile, envs = platform
    response = await api.post(
        f"{services['import'].url}/v1/imports",
        data={"profile_id": profile["id"], **form},
        files=files or None,
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_what_is_not_a_csv_fails_with_its_reason(platform: Any) -> None:
    api, services, profile, envs = platform
    imports = f"{services['import'].url}/v1/imports"
    for content, reason in [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b'email,Nombre\na@x.cl,"Ana\n', "never closed"),
    ]:
        response = await api.post(
            imports,
            data={"profile_id": profile["id"], "action": "append"},
            files={"file": ("x.csv", content)},
        )
        state = await finished(api, f"{imports}/{response.json()['id']}")
        assert state["status"] == "failed" and reason in state["error"], state


async def test_the_command_line_client_follows_an_import_to_its_end(
    platform: Any, tmp_path: Any
) -> None:
    api, services, profile, envs = platform
    export = tmp_path / "clientes.csv"
    export.write_bytes(EXPORT)
    command = [
        sys.executable,
        "-m",
        "import_svc.cli",
        "import",
        str(export),
        "--profile",
        profile["id"],
        "--reference",
        "desde la terminal",
        "--url",
        services["import"].url,
        "--api-key",
        "imports-key",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output = (await asyncio.wait_for(process.communicate(), timeout=60))[0].decode()
    assert process.returncode == 0, output
    assert "completed_with_errors" in output and "created 2, duplicate 1" in output
    assert "2 rows refused" in output and "/refused" in output

    missing = await asyncio.create_subprocess_exec(
        *command[:6], "no-such-profile", *command[7:], stdout=asyncio.subprocess.PIPE
    )
    output = (await missing.communicate())[0].decode()
    assert missing.returncode == 2 and "404" in output


async def test_an_overwrite_leaves_exactly_the_imported_contacts(platform: Any) -> None:
    api, services, profile, envs = platform
    imports = f"{services['import'].url}/v1/imports"

    async def imported(action: str, csv_text: str) -> dict[str, Any]:
        response = await api.post(
            imports,
            data={"profile_id": profile["id"], "action": action},
            files={"file": ("x.csv", csv_text.encode())},
        )
        assert response.status_code == 202, response.text
        return await finished(api, f"{imports}/{response.json()['id']}")

    await imported("append", "email,Nombre\na@x.cl,A\nb@x.cl,B\nc@x.cl,C\n")
    state = await imported("overwrite", "email,Nombre\nb@x.cl,B\nd@x.cl,D\nnot-an-email,E\n")
    assert state["status"] == "completed_with_errors", state
    counts = state["counts"]
    assert (counts["unchanged"], counts["created"], counts["deleted"]) == (1, 1, 2)

    contacts = f"{services['contact'].url}/v1/profiles/{profile['id']}/contacts"
    listed = (await api.get(contacts)).json()["items"]
    assert sorted(item["key"] for item in listed) == ["b@x.cl", "d@x.cl"]
    stats_url = f"{services['contact'].url}/v1/profiles/{profile['id']}/stats"
    deadline = time.monotonic() + 30
    while (stats := (await api.get(stats_url)).json())["total"] != 2:
        assert time.monotonic() < deadline, stats  # the deletions' events were counted
        await asyncio.sleep(0.2)


async def test_a_virtual_profile_cannot_be_imported_into(platform: Any) -> None:
    api, services, profile, envs = platform
    virtual = (
        await api.post(
            f"{services['profile'].url}/v1/profiles",
            json={
                "name": "Segmento",
                "type": "virtual",
                "base_profile_id": profile["id"],
                "rules": {"all": [{"field": "Nombre", "op": "is_not_empty"}]},
            },
        )
    ).json()
    deadline = time.monotonic() + 30
    while True:  # 404 until import-svc has learnt of the profile from its events
        response = await api.post(
            f"{services['import'].url}/v1/imports",
            data={"profile_id": virtual["id"], "action": "append", "text": "email\na@x.cl\n"},
        )
        if response.status_code != 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 409, response.text
    assert "virtual" in response.json()["detail"]


async def events_of(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A Server-Sent Events stream's (event, JSON data), as they arrive."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


async def test_an_imports_progress_streams_to_its_end_and_its_refused_rows_page_as_json(
    platform: Any, service_process: Any
) -> None:
    api, services, profile, envs = platform
    log_svc = service_process("log_svc.app:create_app", envs["log"])
    log_svc.start()
    imports = f"{services['import'].url}/v1/imports"
    lines = ["email,Nombre,Compras"] + [
        f"p{n}@example.cl,Persona {n},{'x' if n % 200 == 0 else n}" for n in range(1, 6001)
    ]
    accepted = await api.post(
        imports,
        data={"profile_id": profile["id"], "action": "append"},
        files={"file": ("muchos.csv", "\n".join(lines).encode())},
    )
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["progress"]["bytes_total"] == job["size"] > 0
    assert job["progress"]["rows_total"] is None  # not read yet

    told: list[tuple[str, dict[str, Any]]] = []
    async with (
        asyncio.timeout(90),
        api.stream("GET", f"{imports}/{job['id']}/progress") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        told = [event async for event in events_of(response)]  # until the server closes
    kinds = [kind for kind, _ in told]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}, kinds
    percents = [data["progress"]["percent"] for _, data in told]
    assert percents == sorted(percents) and percents[-1] == 100, percents
    end = told[-1][1]
    state = (await api.get(f"{imports}/{job['id']}")).json()
    assert end["status"] == state["status"] == "completed_with_errors"
    assert end["counts"] == state["counts"]
    assert (state["counts"]["read"], state["counts"]["refused"]) == (6000, 30)
    assert (
        state["progress"]
        == end["progress"]
        == {
            "bytes_total": job["size"],
            "bytes_read": job["size"],
            "rows_total": 6000,
            "rows_done": 6000,
            "percent": 100.0,
        }
    )

    # The refused rows as JSON pages equal the CSV's rows.
    refused = f"{log_svc.url}/v1/logs/imports/{job['id']}/refused"
    deadline = time.monotonic() + 30
    while len(csv_rows := list(csv.reader(io.StringIO((await api.get(refused)).text)))) < 31:
        assert time.monotonic() < deadline, csv_rows
        await asyncio.sleep(0.2)
    paged: list[dict[str, Any]] = []
    after_line, pages = 0, 0
    while True:
        page = await api.get(
            refused, params={"format": "json", "after_line": after_line, "limit": 7}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["header"] == csv_rows[0][2:]
        paged += body["items"]
        pages += 1
        if body["next_after_line"] is None:
            break
        after_line = body["next_after_line"]
    assert pages == 5 and len(paged) == 30
    assert [[str(r["line"]), r["row"]] for r in paged] == [[c[0], c[2:]] for c in csv_rows[1:]]
    assert paged[0]["line"] == 201 and paged[0]["row"] == ["p200@example.cl", "Persona 200", "x"]
    assert [(e["field"], e["value"]) for e in paged[0]["errors"]] == [("Compras", "x")]
    assert all(
        "; ".join(f"{e['field']} '{e['value']}': {e['message']}" for e in r["errors"]) == c[1]
        for r, c in zip(paged, csv_rows[1:], strict=True)
    )

    # Bad input: a problem naming the parameter; an unknown import: 404 before any stream.
    for params, name in [({"format": "xml"}, "format"), ({"after_line": -1}, "after_line")]:
        bad = await api.get(refused, params=params)
        assert bad.status_code == 422 and name in bad.text, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
    unknown = await api.get(f"{imports}/no-such-import/progress")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
