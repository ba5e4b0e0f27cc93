"""The compose step: one reader's copy of the issue as a MIME message.

multipart/alternative with the plain text first and the HTML last (clients show the last part
they can), both UTF-8 and quoted-printable, so lines stay short and the source stays readable.
Headers are encoded for any SMTP server (RFC 2047 for non-ASCII), and a one-click unsubscribe
(RFC 8058) rides along with the List-Id (RFC 2919).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from digest.errors import MessageError

# CRLF line endings and 78-column header folding: the message as it goes over the wire.
POLICY = policy.SMTP


def compose(
    *,
    sender: str,
    to: Address,
    subject: str,
    text: str,
    html: str,
    date: datetime,
    message_id: str,
    unsubscribe_url: str | None = None,
    list_id: str | None = None,
    list_name: str = "",
) -> EmailMessage:
    """A complete message for one reader; the same arguments always give the same bytes."""
    message = EmailMessage(policy=POLICY)
    try:
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
    except (ValueError, IndexError) as err:  # the header registry's way of refusing a value
        raise MessageError(f"cannot write the message's headers: {err}") from err
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if list_id:
        message["List-Id"] = f"{list_name} <{list_id}>" if list_name else f"<{list_id}>"
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    # A boundary from the parts' own hash: the same copy gives the same bytes, and no feed text
    # can contain the hash of itself, so none can end a part early.
    parts = f"{text}\0{html}".encode("utf-8", "surrogatepass")
    message.set_boundary(f"=_digest_{hashlib.sha256(parts).hexdigest()[:32]}")
    return message


def address(email: str, name: str = "") -> Address:
    """A To: address; MessageError when `email` is not one."""
    local, at, domain = email.strip().rpartition("@")
    if not (at and local and domain) or any(c in email for c in "\r\n<>,"):
        raise MessageError(f"not an email address: {email!r}")
    try:
        return Address(display_name=" ".join(name.split()), username=local, domain=domain)
    except (ValueError, IndexError) as err:
        raise MessageError(f"not an email address: {email!r} ({err})") from err


def message_id(*, issue_id: str, email: str, sender: str) -> str:
    """`<issue.hash@sender-domain>`: stable, so the same reader's copy of an issue keeps its id
    (a resend is recognisably the same message), and it does not reveal the address."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{issue_id}\n{email.lower()}".encode()).hexdigest()[:20]
    return f"<{issue_id}.{digest}@{domain}>"


def as_bytes(message: EmailMessage) -> bytes:
    """The message as an .eml file holds it: CRLF line endings, 7-bit clean."""
    return message.as_bytes(policy=POLICY)
