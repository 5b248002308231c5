"""Import Contacts and Logs: the forms and fragments, with the services replaced at the HTTP
boundary."""

from __future__ import annotations

import email.parser
import json
import tempfile
from typing import Any

import httpx
from console.i18n import catalogue
from console.import_pages import (
    ACTION_LABELS,
    COUNT_LABELS,
    DATE_ORDERS,
    DELIMITER_LABELS,
    MATCH_LABELS,
    ORIGINS,
    PLAN_BYTES,
    STATUS_LABELS,
    UPLOAD_CHUNK_BYTES,
    StreamedForm,
)
from starlette.datastructures import UploadFile

FakeServices = Any  # conftest.FakeServices

PROFILE = {
    "id": "p1",
    "name": "Clientes",
    "type": "regular",
    "fields": [
        {"name": "email", "key": "email", "type": "email", "required": True, "identity": True},
        {"name": "Nombre", "key": "nombre", "type": "text", "required": False, "identity": False},
        {"name": "Edad", "key": "edad", "type": "number", "required": False, "identity": False},
    ],
}
PLAN = {
    "profile_id": "p1",
    "encoding": "utf-8",
    "delimiter": ";",
    "date_order": "month_first",
    "dates": {"day_first": 0, "month_first": 2, "ambiguous": 0},
    "rows_sampled": 2,
    "columns": [
        {
            "column": "Correo",
            "match": "unknown",
            "field": None,
            "type": None,
            "examples": ["ana@example.com"],
        },
        {"column": "Nombre", "match": "exact", "field": "Nombre", "type": "text", "examples": []},
        {"column": "Años", "match": "unknown", "field": None, "type": None, "examples": ["31"]},
    ],
    "unknown_columns": ["Correo"],
    "duplicate_columns": [],
    "missing_identity": "email",
    "problems": [
        {"column": "Correo", "reason": "matches no field of the profile"},
        {"column": "Años", "reason": "is mapped to 'Age', no field of the profile"},
        {"column": "email", "reason": "the column identifying contacts is missing from the header"},
        {"column": "column 4", "reason": "has no name in the header"},
    ],
    "mapping": {"Correo": None, "Nombre": "Nombre", "Años": "Age"},
    "ready": False,
}


def job(status: str = "running", **changes: Any) -> dict[str, Any]:
    """An import as import-svc tells it."""
    return {
        "id": "imp1",
        "profile_id": "p1",
        "action": "append",
        "reference": "Feria",
        "file_name": "clientes.csv",
        "size": 2_500_000,
        "status": status,
        "counts": {"read": 1200, "refused": 3, "applied": 1197, "created": 1197},
        "progress": {
            "bytes_total": 2_500_000,
            "bytes_read": 1_000_000,
            "rows_total": None,
            "rows_done": 1200,
            "percent": 42.5,
        },
        "rows_per_second": 120.5,
        "created_at": "2026-12-05T11:53:28.595000Z",
        "started_at": "2026-12-05T11:53:28.908000Z",
        "finished_at": None,
        "error": None,
        "problems": [],
        "notices": [],
    } | changes


def form_parts(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart request's parts: name -> (file name, content)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + request.content)
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts[str(name)] = (part.get_filename(), payload)
    return parts


def recorded(
    sent: list[httpx.Request], answer: httpx.Response
) -> Any:  # a FakeServices handler keeping each request
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer

    return handle


async def test_the_import_form_offers_the_profiles_one_can_import_into_and_the_seed_actions(
    console: httpx.AsyncClient, signed_in: Any
) -> None:
    await signed_in()
    page = await console.get("/imports/new")
    assert page.status_code == 200
    assert '<a href="/imports/new" aria-current="page">Import Contacts</a>' in page.text
    assert ">Clientes (Regular)</option>" in page.text and "Santiago" not in page.text
    actions = [page.text.index(f"> {label}</label>") for label in ACTION_LABELS.values()]
    assert actions == sorted(actions)  # the seed's order
    for origin in ("CSV file", "Copy - Paste"):
        assert origin in page.text
    assert 'enctype="multipart/form-data"' in page.text and "Check header" in page.text


async def test_the_import_form_speaks_spanish(console: httpx.AsyncClient, signed_in: Any) -> None:
    token = await signed_in()
    await console.post("/locale", data={"csrf_token": token, "locale": "es"})
    page = await console.get("/imports/new")
    for spanish in ("Importar Contactos", "Copiar - Pegar", "Agregar o Actualizar", "Referencia"):
        assert spanish in page.text
    assert "Revisar encabezado" in page.text


async def test_the_profiles_service_down_is_said_and_the_form_still_shows(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(8101, "GET", "/v1/profiles", httpx.ConnectError("refused"))
    page = await console.get("/imports/new")
    assert page.status_code == 200
    assert "The profiles service is not answering" in page.text
    assert 'id="import-form"' in page.text and "Traceback" not in page.text


async def test_the_header_check_of_pasted_rows_shows_the_plan_and_the_mapping_to_confirm(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    planned: list[httpx.Request] = []
    services.on(8103, "POST", "/v1/imports:plan", recorded(planned, httpx.Response(200, json=PLAN)))
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    text = "Correo;Nombre\nana@example.com;Ana\n"
    form = {"csrf_token": token, "profile_id": "p1", "origin": "paste", "text": text}
    fragment = await console.post(
        "/imports/plan", data={**form, "check": "header"}, headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 200
    assert "<html" not in fragment.text  # the plan alone: the page keeps the file chosen
    assert json.loads(planned[0].content) == {"profile_id": "p1", "text": text}
    html = fragment.text
    assert "semicolon" in html and "Month first (12/31/1990)</dd>" in html
    assert "No column fills email, the field identifying contacts" in html
    assert "An import with this mapping would fail" in html
    # Each column with a select of the profile's fields, the suggested field chosen.
    assert html.count('name="column"') == 3 and html.count('<select id="field_') == 3
    rows = html.split('<th scope="row">')[1:]
    correo, nombre, anos = rows
    assert "matches no field: skipped, unless you choose one" in correo
    assert "selected" not in correo and "aria-invalid" not in correo  # skipped: no problem
    assert 'value="Nombre" selected' in nombre
    # A column the mapping still uses: what is wrong with it, at its select.
    assert 'aria-invalid="true" aria-describedby="mapping_error_2"' in anos
    assert 'id="mapping_error_2" class="error">is mapped to &#39;Age&#39;' in anos
    # Problems of no column are said above the mapping; the missing identity once.
    assert "column 4: has no name in the header" in html
    assert "the column identifying contacts is missing" not in html
    assert '<option value="month_first" selected>' in html  # the dates' order found
    assert ">Import</button>" in html


async def test_the_header_check_of_a_file_sends_its_first_bytes_only(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    planned: list[httpx.Request] = []
    services.on(8103, "POST", "/v1/imports:plan", recorded(planned, httpx.Response(200, json=PLAN)))
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    big = b"Correo;Nombre\n" + b"ana@example.com;Ana\n" * 20_000  # 400 KB
    page = await console.post(
        "/imports/plan",
        data={"csrf_token": token, "profile_id": "p1", "origin": "file", "check": "header"},
        files={"file": ("clientes.csv", big, "text/csv")},
    )
    assert page.status_code == 200
    parts = form_parts(planned[0])
    assert parts["file"] == ("clientes.csv", big[: PLAN_BYTES + 1])
    assert parts["profile_id"] == (None, b"p1") and "mapping" not in parts
    # Without JavaScript the whole form comes back, the file to be chosen again.
    assert 'id="import-form"' in page.text and "Header check" in page.text
    assert "Choose the file again before Import" in page.text


async def test_checking_the_mapping_sends_it_as_set(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    planned: list[httpx.Request] = []
    services.on(8103, "POST", "/v1/imports:plan", recorded(planned, httpx.Response(200, json=PLAN)))
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    form = {
        "csrf_token": token,
        "profile_id": "p1",
        "origin": "paste",
        "text": "Correo;Nombre\na@b.cl;Ana\n",
        "column": ["Correo", "Nombre"],
        "field": ["email", ""],
        "check": "mapping",
    }
    await console.post("/imports/plan", data=form, headers={"HX-Request": "true"})
    assert json.loads(planned[0].content)["mapping"] == {"Correo": "email", "Nombre": None}


async def test_the_header_check_says_what_import_svc_refuses_or_that_it_is_down(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    form = {"csrf_token": token, "profile_id": "p1", "origin": "paste", "text": "x", "check": "h"}
    unknown = {"detail": "profile p1 is not known to import-svc"}
    services.on(8103, "POST", "/v1/imports:plan", httpx.Response(404, json=unknown))
    hx = {"HX-Request": "true"}
    refused = await console.post("/imports/plan", data=form, headers=hx)
    assert refused.status_code == 422
    assert "This profile is not ready for imports yet" in refused.text
    services.on(8103, "POST", "/v1/imports:plan", httpx.ReadTimeout("slow"))
    down = await console.post("/imports/plan", data=form, headers=hx)
    assert down.status_code == 503 and "The imports service is slow to answer" in down.text
    lacking = await console.post("/imports/plan", data={**form, "profile_id": ""}, headers=hx)
    assert lacking.status_code == 422
    assert '<p class="alert" role="alert">Choose a profile.</p>' in lacking.text


async def test_the_form_lacking_a_profile_or_a_file_says_so_at_the_inputs(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.calls.clear()
    page = await console.post(
        "/imports", data={"csrf_token": token, "profile_id": "", "origin": "file"}
    )
    assert page.status_code == 422
    assert 'aria-invalid="true" aria-describedby="profile_id_error"' in page.text
    assert 'id="file_error" class="error">Choose a CSV file.' in page.text
    assert [c.url.port for c in services.calls] == [8101]  # the picker only, no import asked


async def test_a_streamed_form_sends_the_file_in_pieces_with_its_length_told() -> None:
    spooled = tempfile.SpooledTemporaryFile(max_size=1024)
    content = b"email\n" + b"x@example.com\n" * 200_000  # 2.8 MB, on disk
    spooled.write(content)
    upload = UploadFile(spooled, size=len(content), filename='cli"entes.csv')
    body = StreamedForm({"profile_id": "p1"}, upload, boundary="b0undary")

    chunks = [chunk async for chunk in body.chunks()]
    assert len(chunks) >= 4 and max(len(c) for c in chunks) <= UPLOAD_CHUNK_BYTES
    sent = b"".join(chunks)
    assert int(body.headers()["Content-Length"]) == len(sent)
    request = httpx.Request("POST", "http://x/", headers=body.headers(), content=sent)
    assert form_parts(request) == {
        "profile_id": (None, b"p1"),
        "file": ("cli%22entes.csv", content),
    }


async def test_import_streams_the_file_with_the_confirmed_mapping_then_shows_its_progress(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    uploaded: list[httpx.Request] = []
    answer = httpx.Response(202, json=job("queued"))
    services.on(8103, "POST", "/v1/imports", recorded(uploaded, answer))
    content = b"Correo;Nombre\n" + b"ana@example.com;Ana\n" * 120_000  # 2.4 MB
    started = await console.post(
        "/imports",
        data={
            "csrf_token": token,
            "profile_id": "p1",
            "origin": "file",
            "action": "append_or_update",
            "reference": "Feria",
            "column": ["Correo", "Nombre"],
            "field": ["email", ""],
            "date_order": "month_first",
        },
        files={"file": ("clientes.csv", content, "text/csv")},
    )
    assert started.status_code == 303 and started.headers["location"] == "/imports/imp1"
    sent = uploaded[0]
    assert int(sent.headers["content-length"]) == len(sent.content)
    assert form_parts(sent) == {
        "profile_id": (None, b"p1"),
        "action": (None, b"append_or_update"),
        "date_order": (None, b"month_first"),
        "reference": (None, b"Feria"),
        "mapping": (None, json.dumps({"Correo": "email", "Nombre": None}).encode()),
        "file": ("clientes.csv", content),
    }


async def test_pasted_rows_are_imported_as_text(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    uploaded: list[httpx.Request] = []
    services.on(
        8103, "POST", "/v1/imports", recorded(uploaded, httpx.Response(202, json=job("queued")))
    )
    text = "email\tNombre\nana@example.com\tAna\n"
    form = {"csrf_token": token, "profile_id": "p1", "origin": "paste", "text": text}
    started = await console.post("/imports", data={**form, "action": "unsubscribe"})
    assert started.status_code == 303
    sent = httpx.QueryParams(uploaded[0].content.decode())
    assert sent["text"] == text and sent["action"] == "unsubscribe" and "mapping" not in sent


async def test_an_upload_over_the_limit_is_refused_with_the_limit_named(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    too_large = {"detail": "The request body exceeds 2147483648 bytes"}
    services.on(8103, "POST", "/v1/imports", httpx.Response(413, json=too_large))
    page = await console.post(
        "/imports",
        data={"csrf_token": token, "profile_id": "p1", "origin": "file"},
        files={"file": ("huge.csv", b"email\na@b.cl\n", "text/csv")},
    )
    assert page.status_code == 413
    assert "The file is larger than imports accept: at most 2 GB." in page.text


async def test_a_refused_mapping_is_shown_next_to_its_column(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    refusal = {
        "detail": "mapping.Correo: is mapped to 'Mail', no field of the profile",
        "errors": [{"field": "mapping.Correo", "message": "is mapped to 'Mail', no field"}],
    }
    services.on(8103, "POST", "/v1/imports", httpx.Response(422, json=refusal))
    page = await console.post(
        "/imports",
        data={
            "csrf_token": token,
            "profile_id": "p1",
            "origin": "paste",
            "text": "Correo\na@b.cl\n",
            "column": ["Correo"],
            "field": ["Mail"],
        },
    )
    assert page.status_code == 422
    assert 'aria-invalid="true" aria-describedby="mapping_error_0"' in page.text
    assert 'id="mapping_error_0" class="error">is mapped to &#39;Mail&#39;' in page.text
    assert "Correo\na@b.cl" in page.text  # the pasted rows kept


async def test_the_progress_part_polls_while_running_and_offers_more_at_the_end(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(8103, "GET", "/v1/imports/imp1", httpx.Response(200, json=job()))
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    page = await console.get("/imports/imp1")
    assert page.status_code == 200
    assert "<dd>Clientes</dd>" in page.text and "clientes.csv (2.4 MB)" in page.text
    running = await console.get("/imports/imp1/progress", headers={"HX-Request": "true"})
    assert 'hx-get="/imports/imp1/progress" hx-trigger="every 1s"' in running.text
    assert 'value="42.5"' in running.text and "42.5 %" in running.text
    assert "120.5 rows per second" in running.text and "3 refused so far" in running.text
    assert "Import More" not in running.text
    done = job("completed_with_errors", finished_at="2026-12-05T11:53:39.972000Z")
    services.on(8103, "GET", "/v1/imports/imp1", httpx.Response(200, json=done))
    ended = await console.get("/imports/imp1/progress", headers={"HX-Request": "true"})
    assert "hx-trigger" not in ended.text and "Completed with errors" in ended.text
    assert 'href="/imports/new?profile_id=p1">Import More</a>' in ended.text
    assert 'href="/logs">View Logs</a>' in ended.text
    assert 'Rows refused</th><td class="num">3</td>' in ended.text


async def test_the_imports_service_down_while_polling_is_said_and_polling_goes_on(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(8103, "GET", "/v1/imports/imp1", httpx.ConnectError("refused"))
    part = await console.get("/imports/imp1/progress", headers={"HX-Request": "true"})
    assert part.status_code == 200
    assert "The imports service is not answering" in part.text
    assert 'hx-trigger="every 1s"' in part.text
    page = await console.get("/imports/imp1")
    assert page.status_code == 200 and "The imports service is not answering" in page.text


LOGGED = [
    job("running", progress=None, rows_per_second=None),
    job(
        "completed_with_errors",
        id="imp0",
        profile_id="p2",
        reference=None,
        file_name=None,
        counts={"read": 20000, "refused": 40, "applied": 19960},
        finished_at="2026-12-05T11:53:39.972000Z",
        rows_per_second=1804.0,
    ),
]


async def test_the_log_lists_imports_newest_first_with_live_rows_for_running_ones(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    page_of_log = {"items": LOGGED, "next_cursor": "c2"}
    services.on(8105, "GET", "/v1/logs/imports", httpx.Response(200, json=page_of_log))
    services.on(8101, "GET", "/v1/profiles/p1", httpx.Response(200, json=PROFILE))
    services.on(8101, "GET", "/v1/profiles/p2", httpx.Response(404, json={"detail": "gone"}))
    page = await console.get("/logs")
    assert page.status_code == 200
    html = page.text
    assert html.index('id="import-imp1"') < html.index('id="import-imp0"')
    running = html[html.index('id="import-imp1"') : html.index('id="import-imp0"')]
    assert 'hx-get="/logs/imports/imp1/row?profile=Clientes" hx-trigger="every 1s"' in running
    assert 'action="/logs/imports/imp1/cancel"' in running and "Running" in running
    ended = html[html.index('id="import-imp0"') :]
    assert "hx-trigger" not in ended.split("</tr>")[0]
    assert "Completed with errors" in ended and "Append" in ended and "Copy - Paste" in ended
    assert '<span class="hint">p2</span>' in ended  # a profile gone: its id
    assert "11.1 s" in ended and "1,804" in ended and "19,960" in ended
    assert 'href="/logs/imports/imp0/refused"' in ended
    assert 'href="/logs/imports/imp0/refused.csv" download' in ended
    assert 'href="/logs?cursor=c2"' in html


async def test_a_running_row_is_told_live_by_import_svc_and_can_be_cancelled(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    token = await signed_in()
    services.on(8103, "GET", "/v1/imports/imp1", httpx.Response(200, json=job()))
    row = await console.get("/logs/imports/imp1/row?profile=Clientes")
    assert row.text.lstrip().startswith('<tr id="import-imp1"')
    assert "42.5 %" in row.text and "<td>Clientes</td>" in row.text
    cancelled: list[httpx.Request] = []
    answer = httpx.Response(200, json=job("cancelled"))
    services.on(8103, "POST", "/v1/imports/imp1:cancel", recorded(cancelled, answer))
    services.on(8103, "GET", "/v1/imports/imp1", httpx.Response(200, json=job("cancelled")))
    form = {"csrf_token": token, "profile": "Clientes"}
    hx = await console.post("/logs/imports/imp1/cancel", data=form, headers={"HX-Request": "1"})
    assert len(cancelled) == 1
    assert "Cancelled" in hx.text and "hx-trigger" not in hx.text
    plain = await console.post("/logs/imports/imp1/cancel", data=form)
    assert plain.status_code == 303 and plain.headers["location"] == "/logs"
    services.on(8103, "POST", "/v1/imports/imp1:cancel", httpx.ConnectError("refused"))
    services.on(8103, "GET", "/v1/imports/imp1", httpx.ConnectError("refused"))
    down = await console.post("/logs/imports/imp1/cancel", data=form, headers={"HX-Request": "1"})
    assert down.status_code == 200 and "The imports service is not answering" in down.text
    assert 'hx-trigger="every 1s"' in down.text  # asked again until it answers


async def test_the_log_service_down_is_said_in_the_page(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.on(8105, "GET", "/v1/logs/imports", httpx.Response(503, json={"detail": "x"}))
    page = await console.get("/logs")
    assert page.status_code == 200
    assert "The logs service is slow to answer" in page.text
    assert '<a href="/logs" aria-current="page">Logs</a>' in page.text


async def test_refused_rows_are_shown_a_page_at_a_time(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    refused = {
        "header": ["email", "Edad"],
        "items": [
            {
                "line": 3,
                "errors": [{"field": "email", "value": "no-es-email", "message": "no @"}],
                "row": ["no-es-email", "31"],
            }
        ],
        "next_after_line": 3,
    }
    asked: list[httpx.Request] = []
    route = "/v1/logs/imports/imp0/refused"
    services.on(8105, "GET", route, recorded(asked, httpx.Response(200, json=refused)))
    logged = LOGGED[1]
    services.on(8105, "GET", "/v1/logs/imports/imp0", httpx.Response(200, json=logged))
    page = await console.get("/logs/imports/imp0/refused?after_line=2")
    assert page.status_code == 200
    assert dict(asked[0].url.params) == {"format": "json", "after_line": "2", "limit": "50"}
    assert '<th scope="col">Edad</th>' in page.text
    assert "email «no-es-email»: no @" in page.text and "<td>31</td>" in page.text
    assert 'href="/logs/imports/imp0/refused?after_line=3">Next page' in page.text
    assert 'href="/logs/imports/imp0/refused">First page' in page.text


async def test_refused_rows_download_as_csv_streamed_from_log_svc(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    csv = b"line,problems,email\r\n3,email 'no-es-email': no @,no-es-email\r\n"
    answer = httpx.Response(200, content=csv, headers={"content-type": "text/csv"})
    services.on(8105, "GET", "/v1/logs/imports/imp0/refused", answer)
    download = await console.get("/logs/imports/imp0/refused.csv")
    assert download.status_code == 200 and download.content == csv
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "refused-imp0.csv" in download.headers["content-disposition"]


async def test_every_state_changing_request_needs_the_csrf_token(
    console: httpx.AsyncClient, services: FakeServices, signed_in: Any
) -> None:
    await signed_in()
    services.calls.clear()
    for path in ("/imports/plan", "/imports", "/logs/imports/imp1/cancel"):
        refused = await console.post(path, data={"profile_id": "p1", "csrf_token": "forged"})
        assert refused.status_code == 403, path
    assert services.calls == []


def test_every_label_of_imports_and_logs_has_its_spanish_translation() -> None:
    spanish = catalogue("es")
    labels = [
        *ACTION_LABELS.values(),
        *ORIGINS.values(),
        *DATE_ORDERS.values(),
        *STATUS_LABELS.values(),
        *MATCH_LABELS.values(),
        *DELIMITER_LABELS.values(),
        *COUNT_LABELS.values(),
    ]
    assert [label for label in labels if not spanish.get(label)] == []
