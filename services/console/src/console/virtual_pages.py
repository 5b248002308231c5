"""Virtual Profile: the list, the rule builder with its live preview, and the members."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import FormData

from console.backends import PROFILES, SEGMENTS, Api, Refused, ServiceDown, or_outage
from console.web import PROFILE_ID, CsrfChecked, PageFor, ProfileId, SignedIn, stream_through

router = APIRouter()
T = TypeVar("T")

PAGE_SIZE = 50
# profile-svc's largest page: the regular profiles offered as the one to segment.
BASE_CHOICES = 200
# The builder's own bounds (profile-svc refuses a tree of more than 200 conditions anyway).
MAX_GROUPS = 20
MAX_CONDITIONS = 200
# Every contact's status: rules may read it besides the base profile's own fields.
STATUS = "status"
# -- the list -------------------------------------------------------------------------------------


@router.get("/virtual-profiles", response_class=HTMLResponse)
async def list_virtual_profiles(
    page: PageFor, api: SignedIn, name: str = "", cursor: str = ""
) -> HTMLResponse:
    """The account's virtual profiles by name, 50 a page, with their members: one call to
    profile-svc, then one to segment-svc for the page's counts."""
    params: dict[str, Any] = {"type": "virtual", "sort": "name", "limit": PAGE_SIZE}
    params |= {"name": name} if name else {}
    params |= {"cursor": cursor} if cursor else {}
    listed = await or_outage(api.get(PROFILES, "/v1/profiles", **params))
    if isinstance(listed, ServiceDown):
        return page.render("virtual_list.html", down=listed, name=name, listed=None, rows=[])
    ids = [profile["id"] for profile in listed["items"]]
    counted: dict[str, Any] | ServiceDown = {}
    if ids:
        answer = await or_outage(api.get(SEGMENTS, "/v1/stats", profile_id=ids))
        counted = answer if isinstance(answer, ServiceDown) else answer["stats"]
    stats = {} if isinstance(counted, ServiceDown) else counted
    return page.render(
        "virtual_list.html",
        down=None,
        stats_down=counted if isinstance(counted, ServiceDown) else None,
        name=name,
        listed=listed,
        rows=[(profile, stats.get(profile["id"])) for profile in listed["items"]],
    )


# -- the rule builder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """An operator of rules as profile-svc offers it: its value's shape decides the input
    (none, one, two, list, days)."""

    name: str
    label: str
    shape: str


Operators = dict[str, list[Operator]]  # by kind: a field type, or `status`


async def operators_of(api: Api) -> Operators:
    answer = await api.get(PROFILES, "/v1/rule-operators")
    return {
        kind: [Operator(op["name"], op["label"], op["value"]) for op in ops]
        for kind, ops in answer["field_types"].items()
    }


@dataclass
class ConditionDraft:
    field: str = ""
    op: str = ""
    value: str = ""
    value2: str = ""


def _one_condition() -> list[ConditionDraft]:
    return [ConditionDraft()]


@dataclass
class GroupDraft:
    match: str = "all"
    conditions: list[ConditionDraft] = field(default_factory=_one_condition)


def _one_group() -> list[GroupDraft]:
    return [GroupDraft()]


_GROUP_INPUT = re.compile(r"^g(\d{1,3})_match$")
_CONDITION_INPUT = re.compile(r"^g(\d{1,3})_c(\d{1,3})_(field|op|value|value2)$")


def _match(value: object) -> str:
    return "any" if value == "any" else "all"


@dataclass
class VirtualDraft:
    """The builder as the person left it: groups of conditions (all or any of them), the
    groups themselves joined by all or any. Saved only by Save."""

    name: str = ""
    description: str = ""
    base_profile_id: str = ""
    match: str = "all"
    groups: list[GroupDraft] = field(default_factory=_one_group)

    @classmethod
    def of(cls, form: FormData) -> VirtualDraft:
        """From the form's inputs (`g0_match`, `g0_c1_field`, `g0_c1_op`, `g0_c1_value`...),
        groups and conditions in their inputs' order, numbered again from 0."""
        groups: dict[int, tuple[list[str], dict[int, dict[str, str]]]] = {}
        for key, value in form.multi_items():
            if not isinstance(value, str):
                continue
            if found := _GROUP_INPUT.match(key):
                groups.setdefault(int(found[1]), (["all"], {}))[0][0] = _match(value)
            elif found := _CONDITION_INPUT.match(key):
                _, conditions = groups.setdefault(int(found[1]), (["all"], {}))
                conditions.setdefault(int(found[2]), {})[found[3]] = value.strip()
        base = str(form.get("base_profile_id", ""))
        return cls(
            name=str(form.get("name", "")).strip(),
            description=str(form.get("description", "")).strip(),
            base_profile_id=base if PROFILE_ID.match(base) else "",
            match=_match(form.get("match")),
            # No group yet (the profile to segment was not chosen): the first one, to fill.
            groups=[
                GroupDraft(
                    match=match[0],
                    conditions=[
                        ConditionDraft(**conditions[i]) for i in sorted(conditions)[:MAX_CONDITIONS]
                    ],
                )
                for match, conditions in (groups[g] for g in sorted(groups)[:MAX_GROUPS])
            ]
            or _one_group(),
        )

    def change(self, action: str) -> str | None:
        """Apply a button of the builder (add or remove a condition or a group); the id of the
        input to give the focus to afterwards, if any."""
        kind, _, where = action.partition(":")
        at = [int(n) for n in where.split(":") if n.isdigit()]
        if kind == "add-group" and len(self.groups) < MAX_GROUPS:
            self.groups.append(GroupDraft())
            return f"g{len(self.groups) - 1}_c0_field"
        if kind == "remove-group" and len(at) == 1 and at[0] < len(self.groups):
            del self.groups[at[0]]
            return "add-group"
        if kind == "add" and len(at) == 1 and at[0] < len(self.groups):
            conditions = self.groups[at[0]].conditions
            conditions.append(ConditionDraft())
            return f"g{at[0]}_c{len(conditions) - 1}_field"
        if kind == "remove" and len(at) == 2 and at[0] < len(self.groups):
            conditions = self.groups[at[0]].conditions
            if at[1] < len(conditions):
                del conditions[at[1]]
            return f"add-{at[0]}"
        return None

    def fit(self, kinds: dict[str, str], operators: Operators) -> None:
        """Each condition on a field of the base profile and an operator of that field's type:
        a new condition, or one whose field or type changed, takes the first that fits."""
        for group in self.groups:
            for condition in group.conditions:
                if condition.field not in kinds:
                    condition.field = next(iter(kinds))
                names = [op.name for op in operators.get(kinds[condition.field], [])]
                if condition.op not in names and names:
                    condition.op = names[0]


def kinds_of(base: dict[str, Any]) -> dict[str, str]:
    """What rules may read of a base profile's contacts, by name: its fields by type, and the
    contact's status."""
    return {spec["name"]: spec["type"] for spec in base["fields"]} | {STATUS: STATUS}


def _shape(operators: Operators, kind: str, op: str) -> str:
    return next((o.shape for o in operators.get(kind, []) if o.name == op), "one")


def _typed(kind: str, text: str) -> Any:
    """A value as the field's type holds it; what does not read as one goes as typed, for
    profile-svc to name what is wrong with it (shown next to the condition)."""
    if kind != "number":
        return text
    for parse in (int, float):
        try:
            number = parse(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else text
    return text


def _value(kind: str, shape: str, condition: ConditionDraft) -> Any:
    match shape:
        case "two":
            return [_typed(kind, condition.value), _typed(kind, condition.value2)]
        case "list":
            return [
                _typed(kind, part.strip()) for part in condition.value.split(",") if part.strip()
            ]
        case "days":
            return int(condition.value) if condition.value.isdigit() else condition.value
        case _:
            return _typed(kind, condition.value)


@dataclass(frozen=True)
class Rules:
    """The draft as profile-svc and segment-svc take rules, and where each of its conditions
    is in that tree (`rules.all[0]`), to show a refusal next to the condition it names."""

    tree: dict[str, Any] | None
    paths: dict[str, str]  # the condition's path in the tree -> its inputs' prefix (`g0_c0`)


def rules_of(draft: VirtualDraft, kinds: dict[str, str], operators: Operators) -> Rules:
    built: list[tuple[int, str, list[dict[str, Any]]]] = []
    for g, group in enumerate(draft.groups):
        conditions: list[dict[str, Any]] = []
        for condition in group.conditions:
            kind = kinds.get(condition.field, "text")
            shape = _shape(operators, kind, condition.op)
            node: dict[str, Any] = {"field": condition.field, "op": condition.op}
            conditions.append(
                node | ({} if shape == "none" else {"value": _value(kind, shape, condition)})
            )
        if conditions:  # a group left empty is not sent: the API refuses empty groups
            built.append((g, group.match, conditions))
    paths: dict[str, str] = {}
    if not built:
        return Rules(None, paths)
    if len(built) == 1:
        g, match, conditions = built[0]
        paths = {f"rules.{match}[{i}]": f"g{g}_c{i}" for i in range(len(conditions))}
        return Rules({match: conditions}, paths)
    for n, (g, match, conditions) in enumerate(built):
        paths |= {
            f"rules.{draft.match}[{n}].{match}[{i}]": f"g{g}_c{i}" for i in range(len(conditions))
        }
    return Rules({draft.match: [{match: conditions} for _, match, conditions in built]}, paths)


_LIST_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def _tree_path(field_path: str) -> str:
    """A refusal's field as profile-svc's rules name it (`rules.all[0].op`): request validation
    names it `rules.all.0.condition.op`."""
    path = field_path.replace(".condition.", ".").replace(".group.", ".")
    return _LIST_INDEX.sub(r"[\1]", path)


@dataclass
class BuilderErrors:
    """A refusal's fields: the form's own inputs (`name`...), each condition's (by its inputs'
    prefix: which input and what), and what names no input."""

    inputs: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, refused: Refused, rules: Rules) -> BuilderErrors:
        errors = cls()
        for name, message in (refused.errors or {"": refused.detail}).items():
            path = _tree_path(name)
            condition = next(
                (p for p in sorted(rules.paths, key=len, reverse=True) if path.startswith(p)), None
            )
            if condition is not None:
                part = path.removeprefix(condition).lstrip(".") or "value"
                errors.conditions[rules.paths[condition]] = (part.split(".")[0], message)
            elif name in ("name", "description", "base_profile_id"):
                errors.inputs[name] = message
            else:
                errors.general.append(message)
        return errors


@dataclass(frozen=True)
class Builder:
    """What the builder needs beside the draft: the base profile's fields (by kind) and the
    operators; or why it cannot be shown."""

    kinds: dict[str, str]
    operators: Operators
    base: dict[str, Any] | None
    down: ServiceDown | None = None
    base_missing: str | None = None


async def _base_of(api: Api, base_profile_id: str) -> dict[str, Any] | str | None:
    """The regular profile to segment; or why there is none (profile-svc's refusal); None
    when none is chosen."""
    if not base_profile_id:
        return None
    try:
        base: dict[str, Any] = await api.get(PROFILES, f"/v1/profiles/{base_profile_id}")
    except Refused as refused:
        return refused.detail
    return base if base["type"] != "virtual" else None


async def builder_for(api: Api, draft: VirtualDraft) -> Builder:
    """The base profile and the operators (side by side), the draft fitted to them."""
    operators, base = await asyncio.gather(
        or_outage(operators_of(api)), or_outage(_base_of(api, draft.base_profile_id))
    )
    if isinstance(operators, ServiceDown):
        return Builder({}, {}, None, down=operators)
    if isinstance(base, ServiceDown):
        return Builder({}, {}, None, down=base)
    if not isinstance(base, dict):
        return Builder({}, operators, None, base_missing=base)
    kinds = kinds_of(base)
    draft.fit(kinds, operators)
    return Builder(kinds, operators, base)


@dataclass(frozen=True)
class Preview:
    """What segment-svc says of the rules: how many contacts match and a sample; or why not."""

    answer: dict[str, Any] | None = None
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    down: ServiceDown | None = None
    unknown_base: bool = False
    no_rules: bool = False


async def preview_of(api: Api, draft: VirtualDraft, builder: Builder) -> Preview:
    if builder.base is None:
        return Preview(no_rules=True)
    rules = rules_of(draft, builder.kinds, builder.operators)
    if rules.tree is None:
        return Preview(no_rules=True)
    try:
        answer = await api.post(
            SEGMENTS,
            "/v1/segments:preview",
            {"base_profile_id": draft.base_profile_id, "rules": rules.tree},
        )
    except ServiceDown as down:
        return Preview(down=down)
    except Refused as refused:
        if refused.status == 404:  # segment-svc learns of a new profile a moment after
            return Preview(unknown_base=True)
        errors = BuilderErrors.of(refused, rules)
        numbers = condition_numbers(draft)
        return Preview(
            problems=[(numbers[key], message) for key, (_, message) in errors.conditions.items()]
            + [(None, message) for message in errors.general + list(errors.inputs.values())]
        )
    return Preview(answer=answer)


def condition_numbers(draft: VirtualDraft) -> dict[str, int]:
    """Each condition's number as the page shows it (1, 2... across the groups)."""
    keys = [
        f"g{g}_c{i}" for g, group in enumerate(draft.groups) for i in range(len(group.conditions))
    ]
    return {key: n for n, key in enumerate(keys, start=1)}


async def _regular_profiles(api: Api) -> list[dict[str, Any]] | ServiceDown:
    listed = await or_outage(
        api.get(PROFILES, "/v1/profiles", type="regular", sort="name", limit=BASE_CHOICES)
    )
    return listed if isinstance(listed, ServiceDown) else list(listed["items"])


async def render_new(
    page: PageFor,
    api: Api,
    draft: VirtualDraft,
    *,
    builder: Builder | None = None,
    errors: BuilderErrors | None = None,
    focus: str | None = None,
    down: ServiceDown | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The whole New virtual profile page, its preview included (for a browser without
    JavaScript; with htmx the preview comes by itself)."""
    choices, built = await asyncio.gather(
        _regular_profiles(api), builder_for(api, draft) if builder is None else _ready(builder)
    )
    preview = await preview_of(api, draft, built)
    return page.render(
        "virtual_new.html",
        status_code=status_code,
        draft=draft,
        choices=choices,
        builder=built,
        errors=errors or BuilderErrors(),
        numbers=condition_numbers(draft),
        preview=preview,
        focus=focus,
        down=down,
    )


async def _ready(value: T) -> T:
    return value


@router.get("/virtual-profiles/new", response_class=HTMLResponse)
async def new_virtual_profile(
    page: PageFor,
    api: SignedIn,
    name: str = "",
    description: str = "",
    base_profile_id: str = "",
) -> HTMLResponse:
    """The builder, empty (or with the name and description New Profile passed on)."""
    draft = VirtualDraft(
        name=name.strip()[:200],
        description=description.strip()[:2000],
        base_profile_id=base_profile_id if PROFILE_ID.match(base_profile_id) else "",
    )
    return await render_new(page, api, draft)


@router.post("/virtual-profiles/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def change_new_virtual_profile(request: Request, page: PageFor, api: SignedIn) -> Response:
    """The builder's buttons: add or remove a condition or a group, update, or Save. htmx asks
    for the builder alone (`HX-Target: builder`); a plain form, for the page."""
    form = await request.form()
    draft = VirtualDraft.of(form)
    action = str(form.get("action", "save"))
    if action != "save":
        focus = draft.change(action)
        if request.headers.get("hx-target") == "builder":
            builder = await builder_for(api, draft)
            response = page.render(
                "virtual_builder.html",
                draft=draft,
                builder=builder,
                errors=BuilderErrors(),
                numbers=condition_numbers(draft),
                focus=focus,
            )
            response.headers["HX-Trigger"] = "rules-changed"  # the preview follows the builder
            return response
        return await render_new(page, api, draft, focus=focus)
    builder = await builder_for(api, draft)
    if builder.down is not None:
        return await render_new(page, api, draft, builder=builder, status_code=503)
    rules = rules_of(draft, builder.kinds, builder.operators)
    body: dict[str, Any] = {
        "name": draft.name,
        "description": draft.description,
        "type": "virtual",
        "base_profile_id": draft.base_profile_id or None,
        "rules": rules.tree,
    }
    try:
        created = await api.post(PROFILES, "/v1/profiles", body)
    except Refused as refused:
        errors = BuilderErrors.of(refused, rules)
        return await render_new(
            page, api, draft, builder=builder, errors=errors, status_code=refused.status
        )
    except ServiceDown as down:  # the draft stays, to save again in a moment
        return await render_new(page, api, draft, builder=builder, down=down, status_code=503)
    return RedirectResponse(f"/virtual-profiles/{created['id']}?created=1", status_code=303)


@router.post("/virtual-profiles/preview", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def preview_rules(request: Request, page: PageFor, api: SignedIn) -> HTMLResponse:
    """The preview alone, for htmx as the rules change (debounced in the page)."""
    draft = VirtualDraft.of(await request.form())
    builder = await builder_for(api, draft)
    preview = Preview(down=builder.down) if builder.down else await preview_of(api, draft, builder)
    return page.render("virtual_preview.html", preview=preview, builder=builder)


# -- the members ----------------------------------------------------------------------------------


@router.get("/virtual-profiles/{profile_id}", response_class=HTMLResponse)
async def members(
    page: PageFor,
    api: SignedIn,
    profile_id: ProfileId,
    key_prefix: str = "",
    cursor: str = "",
    created: str = "",
) -> Response:
    """A virtual profile's members in key order, 50 a page, searchable by the start of their
    email or phone, with their count and the state of its rebuild: side by side."""
    key_prefix = key_prefix.strip()[:320]
    filters = {"key_prefix": key_prefix} if key_prefix else {}
    at = {"cursor": cursor} if cursor else {}
    profile, listed, counted, held = await asyncio.gather(
        or_outage(api.get(PROFILES, f"/v1/profiles/{profile_id}")),
        _known(
            api.get(
                SEGMENTS, f"/v1/profiles/{profile_id}/members", limit=PAGE_SIZE, **filters, **at
            )
        ),
        _known(api.get(SEGMENTS, f"/v1/profiles/{profile_id}/members:count", **filters)),
        _known(api.get(SEGMENTS, f"/v1/segments/{profile_id}")),
    )
    if isinstance(profile, dict) and profile["type"] != "virtual":
        return RedirectResponse(f"/profiles/{profile_id}", status_code=303)
    # The base profile's fields, as the members hold them; but `email`, the members' key
    # (a virtual profile's base is regular, identified by email).
    columns: list[str] = []
    if isinstance(listed, dict):
        for item in listed["items"]:
            columns += [name for name in item["fields"] if name not in (*columns, "email")]
    return page.render(
        "virtual_members.html",
        profile_id=profile_id,
        profile=profile,
        listed=listed,
        counted=counted,
        held=held,
        columns=columns,
        key_prefix=key_prefix,
        cursor=cursor,
        created=bool(created),
    )


async def _known(call: Awaitable[Any]) -> Any:
    """segment-svc's answer; its service down; or None: it has not heard of the virtual
    profile yet (it learns of it from profile events, a moment after it is saved)."""
    try:
        return await call
    except ServiceDown as down:
        return down
    except Refused as refused:
        if refused.status == 404:
            return None
        raise


@router.get("/virtual-profiles/{profile_id}/export")
async def export_members(
    api: SignedIn, profile_id: ProfileId, key_prefix: str = ""
) -> StreamingResponse:
    """The members (whose key starts with `key_prefix`) as CSV, streamed from segment-svc."""
    filters = {"key_prefix": key_prefix.strip()[:320]} if key_prefix.strip() else {}
    return await stream_through(
        api,
        SEGMENTS,
        f"/v1/profiles/{profile_id}/members:export",
        f"{profile_id}-members.csv",
        **filters,
    )
