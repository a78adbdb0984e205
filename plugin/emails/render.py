"""One play's message rendered in the shopper's language: catalog strings, the template (ours or the
merchant's override) in the sandbox, the footer around it; and the check a merchant's template passes
when it is saved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

from plugin.emails.footer import with_footer
from plugin.emails.locales import catalog, default_template, long_date, money, pick_locale
from plugin.emails.sandbox import HTML_ENV, TEXT_ENV, render_limits, render_source


class TemplateError(ValueError):
    """A template that does not render (syntax, or an unsafe operation refused by the sandbox)."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    locale: str


def render_email(template: str, context: dict, locale: str | None, override=None) -> RenderedEmail:
    """Render one play's message within the limits; `override` (an EmailTemplate row) replaces our default
    body when given. The footer is inserted around either (see with_footer)."""
    lang = pick_locale(locale)
    strings, values = catalog(lang), dict(context, locale=lang)
    values["total"] = money(context.get("total"), context.get("currency"), lang)
    values["expires"] = long_date(context.get("expires_at"), lang)
    play = strings[template]
    try:
        with render_limits():
            values.update({k: _render_text(v, values) for k, v in strings.items() if isinstance(v, str)})
            body_key = "body_repeat" if template == "thank_you" and not context.get("first_order") else "body"
            values.update(
                subject=_render_text(play["subject"], values),
                body=_render_text(play.get(body_key, play["body"]), values),
                cta=_render_text(play["cta"], values),
            )
            if not context.get("marketing", True):
                values["footer"] = values["footer_transactional"]
            source = override or SimpleNamespace(
                subject="{{ subject }}",
                html=default_template("message.html"),
                text=default_template("message.txt"),
            )
            html = with_footer(
                render_source(HTML_ENV, source.html, values),
                render_source(HTML_ENV, default_template("footer.html"), values),
            )
            text = (
                render_source(TEXT_ENV, source.text, values).rstrip()
                + "\n\n"
                + render_source(TEXT_ENV, default_template("footer.txt"), values)
            )
            return RenderedEmail(_render_text(source.subject, values).strip(), html, text, lang)
    except Exception as error:  # the sandbox raises SecurityError, syntax errors raise TemplateSyntaxError
        raise TemplateError(f"{type(error).__name__}: {error}") from None


# What a merchant's template is tried with when it is saved (check_template).
SAMPLE = {
    "shop_name": "Sample Shop",
    "first_name": "Ann",
    "orders_count": 1,
    "first_order": True,
    "total": "49.90",
    "currency": "EUR",
    "order_name": "#1001",
    "product_title": "Linen shirt",
    "code": "LC-SAMPLE-CODE",
    "percent": 15,
    "expires_at": datetime(2026, 12, 31, tzinfo=UTC),
    "url": "https://example.myshopify.com/",
    "marketing": True,
    "unsubscribe_url": "https://example.invalid/unsubscribe",
    "postal_address": "1 Sample Street, Sample Town",
}


def check_template(text: str) -> None:
    """Raise TemplateError, with the reason, when a merchant's template (a subject, HTML or text part)
    does not compile in the sandbox, does not render within the limits with sample values, or would hide
    the footer inserted after it (an unclosed comment, <style>, or a hidden element)."""
    render_email("welcome", SAMPLE, "en", SimpleNamespace(subject=text, html=text, text=text))


def _render_text(text: str, values: dict) -> str:
    return render_source(TEXT_ENV, text, values)
