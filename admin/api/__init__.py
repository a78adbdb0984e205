"""The admin's JSON (`/app/api/…`), one module per page of the admin. Importing this package registers
every call on `bp`; the blueprint and what the pages share live in `base`, which the pages import."""

from __future__ import annotations

from admin.api import email_editor, overview, rules, settings, shoppers
from admin.api.base import bp

__all__ = ["bp", "email_editor", "overview", "rules", "settings", "shoppers"]
