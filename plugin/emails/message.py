"""The message as it leaves: sender, headers mailbox providers expect of bulk mail (List-Unsubscribe,
one-click), and delivery over SMTP or into the outbox folder."""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from urllib.parse import unquote, urlsplit

from plugin.emails.render import RenderedEmail


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
    """The mail server refused or could not be reached: the message was not accepted (retryable)."""


class EmailOutcomeUnknown(Exception):
    """The connection failed while the message was going: the server may have accepted it (not retried)."""


class _SMTPMixin:
    """An SMTP client that calls `before_data` just before the DATA command: the envelope (MAIL FROM, RCPT
    TO) is accepted by then, and nothing before DATA can deliver a message."""

    before_data: Callable[[], None]
    data_began = False

    def data(self, msg):
        self.before_data()
        self.data_began = True
        return super().data(msg)


class _SMTP(_SMTPMixin, smtplib.SMTP):
    pass


class _SMTP_SSL(_SMTPMixin, smtplib.SMTP_SSL):
    pass


def send_email(
    message: EmailMessage, smtp_url: str | None, outbox: str, before_data: Callable[[], None] = lambda: None
) -> None:
    """Send over SMTP (smtp:// with STARTTLS when offered, smtps:// over TLS), or write to the outbox.

    `before_data` is called once the server has accepted the envelope, just before the DATA command (or
    before the outbox file is written): the caller records there that the message may now be delivered. A
    process that dies before it sent nothing; one that dies after it may have sent the message. An
    exception it raises aborts the send, with nothing delivered.

    Raises EmailDeliveryError when the message was certainly not accepted (the server unreachable, or
    refusing it with a reply, or the connection lost before DATA), and EmailOutcomeUnknown when the
    connection failed once DATA had begun (a timeout or disconnection before the server's answer): it
    may have been accepted. An error in QUIT, after the server accepted the message, is no error."""
    if not smtp_url:
        os.makedirs(outbox, exist_ok=True)
        name = message["Message-ID"].strip("<>").replace("@", "_").replace("/", "_") + ".eml"
        before_data()
        with open(os.path.join(outbox, name), "wb") as handle:
            handle.write(bytes(message))
        return
    parts = urlsplit(smtp_url)
    client = None
    try:
        if parts.scheme == "smtps":
            client = _SMTP_SSL(
                parts.hostname, parts.port or 465, timeout=30, context=ssl.create_default_context()
            )
        else:
            client = _SMTP(parts.hostname, parts.port or 587, timeout=30)
        client.before_data = before_data
        try:
            if parts.scheme != "smtps":
                client.ehlo()
                if client.has_extn("starttls"):
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
        except BaseException:
            client.close()
            raise
    except REFUSED as error:  # the server answered no: nothing was accepted
        raise EmailDeliveryError(f"{type(error).__name__}: {error}") from None
    except (smtplib.SMTPException, OSError) as error:
        if client is not None and client.data_began:
            raise EmailOutcomeUnknown(f"{type(error).__name__}: {error}") from None
        raise EmailDeliveryError(f"{type(error).__name__}: {error}") from None
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()  # accepted already: a failed goodbye changes nothing


# Replies that refuse: the server said no to the sender, to every recipient, or to the message itself
REFUSED = (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)
