"""The compose step: one reader's copy of the issue as a MIME message.

multipart/alternative with the plain text first and the HTML last (clients show the last part
they can), both UTF-8 and quoted-printable, so lines stay short and the source stays readable.
Headers are encoded for any SMTP server (RFC 2047 for non-ASCII), and a one-click unsubscribe
(RFC 8058) rides along with the List-Id (RFC 2919).

`Composer` makes every copy of an issue: each reader's in a send, a test copy, the dry run's
sample, and the one `digest build` writes and `digest preview` shows, so the same reader's copy
is the same bytes whichever made it, but for its Date and Message-ID. Everything a variant's
copies share (all headers but To, Message-ID and List-Unsubscribe; both parts, quoted-printable;
the boundary) is encoded once into a template of byte chunks; a reader's copy joins those chunks
with their own few values, each encoded on its own (about 0.05 ms a copy for a 100 KB issue).

Why quoted-printable with a soft line break around every personal value: the message stays 7-bit
(no relay has to convert it, which would break a DKIM signature), every line stays within
RFC 2045's 76 characters (far under SMTP's 998), and a value can be encoded without knowing the
column it lands in: each literal chunk that a value follows ends with a soft line break ("=" at
the end of a line, which decodes to nothing), so each value starts a line of its own and ends
with a soft break too. No encoded line is cut inside a placeholder or a value's escape, and
encoding a whole part per reader (a few ms for 100 KB) is never needed. 8bit with explicit
wrapping would be as cheap, but needs 8BITMIME on every hop and invites a relay to re-encode the
body after it was signed. The boundary starts with "=_", which quoted-printable text cannot
contain ("=" is always "=3D" or a soft break), so no value, feed text or template ends a part.

A reader whose address has a non-ASCII local part (`josé@example.org`) gets a copy whose To
header carries it in UTF-8 (RFC 6532: an address cannot be RFC 2047-encoded), sent with SMTPUTF8;
every other copy stays 7-bit.

Header safety: free text from a feed or the CSV (subject, names) is neutralised by `clean_text`;
addresses, the list name and URLs with a control character are refused with a MessageError
naming where the value came from.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html import escape
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)

from digest.config import Config
from digest.errors import ConfigError, MessageError, echoed
from digest.models import Issue, Subscriber
from digest.render import Recipient, Rendered, Variant, variant_for
from digest.tokens import list_id, make_token, preferences_url, secret_from, unsubscribe_url

# CRLF line endings and 78-column header folding: the message as it goes over the wire.
POLICY = policy.SMTP


def _id_domain(sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "localhost"
    return _NOT_ATEXT.sub("-", domain)


def _message_id(issue_id: str, email: str, domain: str) -> str:
    """`<issue.hash@sender-domain>`: stable, so the same reader's copy of an issue keeps its id
    (a resend is recognisably the same message), and it does not reveal the address."""
    digest = hashlib.sha256(f"{issue_id}\n{email.lower()}".encode()).hexdigest()[:20]
    # Only atext: an issue id format with spaces or brackets cannot break the header.
    left = _NOT_ATEXT.sub("-", issue_id).strip(".") or "issue"
    return f"<{left}.{digest}@{domain}>"


# --- Composing at scale: see the module's docstring ---------------------------------------

# Control characters (C0, DEL, C1) and Unicode line and paragraph separators: none belongs in a
# header, and CR or LF in one would start a new header.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")
QP_LINE = 76  # RFC 2045: an encoded line, its soft break included, is at most 76 characters
PHRASE_LENGTH = 40  # longer display names go as encoded words, which fold between each other
ENCODED_WORD_BYTES = 45  # 60 base64 characters: "=?utf-8?b?...?=" stays within 75 (RFC 2047)
DOMAINS_CACHED = 4096  # a list's big providers stay in the cache; its long tail passes through
# What the DKIM signature covers: RFC 8058 requires both List-Unsubscribe headers.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
DKIM_VARS = ("DKIM_PRIVATE_KEY_FILE", "DKIM_SELECTOR", "DKIM_DOMAIN")


@dataclass(frozen=True, slots=True)
class Composed:
    """One subscriber's message, ready for SMTP: the envelope recipient and the bytes to send."""

    # For RCPT TO: an internationalised domain in its xn-- form; ASCII unless the local part is not
    address: str
    message_id: str
    data: bytes  # CRLF line endings, 7-bit (but a UTF-8 To address), DKIM-signed when configured
    # No line starts with ".", so SMTP needs no dot-stuffing and the sender need not look for
    # one in 30 KB: checked once per variant; the per-copy headers start with a name and
    # quoted-printable writes a leading "." as =2E.
    dot_free: bool = False


@dataclass(frozen=True, slots=True)
class Skipped:
    """A subscriber who gets no copy of this issue, and why."""

    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class DkimKey:
    """What signs each copy: the RSA private key and where its public half is published."""

    selector: str
    domain: str
    private_key: rsa.RSAPrivateKey = field(repr=False)


def dkim_key(config: Config) -> DkimKey | None:
    """The DKIM settings from the environment or .env; None when none of the three is set.

    Some but not all of them, an unreadable file or anything but an RSA key is a ConfigError
    now, before the first message, not a failure per copy.
    """
    values = {name: config.env.get(name, "").strip() for name in DKIM_VARS}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(
            "DKIM signing needs all three settings",
            where=", ".join(missing),
            hint="set " + ", ".join(DKIM_VARS) + " together, or none of them",
        )
    for name in ("DKIM_SELECTOR", "DKIM_DOMAIN"):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", values[name]):
            raise ConfigError(f"not a DNS name: {values[name]!r}", where=name)
    path = Path(values["DKIM_PRIVATE_KEY_FILE"])
    path = path if path.is_absolute() else config.root / path
    try:
        pem = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"cannot read the DKIM key: {err}", where="DKIM_PRIVATE_KEY_FILE"
        ) from err
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError(
            f"cannot read an RSA private key from it: {err}",
            where=str(path),
            hint="use an unencrypted RSA key in PEM, e.g. from `openssl genrsa -out dkim.pem 2048`",
        ) from err
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 1024:
        raise ConfigError(
            "not an RSA key of at least 1024 bits (receivers ignore shorter ones)",
            where=str(path),
            hint="use an RSA key in PEM, e.g. from `openssl genrsa -out dkim.pem 2048`",
        )
    return DkimKey(values["DKIM_SELECTOR"], values["DKIM_DOMAIN"], private_key)


def clean_text(value: str) -> str:
    """Free text (a feed's title, a CSV's name) fit for a header: each control character or line
    break becomes a space, and runs of whitespace one space. Nothing in it can split a header."""
    return " ".join(_CONTROL.sub(" ", value).split())


def checked_address(email: str, *, where: str, utf8: bool = True) -> str:
    """`email` validated (syntax only, no DNS) in the form RCPT TO takes, its domain in IDNA
    ASCII (A-labels); MessageError naming `where` it came from when it is not one address. A
    non-ASCII local part is kept (it needs SMTPUTF8, RFC 6531), or refused without `utf8`.

    Most of email-validator's time goes on the domain, and a list has a few big ones: a plain
    ASCII local part (its dot-atom, which it accepts unchanged) with a domain it has accepted
    before is joined here, with its length limit, to the same result. Anything else, errors
    included, is email-validator's own answer for the whole address.
    """
    if _CONTROL.search(email):
        raise MessageError(f"an address contains a control character: {echoed(email)}", where=where)
    stripped = email.strip()
    local, at, domain = stripped.partition("@")
    # email-validator lower-cases an RFC 2142 name ("Info@"): left to it, being rare.
    if at and DOT_ATOM_TEXT.match(local) and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES:
        checked = _checked_domain(domain)
        if checked is not None and len(local) + 1 + checked[1] <= EMAIL_MAX_LENGTH:
            return f"{local}@{checked[0]}"
    try:
        valid = validate_email(stripped, check_deliverability=False, allow_smtputf8=utf8)
    except EmailNotValidError as err:
        raise MessageError(f"not an email address: {echoed(email)} ({err})", where=where) from err
    return valid.ascii_email or f"{valid.local_part}@{valid.ascii_domain}"


@functools.lru_cache(maxsize=DOMAINS_CACHED)
def _checked_domain(domain: str) -> tuple[str, int] | None:
    """`domain` in its IDNA ASCII form and the UTF-8 length of its longest form (as given,
    normalised, ASCII: email-validator limits each address form to 254 bytes), or None when
    email-validator refuses it: the caller then checks the whole address for the message."""
    try:
        valid = validate_email("a@" + domain, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    forms = (domain, valid.domain, valid.ascii_domain)
    return valid.ascii_domain, max(len(form.encode("utf-8")) for form in forms)


def mailbox(name: str, email: str) -> str:
    """A To or From value: the display name cleaned, quoted or RFC 2047-encoded as it needs.

    `email` must be checked already (see `checked_address`).
    """
    name = clean_text(name)
    if not name:
        return email
    if len(name) <= PHRASE_LENGTH and "=?" not in name and name.isascii():
        if _ATOMS.fullmatch(name):
            return f"{name} <{email}>"
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{email}>'
    return f"{_encoded_words(name)} <{email}>"


def _encoded_words(text: str) -> str:
    """`text` as RFC 2047 base64 encoded words, each whole characters, folded between words
    (whitespace between encoded words is not part of the text)."""
    words, raw = [], text.encode("utf-8")
    while len(raw) > ENCODED_WORD_BYTES:
        cut = ENCODED_WORD_BYTES
        while raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: cut before its character
            cut -= 1
        words.append(raw[:cut])
        raw = raw[cut:]
    words.append(raw)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def qp_encode(text: str, *, soft_end: bool = False) -> bytes:
    """`text` as quoted-printable lines with CRLF endings; with `soft_end`, ending in a soft line
    break unless it ends a line, so whatever follows starts at column 0.

    Line breaks become CRLF: a text/* part has no other kind (RFC 2046). No line starts with
    ".", so a message goes to SMTP as it is, with nothing to dot-stuff.
    """
    # Most personal values (an address, a greeting) are one short line that needs no escape:
    # printable ASCII without "=", a trailing space (=20) or a leading "." (=2E), and within
    # QP_LINE with the soft break. Such a value encodes as itself; tests compare the two ways.
    if (
        soft_end
        and 0 < len(text) < QP_LINE
        and text.isascii()
        and text.isprintable()
        and "=" not in text
        and text[0] != "."
        and text[-1] != " "
    ):
        return text.encode("ascii") + b"=\r\n"
    return _qp_encode(text, soft_end=soft_end)


def _qp_encode(text: str, *, soft_end: bool) -> bytes:
    """`qp_encode` for any text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True)
    # the last is b"" when the text ends a line
    lines = [_no_leading_dot(line) for line in encoded.split(b"\n")]
    soft = soft_end and lines[-1] != b""
    # b2a_qp can leave a line's encoded trailing space ("=20") past column 76: cut it again.
    if soft or any(len(line) > QP_LINE for line in lines):
        fitted: list[bytes] = []
        for n, line in enumerate(lines):
            last = n == len(lines) - 1
            fitted += _fit(line, QP_LINE - 1 if last and soft else QP_LINE)
        if soft:
            fitted[-1] += b"="
            fitted.append(b"")
        lines = fitted
    return b"\r\n".join(lines)


def _fit(line: bytes, limit: int) -> list[bytes]:
    """An encoded line as pieces within `limit`, soft breaks between, never inside an escape."""
    pieces = []
    while len(line) > limit:
        cut = QP_LINE - 1
        while line[cut - 1 : cut] == b"=" or line[cut - 2 : cut - 1] == b"=":
            cut -= 1
        pieces.append(line[:cut] + b"=")
        line = _no_leading_dot(line[cut:])
    pieces.append(line)
    return pieces


def _no_leading_dot(line: bytes) -> bytes:
    """A line's leading "." encoded (=2E): SMTP would have to double it on every copy (the
    <style> block's ".class {" lines), and a line of one "." would end the data."""
    return b"=2E" + line[1:] if line.startswith(b".") else line


@dataclass(frozen=True, slots=True)
class _Template:
    """One variant's message as byte chunks: literal bytes, and (field, is_html) where a
    reader's value goes, each part's chunks already quoted-printable."""

    rendered: Rendered
    head: bytes  # From, Subject, Date, List-Id, List-Unsubscribe-Post, MIME-Version
    tail: bytes  # Content-Type and the blank line that ends the headers
    body: tuple[bytes | tuple[str, bool], ...]
    # The body's literal chunks in DKIM's relaxed canonical form, for the per-copy body hash.
    canonical: tuple[bytes | tuple[str, bool], ...]
    slots: tuple[tuple[str, bool], ...]  # the (field, is_html) the body holds, each once
    # No literal line starts with ".", nor does a quoted-printable value's: see Composed.
    dot_free: bool


class Composer:
    """Every subscriber's message for one issue; build it once per send, then `compose` each.

    `rendered` gives each variant rendered and inlined: a mapping (from the ledger, say), or a
    function called once per variant the first time a subscriber needs it, so premailer runs
    once per variant whatever the number of subscribers. `now` is the Date header. Each copy is
    DKIM-signed when DKIM_PRIVATE_KEY_FILE, DKIM_SELECTOR and DKIM_DOMAIN are set. A test copy
    is the reader's copy with a Message-ID of its own, so a mail client never takes it for the
    real one when that arrives. A `preview_token` stands in for every reader's signed token (a
    preview made without DIGEST_SECRET); no page accepts it.
    """

    def __init__(
        self,
        config: Config,
        issue: Issue,
        rendered: Mapping[Variant, Rendered] | Callable[[Variant], Rendered],
        *,
        now: datetime,
        test_copy: bool = False,
        preview_token: str | None = None,
    ) -> None:
        self.config, self.issue = config, issue
        self._id_seed = f"{issue.id}.test.{now:%Y%m%d%H%M%S}" if test_copy else issue.id
        self._rendered = rendered.__getitem__ if isinstance(rendered, Mapping) else rendered
        self._dkim = dkim_key(config)  # None unless DKIM_* are set
        if now.tzinfo is None:
            raise MessageError(f"the Date needs an aware time, got {now!r}")
        self._date = format_datetime(now)
        self._list_id = list_id(config)
        self._preview_token = preview_token
        self._secret = secret_from(config) if preview_token is None else b""
        name, sender_address = parseaddr(config.newsletter.sender)
        if _CONTROL.search(config.newsletter.sender):
            raise MessageError("the sender contains a control character", where="newsletter.from")
        self._from_address = checked_address(sender_address, where="newsletter.from", utf8=False)
        local, _, domain = self._from_address.rpartition("@")
        self._from = Address(display_name=clean_text(name), username=local, domain=domain)
        list_name = config.newsletter.name
        if _CONTROL.search(list_name) or any(c in list_name for c in "<>"):
            raise MessageError(
                f"a list name with a control character or <>: {list_name!r}",
                where="newsletter.name",
            )
        self._list_header = f"{list_name} <{self._list_id}>" if list_name else f"<{self._list_id}>"
        probe = unsubscribe_url(config, "TOKEN")
        if not probe.isascii() or _CONTROL.search(probe) or any(c in probe for c in " <>,\"'"):
            raise MessageError(f"not a URL for a header: {probe!r}", where="newsletter.public_url")
        self._mailto = f"mailto:{self._from_address}?subject=unsubscribe"
        self._id_domain = _id_domain(config.newsletter.sender)
        self._templates: dict[Variant, _Template] = {}
        self._variants: dict[tuple[str, tuple[str, ...]], Variant] = {}

    def variant_of(self, subscriber: Subscriber) -> Variant:
        """The variant this subscriber reads: their language and sections (cached per choice)."""
        choice = (subscriber.language, subscriber.sections)
        found = self._variants.get(choice)
        if found is None:
            found = self._variants[choice] = variant_for(self.config, *choice)
        return found

    def skip_reason(self, subscriber: Subscriber) -> str | None:
        """Why this subscriber gets no copy (not subscribed, or nothing in their sections)."""
        if not subscriber.receives_mail:
            return f"{subscriber.status}"
        wanted = self.variant_of(subscriber).sections
        if wanted is not None and not any(
            section.articles for section in self.issue.sections if section.name in wanted
        ):
            return "no articles in their sections this issue"
        return None

    def compose(self, subscriber: Subscriber) -> Composed:
        """This subscriber's message; MessageError naming them for a bad address."""
        return self.compose_to(
            subscriber, checked_address(subscriber.email, where=_origin(subscriber))
        )

    def compose_to(self, subscriber: Subscriber, address: str) -> Composed:
        """This subscriber's message to `address`, which `checked_address` already gave (the
        ledger keeps it from the freeze: checking an address costs more than composing)."""
        template = self._template(self.variant_of(subscriber))
        recipient = self.recipient_of(subscriber)
        unsubscribe = recipient.unsubscribe_url
        values = template.rendered.values(recipient)
        # Only the slots this variant's parts hold; a value escaping leaves alone (a URL, an
        # address) is the same text in both parts, encoded once.
        encoded: dict[tuple[str, bool], bytes] = {}
        by_text: dict[str, bytes] = {}
        for slot in template.slots:
            key, html = slot
            value = escape(values[key]) if html else values[key]
            found = by_text.get(value)
            if found is None:
                found = by_text[value] = qp_encode(value, soft_end=True)
            encoded[slot] = found
        to = mailbox(f"{subscriber.first_name} {subscriber.last_name}", address)
        ident = _message_id(self._id_seed, subscriber.email, self._id_domain)
        own = (
            f"To: {to}\r\nMessage-ID: {ident}\r\n"
            f"List-Unsubscribe: <{unsubscribe}>,\r\n <{self._mailto}>\r\n".encode()
        )  # UTF-8 for an SMTPUTF8 address only: the rest is ASCII (names are RFC 2047-encoded)
        body = [c if isinstance(c, bytes) else encoded[c] for c in template.body]
        data = b"".join([template.head, own, template.tail, *body])
        if self._dkim is not None:
            canonical = b"".join(
                c if isinstance(c, bytes) else _relaxed_body(encoded[c]) for c in template.canonical
            )
            data = _sign(template.head + own + template.tail, canonical, self._dkim) + data
        return Composed(address, ident, data, dot_free=template.dot_free)

    def recipient_of(self, subscriber: Subscriber) -> Recipient:
        """This subscriber's own values in their copy: address, name and links."""
        token = self._preview_token
        if token is None:
            token = make_token(subscriber.email, list_id=self._list_id, secret=self._secret)
        return Recipient(
            email=subscriber.email,
            unsubscribe_url=unsubscribe_url(self.config, token),
            preferences_url=preferences_url(self.config, token),
            name=subscriber.first_name,
        )

    def compose_all(self, subscribers: Iterable[Subscriber]) -> Iterator[Composed | Skipped]:
        """A copy per subscriber, lazily; a Skipped for each who gets none, bad addresses too."""
        for subscriber in subscribers:
            reason = self.skip_reason(subscriber)
            if reason is not None:
                yield Skipped(subscriber.email, reason)
                continue
            try:
                address = checked_address(subscriber.email, where=_origin(subscriber))
            except MessageError as err:
                yield Skipped(subscriber.email, str(err))
                continue
            yield self.compose_to(subscriber, address)

    def _template(self, variant: Variant) -> _Template:
        template = self._templates.get(variant)
        if template is None:
            try:
                rendered = self._rendered(variant)
            except KeyError as err:
                raise MessageError(f"no rendered copy of the variant {variant}") from err
            template = self._templates[variant] = self._encode(rendered)
        return template

    def _encode(self, rendered: Rendered) -> _Template:
        text, html = (
            _encoded_part(parts, html=is_html)
            for parts, is_html in ((rendered.text_parts, False), (rendered.html_parts, True))
        )
        literal = b"".join(c for c in (*text, *html) if isinstance(c, bytes))
        boundary = f"=_digest_{hashlib.sha256(literal).hexdigest()[:32]}".encode("ascii")
        subject = clean_text(rendered.subject)  # a feed's title can be in it
        if not subject:
            raise MessageError("the subject is empty", where="email.subject")
        head = b"".join(
            [
                _header("From", self._from),
                _header("Subject", subject),
                _header("Date", self._date),
                _header("List-Id", self._list_header),
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n",
            ]
        )
        part_head = b'Content-Type: text/%s; charset="utf-8"\r\n'
        part_head += b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        tail = b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n'
        opening = b"--" + boundary + b"\r\n" + part_head % b"plain"
        between = b"\r\n--" + boundary + b"\r\n" + part_head % b"html"
        end = b"\r\n--" + boundary + b"--\r\n"
        body = (opening, *text, between, *html, end)
        canonical = tuple(_relaxed_body(c) if isinstance(c, bytes) else c for c in body)
        slots = tuple(dict.fromkeys(c for c in body if not isinstance(c, bytes)))
        literal_chunks = [head, tail, *(c for c in body if isinstance(c, bytes))]
        dot_free = not any(c.startswith(b".") or b"\n." in c for c in literal_chunks)
        return _Template(
            rendered,
            head=head,
            tail=tail,
            body=body,
            canonical=canonical,
            slots=slots,
            dot_free=dot_free,
        )


def _origin(subscriber: Subscriber) -> str:
    return f"subscriber {echoed(subscriber.email)}"


def _encoded_part(parts: tuple[str, ...], *, html: bool) -> list[bytes | tuple[str, bool]]:
    """A rendered part's literal text quoted-printable, each ending on a soft line break where
    a value follows; the values as (field, html) slots."""
    chunks: list[bytes | tuple[str, bool]] = []
    for n, part in enumerate(parts):
        if n % 2:
            chunks.append((part, html))
        else:
            chunks.append(qp_encode(part, soft_end=n + 1 < len(parts)))
    return chunks


def _header(name: str, value: str | Address) -> bytes:
    """One header as the email package folds and RFC 2047-encodes it (once per variant)."""
    holder = EmailMessage(policy=POLICY)
    try:
        holder[name] = value
    except (ValueError, IndexError) as err:
        raise MessageError(f"cannot write the {name} header: {err}") from err
    return holder.as_bytes(policy=POLICY)[:-2]  # without the blank line that ends the headers


# DKIM (RFC 6376), relaxed/relaxed, rsa-sha256. Signed here with `cryptography` (OpenSSL) rather
# than dkimpy's `dkim.sign`, whose pure-Python RSA and whole-body regexes took 18 ms a copy (55
# messages/s for a 100 KB issue); the tests verify every signature with dkimpy. The body's relaxed
# form is computed chunk by chunk: every chunk boundary is at a line start or after a non-space
# ("=", an escape or CRLF; quoted-printable never ends data on a space), so no run of spaces
# spans two chunks and each literal chunk's canonical form is computed once per variant.
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_AT_EOL = re.compile(rb" \r\n")


def _relaxed_body(chunk: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of spaces and tabs one space, none at a line's end."""
    return _WSP_AT_EOL.sub(b"\r\n", _WSP_RUN.sub(b" ", chunk))


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, runs of spaces one, none at the ends."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def _sign(head: bytes, canonical_body: bytes, key: DkimKey) -> bytes:
    """The DKIM-Signature header for a message with these headers and (canonical) body."""
    fields: dict[bytes, bytes] = {}
    name = b""
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            fields[name] += b"\r\n" + line  # a folded header's next line
        elif line:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            fields[name] = value
    names = [n for n in SIGNED_HEADERS if n.lower().encode("ascii") in fields]
    body_hash = base64.b64encode(hashlib.sha256(canonical_body).digest()).decode("ascii")
    tags = (
        f" v=1; a=rsa-sha256; c=relaxed/relaxed; d={key.domain}; s={key.selector};\r\n"
        f" h={':'.join(names)};\r\n bh={body_hash};\r\n b="
    ).encode("ascii")
    signed = b"".join(
        _relaxed_header(n.encode("ascii"), fields[n.lower().encode("ascii")]) for n in names
    )
    signed += _relaxed_header(b"DKIM-Signature", tags)[:-2]  # without its CRLF (RFC 6376 3.7)
    signature = key.private_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return b"DKIM-Signature:" + tags + base64.b64encode(signature) + b"\r\n"
