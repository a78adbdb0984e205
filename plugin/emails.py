"""Emails: render a play's message in the shopper's locale (Jinja2 sandbox, Babel formats), and send it
over SMTP (SMTP_URL) or, without one, write it as an .eml file to the outbox folder.

Every template, ours and a merchant's override alike, renders in a sandbox with limits (LimitedEnvironment):
a merchant's template can format what it is given and nothing else, and no template can produce more
than MAX_OUTPUT characters, take more than MAX_STEPS loop steps and calls, or run longer than
MAX_RENDER_SECONDS, at compile time (constant folding) or at render time. check_template renders a
merchant's template with sample values under the same limits when it is saved, and refuses it with the
reason.

The footer (why they receive it, the shop's postal address, a visible unsubscribe or stop-alert link) is
not part of any template: it is inserted around the body by `_with_footer`, so a merchant's template
cannot leave it out. Marketing messages also carry List-Unsubscribe and List-Unsubscribe-Post (RFC 8058
one-click) headers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import smtplib
import ssl
import string
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import cache, wraps
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Undefined, nodes, pass_context
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

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


# Limits of one email's rendering (every part, ours and the merchant's, counted together).
MAX_OUTPUT = (
    500_000  # characters produced; also the largest value a template may build (Gmail clips at 102 KB)
)
MAX_STEPS = 100_000  # loop iterations, calls, filters and lookups
MAX_BUILT = 10 * MAX_OUTPUT  # characters of all the values operators, calls and filters build, kept or not
MAX_RENDER_SECONDS = 1.0
MAX_INT_BITS = 4096  # integers a template computes (`10**10` is 34 bits)


class TemplateLimitError(SecurityError):
    """A template went past a rendering limit (size, steps, time)."""


@dataclass
class _Budget:
    deadline: float
    steps: int = MAX_STEPS
    output: int = MAX_OUTPUT
    built: int = MAX_BUILT


_BUDGET: ContextVar[_Budget | None] = ContextVar("lifecycle_template_budget", default=None)


@contextlib.contextmanager
def _limits() -> Iterator[_Budget]:
    """One budget for everything rendered inside (an inner `_limits` shares the outer one)."""
    budget = _BUDGET.get()
    if budget is not None:
        yield budget
        return
    budget = _Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _spend(steps: int = 1) -> None:
    """A checkpoint: count a step and watch the clock (outside a render, e.g. while compiling: nothing)."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps -= steps
    if budget.steps < 0:
        raise TemplateLimitError(f"the template takes more than {MAX_STEPS} steps (loops, calls)")
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError(f"the template takes longer than {MAX_RENDER_SECONDS:g} s to render")


def _weight(value, limit: int = MAX_OUTPUT) -> int:
    """About how many characters a value makes when written out; stops counting past `limit`."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        value = list(value.items())
    if isinstance(value, list | tuple | set | frozenset):
        total = len(value)
        for item in value:
            if total > limit:
                break
            total += _weight(item, limit - total)
        return total
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        return limit + 1
    return 1


def _bounded(value, what: str = "a value"):
    if _weight(value) > MAX_OUTPUT:
        raise TemplateLimitError(f"{what} would be larger than {MAX_OUTPUT} characters")
    return value


def _built(value, what: str = "a value"):
    """A value the template just built: bounded, and counted (a list can keep many large values)."""
    size = _weight(value)
    if size > MAX_OUTPUT:
        raise TemplateLimitError(f"{what} would be larger than {MAX_OUTPUT} characters")
    budget = _BUDGET.get()
    if budget is not None and size > 1:
        budget.built -= size
        if budget.built < 0:
            raise TemplateLimitError(f"the template builds values of more than {MAX_BUILT} characters")
    return value


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _widths_of_percent(fmt: str) -> list[int]:
    """The widths and precisions of a `%` format (`*` counts as unbounded)."""
    widths = []
    for match in _PERCENT_SPEC.finditer(fmt):
        widths += [MAX_OUTPUT + 1 if g == "*" else int(g) for g in match.groups() if g]
    return widths


def _widths_of_format(fmt: str) -> list[int]:
    """The numbers in the format specs of a str.format string (a nested field counts as unbounded)."""
    widths = []
    for _, field_name, spec, _ in string.Formatter().parse(fmt):
        if field_name is not None and spec:
            widths += [MAX_OUTPUT + 1] if "{" in spec else [int(n) for n in re.findall(r"\d+", spec)]
    return widths


def _check_widths(widths: list[int]) -> None:
    if any(width > MAX_OUTPUT for width in widths):
        raise TemplateLimitError(f"a format width over {MAX_OUTPUT} characters")


def _estimate(op: str, left, right) -> None:
    """Refuse an operation before it runs when its result would be over the limits."""
    numbers = (int, float, Decimal)
    if op == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"a number larger than {MAX_INT_BITS} bits")
        elif isinstance(left, int) or isinstance(right, int):
            times, seq = (left, right) if isinstance(left, int) else (right, left)
            if not isinstance(seq, numbers) and times > 0 and times * max(1, _weight(seq)) > MAX_OUTPUT:
                raise TemplateLimitError(f"a value larger than {MAX_OUTPUT} characters")
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1 and (right > MAX_INT_BITS or max(1, left.bit_length()) * right > MAX_INT_BITS):
            raise TemplateLimitError(f"a number larger than {MAX_INT_BITS} bits")
    elif op == "+" and not isinstance(left, numbers):
        if _weight(left) + _weight(right) > MAX_OUTPUT:
            raise TemplateLimitError(f"a value larger than {MAX_OUTPUT} characters")
    elif op == "%" and isinstance(left, str):
        _check_widths(_widths_of_percent(left))
        _bounded(right, "the values formatted")


SIZED_METHODS = {"center", "ljust", "rjust", "zfill"}


def _check_call(obj, args, kwargs) -> None:
    """Refuse a str method call whose result would be over the limits, before it runs."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format at attribute access
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(target, "__name__", "")
    if name in ("format", "format_map"):
        _check_widths(_widths_of_format(owner))
        _bounded([args, kwargs], "the values formatted")
    if name in SIZED_METHODS and args and isinstance(args[0], int) and args[0] > MAX_OUTPUT:
        raise TemplateLimitError(f"{name}() wider than {MAX_OUTPUT} characters")
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        if size * owner.count("\t") + len(owner) > MAX_OUTPUT:
            _too_big(name)
    if name == "join" and args:
        if _weight(args[0]) + len(owner) * _weight(args[0]) > MAX_OUTPUT:
            _too_big(name)
    if name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        if len(owner) + (owner.count(args[0]) + 1) * len(args[1]) > MAX_OUTPUT:
            _too_big(name)


def _too_big(what: str):
    raise TemplateLimitError(f"{what}() would make more than {MAX_OUTPUT} characters")


def _guard_filter(name: str, function):
    """A built-in filter, checked before (input size, widths) and after (output size)."""
    passes_first = getattr(function, "jinja_pass_arg", None) is not None

    @wraps(function)
    def guarded(*args, **kwargs):
        _spend()
        values = list(args[1:] if passes_first else args)  # without the context/environment Jinja passes
        value = values[0] if values else None
        _bounded(value, f"the input of |{name}")
        numbers = [a for a in values[1:] + list(kwargs.values()) if isinstance(a, int)]
        if any(n > MAX_OUTPUT for n in numbers):  # widths, counts (center, indent, batch, slice, …)
            raise TemplateLimitError(f"|{name} with a number over {MAX_OUTPUT}")
        if name == "replace" and isinstance(value, str) and len(values) >= 3:
            old, new = str(values[1]), str(values[2])
            if len(value) + (value.count(old) + 1) * len(new) > MAX_OUTPUT:
                raise TemplateLimitError(f"|replace would make more than {MAX_OUTPUT} characters")
        if name == "indent" and isinstance(value, str):
            width = max(numbers or [4])
            if width * (value.count("\n") + 1) + len(value) > MAX_OUTPUT:
                raise TemplateLimitError(f"|indent would make more than {MAX_OUTPUT} characters")
        if name == "format" and isinstance(value, str):
            _check_widths(_widths_of_percent(value))
        if name == "join" and isinstance(value, list | tuple) and len(values) > 1:
            if _weight(value) + len(str(values[1])) * len(value) > MAX_OUTPUT:
                raise TemplateLimitError(f"|join would make more than {MAX_OUTPUT} characters")
        return _built(function(*args, **kwargs), f"the result of |{name}")

    return guarded


@pass_context
def _steps(_context, iterable):
    """Every `for` loop iterates through this (see _Limiter): one step per item."""
    for item in iterable:
        _spend()
        yield item


@pass_context
def _produced(_context, value):
    """Everything a template writes out passes here, in macros and captured blocks too."""
    budget = _BUDGET.get()
    size = _weight(value)
    if budget is not None:
        _spend()
        budget.output -= size
        if budget.output < 0:
            raise TemplateLimitError(f"the email would be longer than {MAX_OUTPUT} characters")
    elif size > MAX_OUTPUT:
        raise TemplateLimitError(f"the email would be longer than {MAX_OUTPUT} characters")
    return value


@pass_context
def _value(_context, value):
    return _built(value)


class _Limiter(NodeTransformer):
    """Rewrites a parsed template so loops, output and concatenation pass through the checks above.

    The helpers take the context, so Jinja never folds them into constants at compile time.
    """

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, "lifecycle_steps")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        node = self.generic_visit(node)
        node.nodes = [_filter(child, "lifecycle_produced") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Concat:
        node = self.generic_visit(node)
        node.nodes = [_filter(child, "lifecycle_value") for child in node.nodes]
        return node


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class LimitedEnvironment(SandboxedEnvironment):
    """The sandbox, bounded: output size, loop steps and time at render time, and the operators that could
    build huge values (`'x' * 10**10`) intercepted, which also keeps Jinja from folding them while it
    compiles (it would otherwise compute `'x' * 10**8` inside from_string, before any render limit)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options):
        super().__init__(undefined=Undefined, **options)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(lifecycle_steps=_steps, lifecycle_produced=_produced, lifecycle_value=_value)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)

    def _parse(self, source, name, filename):
        return _Limiter().visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator, left, right):
        _spend()
        _estimate(operator, left, right)
        return _built(super().call_binop(context, operator, left, right))

    def call(self, context, obj, /, *args, **kwargs):
        _spend()
        _check_call(obj, args, kwargs)
        return _built(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj, attribute):
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _spend()
        return super().getitem(obj, argument)


def _environment(autoescape: bool) -> LimitedEnvironment:
    return LimitedEnvironment(autoescape=autoescape, trim_blocks=True)


HTML_ENV, TEXT_ENV = _environment(True), _environment(False)


def _render(env: LimitedEnvironment, source: str, values: dict) -> str:
    """Compile and render under the current budget (or a new one)."""
    with _limits():
        _spend()
        return "".join(env.from_string(source).generate(values))


def money(amount, currency: str | None, locale: str) -> str:
    if amount is None:
        return ""
    return format_currency(Decimal(str(amount)), currency or "USD", locale=locale)


def long_date(value: datetime | None, locale: str) -> str:
    return format_date(value, format="long", locale=locale) if value else ""


def render_email(template: str, context: dict, locale: str | None, override=None) -> RenderedEmail:
    """Render one play's message within the limits; `override` (an EmailTemplate row) replaces our default
    body when given. The footer is inserted around either (see _with_footer)."""
    lang = pick_locale(locale)
    strings, values = catalog(lang), dict(context, locale=lang)
    values["total"] = money(context.get("total"), context.get("currency"), lang)
    values["expires"] = long_date(context.get("expires_at"), lang)
    play = strings[template]
    try:
        with _limits():
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
                subject="{{ subject }}", html=_default("message.html"), text=_default("message.txt")
            )
            html = _with_footer(
                _render(HTML_ENV, source.html, values), _render(HTML_ENV, _default("footer.html"), values)
            )
            text = (
                _render(TEXT_ENV, source.text, values).rstrip()
                + "\n\n"
                + _render(TEXT_ENV, _default("footer.txt"), values)
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
    return _render(TEXT_ENV, text, values)


# Elements that, left open before the footer, would swallow or hide it.
HIDING_ELEMENTS = frozenset(
    "style script title textarea template noscript xmp iframe noembed noframes object select head "
    "plaintext svg math".split()
)
VOID_ELEMENTS = frozenset("area base br col embed hr img input link meta source track wbr".split())
HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])|"
    r"(?<![-\w])(?:max-)?height\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?![.\d]*[1-9])",
    re.IGNORECASE,
)


class _OpenElements(HTMLParser):
    """The elements still open at the end of what it was fed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, bool]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.open = [(t, hides) for t, hides in self.open if t != "head"]
        if tag in VOID_ELEMENTS:
            return
        attributes = dict(attrs)
        hides = tag in HIDING_ELEMENTS or "hidden" in attributes
        hides = hides or bool(HIDING_STYLE.search(attributes.get("style") or ""))
        self.open.append((tag, hides))

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                del self.open[index:]
                return


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _with_footer(html: str, footer: str) -> str:
    """The footer inserted before the last </body> (or appended), refused if the body would hide it."""
    ends = list(_BODY_END.finditer(html))
    at = ends[-1].start() if ends else len(html)
    parser = _OpenElements()
    parser.feed(html[:at])
    if "<!--" in parser.rawdata:  # what the parser could not finish: an unclosed comment
        raise TemplateLimitError("the template leaves an HTML comment open, which would hide the footer")
    hiding = [tag for tag, hides in parser.open if hides]
    if hiding:
        raise TemplateLimitError(
            f"the template leaves <{hiding[0]}> open, which would hide the footer "
            "(the unsubscribe link and the shop's address)"
        )
    return html[:at] + footer + html[at:]


@cache
def _default(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def shop_name(domain: str) -> str:
    """A shop's name for emails, from its domain (`linen-house.myshopify.com` → "Linen House")."""
    return domain.split(".")[0].replace("-", " ").title()


def shop_sender(shop, mail_from: str) -> tuple[str, str]:
    """(display name, address) of a shop's emails: its name at the app's own sending address (a From on
    the merchant's domain would need its SPF and DKIM checked first); answers go to its Reply-To."""
    return shop.sender_name or shop_name(shop.domain), mail_from


def build_message(
    rendered: RenderedEmail,
    sender: tuple[str, str],
    to: str,
    message_id: str,
    unsubscribe_url: str | None,
    now: datetime,
    reply_to: str | None = None,
) -> EmailMessage:
    """A multipart/alternative message with the headers mailbox providers expect of bulk mail."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = formataddr(sender)
    message["To"] = to
    if reply_to:
        message["Reply-To"] = reply_to
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
