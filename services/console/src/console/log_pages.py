"""Logs: the imports, their progress and refused rows."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
