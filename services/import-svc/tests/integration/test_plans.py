"""`POST /v1/imports:plan` of a real import-svc (its lifespan running on the real servers):
the header check of a file's first bytes or of pasted text, stored nowhere; the public sample
CSVs planned as a person would plan them; bad input refused naming what was found; and the
mapping a person confirmed, checked and taken by the import; its rows counted at /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from contacts_shared.commands import ImportContact
from contacts_shared.mongo import connect
from contacts_shared.profiles import MongoSchemaStore, ProfileSchema
from contacts_shared.schema import FieldSpec, FieldType, ProfileType
from import_svc.app import create_app
from import_svc.plan import PLAN_BYTES
from import_svc.settings import ImportSettings

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data"
EMAIL = FieldSpec(name="email", key="email", type=FieldType.EMAIL, required=True, identity=True)


def spec(name: str, type: FieldType = FieldType.TEXT) -> FieldSpec:
    return FieldSpec(name=name, key=name.lower().replace(" ", "_"), type=type)


@dataclass(frozen=True)
class ImportApi:
    client: httpx.AsyncClient
    database: Any
    schemas: MongoSchemaStore
    account: str

    async def profile(self, profile_id: str, *fields: FieldSpec, **options: Any) -> str:
        """A profile of the account as import-svc knows it from profiles.events."""
        await self.schemas.apply(
            ProfileSchema(
                profile_id=profile_id,
                account_id=options.get("account", self.account),
                type=options.get("type", ProfileType.REGULAR),
                fields=(EMAIL, *fields),
                version=1,
            ),
            deleted=False,
        )
        return profile_id

    async def plan(self, profile_id: str, data: bytes, **form: str) -> httpx.Response:
        return await self.client.post(
            "/v1/imports:plan",
            data={"profile_id": profile_id, **form},
            files={"file": ("export.csv", data, "text/csv")},
        )

    async def stored(self) -> int:
        """Imports and upload pieces stored so far."""
        return sum(
            [await self.database[name].count_documents({}) for name in ("imports", "uploads")]
        )


@pytest.fixture
async def api(infrastructure: Any, unique: str) -> AsyncIterator[ImportApi]:
    settings = ImportSettings(
        environment="test",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap_servers,
        mongodb_url=infrastructure.mongodb_url,
        mongodb_database=f"import_svc_{unique}",
        topic_profiles_events=f"profiles.events.{unique}",
        topic_contacts_commands=f"contacts.commands.{unique}",
        topic_imports_events=f"imports.events.{unique}",
        topic_imports_results=f"imports.results.{unique}",
        profile_events_group=f"import-schemas-{unique}",
        results_group=f"results-{unique}",
        api_keys={"key-a": f"acct-a-{unique}"},
        profile_wait_seconds=0.1,
        poll_seconds=0.2,
    )
    mongo = connect(infrastructure.mongodb_url, app_name="test")
    database = mongo[settings.mongodb_database]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://import-svc",
            headers={"Authorization": "Bearer key-a"},
            timeout=30,
        ) as client:
            yield ImportApi(
                client, database, MongoSchemaStore(database["profile_schemas"]), f"acct-a-{unique}"
            )
    await mongo.close()


def columns(plan: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(c["column"], c["match"], c["field"]) for c in plan["columns"]]


async def test_a_plan_of_a_file_says_what_the_import_would_find_and_stores_nothing(
    api: ImportApi,
) -> None:
    profile = await api.profile(
        "clientes", spec("Nombre"), spec("Fecha de Nacimiento", FieldType.DATE)
    )
    export = (
        "EMAIL;Nombre;Color;nombre;Fecha de Nacimiento\r\n"
        'ana@x.cl;"Muñoz; Ana";rojo;Ana;31/12/1990\r\n'
        "bo@x.cl;Bo;;;05/07/1985\r\n"
    ).encode("windows-1252")
    response = await api.plan(profile, export)
    assert response.status_code == 200, response.text
    plan = response.json()
    assert (plan["encoding"], plan["delimiter"], plan["rows_sampled"]) == ("windows-1252", ";", 2)
    assert plan["date_order"] == "day_first"
    assert plan["dates"] == {"day_first": 1, "month_first": 0, "ambiguous": 1}
    assert columns(plan) == [
        ("EMAIL", "loose", "email"),
        ("Nombre", "exact", "Nombre"),
        ("Color", "unknown", None),
        ("nombre", "duplicate", "Nombre"),
        ("Fecha de Nacimiento", "exact", "Fecha de Nacimiento"),
    ]
    assert plan["columns"][1]["examples"] == ["Muñoz; Ana", "Bo"]
    assert plan["columns"][4]["type"] == "date"
    assert (plan["unknown_columns"], plan["duplicate_columns"]) == (["Color"], ["nombre"])
    assert plan["missing_identity"] is None
    assert {p["column"] for p in plan["problems"]} == {"Color", "nombre"}
    assert plan["mapping"] == {
        "EMAIL": "email",
        "Nombre": "Nombre",
        "Color": None,
        "nombre": None,
        "Fecha de Nacimiento": "Fecha de Nacimiento",
    }
    assert plan["ready"] is True
    assert await api.stored() == 0


async def test_pasted_text_is_planned_from_json_or_a_form_alike(api: ImportApi) -> None:
    profile = await api.profile("pegado", spec("Nombre"), spec("Alta", FieldType.DATE))
    text = "Nombre\tCorreo\tAlta\nAna\tana@x.cl\t12/31/2024\n"
    as_json = await api.client.post("/v1/imports:plan", json={"profile_id": profile, "text": text})
    as_form = await api.client.post("/v1/imports:plan", data={"profile_id": profile, "text": text})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json() == as_form.json()
    plan = as_json.json()
    assert (plan["delimiter"], plan["encoding"], plan["date_order"]) == (
        "\t",
        "utf-8",
        "month_first",
    )
    assert plan["missing_identity"] == "email" and plan["ready"] is False
    assert plan["mapping"] == {"Nombre": "Nombre", "Correo": None, "Alta": "Alta"}
    # The person maps the column that holds the emails; the plan is then ready.
    confirmed = await api.client.post(
        "/v1/imports:plan",
        json={"profile_id": profile, "text": text, "mapping": {"Correo": "email"}},
    )
    assert confirmed.json()["ready"] is True
    assert confirmed.json()["mapping"] == {"Nombre": "Nombre", "Correo": "email", "Alta": "Alta"}
    assert await api.stored() == 0


async def test_only_the_first_bytes_of_a_large_file_are_read(api: ImportApi) -> None:
    profile = await api.profile("grande", spec("Nombre"))
    rows = "".join(f"c{n}@x.cl,Nombre {n}\n" for n in range(200_000))
    data = ("email,Nombre\n" + rows).encode()
    assert len(data) > 40 * PLAN_BYTES
    started = time.monotonic()
    plan = (await api.plan(profile, data)).json()
    assert time.monotonic() - started < 10
    assert 0 < plan["rows_sampled"] < PLAN_BYTES // 10 and plan["ready"] is True


@dataclass(frozen=True)
class Sample:
    file: str
    fields: tuple[FieldSpec, ...]
    rows: int
    unknown: list[str]
    loose: list[str]
    examples: dict[str, list[str]]


SAMPLES = [
    Sample(
        "microsoft365-add-users.csv",
        (spec("First Name"), spec("Last Name"), spec("Mobile Phone", FieldType.PHONE)),
        5,
        [
            "User Name",
            "Display Name",
            "Job Title",
            "Department",
            "Office Number",
            "Office Phone",
            "Fax",
            "Address",
            "City",
            "State or Province",
            "ZIP or Postal Code",
            "Country or Region",
        ],
        [],
        {"User Name": ["chris@contoso.com", "ben@contoso.com", "david@contoso.com"]},
    ),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.file for s in SAMPLES])
async def test_a_plan_of_each_public_sample_csv(api: ImportApi, sample: Sample) -> None:
    profile = await api.profile("sample", *sample.fields)
    response = await api.plan(profile, (DATA / sample.file).read_bytes())
    assert response.status_code == 200, response.text
    plan = response.json()
    assert (plan["encoding"], plan["delimiter"]) == ("utf-8", ",")
    assert plan["rows_sampled"] == sample.rows
    assert plan["unknown_columns"] == sample.unknown
    assert [c["column"] for c in plan["columns"] if c["match"] == "loose"] == sample.loose
    assert plan["duplicate_columns"] == []
    # ISO dates read alike both ways: nothing tells the order, nor needs to.
    assert plan["date_order"] == "unknown"
    assert plan["dates"] == {"day_first": 0, "month_first": 0, "ambiguous": 0}
    examples = {c["column"]: c["examples"] for c in plan["columns"]}
    for column, values in sample.examples.items():
        assert examples[column][: len(values)] == values
    assert plan["mapping"] == {
        c["column"]: c["field"] if c["match"] in {"exact", "loose"} else None
        for c in plan["columns"]
    }
    if "email" in {c["field"] for c in plan["columns"]}:
        assert plan["missing_identity"] is None and plan["ready"] is True
    else:  # Microsoft 365 calls it "User Name": the person maps it, and the plan is ready
        assert plan["missing_identity"] == "email" and plan["ready"] is False
        mapped = await api.plan(
            profile, (DATA / sample.file).read_bytes(), mapping='{"User Name": "email"}'
        )
        assert mapped.json()["ready"] is True and mapped.json()["missing_identity"] is None
    assert await api.stored() == 0


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "file: line 1: the file is empty"),
        (b"\n\n\n", "no header in the first"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content (NUL bytes)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "89 50 4e 47 0d 0a 1a 0a"),
        ("email\na@x.cl\n".encode("utf-16"), "UTF-16 text"),
    ],
)
async def test_a_plan_of_an_empty_or_binary_file_is_refused_with_what_was_found(
    api: ImportApi, data: bytes, found: str
) -> None:
    profile = await api.profile("vacio")
    response = await api.plan(profile, data)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert found in problem["detail"]
    assert [error["field"] for error in problem["errors"]] == ["file"]
    assert await api.stored() == 0


@pytest.mark.parametrize(
    ("request_", "status", "named"),
    [
        ({"data": {"profile_id": "p"}}, 422, "give either file"),
        ({"data": {"profile_id": "p", "text": "email", "mapping": "{nope"}}, 422, "mapping"),
        ({"data": {"text": "email\n"}}, 422, "profile_id"),
        ({"json": {"profile_id": "p"}}, 422, "text"),
        ({"json": {"profile_id": "p", "text": "e", "mapping": {"a": 1}}}, 422, "mapping.a"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"json": {"profile_id": "nadie", "text": "email\n"}}, 404, "nadie"),
        ({"json": {"profile_id": "ajeno", "text": "email\n"}}, 404, "ajeno"),
        ({"json": {"profile_id": "segmento", "text": "email\n"}}, 409, "virtual"),
    ],
)
async def test_bad_plan_requests_get_a_problem_naming_the_parameter(
    api: ImportApi, request_: dict[str, Any], status: int, named: str
) -> None:
    await api.profile("p")
    await api.profile("ajeno", account="another-account")
    await api.profile("segmento", type=ProfileType.VIRTUAL)
    response = await api.client.post("/v1/imports:plan", **request_)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert named in response.text


async def test_a_mapping_naming_no_field_is_refused_and_one_skipping_the_identity_planned(
    api: ImportApi,
) -> None:
    profile = await api.profile("mapeo", spec("Nombre"))
    form = {"profile_id": profile, "text": "Correo,Color\na@x.cl,rojo\n"}
    for url, extra in [("/v1/imports", {"action": "append"}), ("/v1/imports:plan", {})]:
        response = await api.client.post(
            url, data={**form, **extra, "mapping": '{"Correo": "email", "Color": "Colour"}'}
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errors"][0]["field"] == "mapping.Color"
        assert "'Colour' is no field" in problem["errors"][0]["message"]
        assert "mapping.Color" in problem["detail"]
    # Skipping the identity's column is a plan that is not ready, said before any upload.
    skipped = await api.client.post(
        "/v1/imports:plan", data={**form, "mapping": '{"Correo": null, "Nombre": "Nombre"}'}
    )
    assert skipped.status_code == 200, skipped.text
    assert (skipped.json()["missing_identity"], skipped.json()["ready"]) == ("email", False)
    assert await api.stored() == 0


async def commands_sent(bootstrap: str, topic: str, count: int) -> list[ImportContact]:
    """The first `count` commands on `topic`, read from its start (within 30 s)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    read: list[ImportContact] = []
    deadline = time.monotonic() + 30
    try:
        while len(read) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                read += [ImportContact.model_validate_json(r.value) for r in records]
    finally:
        await consumer.stop()
    return read


async def test_the_import_fills_the_fields_the_confirmed_mapping_names(
    api: ImportApi, infrastructure: Any, unique: str
) -> None:
    profile = await api.profile("confirmado", spec("Nombre"), spec("Ciudad"))
    export = b"Correo,Nombre completo,Nombre,Notas\na@x.cl,Ana Mu,Ana,vip\nb@x.cl,Bo Ra,Bo,\n"
    edited = {"Correo": "email", "Nombre completo": "Nombre"}
    plan = (await api.plan(profile, export, mapping=json.dumps(edited))).json()
    # "Nombre" would fill the field a second time: the suggestion skips it, as "Notas".
    assert plan["mapping"] == {
        "Correo": "email",
        "Nombre completo": "Nombre",
        "Nombre": None,
        "Notas": None,
    }
    assert plan["ready"] is True
    accepted = await api.client.post(
        "/v1/imports",
        data={"profile_id": profile, "action": "append", "mapping": json.dumps(plan["mapping"])},
        files={"file": ("export.csv", export)},
    )
    assert accepted.status_code == 202, accepted.text
    sent = await commands_sent(
        infrastructure.kafka_bootstrap_servers, f"contacts.commands.{unique}", 2
    )
    assert {c.key: c.values for c in sent} == {
        "a@x.cl": {"nombre": "Ana Mu"},
        "b@x.cl": {"nombre": "Bo Ra"},
    }
    state = (await api.client.get(f"/v1/imports/{accepted.json()['id']}")).json()
    assert state["problems"] == [] and state["notices"] == []


async def test_openapi_shows_the_plan_bodies_and_the_mapping_parameter(api: ImportApi) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    plan = schema["paths"]["/v1/imports:plan"]["post"]
    bodies = plan["requestBody"]["content"]
    assert set(bodies["multipart/form-data"]["schema"]["properties"]) == {
        "profile_id",
        "file",
        "text",
        "delimiter",
        "encoding",
        "mapping",
    }
    assert set(bodies["application/json"]["schema"]["properties"]) == {
        "profile_id",
        "text",
        "delimiter",
        "mapping",
    }
    answer = plan["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    planned = schema["components"]["schemas"][answer.rsplit("/", 1)[-1]]["properties"]
    assert {"encoding", "delimiter", "date_order", "columns", "mapping", "ready"} <= set(planned)
    form = schema["paths"]["/v1/imports"]["post"]["requestBody"]["content"]["multipart/form-data"]
    upload = schema["components"]["schemas"][form["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert "null to skip it" in upload["properties"]["mapping"]["description"]


def rows_counted() -> dict[str, float | None]:
    return {
        outcome: REGISTRY.get_sample_value("contacts_import_rows_total", {"outcome": outcome})
        for outcome in ("accepted", "refused")
    }


async def test_rows_are_counted_by_outcome_and_metrics_name_what_operators_watch(
    api: ImportApi, unique: str
) -> None:
    profile = await api.profile("contados", spec("Nombre"))
    before = rows_counted()
    accepted = await api.client.post(
        "/v1/imports",
        data={"profile_id": profile, "action": "append"},
        files={"file": ("export.csv", b"email,Nombre\na@x.cl,Ana\nnot an email,Bo\nc@x.cl,Cy\n")},
    )
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 30
    while rows_counted() == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    after = rows_counted()
    assert {k: (after[k] or 0) - (before[k] or 0) for k in after} == {"accepted": 2, "refused": 1}

    # The service's consumers show their partitions' lag once they have fetched from them.
    wanted = [
        'contacts_import_rows_total{outcome="accepted"}',
        'contacts_outbox_backlog{service="import-svc"}',
        'contacts_outbox_oldest_age_seconds{service="import-svc"}',
        f'contacts_consumer_lag{{group="results-{unique}",partition="0",'
        f'topic="imports.results.{unique}"}}',
    ]
    while time.monotonic() < deadline:
        exposed = (await api.client.get("/metrics")).text
        if all(name in exposed for name in wanted):
            break
        await asyncio.sleep(0.1)
    assert [name for name in wanted if name not in exposed] == []
