"""Composing one reader's MIME message: parts, headers, encodings and stable bytes."""

from __future__ import annotations

import email
from datetime import datetime
from email import policy
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest

from digest import message
from digest.errors import MessageError

WHEN = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("America/New_York"))
TEXT = "Hola, Zoë:\n\nEstas son las 14 noticias de la semana.\n" + "línea " * 40 + "\n"
HTML = '<!DOCTYPE html><html lang="es"><body><p>Hola, Zoë: <a href="https://x.org/?a=1&amp;b=2">x</a></p></body></html>\n'
UNSUBSCRIBE = "https://dispatch.example.org/digest/unsubscribe?t=abc.def"


def compose(**changes: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "sender": "The Harbor Dispatch <weekly@dispatch.example.org>",
        "to": message.address("zoe@example.org", "Zoë Laurent"),
        "subject": "The Harbor Dispatch Weekly: 16–22 de noviembre de 2026",
        "text": TEXT,
        "html": HTML,
        "date": WHEN,
        "message_id": "<2026-W47.abc@dispatch.example.org>",
        "unsubscribe_url": UNSUBSCRIBE,
        "list_id": "weekly.dispatch.example.org",
        "list_name": "The Harbor Dispatch Weekly",
    }
    arguments.update(changes)
    return message.compose(**arguments)  # type: ignore[arg-type]


def reparse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_message_is_multipart_alternative_text_then_html_in_utf8() -> None:
    """Clients show the last part they can: plain text first, HTML last, both UTF-8."""
    parsed = reparse(message.as_bytes(compose()))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # On the wire every line ends in CRLF; the content is otherwise exactly what was given.
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT
    assert parts[1].get_content().replace("\r\n", "\n") == HTML


def test_headers_round_trip_with_non_ascii_names_and_subject() -> None:
    """From, To (with an accented name), Subject and Date come back as written."""
    parsed = reparse(message.as_bytes(compose()))
    assert parsed["From"] == "The Harbor Dispatch <weekly@dispatch.example.org>"
    assert parsed["To"] == "Zoë Laurent <zoe@example.org>"
    assert parsed["Subject"] == "The Harbor Dispatch Weekly: 16–22 de noviembre de 2026"
    assert parsed["Date"].datetime == WHEN
    assert parsed["Message-ID"] == "<2026-W47.abc@dispatch.example.org>"


def test_one_click_unsubscribe_and_list_id_headers() -> None:
    """RFC 8058 List-Unsubscribe with its -Post companion, and an RFC 2919 List-Id."""
    parsed = reparse(message.as_bytes(compose()))
    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Id"] == "The Harbor Dispatch Weekly <weekly.dispatch.example.org>"


def test_the_wire_form_is_7bit_with_crlf_and_short_lines() -> None:
    """ASCII only, CRLF endings, no line over 78 characters: any SMTP server takes it."""
    raw = message.as_bytes(compose())
    raw.decode("ascii")
    lines = raw.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    assert max(len(line) for line in lines) <= 78


def test_the_same_copy_gives_the_same_bytes() -> None:
    """Boundary and ids come from the content, so a rebuild is byte-identical."""
    assert message.as_bytes(compose()) == message.as_bytes(compose())
    assert message.as_bytes(compose()) != message.as_bytes(compose(text=TEXT + "!"))


def test_message_ids_are_stable_per_reader_and_hide_the_address() -> None:
    """One id per (issue, reader), in the sender's domain, without the address in it."""
    sender = "News <weekly@dispatch.example.org>"
    first = message.message_id(issue_id="2026-W47", email="Ana@Example.org", sender=sender)
    again = message.message_id(issue_id="2026-W47", email="ana@example.org", sender=sender)
    other = message.message_id(issue_id="2026-W47", email="bo@example.org", sender=sender)
    assert first == again != other
    assert first.startswith("<2026-W47.") and first.endswith("@dispatch.example.org>")
    assert "ana" not in first.lower()


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@b\r\nBcc: x@y.org", "<a@b.org>", "a,b@c.org"])
def test_a_malformed_address_is_a_message_error(bad: str) -> None:
    """Anything that is not one plain address is refused before it reaches a header."""
    with pytest.raises(MessageError):
        message.address(bad)


def test_a_subject_with_a_line_break_is_refused() -> None:
    """A newline in a header would start a new one: MessageError, not a forged header."""
    with pytest.raises(MessageError):
        compose(subject="Hello\r\nBcc: everyone@example.org")
