"""Emails: render a play's message in the shopper's locale (Jinja2 sandbox, Babel formats), and send it
over SMTP (SMTP_URL) or, without one, write it as an .eml file to the outbox folder.

Every template, ours and a merchant's override alike, renders in a sandbox with limits (LimitedEnvironment):
a merchant's template can format what it is given and nothing else, and no template can produce more
than MAX_OUTPUT characters, take more than MAX_STEPS loop steps and calls, or run longer than
MAX_RENDER_SECONDS, at compile time (constant folding) or at render time. check_template renders a
merchant's template with sample values under the same limits when it is saved, and refuses it with the
reason.

The footer (why they receive it, the shop's postal address, a visible unsubscribe or stop-alert link) is
not part of any template: it is inserted around the body by `footer.with_footer`, so a merchant's template
cannot leave it out. Marketing messages also carry List-Unsubscribe and List-Unsubscribe-Post (RFC 8058
one-click) headers.

Modules: `locales` (languages, catalogs, money and dates), `budget` and `sandbox` (the limits and the
Jinja2 environment), `footer`, `render` (one play's message), `message` (headers, SMTP or outbox).
"""

from plugin.emails.budget import TemplateLimitError, render_limits
from plugin.emails.locales import (
    DEFAULT_LOCALE,
    LOCALES,
    catalog,
    default_template,
    pick_locale,
    shop_languages,
)
from plugin.emails.message import (
    EmailDeliveryError,
    EmailOutcomeUnknown,
    build_message,
    send_email,
    shop_name,
    shop_sender,
)
from plugin.emails.render import RenderedEmail, TemplateError, check_template, render_email
from plugin.emails.sandbox import HTML_ENV, TEXT_ENV

__all__ = [
    "DEFAULT_LOCALE",
    "HTML_ENV",
    "LOCALES",
    "TEXT_ENV",
    "EmailDeliveryError",
    "EmailOutcomeUnknown",
    "RenderedEmail",
    "TemplateError",
    "TemplateLimitError",
    "build_message",
    "catalog",
    "check_template",
    "default_template",
    "pick_locale",
    "render_email",
    "render_limits",
    "send_email",
    "shop_languages",
    "shop_name",
    "shop_sender",
]
