"""profile-svc over HTTP against the real MongoDB-protocol server and Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/profiles", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert field in {e["field"] for e in body.get("errors", [])} or field in body["detail"]


async def test_regular_profile_gets_email_and_safe_field_keys(api: httpx.AsyncClient) -> None:
    profile = await create(
        api,
        name="Clientes Chile",
        description="tienda",
        fields=[
            {"name": "Fecha de Nacimiento", "type": "date"},
            {"name": "Año.Nivel"},
            {"name": "email", "type": "email"},
        ],
    )
    assert [(f["name"], f["key"], f["identity"]) for f in profile["fields"]] == [
        ("email", "email", True),
        ("Fecha de Nacimiento", "fecha_de_nacimiento", False),
        ("Año.Nivel", "ano_nivel", False),
    ]
    fetched = (await api.get(f"/v1/profiles/{profile['id']}")).json()
    assert fetched == profile
    assert (await api.get(f"/v1/profiles/{profile['id']}")).headers["x-request-id"]


async def test_mobile_only_profile_is_keyed_by_phone(api: httpx.AsyncClient) -> None:
    profile = await create(api, name="SMS", type="mobile_only")
    assert [(f["name"], f["type"], f["identity"]) for f in profile["fields"]] == [
        ("phone", "phone", True)
    ]
    response = await api.delete(f"/v1/profiles/{profile['id']}/fields/phone")
    assert_problem(response, 409)


async def test_names_are_unique_per_account_ignoring_case(api: httpx.AsyncClient) -> None:
    await create(api, name="Newsletter")
    assert_problem(await api.post("/v1/profiles", json={"name": "NEWSLETTER"}), 409)
    other = await api.post(
        "/v1/profiles", json={"name": "Newsletter"}, headers={"Authorization": "Bearer key-b"}
    )
    assert other.status_code == 201


async def test_renaming_to_a_taken_name_is_a_conflict(api: httpx.AsyncClient) -> None:
    await create(api, name="Newsletter")
    promos = await create(api, name="Promos")
    renamed = await api.patch(f"/v1/profiles/{promos['id']}", json={"name": "newsletter"})
    assert_problem(renamed, 409, "newsletter")
    assert (await api.get(f"/v1/profiles/{promos['id']}")).json()["name"] == "Promos"
    ok = await api.patch(f"/v1/profiles/{promos['id']}", json={"name": "Promociones"})
    assert ok.status_code == 200 and ok.json()["name"] == "Promociones"


async def test_concurrent_edits_of_one_profile_all_apply(api: httpx.AsyncClient) -> None:
    profile = await create(api, name="Concurrida")
    base = f"/v1/profiles/{profile['id']}/fields"
    responses = await asyncio.gather(
        *(api.post(base, json={"name": f"Campo {n}"}) for n in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    names = {f["name"] for f in (await api.get(f"/v1/profiles/{profile['id']}")).json()["fields"]}
    assert names == {"email"} | {f"Campo {n}" for n in range(20)}


async def test_another_account_sees_404_never_the_profile(api: httpx.AsyncClient) -> None:
    profile = await create(api, name="Private")
    other = {"Authorization": "Bearer key-b"}
    path = f"/v1/profiles/{profile['id']}"
    assert_problem(await api.get(path, headers=other), 404)
    assert_problem(await api.patch(path, json={"name": "Stolen"}, headers=other), 404)
    assert_problem(await api.delete(path, headers=other), 404)
    assert (await api.get("/v1/profiles", headers=other)).json()["items"] == []
    assert (await api.get(path)).json()["name"] == "Private"


async def test_fields_are_added_and_deleted_but_email_is_fixed(api: httpx.AsyncClient) -> None:
    profile = await create(api, name="Shop")
    path = f"/v1/profiles/{profile['id']}"
    added = await api.post(f"{path}/fields", json={"name": "Ciudad", "type": "text"})
    assert added.status_code == 201
    assert added.json()["version"] == 2
    assert_problem(await api.post(f"{path}/fields", json={"name": "CIUDAD"}), 409)
    assert_problem(await api.post(f"{path}/fields", json={"name": "status"}), 422, "field.name")
    assert_problem(await api.delete(f"{path}/fields/email"), 409)
    removed = await api.delete(f"{path}/fields/ciudad")
    assert removed.status_code == 200
    assert [f["name"] for f in removed.json()["fields"]] == ["email"]
    assert_problem(await api.delete(f"{path}/fields/ciudad"), 404)


async def test_virtual_profile_rules_are_checked_against_base_fields(
    api: httpx.AsyncClient,
) -> None:
    base = await create(
        api, name="Base", fields=[{"name": "City"}, {"name": "Age", "type": "number"}]
    )
    rules = {
        "all": [
            {"field": "City", "op": "equals", "value": "Santiago"},
            {
                "any": [
                    {"field": "Age", "op": "gte", "value": 30},
                    {"field": "status", "op": "is", "value": "active"},
                ]
            },
        ]
    }
    virtual = await create(
        api, name="Santiago 30+", type="virtual", base_profile_id=base["id"], rules=rules
    )
    assert virtual["rules"] == rules and virtual["fields"] == []

    bad = {
        "all": [
            {"field": "Age", "op": "contains", "value": "3"},
            {"field": "Nope", "op": "equals", "value": "x"},
        ]
    }
    response = await api.post(
        "/v1/profiles",
        json={"name": "Bad", "type": "virtual", "base_profile_id": base["id"], "rules": bad},
    )
    assert_problem(response, 422, "rules.all[0].op")
    assert "rules.all[1].field" in {e["field"] for e in response.json()["errors"]}

    # The base keeps the fields and the profile that rules depend on.
    assert_problem(await api.delete(f"/v1/profiles/{base['id']}/fields/age"), 409)
    assert_problem(await api.delete(f"/v1/profiles/{base['id']}"), 409)
    assert_problem(await api.post(f"/v1/profiles/{virtual['id']}/fields", json={"name": "X"}), 409)

    changed = await api.patch(
        f"/v1/profiles/{virtual['id']}",
        json={"rules": {"any": [{"field": "Age", "op": "between", "value": [18, 30]}]}},
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2
    assert (await api.delete(f"/v1/profiles/{base['id']}/fields/city")).status_code == 200
    assert (await api.delete(f"/v1/profiles/{virtual['id']}")).status_code == 204
    assert (await api.delete(f"/v1/profiles/{base['id']}")).status_code == 204
    assert_problem(await api.get(f"/v1/profiles/{base['id']}"), 404)


async def test_virtual_profile_needs_a_regular_base_of_the_same_account(
    api: httpx.AsyncClient,
) -> None:
    rules = {"all": [{"field": "email", "op": "ends_with", "value": "@example.com"}]}
    foreign = (
        await api.post(
            "/v1/profiles", json={"name": "B's"}, headers={"Authorization": "Bearer key-b"}
        )
    ).json()
    for base_id in (foreign["id"], "0" * 24, None):
        response = await api.post(
            "/v1/profiles",
            json={"name": "V", "type": "virtual", "base_profile_id": base_id, "rules": rules},
        )
        assert_problem(response, 422, "base_profile_id")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "name"),
        ({"name": "   "}, 422, "name"),
        ({"name": "x", "type": "viral"}, 422, "type"),
        ({"name": "x", "fields": [{"name": "A"}, {"name": "a"}]}, 409, None),
        ({"name": "x", "fields": [{"name": "A", "type": "money"}]}, 422, "fields.0.type"),
        ({"name": "x", "colour": "red"}, 422, "colour"),
        ({"name": "x", "rules": {"all": []}}, 422, "rules.all"),
        (
            {"name": "x", "rules": {"all": [{"field": "email", "op": "equals", "value": "a"}]}},
            422,
            "rules",
        ),
        ({"name": "x" * 201}, 422, "name"),
    ],
)
async def test_bad_input_gets_a_problem_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, field: str | None
) -> None:
    assert_problem(await api.post("/v1/profiles", json=body), status, field)


async def test_malformed_wrong_type_huge_and_unauthenticated_requests(
    api: httpx.AsyncClient,
) -> None:
    json_header = {"content-type": "application/json"}
    assert_problem(await api.post("/v1/profiles", content=b'{"name": ', headers=json_header), 400)
    assert_problem(
        await api.post("/v1/profiles", content=b"name=x", headers={"content-type": "text/plain"}),
        415,
    )
    huge = b'{"name": "x", "description": "' + b"a" * 100_000 + b'"}'
    assert_problem(await api.post("/v1/profiles", content=huge, headers=json_header), 413)

    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    assert_problem(await api.post("/v1/profiles", content=chunks(), headers=json_header), 413)
    assert_problem(await api.get("/v1/profiles", headers={"Authorization": "Bearer nope"}), 401)
    assert_problem(await api.get("/v1/profiles", headers={"Authorization": ""}), 401)
    assert_problem(await api.get("/v1/profiles?cursor=zzz"), 422, "cursor")
    assert_problem(await api.patch("/v1/profiles/abc", json={}), 422)


async def test_list_pages_with_a_cursor_and_filters(api: httpx.AsyncClient) -> None:
    for index in range(5):
        await create(api, name=f"Promo {index}")
    await create(api, name="SMS list", type="mobile_only")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "name": "promo"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/profiles", params=params)).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Promo {index}" for index in range(5)]
    mobile = (await api.get("/v1/profiles", params={"type": "mobile_only"})).json()["items"]
    assert [item["name"] for item in mobile] == ["SMS list"]


async def test_health_readiness_metrics_and_openapi(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {
        "consumers",
        "mongodb",
        "kafka",
    }
    await api.get("/v1/profiles")
    metrics = (await api.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/v1/profiles",service="profile-svc"' in metrics
    assert "/v1/profiles/{profile_id}/fields" in (await api.get("/openapi.json")).json()["paths"]
