"""`digest doctor`: check a project's setup one item at a time, writing and sending nothing.

Each check is a small function yielding `Check` lines, reusing what the real run does: the same
source fetcher, render path, subscriber validation, SMTP settings and TLS rules, DKIM key and
secret rules. Where those raise a DigestError, the check becomes a FAIL line with its message and
hint, so one broken item never hides the others. Nothing is stored: sources are fetched without
the archive, the subscriber list is only read, and the SMTP probe logs in and quits, never
reaching MAIL FROM.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Literal
from urllib.parse import urlsplit

import aiosmtplib
import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization

from digest import message, pipeline, render, selector, sender, sources, subscribers, tokens
from digest.config import Config, is_loopback, language_warning
from digest.errors import DigestError
from digest.models import Article, Image, Issue, Period, Section
from digest.sources import SourceResult

Status = Literal["ok", "warn", "fail"]
SMTP_TIMEOUT = 15.0  # seconds per SMTP command; a relay that answers at all answers sooner
DNS_TIMEOUT = 5.0  # seconds for the DKIM record's look-up, retries included
DKIM_HINT = (
    "set DKIM_PRIVATE_KEY_FILE, DKIM_SELECTOR and DKIM_DOMAIN (docs/configuration.md): Gmail and "
    "Yahoo require bulk senders to sign their mail"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    message: str
    hint: str = ""


def failed(name: str, err: DigestError) -> Check:
    """A project error as a FAIL line: where and what went wrong, and its hint."""
    text = f"{err.where}: {err.message}" if err.where else err.message
    return Check(name, "fail", text, err.hint)


def examine(
    config: Config, *, now: datetime, resolver: dns.resolver.Resolver | None = None
) -> Iterator[Check]:
    """Every check on a loaded config, in order; lazily, so each line shows as it is known.

    `resolver` looks up the DKIM record (default: this machine's DNS settings).
    """
    yield Check(
        "config",
        "ok",
        f"{config.path.name}: {len(config.sources)} source(s), {len(config.sections)} section(s)",
    )
    untranslated = language_warning(config)
    if untranslated is not None:
        yield Check("language", "warn", untranslated, "a catalog in digest/locales adds a language")
    yield from map(_source_check, _fetch(config, now))
    yield from _guarded("templates", lambda: _templates(config, now))
    yield from _guarded("subscribers", lambda: _subscribers(config))
    yield from _guarded("smtp", lambda: _smtp(config))
    yield from _guarded("dkim", lambda: _dkim(config, resolver))
    yield from _guarded("secret", lambda: _secret(config))
    yield from _guarded("unsubscribe", lambda: _unsubscribe_url(config))


def _guarded(name: str, check: Callable[[], Iterable[Check]]) -> Iterator[Check]:
    try:
        yield from check()
    except DigestError as err:
        yield failed(name, err)


# -- sources, templates, subscribers -------------------------------------------------------------


def _fetch(config: Config, now: datetime) -> list[SourceResult]:
    """Fetch every source as `collect` does, unconditionally (no stored validators), keeping
    nothing."""
    zone = config.newsletter.timezone
    return asyncio.run(sources.collect(config.sources, {}, config.collect, timezone=zone, now=now))


def _source_check(result: SourceResult) -> Check:
    name = f"source {result.source}"
    if result.error is not None:
        return Check(
            name,
            "fail",
            result.error,
            "check its url in digest.toml; `digest collect` says the same",
        )
    count = f"{len(result.articles)} article(s)"
    if result.warnings:
        return Check(
            name, "warn", f"{count}, but {result.warnings[0]}", "`digest collect` shows them all"
        )
    if not result.articles:
        return Check(name, "warn", "readable, but it has no articles", "is this the right feed?")
    return Check(name, "ok", f"{count}, readable")


def _templates(config: Config, now: datetime) -> Iterator[Check]:
    variant = render.variant_for(config)
    note = pipeline.read_note(config.email.note)
    pipeline.render_issue(config, _sample_issue(config, now), variant, note=note)
    mine = config.email.templates
    over = f" ({mine.name}/ over the packaged templates)" if mine is not None else ""
    yield Check("templates", "ok", f"a sample issue renders in {variant.language!r}{over}")


def _sample_issue(config: Config, now: datetime) -> Issue:
    """A small made-up issue with a featured article and a card in every section, with and
    without a picture, so each layout and partial renders."""
    base = config.newsletter.public_url

    def article(n: int) -> Article:
        return Article(
            id=f"doctor-{n}",
            url=f"{base}/doctor-sample-{n}",
            title=f"Sample article {n}",
            published=now - timedelta(hours=n),
            source="digest doctor",
            excerpt="A made-up article, to check that the templates render.",
            bylines=("Ana Pérez", "Bo Li"),
            image=Image(f"{base}/doctor-sample-{n}.jpg", "A sample picture") if n % 2 else None,
        )

    period = Period(now - timedelta(days=config.selection.days), now)
    ident = selector.issue_id(
        period, timezone=config.newsletter.timezone, fmt=config.selection.issue_id_format
    )
    sections = tuple(
        Section(section.name, (article(n),)) for n, section in enumerate(config.sections, start=2)
    )
    return Issue(ident, period, article(1), sections)


def _subscribers(config: Config) -> Iterator[Check]:
    file = subscribers.SubscriberFile(config.subscribers_path)
    shown = file.path.name
    if file.path.is_dir():
        yield Check(
            "subscribers",
            "fail",
            f"{file.path} is a folder, not a subscriber list",
            "set [subscribers] file to the CSV file itself (docs/configuration.md)",
        )
        return
    if not file.exists():
        yield Check(
            "subscribers", "warn", f"no subscriber list at {file.path}", subscribers.INIT_HINT
        )
        return
    first, found = None, 0
    for problem in subscribers.validate(file, [section.name for section in config.sections]):
        first, found = first or problem, found + 1
    if first is not None:
        yield Check(
            "subscribers",
            "fail",
            f"{found} problem(s); the first: {shown}:{first.line}: {first.message}",
            "`digest subscribers validate` lists them all",
        )
        return
    count = sum(1 for subscriber in file if subscriber.receives_mail)
    if not count:
        yield Check(
            "subscribers",
            "warn",
            f"{shown}: no problems, but nobody is subscribed",
            "`digest subscribers add EMAIL` adds a reader",
        )
        return
    yield Check("subscribers", "ok", f"{shown}: no problems, {count} subscribed")


# -- SMTP --------------------------------------------------------------------------------------


def _smtp(config: Config) -> Iterator[Check]:
    settings = sender.read_settings(config.env, root=config.root)
    if isinstance(settings, sender.Outbox):
        yield Check(
            "smtp",
            "warn",
            f"SMTP_HOST is unset: `digest send` writes messages into the Maildir {settings.path}",
            "fine for trying digest out; set SMTP_HOST (and SMTP_PORT, SMTP_SECURITY, "
            "SMTP_USERNAME, SMTP_PASSWORD) to send for real",
        )
        return
    yield from asyncio.run(probe(settings, utf8_readers=lambda: _utf8_readers(config)))


def _utf8_readers(config: Config) -> int:
    """How many subscribed readers have a non-ASCII local part, which needs SMTPUTF8."""
    file = subscribers.SubscriberFile(config.subscribers_path)
    if not file.exists():
        return 0
    return sum(1 for s in file if s.receives_mail and not s.email.rpartition("@")[0].isascii())


async def probe(
    settings: sender.SmtpSettings, *, utf8_readers: Callable[[], int] = lambda: 0
) -> list[Check]:
    """Connect as `digest send` would: EHLO, STARTTLS when required, AUTH when set, then QUIT.

    Nothing is sent: no MAIL FROM, RCPT or DATA. One line per step reached; the first failure
    ends the probe. A relay without SMTPUTF8 is a warning when `utf8_readers()` (asked only
    then: it reads the list) counts readers who need it.
    """
    context = settings.tls_context
    if context is None and settings.security != "none":
        context = ssl.create_default_context()  # the trust store, or $SSL_CERT_FILE, as sender
    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        timeout=SMTP_TIMEOUT,
        use_tls=settings.security == "tls",
        start_tls=False,
        tls_context=context,
    )
    where = f"{settings.host}:{settings.port}"
    try:
        await client.connect()
        hello = await client.ehlo()
    except (OSError, aiosmtplib.SMTPException) as err:
        client.close()
        return [
            Check(
                "smtp",
                "fail",
                f"cannot connect to {where}: {_describe(err)}",
                "check SMTP_HOST, SMTP_PORT and SMTP_SECURITY (tls for port 465), and that this "
                "machine may reach the relay",
            )
        ]
    try:
        server = hello.message.split(None, 1)[0] if hello.message.strip() else settings.host
        checks = [Check("smtp", "ok", f"EHLO answered by {server} at {where}")]
        checks += await _secure(client, settings)
        if checks[-1].status != "fail":
            checks.append(await _login(client, settings))
        if (
            checks[-1].status != "fail"
            and not client.supports_extension("smtputf8")
            and (needing := utf8_readers())
        ):
            checks.append(
                Check(
                    "smtp",
                    "warn",
                    f"the relay does not offer SMTPUTF8, and {needing} subscribed reader(s) "
                    "have an address with a non-ASCII local part: their copies will fail",
                    "send through a relay that offers SMTPUTF8 (Postfix, Exim and the large "
                    "providers do); sending the issue again then delivers them",
                )
            )
        return checks
    finally:
        try:
            await client.quit()
        except (OSError, aiosmtplib.SMTPException):
            client.close()


async def _secure(client: aiosmtplib.SMTP, settings: sender.SmtpSettings) -> list[Check]:
    if settings.security == "tls":
        return [
            Check("smtp", "ok", "TLS from the first byte (SMTP_SECURITY=tls), certificate valid")
        ]
    if settings.security == "none":
        return [
            Check("smtp", "ok", "no TLS (SMTP_SECURITY=none), allowed for a relay on this machine")
        ]
    if not client.supports_extension("starttls"):
        return [
            Check(
                "smtp",
                "fail",
                "the relay does not offer STARTTLS, and SMTP_SECURITY is starttls",
                "digest never sends in clear to a remote relay: use SMTP_SECURITY=tls for port "
                "465, or a relay that offers STARTTLS",
            )
        ]
    try:
        await client.starttls()
        await client.ehlo()  # the extensions again, now over TLS (AUTH often appears only now)
    except (OSError, aiosmtplib.SMTPException) as err:
        return [
            Check(
                "smtp",
                "fail",
                f"STARTTLS failed: {_describe(err)}",
                "the relay's certificate must be valid for SMTP_HOST and from a CA this machine "
                "trusts ($SSL_CERT_FILE can name a private CA)",
            )
        ]
    return [Check("smtp", "ok", "STARTTLS offered and negotiated, certificate valid")]


async def _login(client: aiosmtplib.SMTP, settings: sender.SmtpSettings) -> Check:
    if settings.username is None or settings.password is None:
        if client.supports_extension("auth"):
            return Check(
                "smtp",
                "warn",
                "the relay offers AUTH, but SMTP_USERNAME is unset; it may refuse to relay",
                "set SMTP_USERNAME and SMTP_PASSWORD if your provider gave you a login",
            )
        return Check("smtp", "ok", "no login needed (SMTP_USERNAME unset, no AUTH offered)")
    if not client.supports_extension("auth"):
        return Check(
            "smtp",
            "fail",
            "SMTP_USERNAME is set, but the relay offers no AUTH to log in with",
            "unset SMTP_USERNAME and SMTP_PASSWORD if the relay needs no login; else check "
            "SMTP_HOST and SMTP_PORT (587 is the usual submission port)",
        )
    try:
        await client.login(settings.username, settings.password)
    except aiosmtplib.SMTPException as err:
        return Check(
            "smtp",
            "fail",
            f"login refused for {settings.username}: {_describe(err)}",
            "check SMTP_USERNAME and SMTP_PASSWORD",
        )
    return Check("smtp", "ok", f"login accepted for {settings.username}")


def _describe(err: BaseException) -> str:
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return f"{err.code} {err.message}"
    return str(err) or type(err).__name__


# -- DKIM, the secret, the links -----------------------------------------------------------------


def _dkim(config: Config, resolver: dns.resolver.Resolver | None) -> Iterator[Check]:
    key = message.dkim_key(config)
    if key is None:
        yield Check("dkim", "warn", "not set up: copies go out unsigned", DKIM_HINT)
        return
    yield Check(
        "dkim",
        "ok",
        f"the key loads (RSA, {key.private_key.key_size} bits), selector {key.selector!r}",
    )
    sender_domain = parseaddr(config.newsletter.sender)[1].rpartition("@")[2].lower()
    domain = key.domain.lower().rstrip(".")
    if sender_domain == domain or sender_domain.endswith(f".{domain}"):
        yield Check("dkim", "ok", f"DKIM_DOMAIN {domain} aligns with the From domain")
    else:
        yield Check(
            "dkim",
            "fail",
            f"DKIM_DOMAIN {domain} is not the From address's domain {sender_domain} nor a parent "
            "of it: receivers checking DMARC ignore the signature",
            f"set DKIM_DOMAIN={sender_domain} and publish the key at "
            f"{key.selector}._domainkey.{sender_domain}",
        )
    try:
        resolver = resolver or _system_resolver()
    except (dns.exception.DNSException, OSError) as err:  # no /etc/resolv.conf, say
        yield Check("dkim", "warn", f"cannot look up the DKIM record: {err}")
        return
    yield _published(key, resolver)


def _system_resolver() -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver()  # /etc/resolv.conf
    resolver.lifetime = DNS_TIMEOUT
    return resolver


def _published(key: message.DkimKey, resolver: dns.resolver.Resolver) -> Check:
    """Whether DNS publishes this key's public half where receivers look for it.

    A definite answer (no such name, another key) is a FAIL; no answer at all (no network, no
    resolver) is only a WARN: the record may well be there. So is "no such name" from a
    resolver that knows neither the domain nor its parents, as offline sandboxes answer.
    """
    name = f"{key.selector}._domainkey.{key.domain}"
    public = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    publish = (
        f'publish the TXT record {name} = "v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"'
    )
    dig = f"check it from a machine with DNS: dig TXT {name}"
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as err:
        if isinstance(err, dns.resolver.NXDOMAIN) and not _known(resolver, key.domain):
            return Check(
                "dkim", "warn", f"cannot look up {name}: DNS here knows no {key.domain}", dig
            )
        return Check("dkim", "fail", f"no TXT record at {name}: receivers cannot verify", publish)
    except (dns.exception.DNSException, OSError) as err:
        return Check("dkim", "warn", f"cannot look up {name}: {err}", dig)
    keys = [
        tags["p"]
        for record in answer
        if "p" in (tags := _tags(b"".join(record.strings).decode("ascii", "replace")))
    ]
    if any(_decoded(found) == public for found in keys):
        return Check("dkim", "ok", f"{name} publishes this key")
    if keys == [""]:
        return Check("dkim", "fail", f"{name} revokes the key (an empty p=)", publish)
    if not keys:
        return Check("dkim", "fail", f"{name} has TXT records, but no DKIM key (p=)", publish)
    return Check(
        "dkim", "fail", f"{name} publishes another key than DKIM_PRIVATE_KEY_FILE's", publish
    )


def _known(resolver: dns.resolver.Resolver, domain: str) -> bool:
    """Whether the resolver knows `domain` or a parent (example.org for news.example.org)."""
    labels = domain.split(".")
    for n in range(max(len(labels) - 1, 1)):
        try:
            resolver.resolve(".".join(labels[n:]), "SOA", search=False, raise_on_no_answer=False)
        except (dns.exception.DNSException, OSError):
            continue
        return True
    return False


def _tags(record: str) -> dict[str, str]:
    """A DKIM record's tags (RFC 6376 3.6.1), "v=DKIM1; k=rsa; p=MIIB...", whitespace removed."""
    pairs = (part.split("=", 1) for part in record.split(";") if "=" in part)
    return {name.strip(): re.sub(r"\s+", "", value) for name, value in pairs}


def _decoded(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _secret(config: Config) -> Iterator[Check]:
    secret = tokens.secret_from(config)  # refuses it unset, short or guessable, with the fix
    yield Check("secret", "ok", f"{tokens.SECRET_VAR} is set ({len(secret)} bytes)")


def _unsubscribe_url(config: Config) -> Iterator[Check]:
    url = tokens.unsubscribe_url(config, "…")
    parts = urlsplit(url)
    if parts.scheme == "https":
        yield Check("unsubscribe", "ok", f"links go to {url}")
        return
    hint = (
        "put `digest serve` behind an HTTPS reverse proxy and set [newsletter] public_url to "
        "its https:// address"
    )
    if is_loopback(parts.hostname or ""):
        yield Check("unsubscribe", "warn", f"{url} is plain http on this machine only", hint)
        return
    yield Check(
        "unsubscribe",
        "fail",
        f"{url} is plain http: each reader's token would cross the network in clear",
        hint,
    )
