"""The console's pages and forms, with the services replaced at the HTTP boundary."""

from __future__ import annotations

from typing import Any

import httpx
from console.web import section_of

FakeServices = Any  # conftest.FakeServices

STATS = {"active": 1200, "unsubscribed": 3, "bounced": 2, "complained": 0, "blocked": 0}


def stats(total: int, **by_status: int) -> dict[str, Any]:
    return {"total": total, "by_status": {**dict.fromkeys(STATS, 0), **by_status}}


async def test_a_signed_out_request_goes_to_sign_in_and_back(console: httpx.AsyncClient) -> None:
    answer = await console.get("/profiles")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?next=/profiles"
    htmx = await console.get("/profiles", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"] == "/sign-in?next=/profiles"


async def test_a_key_the_services_refuse_does_not_sign_in(
    console: httpx.AsyncClient, services: FakeServices, csrf: Any
) -> None:
    services.on(8101, "GET", "/v1/profiles", httpx.Response(401, json={"detail": "bad key"}))
    form = await console.get("/sign-in")
    answer = await console.post(
        "/sign-in", data={"api_key": "wrong", "next": "/profiles", "csrf_token": csrf(form.text)}
    )
    assert answer.status_code == 401
    assert "This key is not accepted." in answer.text
    assert (await console.get("/profiles")).status_code == 303


async def test_signed_in_the_key_stays_out_of_pages_and_cookies_in_clear(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in("secret-key-123")
    page = await console.get("/profiles")
    assert page.status_code == 200
    assert "secret-key-123" not in page.text
    cookie = console.cookies["console_session"]
    assert "secret-key-123" not in cookie
    assert all(call.headers["authorization"] == "Bearer secret-key-123" for call in services.calls)


async def test_every_state_changing_request_needs_the_pages_csrf_token(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    token = await signed_in()
    for path, data in (
        ("/sign-out", {}),
        ("/locale", {"locale": "es"}),
        ("/profiles/new", {"name": "X", "action": "save"}),
    ):
        refused = await console.post(path, data=data)
        assert refused.status_code == 403, path
        forged = await console.post(path, data={**data, "csrf_token": "forged"})
        assert forged.status_code == 403, path
    assert (await console.get("/profiles")).status_code == 200  # still signed in
    out = await console.post("/sign-out", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await console.get("/profiles")).status_code == 303


async def test_the_profile_list_shows_each_profiles_counts_from_one_call_per_service(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(
        8102, "GET", "/v1/stats", httpx.Response(200, json={"stats": {"p1": stats(1205, **STATS)}})
    )
    services.on(
        8104, "GET", "/v1/stats", httpx.Response(200, json={"stats": {"v1": stats(7, active=7)}})
    )
    services.calls.clear()
    page = await console.get("/profiles")
    assert page.status_code == 200
    asked = {(c.url.port, c.url.path): c.url.params.get_list("profile_id") for c in services.calls}
    assert asked == {
        (8101, "/v1/profiles"): [],
        (8102, "/v1/stats"): ["p1"],
        (8104, "/v1/stats"): ["v1"],
    }
    assert "1,205" in page.text and "1,200" in page.text
    assert 'href="/contacts?profile_id=p1&amp;status=bounced">2<' in page.text
    assert "Nov 2, 2026" in page.text


async def test_a_service_down_is_said_in_the_page_and_the_rest_still_shows(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(8102, "GET", "/v1/stats", httpx.ConnectError("refused"))
    services.on(8104, "GET", "/v1/stats", httpx.ReadTimeout("slow"))
    page = await console.get("/profiles")
    assert page.status_code == 200
    assert "The contacts service is not answering" in page.text
    assert "The segments service is slow to answer" in page.text
    assert "Clientes" in page.text and "Traceback" not in page.text
    services.on(8101, "GET", "/v1/profiles", httpx.Response(500, text="boom"))
    down = await console.get("/profiles")
    assert "The profiles service is not answering" in down.text and "boom" not in down.text


async def test_new_profile_adds_and_removes_field_rows_then_saves(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    form = {"csrf_token": token, "name": "Clientes", "description": "", "type": "regular"}
    added = await console.post("/profiles/new", data={**form, "action": "add"})
    assert added.text.count('name="field_name"') == 1
    two = {**form, "field_name": ["Ciudad", "Edad"], "field_type": ["text", "number"]}
    removed = await console.post("/profiles/new", data={**two, "action": "remove:0"})
    assert removed.text.count('name="field_name"') == 1 and 'value="Edad"' in removed.text
    sent: list[Any] = []

    def create(request: httpx.Request) -> httpx.Response:
        sent.append(httpx.Response(200, content=request.content).json())
        return httpx.Response(201, json={"id": "new1", **sent[-1]})

    services.on(8101, "POST", "/v1/profiles", create)
    saved = await console.post("/profiles/new", data={**two, "action": "save"})
    assert saved.status_code == 303 and saved.headers["location"] == "/profiles?created=new1"
    assert sent == [
        {
            "name": "Clientes",
            "type": "regular",
            "fields": [{"name": "Ciudad", "type": "text"}, {"name": "Edad", "type": "number"}],
        }
    ]


async def test_a_refusal_is_shown_next_to_the_input_it_names(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    problem = {
        "detail": "fields[0].name: a field named email exists",
        "errors": [{"field": "fields[0].name", "message": "a field named email exists"}],
    }
    services.on(8101, "POST", "/v1/profiles", httpx.Response(422, json=problem))
    answer = await console.post(
        "/profiles/new",
        data={
            "csrf_token": token,
            "name": "X",
            "type": "regular",
            "field_name": ["Email"],
            "field_type": ["text"],
            "action": "save",
        },
    )
    assert answer.status_code == 422
    assert 'aria-describedby="field_error_0"' in answer.text
    assert '<p id="field_error_0" class="error">a field named email exists</p>' in answer.text


async def test_spanish_is_chosen_once_and_kept_with_its_numbers_and_dates(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(
        8102, "GET", "/v1/stats", httpx.Response(200, json={"stats": {"p1": stats(1205, **STATS)}})
    )
    chosen = await console.post(
        "/locale", data={"csrf_token": token, "locale": "es", "back": "/profiles"}
    )
    assert chosen.status_code == 303 and chosen.headers["location"] == "/profiles"
    page = await console.get("/profiles")
    assert '<html lang="es">' in page.text
    assert "Listar Perfiles" in page.text and "Nuevo Perfil" in page.text
    assert "1.205" in page.text  # Spanish thousands
    assert "2 nov 2026" in page.text
    again = await console.post(
        "/locale", data={"csrf_token": token, "locale": "es", "back": "https://evil.example/"}
    )
    assert again.headers["location"] == "/profiles"  # never another site


async def test_the_seven_sections_are_in_the_seeds_order(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    await signed_in()
    page = await console.get("/profiles")
    order = [
        "New Profile",
        "List Profiles",
        "Virtual Profile",
        "New Contact",
        "List Contacts",
        "Import Contacts",
        "Logs",
    ]
    positions = [page.text.index(f">{title}</a>") for title in order]
    assert positions == sorted(positions)
    assert 'aria-current="page">List Profiles' in page.text


def test_a_page_belongs_to_the_section_it_lives_under() -> None:
    assert {
        path: section_of(path)
        for path in ("/profiles/new", "/profiles/p1", "/contacts/p1/ana@x.io", "/imports/i1")
    } == {
        "/profiles/new": "new-profile",
        "/profiles/p1": "profiles",
        "/contacts/p1/ana@x.io": "contacts",
        "/imports/i1": "import",
    }
    assert section_of("/sign-in") is None


async def test_an_address_that_is_no_page_or_a_value_no_page_makes_is_said_in_a_page(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    await signed_in()
    missing = await console.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "There is no page at this address." in missing.text
    assert 'aria-current="page"' not in missing.text  # no section claims it
    edited = await console.get("/logs/imports/i1/refused", params={"after_line": "many"})
    assert edited.status_code == 422
    assert "It has a value no page of the console makes: after_line." in edited.text
    wrong_method = await console.delete("/profiles")
    assert wrong_method.status_code == 405
    assert "GET" in wrong_method.headers["allow"]
    assert "The console could not read this request." in wrong_method.text


async def test_the_console_is_ready_while_a_service_is_down(
    console: httpx.AsyncClient, services: FakeServices
) -> None:
    services.on(8101, "GET", "/v1/profiles", httpx.ConnectError("refused"))
    ready = await console.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
