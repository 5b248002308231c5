"""New Contact, List Contacts and a contact's page."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
