"""profile-svc over HTTP against the real MongoDB-protocol server and Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from contacts_shared.rules import OPS_BY_KIND, RuleOperator
from profile_svc.domain import ProfileOrder

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
    taken = await api.post("/v1/profiles", json={"name": "NEWSLETTER"})
    assert_problem(taken, 409)
    assert [e["field"] for e in taken.json()["errors"]] == ["name"]  # a form shows it there
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
    assert_problem(await api.post(f"{path}/fields", json={"name": "CIUDAD"}), 409, "field.name")
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
    # Not Kafka: reads and writes need MongoDB alone (its topics verified once, at start).
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"mongodb", "topics"}
    await api.get("/v1/profiles")
    metrics = (await api.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/v1/profiles",service="profile-svc"' in metrics
    assert "/v1/profiles/{profile_id}/fields" in (await api.get("/openapi.json")).json()["paths"]


async def read_pages(api: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await api.get(
            "/v1/profiles", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


async def test_each_sort_pages_every_profile_once_in_its_order(api: httpx.AsyncClient) -> None:
    created = [
        await create(api, name=name) for name in ("delta", "Alpha", "charlie", "Bravo", "echo")
    ]
    for index in (3, 0, 4):  # Bravo, delta, echo: updated after every creation, in this order
        changed = await api.patch(f"/v1/profiles/{created[index]['id']}", json={"description": "x"})
        assert changed.status_code == 200
    expected = {
        "name": ["Alpha", "Bravo", "charlie", "delta", "echo"],
        "created_at": [p["name"] for p in created],
        "updated_at": ["Alpha", "charlie", "Bravo", "delta", "echo"],
    }
    for order in ProfileOrder:
        pages = await read_pages(api, {"sort": order.value, "limit": 2})
        names = [item["name"] for page in pages for item in page["items"]]
        wanted = expected[order.attribute]
        assert names == (wanted[::-1] if order.descending else wanted), order
        assert [page["total"] for page in pages] == [5, 5, 5]
    default = (await api.get("/v1/profiles")).json()
    assert [item["name"] for item in default["items"]] == expected["created_at"]


async def test_base_profile_filter_lists_the_virtual_profiles_standing_on_it(
    api: httpx.AsyncClient,
) -> None:
    base = await create(api, name="Base")
    other = await create(api, name="Other")
    rules = {"all": [{"field": "status", "op": "is", "value": "active"}]}
    for name, on in (("V1", base), ("V2", base), ("V3", base), ("W", other)):
        await create(api, name=name, type="virtual", base_profile_id=on["id"], rules=rules)

    pages = await read_pages(api, {"base_profile_id": base["id"], "sort": "-name", "limit": 2})
    assert [[item["name"] for item in page["items"]] for page in pages] == [["V3", "V2"], ["V1"]]
    assert [page["total"] for page in pages] == [3, 3]
    on_other = (await api.get("/v1/profiles", params={"base_profile_id": other["id"]})).json()
    assert ([item["name"] for item in on_other["items"]], on_other["total"]) == (["W"], 1)
    assert (await api.get("/v1/profiles")).json()["total"] == 6
    assert (await api.get("/v1/profiles", params={"type": "regular"})).json()["total"] == 2
    sms = await create(api, name="SMS", type="mobile_only")
    holding = await api.get("/v1/profiles", params={"type": ["regular", "mobile_only"]})
    assert {item["name"] for item in holding.json()["items"]} == {"Base", "Other", "SMS"}
    # A page of rows naming profiles reads their names in one call; others' ids find nothing.
    named = await api.get("/v1/profiles", params={"id": [sms["id"], base["id"]], "sort": "name"})
    assert [item["name"] for item in named.json()["items"]] == ["Base", "SMS"]
    theirs = await api.get(
        "/v1/profiles",
        params={"base_profile_id": base["id"]},
        headers={"Authorization": "Bearer key-b"},
    )
    assert (theirs.json()["items"], theirs.json()["total"]) == ([], 0)
    not_theirs = await api.get(
        "/v1/profiles", params={"id": base["id"]}, headers={"Authorization": "Bearer key-b"}
    )
    assert not_theirs.json()["items"] == []
    assert (await api.get("/v1/profiles", params={"id": "not-an-id"})).status_code == 422


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "size"}, "sort"),
        ({"sort": "name,created_at"}, "sort"),
        ({"colour": "red"}, "colour"),
        ({"base_profile": "0" * 24}, "base_profile"),
        ({"base_profile_id": "nope"}, "base_profile_id"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_unknown_sort_or_filter_is_a_problem_naming_it(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    assert_problem(await api.get("/v1/profiles", params=params), 422, field)


async def test_a_cursor_serves_only_the_sort_it_came_from(api: httpx.AsyncClient) -> None:
    for name in ("A", "B"):
        await create(api, name=name)
    cursor = (await api.get("/v1/profiles", params={"sort": "name", "limit": 1})).json()[
        "next_cursor"
    ]
    assert_problem(
        await api.get("/v1/profiles", params={"sort": "-name", "cursor": cursor}), 422, "cursor"
    )
    after = await api.get("/v1/profiles", params={"sort": "name", "cursor": cursor})
    assert [item["name"] for item in after.json()["items"]] == ["B"]


SAMPLE_VALUE: dict[str, Any] = {"number": 3, "date": "2024-05-01", "status": "active"}


def value_of_shape(shape: str, one: Any) -> Any:
    """A condition's value of the shape the operators endpoint names."""
    return {"none": None, "one": one, "two": [one, one], "list": [one], "days": 30}[shape]


async def test_rule_operators_are_those_the_rules_are_checked_with(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.get("/v1/rule-operators")
    assert answer.status_code == 200, answer.text
    field_types = answer.json()["field_types"]
    assert field_types == {
        kind: [{"name": op.value, "label": op.label, "value": op.shape.value} for op in ops]
        for kind, ops in OPS_BY_KIND.items()
    }
    assert field_types["text"][0] == {"name": "equals", "label": "equals", "value": "one"}
    assert {"name": "within_last_days", "label": "is in the last N days", "value": "days"} in (
        field_types["date"]
    )

    # Every operator listed takes a value of the shape listed, on a field of its type.
    typed = [kind for kind in field_types if kind not in {"email", "status"}]
    base = await create(api, name="Base", fields=[{"name": kind, "type": kind} for kind in typed])
    every = [
        {
            "field": kind,
            "op": op["name"],
            "value": value_of_shape(op["value"], SAMPLE_VALUE.get(kind, "x")),
        }
        for kind, operators in field_types.items()
        for op in operators
    ]
    await create(
        api, name="Every", type="virtual", base_profile_id=base["id"], rules={"any": every}
    )
    for condition, field in [
        ({"field": "date", "op": "within_last_days", "value": "2024-05-01"}, "rules.all[0].value"),
        ({"field": "number", "op": "between", "value": 3}, "rules.all[0].value"),
        ({"field": "text", "op": "like", "value": "x"}, "rules.all.0.condition.op"),
    ]:
        body = {
            "name": "V",
            "type": "virtual",
            "base_profile_id": base["id"],
            "rules": {"all": [condition]},
        }
        assert_problem(await api.post("/v1/profiles", json=body), 422, field)
    assert_problem(await api.get("/v1/rule-operators", headers={"Authorization": ""}), 401)


async def test_openapi_shows_operators_sorts_and_filters(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["Condition"]["properties"]["op"] == {"$ref": "#/components/schemas/RuleOperator"}
    assert schemas["RuleOperator"]["enum"] == [op.value for op in RuleOperator]
    assert schemas["ProfileOrder"]["enum"] == [order.value for order in ProfileOrder]
    assert "total" in schemas["ProfilePage"]["required"]
    listing = spec["paths"]["/v1/profiles"]["get"]["parameters"]
    assert {p["name"] for p in listing} == {
        "type",
        "id",
        "name",
        "base_profile_id",
        "sort",
        "cursor",
        "limit",
    }
    assert "/v1/rule-operators" in spec["paths"]
