"""Emails: render a play's message in the shopper's locale (Jinja2 sandbox, Babel formats), and send it
over SMTP (SMTP_URL) or, without one, write it as an .eml file to the outbox folder.

Every template, ours and a merchant's override alike, renders in a SandboxedEnvironment: a merchant's
template can format what it is given and nothing else. Marketing messages carry List-Unsubscribe and
List-Unsubscribe-Post (RFC 8058 one-click) headers and a visible link to the signed unsubscribe page.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).parent / "templates" / "emails"
LOCALES = ("en", "it", "pl", "ru")
DEFAULT_LOCALE = "en"


class TemplateError(ValueError):
    """A template that does not render (syntax, or an unsafe operation refused by the sandbox)."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    locale: str


def shop_languages(chosen: list[str] | None) -> list[str]:
    """The languages a shop writes in, in order (the first for everybody else): its choice in settings,
    or, without one, every shipped language, English first."""
    return [lang for lang in (chosen or LOCALES) if lang in LOCALES] or [DEFAULT_LOCALE]


def pick_locale(locale: str | None, chosen: list[str] | None = None) -> str:
    """The language a shopper is written in: their `customer_locale` (e.g. `it-IT` → `it`) when the shop
    writes in it, otherwise the shop's first language (see shop_languages)."""
    languages = shop_languages(chosen)
    base = (locale or "").replace("_", "-").split("-")[0].lower()
    return base if base in languages else languages[0]


@cache
def catalog(locale: str) -> dict:
    return json.loads((TEMPLATES / "i18n" / f"{locale}.json").read_text(encoding="utf-8"))


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=autoescape, undefined=Undefined, trim_blocks=True)


HTML_ENV, TEXT_ENV = _environment(True), _environment(False)
STRICT_ENV = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)


def money(amount, currency: str | None, locale: str) -> str:
    if amount is None:
        return ""
    return format_currency(Decimal(str(amount)), currency or "USD", locale=locale)


def long_date(value: datetime | None, locale: str) -> str:
    return format_date(value, format="long", locale=locale) if value else ""


def render_email(template: str, context: dict, locale: str | None, override=None) -> RenderedEmail:
    """Render one play's message; `override` (an EmailTemplate row) replaces our default when given."""
    lang = pick_locale(locale)
    strings, values = catalog(lang), dict(context, locale=lang)
    values["total"] = money(context.get("total"), context.get("currency"), lang)
    values["expires"] = long_date(context.get("expires_at"), lang)
    play = strings[template]
    try:
        values.update({k: _render_text(v, values) for k, v in strings.items() if isinstance(v, str)})
        body_key = "body_repeat" if template == "thank_you" and not context.get("first_order") else "body"
        values.update(
            subject=_render_text(play["subject"], values),
            body=_render_text(play.get(body_key, play["body"]), values),
            cta=_render_text(play["cta"], values),
        )
        if not context.get("marketing", True):
            values["footer"] = values["footer_transactional"]
        if override is not None:
            return RenderedEmail(
                _render_text(override.subject, values).strip(),
                HTML_ENV.from_string(override.html).render(values),
                TEXT_ENV.from_string(override.text).render(values),
                lang,
            )
        return RenderedEmail(
            values["subject"].strip(),
            HTML_ENV.from_string(_default("message.html")).render(values),
            TEXT_ENV.from_string(_default("message.txt")).render(values),
            lang,
        )
    except Exception as error:  # the sandbox raises SecurityError, syntax errors raise TemplateSyntaxError
        raise TemplateError(f"{type(error).__name__}: {error}") from None


def check_template(text: str) -> None:
    """Raise TemplateError when a merchant's template does not compile in the sandbox."""
    try:
        STRICT_ENV.parse(text)
    except Exception as error:
        raise TemplateError(f"{type(error).__name__}: {error}") from None


def _render_text(text: str, values: dict) -> str:
    return TEXT_ENV.from_string(text).render(values)


@cache
def _default(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def build_message(
    rendered: RenderedEmail,
    sender: tuple[str, str],
    to: str,
    message_id: str,
    unsubscribe_url: str | None,
    now: datetime,
) -> EmailMessage:
    """A multipart/alternative message with the headers mailbox providers expect of bulk mail."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = formataddr(sender)
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = rendered.locale  # after the body: set_content drops Content-* headers
    return message


class EmailDeliveryError(Exception):
    """The mail server refused or could not be reached (retryable)."""


def send_email(message: EmailMessage, smtp_url: str | None, outbox: str) -> None:
    """Send over SMTP (smtp:// with STARTTLS when offered, smtps:// over TLS), or write to the outbox."""
    if not smtp_url:
        os.makedirs(outbox, exist_ok=True)
        name = message["Message-ID"].strip("<>").replace("@", "_").replace("/", "_") + ".eml"
        with open(os.path.join(outbox, name), "wb") as handle:
            handle.write(bytes(message))
        return
    parts = urlsplit(smtp_url)
    try:
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                parts.hostname, parts.port or 465, timeout=30, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(parts.hostname, parts.port or 587, timeout=30)
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
        with client:
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as error:
        raise EmailDeliveryError(f"{type(error).__name__}: {error}") from None
