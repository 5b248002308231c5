"""The interactive API docs on a closed network: each service's /docs (Swagger UI) and /redoc,
opened in Debian's headless Chromium (driven by Playwright, which downloads no browser) with
every request that would leave 127.0.0.1 refused, render every operation of the service."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route

pytestmark = pytest.mark.integration

# The services with an HTTP API, as `make run` starts them: tag in platform_env, ASGI factory.
SERVICES = {
    "profile": "profile_svc.app:create_app",
    "contact": "contact_svc.app:create_app",
    "import": "import_svc.app:create_app",
    "segment": "segment_svc.app:create_app",
    "log": "log_svc.app:create_app",
}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
RENDER_TIMEOUT_MS = 20_000


async def offline_page(browser: Browser, left_the_machine: list[str]) -> Page:
    """A page on which every request for a host other than this machine is noted and aborted."""
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})

    async def refuse_outside(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in {"http", "https", "ws", "wss"} and url.hostname not in LOCAL_HOSTS:
            left_the_machine.append(route.request.url)
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    await page.route("**/*", refuse_outside)
    return page


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of an OpenAPI document, with its method and path."""
    return [
        {**operation, "method": method.upper(), "path": path}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


async def test_each_service_renders_its_docs_with_no_request_leaving_the_machine(
    service_process: Any, platform_env: Any, browser: Browser, tmp_path: Path
) -> None:
    envs = platform_env("docs")
    services = {tag: service_process(factory, envs[tag]) for tag, factory in SERVICES.items()}
    for service in services.values():
        service.start()

    async with httpx.AsyncClient(timeout=10) as api:
        for tag, service in services.items():
            spec = (await api.get(f"{service.url}/openapi.json")).json()
            expected = operations(spec)
            assert expected, f"{tag}: no operation in /openapi.json"
            left_the_machine: list[str] = []

            # Swagger UI: the title, and each operation once under each of its tags.
            page = await offline_page(browser, left_the_machine)
            await page.goto(f"{service.url}/docs")
            title = page.locator(".swagger-ui .info .title")
            await title.wait_for(timeout=RENDER_TIMEOUT_MS)
            assert spec["info"]["title"] in await title.inner_text()
            in_swagger = Counter(
                (op["method"], op["path"]) for op in expected for _ in op.get("tags") or [None]
            )
            await page.wait_for_function(
                "n => document.querySelectorAll('.swagger-ui .opblock').length >= n",
                arg=sum(in_swagger.values()),
                timeout=RENDER_TIMEOUT_MS,
            )
            shown = await page.eval_on_selector_all(
                ".swagger-ui .opblock",
                """blocks => blocks.map(block => [
                    block.querySelector('.opblock-summary-method').textContent,
                    block.querySelector('.opblock-summary-path').dataset.path,
                ])""",
            )
            assert Counter(tuple(pair) for pair in shown) == in_swagger, tag
            swagger_png = tmp_path / f"{tag}-docs.png"
            await page.screenshot(path=swagger_png)
            await page.close()

            # ReDoc: the title, and a section for every operation.
            page = await offline_page(browser, left_the_machine)
            await page.goto(f"{service.url}/redoc")
            title = page.locator(".api-info h1")
            await title.wait_for(timeout=RENDER_TIMEOUT_MS)
            assert spec["info"]["title"] in await title.inner_text()
            operation_ids = {op["operationId"] for op in expected}
            await page.wait_for_function(
                """n => new Set([...document.querySelectorAll('[data-section-id]')]
                    .map(section => section.dataset.sectionId.split('operation/')[1])
                    .filter(Boolean)).size >= n""",
                arg=len(operation_ids),
                timeout=RENDER_TIMEOUT_MS,
            )
            sections = await page.eval_on_selector_all(
                "[data-section-id]", "sections => sections.map(s => s.dataset.sectionId)"
            )
            shown_ids = {s.split("operation/")[1] for s in sections if "operation/" in s}
            assert shown_ids == operation_ids, tag
            redoc_png = tmp_path / f"{tag}-redoc.png"
            await page.screenshot(path=redoc_png)
            await page.close()

            assert left_the_machine == [], f"{tag}: requests that would have left the machine"
            print(f"{tag}-svc: {len(expected)} operations shown; {swagger_png} {redoc_png}")
