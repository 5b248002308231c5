"""New Contact, List Contacts, bulk actions and a contact's page, with the services replaced at
the HTTP boundary."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

FakeServices = Any  # conftest.FakeServices

PROFILES, CONTACTS, SEGMENTS, LOGS = 8101, 8102, 8104, 8105

PROFILE: dict[str, Any] = {
    "id": "p1",
    "name": "Clientes",
    "description": "",
    "type": "regular",
    "fields": [
        {"name": "email", "key": "email", "type": "email", "required": True, "identity": True},
        {"name": "Nacimiento", "key": "nacimiento", "type": "date"},
        {"name": "Edad", "key": "edad", "type": "number"},
        {"name": "Socio", "key": "socio", "type": "boolean"},
        {"name": "Ciudad", "key": "ciudad", "type": "text", "required": True},
        {"name": "Móvil", "key": "movil", "type": "phone"},
    ],
    "created_at": "2026-11-02T10:00:00+00:00",
}
MOBILE: dict[str, Any] = {
    **PROFILE,
    "id": "m1",
    "name": "SMS",
    "type": "mobile_only",
    "fields": [
        {"name": "phone", "key": "phone", "type": "phone", "required": True, "identity": True}
    ],
}


def contact(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "fields": {"email": key, **fields},
        "status": "active",
        "status_reason": None,
        "status_source": "api",
        "status_changed_at": "2026-11-03T10:00:00+00:00",
        "source": "api",
        "version": 1,
        "created_at": "2026-11-03T10:00:00+00:00",
        "updated_at": "2026-11-03T10:00:00+00:00",
    }


def sent(services: FakeServices, port: int, method: str, path: str) -> list[Any]:
    """The JSON bodies the console sent to one route."""
    return [
        json.loads(call.content)
        for call in services.calls
        if (call.url.port, call.method, call.url.path) == (port, method, path)
    ]


def asked(services: FakeServices, port: int, path: str) -> list[dict[str, str]]:
    """The query parameters of the console's GETs of one route."""
    return [
        dict(call.url.params)
        for call in services.calls
        if (call.url.port, call.method, call.url.path) == (port, "GET", path)
    ]


def profiles_by_type(request: httpx.Request) -> httpx.Response:
    chosen = [p for p in (PROFILE, MOBILE) if p["type"] == request.url.params.get("type")]
    return httpx.Response(200, json={"items": chosen, "total": len(chosen), "next_cursor": None})


def with_profiles(services: FakeServices) -> None:
    services.on(PROFILES, "GET", "/v1/profiles", profiles_by_type)
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))


async def test_new_contact_offers_regular_and_mobile_profiles_then_a_typed_form(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    services.calls.clear()
    picking = await console.get("/contacts/new")
    assert picking.status_code == 200
    assert sorted(q["type"] for q in asked(services, PROFILES, "/v1/profiles")) == [
        "mobile_only",
        "regular",
    ]
    assert '<option value="p1" >Clientes</option>' in picking.text
    assert '<option value="m1" >SMS</option>' in picking.text
    assert 'name="field_' not in picking.text

    form = await console.get("/contacts/new?profile_id=p1")
    page = form.text
    assert '<option value="p1" selected>Clientes</option>' in page
    assert 'id="field_email" name="field_email" value=""\n  type="email"' in page
    assert 'name="field_nacimiento" value=""\n  type="date"' in page
    assert 'name="field_edad" value=""\n  type="number" step="any"' in page
    assert '<select id="field_socio" name="field_socio"' in page
    assert 'name="field_movil" value=""\n  type="tel"' in page
    assert '<label for="field_ciudad">Ciudad <span class="hint">(required)</span>' in page
    assert "Save and add another" in page


async def test_a_refused_contact_shows_each_error_at_its_field_and_keeps_the_values(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    with_profiles(services)
    problem = {
        "detail": "Nacimiento: '31/02/2020' is not a date",
        "errors": [{"field": "Nacimiento", "message": "'31/02/2020' is not a date"}],
    }
    services.on(CONTACTS, "POST", "/v1/profiles/p1/contacts", httpx.Response(422, json=problem))
    answer = await console.post(
        "/contacts/new",
        data={
            "csrf_token": token,
            "profile_id": "p1",
            "field_email": "ana@example.cl",
            "field_nacimiento": "31/02/2020",
            "field_edad": "",
            "field_ciudad": " Viña ",
            "action": "save",
        },
    )
    assert answer.status_code == 422
    assert sent(services, CONTACTS, "POST", "/v1/profiles/p1/contacts") == [
        {"fields": {"email": "ana@example.cl", "Nacimiento": "31/02/2020", "Ciudad": "Viña"}}
    ]
    assert 'aria-invalid="true" aria-describedby="field_nacimiento_error"' in answer.text
    assert (
        '<p id="field_nacimiento_error" class="error">&#39;31/02/2020&#39; is not a date</p>'
        in answer.text
    )
    assert 'value="ana@example.cl"' in answer.text and 'value="Viña"' in answer.text
    assert 'class="alert"' not in answer.text  # every error is at its field


async def test_a_refusal_naming_no_field_is_said_above_the_form(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    with_profiles(services)
    conflict = {"detail": "contact ana@example.cl already exists in this profile"}
    services.on(CONTACTS, "POST", "/v1/profiles/p1/contacts", httpx.Response(409, json=conflict))
    data = {"csrf_token": token, "profile_id": "p1", "field_email": "ana@example.cl"}
    answer = await console.post("/contacts/new", data=data)
    assert answer.status_code == 409
    assert '<p class="alert" role="alert">contact ana@example.cl already exists' in answer.text


async def test_save_opens_the_contact_and_save_and_add_another_an_empty_form(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    with_profiles(services)
    services.on(
        CONTACTS,
        "POST",
        "/v1/profiles/p1/contacts",
        httpx.Response(201, json=contact("ana+news@example.cl")),
    )
    data = {"csrf_token": token, "profile_id": "p1", "field_email": "ana+news@example.cl"}
    saved = await console.post("/contacts/new", data={**data, "action": "save"})
    assert saved.status_code == 303
    assert saved.headers["location"] == "/contacts/p1/ana%2Bnews@example.cl?saved=added"
    again = await console.post("/contacts/new", data={**data, "action": "another"})
    assert again.headers["location"] == "/contacts/new?profile_id=p1&added=ana%2Bnews%40example.cl"
    form = await console.get(again.headers["location"])
    assert "Contact ana+news@example.cl added." in form.text
    assert 'href="/contacts/p1/ana%2Bnews@example.cl"' in form.text
    assert 'id="field_email" name="field_email" value=""' in form.text


async def test_the_list_asks_one_page_and_its_total_with_the_same_filters(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    page_of = {"items": [contact("ana@example.cl", Edad=41, Socio=True)], "next_cursor": "c2"}
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.Response(200, json=page_of))
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.Response(200, json={"count": 1234})
    )
    services.calls.clear()
    query = (
        "profile_id=p1&status=active&key_prefix=an&field=Ciudad&value_prefix=vi&sort=-created_at"
    )
    listed = await console.get(f"/contacts?{query}")
    assert listed.status_code == 200
    filters = {"status": "active", "key_prefix": "an", "field": "Ciudad", "value_prefix": "vi"}
    assert asked(services, CONTACTS, "/v1/profiles/p1/contacts") == [
        {**filters, "limit": "50", "sort": "-created_at"}
    ]
    assert asked(services, CONTACTS, "/v1/profiles/p1/contacts:count") == [filters]
    page = listed.text
    assert "1,234 contacts" in page and "All 1,234 matching" in page
    assert '<a href="/contacts/p1/ana@example.cl">ana@example.cl</a>' in page
    # The first three fields past the key as columns.
    headings = re.findall(r'<th scope="col" ?><a href="[^"]*">([^<]+)</a></th>', page)
    assert headings == ["Email or phone", "Nacimiento", "Edad", "Socio"]
    assert "<td></td><td>41</td><td>Yes</td>" in page
    # Sorting, paging and the bulk form keep the filters.
    assert 'aria-sort="descending"' in page
    kept = "profile_id=p1&amp;status=active&amp;key_prefix=an&amp;field=Ciudad&amp;value_prefix=vi"
    assert f'href="/contacts?{kept}&amp;sort=created_at"' in page
    assert (
        f'href="/contacts?{kept}&amp;cursor=c2&amp;sort=-created_at&amp;page=2" rel="next">' in page
    )
    assert '<input type="hidden" name="filter_value_prefix" value="vi">' in page
    # Only text, email and phone fields are searched by prefix.
    searched = page.split('<select id="field"', 1)[1].split("</select>", 1)[0]
    assert '<option value="Ciudad" selected>Ciudad</option>' in searched
    assert '<option value="Edad"' not in searched


async def test_the_list_is_ordered_by_a_field_from_its_heading_or_the_order_picker(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    page_of = {"items": [contact("ana@example.cl", Edad=41)], "next_cursor": "c2"}
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.Response(200, json=page_of))
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.Response(200, json={"count": 1})
    )
    services.calls.clear()
    page = (await console.get("/contacts?profile_id=p1&sort=-Edad")).text
    assert asked(services, CONTACTS, "/v1/profiles/p1/contacts") == [
        {"limit": "50", "sort": "-Edad"}
    ]
    heading = (
        '<th scope="col" aria-sort="descending"><a href="/contacts?profile_id=p1&amp;sort=Edad">'
    )
    assert heading + 'Edad</a> <span aria-hidden="true">↓</span></th>' in page
    assert '<a href="/contacts?profile_id=p1&amp;sort=Nacimiento">Nacimiento</a>' in page
    assert '<option value="-Edad" selected>Edad, descending</option>' in page
    assert (
        'href="/contacts?profile_id=p1&amp;cursor=c2&amp;sort=-Edad&amp;page=2" rel="next">' in page
    )

    refusal = {
        "detail": "no field 'Talla' in this profile",
        "errors": [{"field": "sort", "message": "no field 'Talla'"}],
    }
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.Response(422, json=refusal))
    refused = await console.get("/contacts?profile_id=p1&sort=Talla")
    assert refused.status_code == 200
    assert "no field &#39;Talla&#39; in this profile" in refused.text


async def test_a_service_down_spoils_only_its_part_of_the_list(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.ConnectError("refused"))
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.ReadTimeout("slow"))
    down = await console.get("/contacts?profile_id=p1")
    assert down.status_code == 200
    assert "The contacts service is not answering" in down.text
    assert "Contacts of Clientes" in down.text and "Traceback" not in down.text

    services.on(PROFILES, "GET", "/v1/profiles", httpx.ConnectError("refused"))
    services.on(PROFILES, "GET", "/v1/profiles/p1", httpx.ConnectError("refused"))
    page_of = {"items": [contact("ana@example.cl")], "next_cursor": None}
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.Response(200, json=page_of))
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.Response(200, json={"count": 1})
    )
    listed = await console.get("/contacts?profile_id=p1")
    assert "The profiles service is not answering" in listed.text
    assert ">ana@example.cl</a>" in listed.text and "1 contact" in listed.text
    assert '<input id="profile_id" name="profile_id" value="p1" required>' in listed.text


async def test_a_search_the_service_refuses_is_said_at_the_search(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    problem = {
        "detail": "value_prefix: date fields have no prefix search",
        "errors": [{"field": "value_prefix", "message": "date fields have no prefix search"}],
    }
    refusal = httpx.Response(422, json=problem)
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", refusal)
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts:count", refusal)
    page = await console.get("/contacts?profile_id=p1&field=Ciudad&value_prefix=x")
    assert page.status_code == 200
    assert 'id="search_error" class="alert" role="alert">value_prefix: date fields' in page.text
    assert 'aria-invalid="true" aria-describedby="search_error"' in page.text


async def test_a_bulk_change_of_the_rows_selected_is_confirmed_with_its_count_then_followed(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    form = {
        "csrf_token": token,
        "profile_id": "p1",
        "filter_status": "active",
        "selection": "rows",
        "key": ["a@x.cl", "b@x.cl", "a@x.cl"],
        "action": "change_status",
        "new_status": "unsubscribed",
        "reason": "asked by phone",
    }
    review = await console.post("/contacts/bulk", data=form)
    assert review.status_code == 200
    assert "Change the status of 2 contacts to unsubscribed?" in review.text
    assert "Reason: asked by phone" in review.text
    assert 'href="/contacts?profile_id=p1&amp;status=active" class="button">Cancel' in review.text
    assert sent(services, CONTACTS, "POST", "/v1/profiles/p1/contacts:bulk") == []

    job = {"id": "j1", "profile_id": "p1", "state": "queued"}
    services.on(
        CONTACTS,
        "POST",
        "/v1/profiles/p1/contacts:bulk",
        httpx.Response(202, json=job, headers={"location": "/v1/bulk-actions/j1"}),
    )
    confirmed = await console.post("/contacts/bulk", data={**form, "confirmed": "yes"})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/contacts/bulk/j1"
    assert sent(services, CONTACTS, "POST", "/v1/profiles/p1/contacts:bulk") == [
        {
            "action": "change_status",
            "status": "unsubscribed",
            "reason": "asked by phone",
            "keys": ["a@x.cl", "b@x.cl"],
        }
    ]


async def test_a_bulk_deletion_of_all_matching_names_the_count_and_sends_the_filter(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.Response(200, json={"count": 1500})
    )
    services.on(
        CONTACTS,
        "POST",
        "/v1/profiles/p1/contacts:bulk",
        httpx.Response(202, json={"id": "j2", "profile_id": "p1"}),
    )
    form = {
        "csrf_token": token,
        "profile_id": "p1",
        "filter_key_prefix": "ana",
        "selection": "all",
        "action": "delete",
        "new_status": "active",
    }
    review = await console.post("/contacts/bulk", data=form)
    assert "Delete 1,500 contacts?" in review.text
    assert asked(services, CONTACTS, "/v1/profiles/p1/contacts:count") == [{"key_prefix": "ana"}]
    await console.post("/contacts/bulk", data={**form, "confirmed": "yes"})
    assert sent(services, CONTACTS, "POST", "/v1/profiles/p1/contacts:bulk") == [
        {"action": "delete", "filter": {"key_prefix": "ana"}}
    ]


async def test_a_bulk_action_without_rows_is_refused_with_a_way_back(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    token = await signed_in()
    data = {"csrf_token": token, "profile_id": "p1", "selection": "rows", "action": "delete"}
    answer = await console.post("/contacts/bulk", data=data)
    assert answer.status_code == 422
    assert "Select at least one row, or all matching." in answer.text
    assert 'href="/contacts?profile_id=p1">Back to the list' in answer.text


def job(state: str, percent: float, **counts: int) -> dict[str, Any]:
    outcomes = {"changed": 0, "unchanged": 0, "deleted": 0, "not_found": 0}
    return {
        "id": "j1",
        "profile_id": "p1",
        "action": "change_status",
        "status": "unsubscribed",
        "reason": "asked",
        "state": state,
        "total": 2,
        "selected": 2,
        "counts": outcomes | counts,
        "percent": percent,
        "error": None,
    }


async def test_a_bulk_actions_progress_is_polled_until_it_completes(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    path = "/v1/bulk-actions/j1"
    services.on(CONTACTS, "GET", path, httpx.Response(200, json=job("applying", 50, changed=1)))
    running = await console.get("/contacts/bulk/j1")
    assert "<h1>Bulk action</h1>" in running.text
    assert 'hx-get="/contacts/bulk/j1" hx-trigger="every 1s"' in running.text
    assert "<strong>Applying</strong>" in running.text and "50% of 2" in running.text

    done = job("completed", 100, changed=1, not_found=1)
    services.on(CONTACTS, "GET", path, httpx.Response(200, json=done))
    fragment = await console.get("/contacts/bulk/j1", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith("{#") is False
    assert "<h1>" not in fragment.text and "<nav" not in fragment.text
    assert "hx-trigger" not in fragment.text
    assert "<strong>Completed</strong>" in fragment.text
    assert '<th scope="row">Not in the profile</th><td class="num">1</td>' in fragment.text

    services.on(CONTACTS, "GET", path, httpx.ReadTimeout("slow"))
    slow = await console.get("/contacts/bulk/j1", headers={"HX-Request": "true"})
    assert "slow to answer" in slow.text and 'hx-trigger="every 1s"' in slow.text


def contact_services(services: FakeServices) -> None:
    with_profiles(services)
    ana = contact("ana@example.cl", Nacimiento="1990-04-01", Edad=41, Socio=False)
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts/ana@example.cl", httpx.Response(200, json=ana)
    )
    trail = {
        "items": [
            {
                "version": 2,
                "at": "2026-11-04T10:00:00+00:00",
                "change": "status_changed",
                "source": "api",
                "status": "unsubscribed",
                "changes": [],
                "previous_status": "active",
                "status_reason": "asked by phone",
            },
            {
                "version": 1,
                "at": "2026-11-03T10:00:00+00:00",
                "change": "updated",
                "source": "import:i1",
                "status": "active",
                "changes": [{"field": "Edad", "old": None, "new": 41}],
            },
        ],
        "next_before_version": 1,
    }
    services.on(LOGS, "GET", "/v1/logs/contacts/p1/ana@example.cl", httpx.Response(200, json=trail))
    segments = {
        "profile_id": "p1",
        "key": "ana@example.cl",
        "segments": [{"id": "v1", "name": "Santiago", "since": "2026-11-05T10:00:00+00:00"}],
    }
    services.on(
        SEGMENTS,
        "GET",
        "/v1/contacts/p1/ana@example.cl/segments",
        httpx.Response(200, json=segments),
    )


async def test_a_contacts_page_shows_its_fields_to_edit_its_trail_and_its_virtual_profiles(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    contact_services(services)
    services.calls.clear()
    answer = await console.get("/contacts/p1/ana@example.cl?before=5")
    assert answer.status_code == 200
    assert asked(services, LOGS, "/v1/logs/contacts/p1/ana@example.cl") == [
        {"order": "newest", "limit": "20", "before_version": "5"}
    ]
    page = answer.text
    assert "<h1>ana@example.cl</h1>" in page
    assert 'name="field_email"' not in page  # the key is not edited
    assert 'name="field_nacimiento" value="1990-04-01"' in page
    assert 'name="field_edad" value="41"' in page
    assert '<option value="false" selected>No</option>' in page
    assert "Status: Active → Unsubscribed (asked by phone)" in page
    assert "<li>Edad: <em>empty</em> → 41</li>" in page
    assert 'href="/contacts/p1/ana@example.cl?before=1">Older changes' in page
    assert "<li>Santiago · since Nov 5, 2026" in page


async def test_a_contacts_page_says_which_service_is_down_and_shows_the_rest(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    contact_services(services)
    services.on(LOGS, "GET", "/v1/logs/contacts/p1/ana@example.cl", httpx.ConnectError("x"))
    services.on(
        SEGMENTS, "GET", "/v1/contacts/p1/ana@example.cl/segments", httpx.Response(404, json={})
    )
    page = await console.get("/contacts/p1/ana@example.cl")
    assert page.status_code == 200
    assert "The logs service is not answering" in page.text
    assert "In no virtual profile." in page.text
    assert 'name="field_edad" value="41"' in page.text

    services.on(
        CONTACTS,
        "GET",
        "/v1/profiles/p1/contacts/ana@example.cl",
        httpx.Response(404, json={"detail": "not found"}),
    )
    gone = await console.get("/contacts/p1/ana@example.cl")
    assert gone.status_code == 404 and "This profile holds no such contact." in gone.text


async def test_a_status_change_sends_its_reason_and_a_refused_field_edit_is_shown_at_the_field(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    contact_services(services)
    path = "/v1/profiles/p1/contacts/ana@example.cl"
    services.on(CONTACTS, "PATCH", path, httpx.Response(200, json=contact("ana@example.cl")))
    changed = await console.post(
        "/contacts/p1/ana@example.cl",
        data={"csrf_token": token, "action": "status", "status": "bounced", "reason": " full "},
    )
    assert changed.status_code == 303
    assert changed.headers["location"] == "/contacts/p1/ana@example.cl?saved=status"
    assert sent(services, CONTACTS, "PATCH", path) == [
        {"status": "bounced", "status_reason": "full"}
    ]

    problem = {
        "detail": "Edad: 'x' is not a number",
        "errors": [{"field": "Edad", "message": "'x' is not a number"}],
    }
    services.on(CONTACTS, "PATCH", path, httpx.Response(422, json=problem))
    fields = {"csrf_token": token, "action": "fields", "field_edad": "x", "field_ciudad": "Viña"}
    refused = await console.post("/contacts/p1/ana@example.cl", data=fields)
    assert refused.status_code == 422
    assert sent(services, CONTACTS, "PATCH", path)[-1] == {
        "fields": {"Nacimiento": "", "Edad": "x", "Socio": "", "Ciudad": "Viña", "Móvil": ""}
    }
    assert '<p id="field_edad_error" class="error">&#39;x&#39; is not a number</p>' in refused.text
    assert 'name="field_edad" value="x"' in refused.text  # as typed, not as stored


async def test_the_contact_pages_forms_need_the_csrf_token(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    await signed_in()
    for path in ("/contacts/new", "/contacts/bulk", "/contacts/p1/ana@example.cl"):
        assert (await console.post(path, data={"csrf_token": "forged"})).status_code == 403


async def test_the_contacts_pages_speak_spanish(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    contact_services(services)
    await console.post("/locale", data={"csrf_token": token, "locale": "es", "back": "/"})
    page = await console.get("/contacts/p1/ana@example.cl")
    assert "Cambiar estado" in page.text and "Perfiles virtuales" in page.text
    assert "Estado: Activo → Desuscrito" in page.text
    form = await console.get("/contacts/new?profile_id=p1")
    assert "<h1>Nuevo Contacto</h1>" in form.text and "Guardar y agregar otro" in form.text


async def test_pages_go_forward_by_cursor_and_back_by_the_cursors_kept_in_the_address(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    with_profiles(services)
    page_of = {"items": [contact("ana@example.cl")], "next_cursor": "c4"}
    services.on(CONTACTS, "GET", "/v1/profiles/p1/contacts", httpx.Response(200, json=page_of))
    services.on(
        CONTACTS, "GET", "/v1/profiles/p1/contacts:count", httpx.Response(200, json={"count": 200})
    )
    # Page 3, reached from page 1 (no cursor) and page 2 (cursor c2), starts at c3.
    third = (await console.get("/contacts?profile_id=p1&cursor=c3&page=3&back=c2")).text
    assert "Page 3" in third
    assert 'href="/contacts?profile_id=p1&amp;cursor=c2&amp;page=2" rel="prev">' in third
    assert (
        'href="/contacts?profile_id=p1&amp;cursor=c4&amp;page=4&amp;back=c2.c3" rel="next">'
        in third
    )
    assert '<a href="/contacts?profile_id=p1">First page</a>' in third
    # Page 2's previous is the first page.
    second = (await console.get("/contacts?profile_id=p1&cursor=c2&page=2")).text
    assert 'href="/contacts?profile_id=p1" rel="prev">' in second
    # Past the pages kept, or from an address edited by hand, only the first page's link.
    deep = (await console.get("/contacts?profile_id=p1&cursor=c30&page=30&back=x%3Cy")).text
    assert 'rel="prev"' not in deep and "First page" in deep and "Page 30" in deep
