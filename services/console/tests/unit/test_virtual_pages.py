"""Virtual Profile (the list, the rule builder and its preview, the members) and the actions on
one profile (statistics, edit, export, delete), with the services replaced at the HTTP
boundary."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from contacts_shared.rules import OPS_BY_KIND

FakeServices = Any  # conftest.FakeServices

PROFILES, CONTACTS, SEGMENTS = 8101, 8102, 8104

BASE: dict[str, Any] = {
    "id": "p1",
    "name": "Clientes",
    "description": "Tienda",
    "type": "regular",
    "fields": [
        {"name": "email", "key": "email", "type": "email", "required": True, "identity": True},
        {"name": "Ciudad", "key": "ciudad", "type": "text"},
        {"name": "Edad", "key": "edad", "type": "number"},
        {"name": "Alta", "key": "alta", "type": "date"},
        {"name": "Socio", "key": "socio", "type": "boolean"},
    ],
    "base_profile_id": None,
    "rules": None,
    "created_at": "2026-11-02T10:00:00+00:00",
}
VIRTUAL: dict[str, Any] = {
    **BASE,
    "id": "v1",
    "name": "Santiago",
    "description": "",
    "type": "virtual",
    "fields": [],
    "base_profile_id": "p1",
    "rules": {"all": [{"field": "Ciudad", "op": "equals", "value": "Santiago"}]},
}
# profile-svc's answer, from the same table it serves.
OPERATORS = {
    "field_types": {
        kind: [{"name": op.value, "label": op.label, "value": op.shape.value} for op in ops]
        for kind, ops in OPS_BY_KIND.items()
    }
}


def member(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "since": "2026-11-04T10:00:00+00:00",
        "status": "active",
        "fields": {"email": key, **fields},
    }


def builder_services(services: FakeServices) -> None:
    """profile-svc's regular profiles, their base profile and the operators."""
    page = {"items": [BASE], "total": 1, "next_cursor": None}
    services.on(PROFILES, "GET", "/v1/profiles", httpx.Response(200, json=page))
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    services.on(PROFILES, "GET", "/v1/rule-operators", httpx.Response(200, json=OPERATORS))


def bodies(services: FakeServices, port: int, method: str, path: str) -> list[Any]:
    """The JSON bodies the console sent to one route."""
    return [
        json.loads(call.content)
        for call in services.calls
        if (call.url.port, call.method, call.url.path) == (port, method, path)
    ]


def preview_answer(count: int, *, exact: bool = True, complete: bool = True) -> httpx.Response:
    """segment-svc's preview: counted over a profile of 1,200, or estimated over a million."""
    sample = [member("ana@example.cl", Ciudad="Santiago", Edad=31)]
    checked, contacts = (1200, 1200) if exact else (11_714, 1_000_000)
    answer = {"count": count, "checked": checked, "exact": exact, "contacts": contacts}
    return httpx.Response(200, json={**answer, "complete": complete, "sample": sample})


def options(html: str, select_id: str) -> list[str]:
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', html, re.S)
    assert found, f"no select {select_id}"
    return re.findall(r'<option value="([^"]*)"', found.group(1))


def input_types(html: str, key: str) -> dict[str, str]:
    """The value inputs of a condition (by its inputs' prefix), each with its type."""
    found: dict[str, str] = {}
    for tag, name, attributes in re.findall(rf'<(input|select) id="{key}_(value2?)"([^>]*)>', html):
        typed = re.search(r'type="(\w+)"', attributes)
        found[name] = "select" if tag == "select" else typed.group(1) if typed else "text"
    return found


async def test_the_virtual_profiles_are_listed_with_their_members(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    page = {"items": [VIRTUAL], "total": 1, "next_cursor": "c2"}
    services.on(PROFILES, "GET", "/v1/profiles", httpx.Response(200, json=page))
    stats = {"v1": {"total": 1234, "by_status": {"active": 1200, "bounced": 34}}}
    services.on(SEGMENTS, "GET", "/v1/stats", httpx.Response(200, json={"stats": stats}))
    services.calls.clear()
    answer = await console.get("/virtual-profiles")
    assert answer.status_code == 200
    asked = [(c.url.port, c.url.path, dict(c.url.params.multi_items())) for c in services.calls]
    assert asked == [
        (PROFILES, "/v1/profiles", {"type": "virtual", "sort": "name", "limit": "50"}),
        (SEGMENTS, "/v1/stats", {"profile_id": "v1"}),
    ]
    assert '<a href="/virtual-profiles/v1">Santiago</a>' in answer.text
    assert "1,234" in answer.text and "1,200" in answer.text
    assert 'href="/virtual-profiles/new"' in answer.text and "?cursor=c2" in answer.text
    assert 'aria-current="page">Virtual Profile' in answer.text

    services.on(SEGMENTS, "GET", "/v1/stats", httpx.ConnectError("down"))
    down = await console.get("/virtual-profiles")
    assert "The segments service is not answering" in down.text and "Santiago" in down.text


async def test_the_builder_offers_the_base_profiles_fields_and_each_types_operators(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    builder_services(services)
    empty = await console.get("/virtual-profiles/new?name=Santiago&description=Compradores")
    assert 'value="Santiago"' in empty.text and 'value="Compradores"' in empty.text
    assert options(empty.text, "base_profile_id") == ["", "p1"]
    assert "Choose the profile to segment" in empty.text
    assert not any(c.url.port == SEGMENTS for c in services.calls)  # nothing to preview yet

    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(3))
    page = await console.get("/virtual-profiles/new?base_profile_id=p1")
    assert options(page.text, "g0_c0_field") == [
        "email",
        "Ciudad",
        "Edad",
        "Alta",
        "Socio",
        "status",
    ]
    text_operators = [op.value for op in OPS_BY_KIND["text"]]
    assert options(page.text, "g0_c0_op") == text_operators
    # A new condition: the first field and its first operator, previewed as it stands.
    assert bodies(services, SEGMENTS, "POST", "/v1/segments:preview") == [
        {
            "base_profile_id": "p1",
            "rules": {"all": [{"field": "email", "op": "equals", "value": ""}]},
        }
    ]
    assert "3 contacts match" in page.text and "out of 1,200." in page.text
    assert '<th scope="row">ana@example.cl</th>' in page.text


async def test_the_value_input_follows_the_operators_value_shape(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any, csrf: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(1))
    conditions = [
        ("Edad", "between", {"value": "number", "value2": "number"}),
        ("Ciudad", "in", {"value": "text"}),
        ("Alta", "within_last_days", {"value": "number"}),
        ("Alta", "before", {"value": "date"}),
        ("Socio", "is_true", {}),
        ("status", "is", {"value": "select"}),
    ]
    form: dict[str, Any] = {"csrf_token": token, "base_profile_id": "p1", "action": "refresh"}
    for i, (name, op, _) in enumerate(conditions):
        form |= {f"g0_c{i}_field": name, f"g0_c{i}_op": op}
    page = await console.post("/virtual-profiles/new", data=form)
    assert page.status_code == 200
    for i, (_, _, inputs) in enumerate(conditions):
        assert input_types(page.text, f"g0_c{i}") == inputs, conditions[i]
    assert options(page.text, "g0_c5_value") == [
        "active",
        "unsubscribed",
        "bounced",
        "complained",
        "blocked",
    ]
    # The field changed to one of another type: its operators follow, the first one chosen.
    changed = await console.post(
        "/virtual-profiles/new", data={**form, "g0_c1_field": "Edad", "g0_c1_op": "in"}
    )
    assert options(changed.text, "g0_c1_op")[0] == "equals"
    assert re.search(r'<option value="equals" selected>', changed.text)


async def test_conditions_and_groups_are_added_and_removed_by_round_trips(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(1))
    form = {
        "csrf_token": token,
        "name": "Jóvenes",
        "base_profile_id": "p1",
        "g0_match": "all",
        "g0_c0_field": "Edad",
        "g0_c0_op": "lt",
        "g0_c0_value": "30",
    }
    added = await console.post("/virtual-profiles/new", data={**form, "action": "add:0"})
    assert 'name="g0_c1_field"' in added.text and 'value="Jóvenes"' in added.text
    assert re.search(r'id="g0_c1_field"[^>]*autofocus', added.text)  # the new condition
    group = await console.post("/virtual-profiles/new", data={**form, "action": "add-group"})
    assert 'name="g1_c0_field"' in group.text and 'id="match"' in group.text
    removed = await console.post(
        "/virtual-profiles/new",
        data={**form, "g0_c1_field": "Ciudad", "g0_c1_op": "equals", "action": "remove:0:0"},
    )
    assert 'name="g0_c1_field"' not in removed.text
    assert re.search(r'<option value="Ciudad" selected>', removed.text)

    # htmx asks for the builder alone; the preview is told to follow.
    services.calls.clear()
    partial = await console.post(
        "/virtual-profiles/new",
        data={**form, "action": "add:0"},
        headers={"HX-Request": "true", "HX-Target": "builder"},
    )
    assert partial.text.lstrip().startswith('<fieldset id="builder"')
    assert "<html" not in partial.text and partial.headers["HX-Trigger"] == "rules-changed"
    assert not any(c.url.port == SEGMENTS for c in services.calls)  # no preview in it


async def test_save_sends_typed_rules_and_opens_the_members(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)

    def create(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={**VIRTUAL, "id": "v9"})

    services.on(PROFILES, "POST", "/v1/profiles", create)
    form = {
        "csrf_token": token,
        "name": "Jóvenes de Santiago",
        "description": "",
        "base_profile_id": "p1",
        "g0_match": "all",
        "g0_c0_field": "Edad",
        "g0_c0_op": "between",
        "g0_c0_value": "18",
        "g0_c0_value2": "29.5",
        "g0_c1_field": "Ciudad",
        "g0_c1_op": "in",
        "g0_c1_value": "Santiago, Valparaíso ,",
        "g0_c2_field": "Alta",
        "g0_c2_op": "within_last_days",
        "g0_c2_value": "30",
        "g0_c3_field": "Socio",
        "g0_c3_op": "is_true",
        "g0_c3_value": "ignored",
        "action": "save",
    }
    saved = await console.post("/virtual-profiles/new", data=form)
    assert (
        saved.status_code == 303 and saved.headers["location"] == "/virtual-profiles/v9?created=1"
    )
    assert bodies(services, PROFILES, "POST", "/v1/profiles") == [
        {
            "name": "Jóvenes de Santiago",
            "description": "",
            "type": "virtual",
            "base_profile_id": "p1",
            "rules": {
                "all": [
                    {"field": "Edad", "op": "between", "value": [18, 29.5]},
                    {"field": "Ciudad", "op": "in", "value": ["Santiago", "Valparaíso"]},
                    {"field": "Alta", "op": "within_last_days", "value": 30},
                    {"field": "Socio", "op": "is_true"},
                ]
            },
        }
    ]


async def test_groups_are_sent_as_one_tree_and_refusals_shown_at_their_condition(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(1))
    problem = {
        "detail": "invalid rules",
        "errors": [
            {"field": "rules.any[1].all[0].value", "message": "operator 'gt' takes a number"},
            {"field": "rules.any.0.any.1.condition.op", "message": "Input should be 'equals'"},
            {"field": "name", "message": "must not be empty"},
        ],
    }
    services.on(PROFILES, "POST", "/v1/profiles", httpx.Response(422, json=problem))
    form = {
        "csrf_token": token,
        "name": "",
        "base_profile_id": "p1",
        "match": "any",
        "g0_match": "any",
        "g0_c0_field": "Ciudad",
        "g0_c0_op": "equals",
        "g0_c0_value": "Lima",
        "g0_c1_field": "Ciudad",
        "g0_c1_op": "starts_with",
        "g0_c1_value": "San",
        "g1_match": "all",  # a group left empty is not sent
        "g2_match": "all",
        "g2_c0_field": "Edad",
        "g2_c0_op": "gt",
        "g2_c0_value": "treinta",
        "action": "save",
    }
    answer = await console.post("/virtual-profiles/new", data=form)
    assert answer.status_code == 422
    assert bodies(services, PROFILES, "POST", "/v1/profiles")[0]["rules"] == {
        "any": [
            {
                "any": [
                    {"field": "Ciudad", "op": "equals", "value": "Lima"},
                    {"field": "Ciudad", "op": "starts_with", "value": "San"},
                ]
            },
            {"all": [{"field": "Edad", "op": "gt", "value": "treinta"}]},
        ]
    }
    assert re.search(
        r'id="g2_c0_value"[^>]*aria-invalid="true" aria-describedby="g2_c0_error"', answer.text
    )
    assert (
        '<p id="g2_c0_error" class="error">operator &#39;gt&#39; takes a number</p>' in answer.text
    )
    assert re.search(r'id="g0_c1_op"[^>]*aria-invalid="true"', answer.text)
    assert '<p id="name_error" class="error">must not be empty</p>' in answer.text


async def test_the_preview_follows_the_rules_and_says_why_it_cannot(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    form = {
        "csrf_token": token,
        "base_profile_id": "p1",
        "g0_c0_field": "Edad",
        "g0_c0_op": "gt",
        "g0_c0_value": "30",
        "g0_c1_field": "Edad",
        "g0_c1_op": "lt",
        "g0_c1_value": "",
    }
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(1))
    one = await console.post("/virtual-profiles/preview", data=form)
    assert "<html" not in one.text and "1 contact matches" in one.text
    assert '<th scope="col">Ciudad</th>' in one.text  # the base profile's fields but email
    assert '<th scope="col">email</th>' not in one.text

    problem = {
        "detail": "x",
        "errors": [{"field": "rules.all[1].value", "message": "operator 'lt' takes a number"}],
    }
    services.on(SEGMENTS, "POST", "/v1/segments:preview", httpx.Response(422, json=problem))
    incomplete = await console.post("/virtual-profiles/preview", data=form)
    assert "Condition 2: operator &#39;lt&#39; takes a number" in incomplete.text

    services.on(SEGMENTS, "POST", "/v1/segments:preview", httpx.Response(404, json={}))
    unknown = await console.post("/virtual-profiles/preview", data=form)
    assert "has not heard of this profile yet" in unknown.text

    services.on(SEGMENTS, "POST", "/v1/segments:preview", httpx.ReadTimeout("slow"))
    slow = await console.post("/virtual-profiles/preview", data=form)
    assert slow.status_code == 200 and "The segments service is slow to answer" in slow.text

    assert (await console.post("/virtual-profiles/preview", data={})).status_code == 403


async def test_a_large_profiles_preview_says_its_count_is_an_estimate(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    form = {
        "csrf_token": token,
        "base_profile_id": "p1",
        "g0_c0_field": "Ciudad",
        "g0_c0_op": "equals",
        "g0_c0_value": "Santiago",
    }
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(120_000, exact=False))
    about = await console.post("/virtual-profiles/preview", data=form)
    assert "<strong>About 120,000 contacts match</strong>" in about.text
    assert "out of about 1,000,000, estimated from 11,714 of them." in about.text
    assert "ana@example.cl" in about.text and "older contacts" not in about.text

    partial = preview_answer(120_000, exact=False, complete=False)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", partial)
    assert (
        "Some older contacts are not in this estimate yet."
        in (await console.post("/virtual-profiles/preview", data=form)).text
    )

    await console.post("/locale", data={"csrf_token": token, "locale": "es", "back": "/profiles"})
    spanish = await console.post("/virtual-profiles/preview", data=form)
    assert "Alrededor de 120.000 contactos cumplen" in spanish.text
    assert "de unos 1.000.000, estimado a partir de 11.714 de ellos." in spanish.text


async def test_the_members_are_searched_paged_and_counted(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(PROFILES, "GET", "/v1/profiles/v1", httpx.Response(200, json=VIRTUAL))
    listed = {"items": [member("ana@example.cl", Ciudad="Santiago", Edad=31)], "next_cursor": "k"}
    services.on(SEGMENTS, "GET", "/v1/profiles/v1/members", httpx.Response(200, json=listed))
    services.on(
        SEGMENTS, "GET", "/v1/profiles/v1/members:count", httpx.Response(200, json={"count": 1234})
    )
    held = {"rebuild": {"pending": True, "progress": {"checked": 5000}}, "missing_fields": []}
    services.on(SEGMENTS, "GET", "/v1/segments/v1", httpx.Response(200, json=held))
    services.calls.clear()
    page = await console.get("/virtual-profiles/v1?key_prefix=Ana&cursor=a")
    assert page.status_code == 200
    asked = {c.url.path: dict(c.url.params.multi_items()) for c in services.calls}
    assert asked["/v1/profiles/v1/members"] == {"limit": "50", "key_prefix": "Ana", "cursor": "a"}
    assert asked["/v1/profiles/v1/members:count"] == {"key_prefix": "Ana"}
    assert "<h1>Santiago</h1>" in page.text and "1,234 members" in page.text
    assert "5,000 contacts checked so far" in page.text
    assert '<th scope="col">Ciudad</th>' in page.text and "<td>31</td>" in page.text
    assert '<th scope="col">email</th>' not in page.text  # the key column says it
    assert 'href="/virtual-profiles/v1?cursor=k&amp;key_prefix=Ana"' in page.text
    assert 'href="/virtual-profiles/v1/export?key_prefix=Ana"' in page.text

    services.on(SEGMENTS, "GET", "/v1/profiles/v1/members", httpx.Response(404, json={}))
    services.on(SEGMENTS, "GET", "/v1/segments/v1", httpx.ConnectError("down"))
    services.on(SEGMENTS, "GET", "/v1/profiles/v1/members:count", httpx.ConnectError("down"))
    later = await console.get("/virtual-profiles/v1")
    assert later.status_code == 200 and "has not heard of this virtual profile yet" in later.text

    services.on(SEGMENTS, "GET", "/v1/profiles/v1/members", httpx.ConnectError("down"))
    down = await console.get("/virtual-profiles/v1")
    assert "The segments service is not answering" in down.text and "<h1>Santiago</h1>" in down.text

    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    regular = await console.get("/virtual-profiles/p1")
    assert regular.status_code == 303 and regular.headers["location"] == "/profiles/p1"
    assert (await console.get("/virtual-profiles/..%2E")).status_code == 404


async def test_exports_stream_the_services_csv_through(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    csv = b"email,Ciudad,status\r\nana@example.cl,Santiago,active\r\n"
    services.on(
        SEGMENTS,
        "GET",
        "/v1/profiles/v1/members:export",
        httpx.Response(200, content=csv, headers={"content-type": "text/csv; charset=utf-8"}),
    )
    members = await console.get("/virtual-profiles/v1/export?key_prefix=ana")
    assert members.status_code == 200 and members.content == csv
    assert members.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in members.headers["content-disposition"]
    assert services.calls[-1].url.params["key_prefix"] == "ana"

    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:export", httpx.Response(200, content=csv)
    )
    contacts = await console.get("/profiles/p1/export")
    assert contacts.content == csv and "contacts-p1.csv" in contacts.headers["content-disposition"]

    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts:export", httpx.ConnectError("down"))
    down = await console.get("/profiles/p1/export")
    assert down.status_code == 503 and "The contacts service is not answering" in down.text


async def test_a_profiles_statistics_show_its_statuses_and_additions_as_charts(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    stats = {
        "total": 1205,
        "by_status": {"active": 1200, "unsubscribed": 3, "bounced": 2, "complained": 0},
        "added_last_7_days": 40,
        "added_last_30_days": 300,
        "added_by_day": [
            {"day": f"2026-11-{day:02d}", "count": 80 if day == 20 else 0} for day in range(1, 31)
        ],
        "last_change_at": "2026-11-20T10:00:00+00:00",
    }
    services.on(CONTACTS, "GET", "/v1/profiles/p1/stats", httpx.Response(200, json=stats))
    page = await console.get("/profiles/p1")
    assert page.status_code == 200
    assert page.text.count('role="img"') == 2 and '<title id="added_title">' in page.text
    assert 'href="/contacts?profile_id=p1&amp;status=bounced">2</a>' in page.text
    assert "1,205 contacts" in page.text and "Nov 20, 2026" in page.text
    assert 'width="200.0"' in page.text  # the largest bar, full width
    # A column a day: the busiest one full height, the others flat; each day in the table.
    assert page.text.count('width="16"') == 30
    assert 'y="30.0" width="16" height="110.0"' in page.text
    assert page.text.count('height="0.0"') == 29
    assert "40 in the last 7 days, 300 in the last 30 days." in page.text
    assert "Most in a day: 80" in page.text
    assert '<th scope="row">Nov 20, 2026</th><td class="num">80</td>' in page.text

    services.on(PROFILES, "GET", "/v1/profiles/v1", httpx.Response(200, json=VIRTUAL))
    members = {"total": 7, "by_status": {"active": 7}}
    services.on(SEGMENTS, "GET", "/v1/profiles/v1/stats", httpx.Response(200, json=members))
    virtual = await console.get("/profiles/v1")
    assert "7 contacts" in virtual.text and virtual.text.count('role="img"') == 1

    services.on(CONTACTS, "GET", "/v1/profiles/p1/stats", httpx.ReadTimeout("slow"))
    slow = await console.get("/profiles/p1")
    assert slow.status_code == 200 and "The contacts service is slow to answer" in slow.text


async def test_a_profile_is_edited_and_its_fields_added_and_deleted(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    page = await console.get("/profiles/p1/edit")
    assert 'value="Clientes"' in page.text
    assert 'href="/profiles/p1/fields/delete?name=Ciudad"' in page.text
    assert "fields/delete?name=email" not in page.text  # the identity stays

    services.on(PROFILES, "PATCH", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    saved = await console.post(
        "/profiles/p1/edit", data={"csrf_token": token, "name": " Compradores ", "description": ""}
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/profiles/p1/edit?done=saved"
    assert bodies(services, PROFILES, "PATCH", "/v1/profiles/p1") == [
        {"name": "Compradores", "description": ""}
    ]
    taken = {"detail": "taken", "errors": [{"field": "name", "message": "name is taken"}]}
    services.on(PROFILES, "PATCH", "/v1/profiles/p1", httpx.Response(409, json=taken))
    refused = await console.post(
        "/profiles/p1/edit", data={"csrf_token": token, "name": "Otro", "description": ""}
    )
    assert refused.status_code == 409 and 'value="Otro"' in refused.text
    assert '<p id="name_error" class="error">name is taken</p>' in refused.text

    services.on(PROFILES, "POST", "/v1/profiles/p1/fields", httpx.Response(201, json=BASE))
    added = await console.post(
        "/profiles/p1/fields",
        data={"csrf_token": token, "field_name": "Región", "field_type": "text"},
    )
    assert added.headers["location"] == "/profiles/p1/edit?done=added"
    assert bodies(services, PROFILES, "POST", "/v1/profiles/p1/fields") == [
        {"name": "Región", "type": "text"}
    ]
    clash = {"detail": "x", "errors": [{"field": "field.name", "message": "already a field"}]}
    services.on(PROFILES, "POST", "/v1/profiles/p1/fields", httpx.Response(409, json=clash))
    again = await console.post(
        "/profiles/p1/fields",
        data={"csrf_token": token, "field_name": "ciudad", "field_type": "date"},
    )
    assert '<p id="field_name_error" class="error">already a field</p>' in again.text
    assert '<option value="date" selected>' in again.text

    confirm = await console.get("/profiles/p1/fields/delete?name=Ciudad")
    assert "Delete the field Ciudad of Clientes?" in confirm.text
    services.on(PROFILES, "DELETE", "/v1/profiles/p1/fields/Ciudad", httpx.Response(200, json=BASE))
    deleted = await console.post(
        "/profiles/p1/fields/delete", data={"csrf_token": token, "name": "Ciudad"}
    )
    assert deleted.headers["location"] == "/profiles/p1/edit?done=removed"
    read = {"detail": "field 'Edad' is used by the rules of virtual profiles: Jóvenes"}
    services.on(PROFILES, "DELETE", "/v1/profiles/p1/fields/Edad", httpx.Response(409, json=read))
    kept = await console.post(
        "/profiles/p1/fields/delete", data={"csrf_token": token, "name": "Edad"}
    )
    assert kept.status_code == 409 and "virtual profiles: Jóvenes" in kept.text


async def test_a_refused_delete_names_the_virtual_profiles_standing_on_it(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=BASE))
    confirm = await console.get("/profiles/p1/delete")
    assert "Delete Clientes?" in confirm.text and 'action="/profiles/p1/delete"' in confirm.text
    conflict = {"detail": "virtual profiles are based on this profile; delete them first"}
    services.on(PROFILES, "DELETE", "/v1/profiles/p1", httpx.Response(409, json=conflict))
    dependents = {"items": [VIRTUAL], "total": 3, "next_cursor": None}
    services.on(PROFILES, "GET", "/v1/profiles", httpx.Response(200, json=dependents))
    services.calls.clear()
    refused = await console.post("/profiles/p1/delete", data={"csrf_token": token})
    assert refused.status_code == 409
    listing = [c for c in services.calls if c.url.path == "/v1/profiles"]
    assert listing[0].url.params["base_profile_id"] == "p1"
    assert '<a href="/virtual-profiles/v1">Santiago</a>' in refused.text
    assert "and 2 more" in refused.text

    services.on(PROFILES, "DELETE", "/v1/profiles/p1", httpx.Response(204))
    deleted = await console.post("/profiles/p1/delete", data={"csrf_token": token})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/profiles"
    assert (await console.post("/profiles/p1/delete", data={})).status_code == 403


async def test_each_profile_in_the_list_links_to_its_actions(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    await signed_in()
    page = await console.get("/profiles")
    for link in (
        'href="/profiles/p1"',
        'href="/profiles/p1/edit"',
        'href="/profiles/p1/export"',
        'href="/profiles/p1/delete"',
        'href="/virtual-profiles/v1"',
        'href="/virtual-profiles/v1/export"',
    ):
        assert link in page.text, link
    assert 'aria-label="Statistics of Clientes"' in page.text


async def test_the_builder_speaks_spanish(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", preview_answer(1234))
    await console.post("/locale", data={"csrf_token": token, "locale": "es", "back": "/profiles"})
    page = await console.get("/virtual-profiles/new?base_profile_id=p1")
    assert "<h1>Nuevo perfil virtual</h1>" in page.text
    assert (
        "Campo de la condición 1" in page.text
        and '<option value="equals" selected>es igual a' in page.text
    )
    assert "1.234 contactos cumplen" in page.text


async def test_the_builder_keeps_the_draft_when_a_service_is_down(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    builder_services(services)
    services.on(SEGMENTS, "POST", "/v1/segments:preview", httpx.ConnectError("down"))
    services.on(PROFILES, "POST", "/v1/profiles", httpx.ReadTimeout("slow"))
    form = {
        "csrf_token": token,
        "name": "Santiago",
        "base_profile_id": "p1",
        "g0_c0_field": "Ciudad",
        "g0_c0_op": "equals",
        "g0_c0_value": "Santiago",
        "action": "save",
    }
    answer = await console.post("/virtual-profiles/new", data=form)
    assert answer.status_code == 503 and "Traceback" not in answer.text
    assert "The profiles service is slow to answer" in answer.text
    assert "The segments service is not answering" in answer.text  # in the preview
    assert 'value="Santiago"' in answer.text and re.search(r'value="Ciudad" selected', answer.text)

    services.on(PROFILES, "GET", "/v1/rule-operators", httpx.ConnectError("down"))
    page = await console.get("/virtual-profiles/new?base_profile_id=p1")
    assert page.status_code == 200 and "The profiles service is not answering" in page.text
    assert options(page.text, "base_profile_id") == ["", "p1"]  # the rest still works
