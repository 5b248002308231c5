"""Virtual Profile: the rule builder, its preview and the members."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
