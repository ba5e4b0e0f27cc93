"""Composing one reader's MIME message: parts, headers, encodings and stable bytes."""

from __future__ import annotations

import base64
import binascii
import email
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import replace
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from dkim_keys import make_key
from email_validator import EmailNotValidError, validate_email
from example_issue import NOW, example_project, synthetic_issue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest import inline, message, pipeline, render, tokens
from digest.config import Config, load_config
from digest.errors import ConfigError, MessageError, echoed
from digest.models import Issue, Subscriber, SubscriberStatus
from digest.project import data_dir
from digest.render import Rendered


def reparse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- Composer: a whole send's copies from templates encoded once per variant ------------------

SECRET = "test-secret-not-for-use-9f3Kq7Lx2Pz"
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id", b"list-id"]
SIGNED += [b"list-unsubscribe", b"list-unsubscribe-post"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Issue]:
    """The example project with its week selected, and a secret to sign links with."""
    return example_project(tmp_path_factory.mktemp("project"), {tokens.SECRET_VAR: SECRET})


@pytest.fixture(scope="module")
def example(project: tuple[Config, Issue]) -> tuple[Config, Issue, Rendered]:
    """The example week rendered and inlined once, in the newsletter's language."""
    config, issue = project
    return config, issue, pipeline.render_issue(config, issue, render.variant_for(config))


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A fresh 2048-bit RSA key: (private key PEM, the DNS TXT record publishing it)."""
    key = make_key(tmp_path_factory.mktemp("rsa"))
    return key.path.read_bytes(), key.record.encode()


@pytest.fixture(scope="module")
def dkim_env(
    rsa_key: tuple[bytes, bytes], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """DKIM settings for config.env, with the key written to a file."""
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    path.write_bytes(rsa_key[0])
    return {
        "DKIM_PRIVATE_KEY_FILE": str(path),
        "DKIM_SELECTOR": "digest",
        "DKIM_DOMAIN": "dispatch.example.org",
    }


def composer(config: Config, issue: Issue, rendered: Rendered) -> message.Composer:
    """A Composer whose every subscriber reads `rendered`."""
    return message.Composer(config, issue, lambda variant: rendered, now=NOW)


def recipient_of(config: Config, rendered: Rendered, subscriber: Subscriber) -> render.Recipient:
    """The links and name a copy for `subscriber` must carry, made here from `tokens`."""
    token = tokens.make_token(
        subscriber.email, list_id=tokens.list_id(config), secret=tokens.secret_from(config)
    )
    return render.Recipient(
        email=subscriber.email,
        unsubscribe_url=tokens.unsubscribe_url(config, token),
        preferences_url=tokens.preferences_url(config, token),
        name=subscriber.first_name,
    )


def assert_wire_form(data: bytes) -> None:
    """7-bit, CRLF only, headers within 998 octets and body lines within QP's 76."""
    data.decode("ascii")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def decoded_parts(data: bytes) -> tuple[str, str]:
    """(text, html) as the email package decodes them, line breaks back to "\\n"."""
    parsed = reparse(data)
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    return tuple(part.get_content().replace("\r\n", "\n") for part in (text, html))  # type: ignore[return-value]


def reader_name(data: bytes) -> str:
    """The To header's display name, decoded as RFC 2047 says: the space between two encoded
    words is not part of the name (the header registry's parser keeps one; the legacy one not)."""
    raw = email.message_from_bytes(data, policy=policy.compat32)["To"]
    if "=?utf-8?b?" not in raw:
        return str(reparse(data)["To"].addresses[0].display_name)
    return str(make_header(decode_header(raw))).rsplit(" <", 1)[0]


READERS = [
    Subscriber(email="ana.perez@example.org", first_name="Ana", last_name="Pérez"),
    Subscriber(email="zoe@example.org", first_name='Zoë <&> "Z"', last_name="O'Brien"),
    Subscriber(email="plain@example.org"),
    Subscriber(email="jo@xn--exmple-cua.org", first_name="Jo" * 40, last_name="渡辺 麻友"),
]


@pytest.mark.parametrize("subscriber", READERS, ids=lambda s: s.email)
def test_every_copy_decodes_to_exactly_what_personalise_gives(
    example: tuple[Config, Issue, Rendered], subscriber: Subscriber
) -> None:
    """The byte-level template filled for a reader parses back to their personalised copy."""
    config, issue, rendered = example
    composed = composer(config, issue, rendered).compose(subscriber)
    expected = rendered.personalise(recipient_of(config, rendered, subscriber))
    assert_wire_form(composed.data)
    assert decoded_parts(composed.data) == (expected.text, expected.html)
    full_name = f"{subscriber.first_name} {subscriber.last_name}".strip()
    assert reader_name(composed.data) == full_name


def test_headers_of_a_copy_name_the_reader_and_offer_one_click_unsubscribe(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """From, To with its RFC 2047 name, Subject, Date, Message-ID, List-Id and RFC 8058 headers."""
    config, issue, rendered = example
    reader = Subscriber(email="zoe@example.org", first_name="Zoë", last_name="Laurent")
    composed = composer(config, issue, rendered).compose(reader)
    parsed = reparse(composed.data)
    assert parsed["From"] == config.newsletter.sender
    assert b"To: =?utf-8?b?" in composed.data
    assert parsed["To"].addresses[0].display_name == "Zoë Laurent"
    assert parsed["To"].addresses[0].addr_spec == composed.address == "zoe@example.org"
    assert parsed["Subject"] == rendered.subject
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"] == composed.message_id
    assert composed.message_id.endswith("@dispatch.example.org>")
    assert parsed["List-Id"] == f"{config.newsletter.name} <{tokens.list_id(config)}>"
    unsubscribe = recipient_of(config, rendered, reader).unsubscribe_url
    assert parsed["List-Unsubscribe"] == (
        f"<{unsubscribe}>, <mailto:weekly@dispatch.example.org?subject=unsubscribe>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["MIME-Version"] == "1.0"


def test_the_same_copy_gives_the_same_bytes(example: tuple[Config, Issue, Rendered]) -> None:
    """Boundary and ids come from the content, so composing again is byte-identical."""
    config, issue, rendered = example
    first, again = (composer(config, issue, rendered).compose(READERS[1]) for _ in range(2))
    assert first.data == again.data


def test_message_ids_are_stable_per_reader_and_hide_the_address(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """One id per (issue, reader), in the sender's domain, without the address in it."""
    config, issue, rendered = example
    composing = composer(config, issue, rendered)
    first, again, other = (
        composing.compose(Subscriber(email=address)).message_id
        for address in ("Ana@Example.org", "ana@example.org", "bo@example.org")
    )
    assert first == again != other
    assert first.startswith("<2026-W47.") and first.endswith("@dispatch.example.org>")
    assert "ana" not in first.lower()


def test_message_ids_are_unique_per_reader_and_per_issue(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """Two readers, or two issues, never share a Message-ID."""
    config, issue, rendered = example
    first = composer(config, issue, rendered)
    other_issue = composer(config, replace(issue, id="2026-W48"), rendered)
    ids = {
        c.compose(Subscriber(email=address)).message_id
        for c in (first, other_issue)
        for address in ("a@example.org", "b@example.org")
    }
    assert len(ids) == 4


def test_premailer_runs_once_per_variant_whatever_the_number_of_subscribers(
    project: tuple[Config, Issue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixty readers in two languages inline the CSS twice, not sixty times."""
    config, issue = project
    calls: list[int] = []
    real = inline.inline_css

    def counted(html: str) -> inline.Inlined:
        calls.append(1)
        return real(html)

    monkeypatch.setattr(inline, "inline_css", counted)
    composing = message.Composer(
        config, issue, lambda variant: pipeline.render_issue(config, issue, variant), now=NOW
    )
    readers = [
        Subscriber(email=f"r{n}@example.org", language="es" if n % 2 else "") for n in range(60)
    ]
    composed = list(composing.compose_all(readers))
    assert len(calls) == 2
    assert len({c.message_id for c in composed if isinstance(c, message.Composed)}) == 60


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    literals=st.lists(
        st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r")),
        min_size=5,
        max_size=5,
    ),
    name=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60),
    long_line=st.integers(min_value=0, max_value=200),
)
def test_any_text_and_name_round_trip_through_the_encoded_template(
    literals: list[str], name: str, long_line: int
) -> None:
    """Whatever the literal text around the placeholders and the reader's name, copies decode
    exactly and no encoded line is too long."""
    config = load_config(
        data_dir() / "examples" / "digest.toml", environ={tokens.SECRET_VAR: SECRET}
    )
    pad = "x=é " * long_line
    text = (pad + literals[0], "greeting", literals[1], "unsubscribe_url", literals[2])
    html = (literals[3], "email", pad, "greeting", literals[4] + pad)
    rendered = Rendered(
        variant=render.variant_for(config),
        subject="Weekly",
        preheader="",
        html_parts=html,
        text_parts=text,
        greetings=("Hi %(name)s,", "Hi there,"),
    )
    reader = Subscriber(email="ana@example.org", first_name=name, last_name=name)
    composed = composer(config, synthetic_issue(3), rendered).compose(reader)
    expected = rendered.personalise(recipient_of(config, rendered, reader))
    assert_wire_form(composed.data)
    assert decoded_parts(composed.data) == (expected.text, expected.html)
    assert reader_name(composed.data) == message.clean_text(f"{name} {name}")
    assert composed.dot_free and b"\n." not in composed.data  # the sender takes its word


def test_a_name_with_line_breaks_cannot_add_a_header(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """CR, LF and other control characters in a CSV name become spaces inside the To header."""
    config, issue, rendered = example
    reader = Subscriber(email="ana@example.org", first_name="Ana\r\nBcc: all@example.org\x00")
    parsed = reparse(composer(config, issue, rendered).compose(reader).data)
    assert parsed.get_all("Bcc") is None
    assert parsed["To"].addresses[0].display_name == "Ana Bcc: all@example.org"


def test_a_subject_from_a_feed_with_control_characters_is_neutralised(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """A feed title in the subject cannot split the Subject header: its breaks become spaces."""
    config, issue, rendered = example
    tainted = replace(rendered, subject="Weekly: Storm\r\nBcc: all@example.org\x1b[31m")
    parsed = reparse(composer(config, issue, tainted).compose(READERS[0]).data)
    assert parsed.get_all("Bcc") is None
    assert parsed["Subject"] == "Weekly: Storm Bcc: all@example.org [31m"


@pytest.mark.parametrize(
    "bad",
    ["a@b.org\r\nBcc: x@y.org", "no-at-sign", "a b@example.org", "<a@b.org>", "zoë@[192.0.2.1]"],
)
def test_a_subscriber_address_that_is_not_one_address_is_refused(
    example: tuple[Config, Issue, Rendered], bad: str
) -> None:
    """email-validator's syntax check runs first; the error names the subscriber."""
    config, issue, rendered = example
    with pytest.raises(MessageError) as raised:
        composer(config, issue, rendered).compose(Subscriber(email=bad))
    assert repr(bad) in raised.value.where


def checked_in_full(address: str) -> tuple[str, str]:
    """What email-validator alone makes of `address`: ("ok", the address a copy goes to) or
    ("error", the message `checked_address` words for it)."""
    try:
        valid = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as err:
        return "error", f"not an email address: {echoed(address)} ({err})"
    return "ok", valid.ascii_email or f"{valid.local_part}@{valid.ascii_domain}"


def long_domain(length: int, size: int, letters: str) -> str:
    """A domain of about `length` characters: labels of `size` cut from `letters` repeated."""
    labels = [(letters * size)[:size] for _ in range(max(length // (size + 1), 1))]
    return ".".join([*labels, "com"])


# Big providers, IDN (Unicode, xn--, upper case, full-width), reserved and malformed domains.
ODD_DOMAINS = (
    "gmail.com", "GMAIL.com", "yahoo.com.br", "bücher.de", "BÜCHER.de", "xn--bcher-kva.de",
    "xn--bcher.de", "日本.jp", "localhost", "a.invalid", "x.local", "com", "-a.com", "a-.com",
    "a..com", "example.org.", "ab--c.com", "a_b.com", "a.123", "[192.0.2.1]", "", "@gmail.com",
    "gmail.com>", "gmail.com (home)", "ｅｘａｍｐｌｅ.com", "example。org",
)  # fmt: skip
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
LOCAL_PARTS = st.one_of(
    st.from_regex(rf"{ATEXT}+(\.{ATEXT}+)*", fullmatch=True),  # a dot-atom: the fast path's
    st.text(
        alphabet=st.sampled_from([*"azAZ09!#$%&'*+/=?^_`{|}~-.", *' "@<>(),;:\\[]é\u0301\u00a0＠']),
        max_size=20,
    ),
    st.sampled_from(["ana", "Ana.Perez", "info", "Postmaster", "a..b", ".a", "a.", '"ana"', "zoë"]),
    st.integers(min_value=60, max_value=70).map(lambda n: "a" * n),  # around 64
)
DOMAINS = st.one_of(
    st.sampled_from(ODD_DOMAINS),
    st.lists(
        st.text(st.sampled_from("abz09-éA"), min_size=1, max_size=8), min_size=1, max_size=4
    ).map(".".join),
    st.integers(min_value=55, max_value=70).map(lambda n: "a" * n + ".com"),  # a label near 63
    st.builds(
        long_domain,
        st.integers(min_value=150, max_value=260),
        st.integers(min_value=20, max_value=64),
        st.sampled_from(["b", "ü", "bbbü"]),  # IDN labels are longer in their xn-- form
    ),
)
ADDRESSES = st.one_of(
    st.builds(
        lambda before, local, at, domain, after: before + local + at + domain + after,
        st.sampled_from(["", " ", "\u00a0"]),
        LOCAL_PARTS,
        st.sampled_from(["@", "@", "@", "@@", ""]),
        DOMAINS,
        st.sampled_from(["", " "]),
    ),
    # Anything but what the control-character check refuses first.
    st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40),
)


@settings(max_examples=1000, deadline=None)
@given(address=ADDRESSES)
def test_checking_an_address_answers_what_email_validator_answers_for_it(address: str) -> None:
    """The per-domain fast path gives email-validator's address, and its error message for any
    address it refuses, word for word."""
    try:
        answer = "ok", message.checked_address(address, where="subscribers")
    except MessageError as err:
        answer = "error", err.message
    assert answer == checked_in_full(address)


def test_a_huge_address_is_echoed_cut_in_its_error() -> None:
    """A 10,000-character address is named by its first 60 characters and its length."""
    with pytest.raises(MessageError) as raised:
        message.checked_address("a" * 10_000 + "@example.org", where="--to")
    assert "'" + "a" * 60 + "'… (10,012 characters)" in raised.value.message
    assert len(str(raised.value)) < 200


def test_a_domain_is_validated_once_for_all_its_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big provider's thousands of readers cost one domain check, not one each."""
    calls: list[str] = []
    real = message.validate_email

    def counted(address: str, **options: bool) -> object:
        calls.append(address)
        return real(address, **options)

    monkeypatch.setattr(message, "validate_email", counted)
    message._checked_domain.cache_clear()
    checked = [message.checked_address(f"Reader.{n}@Gmail.COM", where="x") for n in range(100)]
    assert checked[7] == "Reader.7@gmail.com"
    assert len(calls) == 1


def test_a_sender_name_with_a_comma_is_quoted_in_the_from_header(
    example: tuple[Config, Issue, Rendered], tmp_path: Path
) -> None:
    """`from = "Die, Workwear! <digest@example.org>"` sends From: "Die, Workwear!" <...>, which
    parses back to that name and address; the list id and Message-ID use that address too."""
    config, issue, rendered = example
    written = config.path.read_text(encoding="utf-8").replace(
        config.newsletter.sender, "Die, Workwear! <digest@example.org>"
    )
    (tmp_path / "digest.toml").write_text(written, encoding="utf-8")
    loaded = load_config(tmp_path / "digest.toml", environ={tokens.SECRET_VAR: SECRET})
    composed = composer(loaded, issue, rendered).compose(READERS[0])
    assert composed.data.startswith(b'From: "Die, Workwear!" <digest@example.org>\r\n')
    (sender,) = reparse(composed.data)["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Die, Workwear!", "digest@example.org")
    assert reparse(composed.data)["List-Id"].endswith("<digest.example.org>")
    assert composed.message_id.endswith("@example.org>")


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("sender", "News\r\nBcc: x@y.org <weekly@dispatch.example.org>", "newsletter.from"),
        ("name", "Weekly\nBcc: x@y.org", "newsletter.name"),
        ("public_url", "https://dispatch.example.org/a b", "newsletter.public_url"),
    ],
)
def test_config_values_that_would_break_a_header_are_refused(
    example: tuple[Config, Issue, Rendered], field: str, value: str, where: str
) -> None:
    """A control character in the sender, list name or public URL stops composing, naming it."""
    config, issue, rendered = example
    broken = replace(config, newsletter=replace(config.newsletter, **{field: value}))
    with pytest.raises(MessageError) as raised:
        composer(broken, issue, rendered)
    assert raised.value.where == where


def test_compose_all_is_lazy_and_skips_who_gets_no_copy(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """Unsubscribed readers and bad addresses come back as Skipped; the rest, one at a time."""
    config, issue, rendered = example
    endless = (Subscriber(email=f"r{n}@example.org") for n in itertools.count())
    readers = itertools.chain(
        [
            Subscriber(email="gone@example.org", status=SubscriberStatus.UNSUBSCRIBED),
            Subscriber(email="not an address"),
        ],
        endless,
    )
    first = list(itertools.islice(composer(config, issue, rendered).compose_all(readers), 3))
    assert [type(c) for c in first] == [message.Skipped, message.Skipped, message.Composed]
    assert first[0].reason == "unsubscribed"  # type: ignore[union-attr]


def test_a_reader_whose_sections_have_no_articles_is_skipped(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """Choosing only sections empty this issue means no copy, and the reason says so."""
    config, issue, rendered = example
    reader = Subscriber(email="a@example.org", sections=("No Such Section",))
    assert composer(config, issue, rendered).skip_reason(reader) is not None


def test_a_non_ascii_local_part_gets_a_utf8_to_header_and_an_idna_domain(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """josé@exämple.org's copy goes to josé@xn--exmple-cua.org, written in UTF-8 in the To
    header (RFC 6532), the name still RFC 2047; the rest of the message stays 7-bit."""
    config, issue, rendered = example
    reader = Subscriber(email="José@exämple.org", first_name="José", last_name="Núñez")
    composed = composer(config, issue, rendered).compose(reader)
    assert composed.address == "José@xn--exmple-cua.org"
    head, _, body = composed.data.partition(b"\r\n\r\n")
    to = [line for line in head.split(b"\r\n") if line.startswith(b"To: ")]
    assert to == [b"To: =?utf-8?b?Sm9zw6kgTsO6w7Fleg==?= <Jos\xc3\xa9@xn--exmple-cua.org>"]
    body.decode("ascii")
    parsed = email.message_from_string(composed.data.decode(), policy=policy.default)
    assert parsed["To"].addresses[0].username == "José"
    assert decoded_parts(composed.data)[0] == rendered.personalise(
        recipient_of(config, rendered, reader)
    ).text.replace("\r\n", "\n")


def test_the_senders_address_must_stay_ascii(project: tuple[Config, Issue]) -> None:
    """newsletter.from is every copy's From and MAIL FROM: a UTF-8 one is refused up front."""
    config, issue = project
    utf8 = replace(config, newsletter=replace(config.newsletter, sender="News <josé@example.org>"))
    with pytest.raises(MessageError) as raised:
        message.Composer(utf8, issue, lambda variant: None, now=NOW)  # type: ignore[arg-type,return-value]
    assert raised.value.where == "newsletter.from"


def test_dkim_signature_covers_the_list_headers_and_verifies(
    example: tuple[Config, Issue, Rendered], rsa_key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    """Each copy is signed with the configured key; dkimpy verifies it against the DNS record."""
    config, issue, rendered = example
    pem, record = rsa_key
    (tmp_path / "dkim.pem").write_bytes(pem)
    signing = replace(
        config,
        env={
            **config.env,
            "DKIM_PRIVATE_KEY_FILE": str(tmp_path / "dkim.pem"),
            "DKIM_SELECTOR": "digest",
            "DKIM_DOMAIN": "dispatch.example.org",
        },
    )
    data = composer(signing, issue, rendered).compose(READERS[1]).data
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"digest._domainkey.dispatch.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    signed = reparse(data)["DKIM-Signature"].replace(" ", "").lower()
    listed = signed.split("h=")[1].split(";")[0].split(":")
    assert set(SIGNED) <= {name.encode() for name in listed}
    assert not dkim.verify(
        data.replace(b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post:  x"), dnsfunc=dns
    )
    assert decoded_parts(data) == decoded_parts(
        composer(config, issue, rendered).compose(READERS[1]).data
    )


def test_partial_dkim_settings_are_a_config_error(project: tuple[Config, Issue]) -> None:
    """A selector without a key file (or any two of three) is refused before composing."""
    config, _ = project
    partial = replace(config, env={**config.env, "DKIM_SELECTOR": "digest"})
    with pytest.raises(ConfigError):
        message.dkim_key(partial)


def test_an_unusable_dkim_key_is_a_config_error(
    project: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A key file dkimpy cannot sign with is refused once, not per message."""
    config, _ = project
    (tmp_path / "dkim.pem").write_text("not a key\n")
    env = {"DKIM_PRIVATE_KEY_FILE": str(tmp_path / "dkim.pem"), "DKIM_SELECTOR": "s"}
    with pytest.raises(ConfigError):
        message.dkim_key(replace(config, env={**config.env, **env, "DKIM_DOMAIN": "x.org"}))


SPACEY = st.text(alphabet=st.sampled_from([" ", "\t", "a", "é", "=", "\n", ".", "\u00a0"]))


@settings(max_examples=40, deadline=None)
@given(literals=st.lists(SPACEY, min_size=5, max_size=5), name=SPACEY)
def test_signatures_verify_whatever_spaces_and_tabs_the_text_holds(
    literals: list[str], name: str, rsa_key: tuple[bytes, bytes], dkim_env: dict[str, str]
) -> None:
    """The body hash, computed chunk by chunk, matches dkimpy's over the whole body."""
    config = load_config(
        data_dir() / "examples" / "digest.toml", environ={tokens.SECRET_VAR: SECRET, **dkim_env}
    )
    rendered = Rendered(
        variant=render.variant_for(config),
        subject="Weekly  \t news",
        preheader="",
        html_parts=(literals[0], "greeting", literals[1], "unsubscribe_url", literals[2]),
        text_parts=(literals[3], "email", literals[4], "greeting", " \t "),
        greetings=("Hi  %(name)s ,", "Hi\tthere,"),
    )
    reader = Subscriber(email="ana@example.org", first_name=name)
    data = composer(config, synthetic_issue(3), rendered).compose(reader).data
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: rsa_key[1])


def test_quoted_printable_lines_stay_within_76_even_where_b2a_qp_overruns() -> None:
    """A line ending in an encoded space is cut again, never inside an escape, and decodes back."""
    text = "x=é " * 81 + "\n" + "a" * 200
    for soft_end in (False, True):
        encoded = message.qp_encode(text, soft_end=soft_end)
        assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
        assert binascii.a2b_qp(encoded).decode("utf-8").replace("\r\n", "\n") == text
        assert encoded.endswith(b"=\r\n") is soft_end


@settings(max_examples=200, deadline=None)
@given(text=SPACEY, soft_end=st.booleans())
def test_no_quoted_printable_line_starts_with_a_dot(text: str, soft_end: bool) -> None:
    """Leading dots are encoded wherever a line starts (even in a cut line), so SMTP has nothing
    to stuff; every line stays within 76 and the text decodes back."""
    encoded = message.qp_encode(text + "." * 90 + "\n.note {\n", soft_end=soft_end)
    lines = encoded.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert max(len(line) for line in lines) <= 76
    decoded = binascii.a2b_qp(encoded).decode("utf-8").replace("\r\n", "\n")
    assert decoded == (text + "." * 90 + "\n.note {\n").replace("\r\n", "\n")


QP_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # space to "~"


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(st.characters(exclude_categories=("Cs",))),
        # Printable ASCII of every length up to past the line, with an awkward first or last
        # character (a dot, a space, "=", a tab, a line break, non-ASCII) or none.
        st.builds(
            lambda first, middle, last: first + middle + last,
            st.sampled_from(["", "", ".", " ", "=", "é"]),
            st.integers(min_value=0, max_value=80).flatmap(
                lambda n: st.text(QP_PRINTABLE, min_size=n, max_size=n)
            ),
            st.sampled_from(["", "", " ", ".", "=", "\t", "\n", "\r", "é"]),
        ),
        st.sampled_from(["a" * 74, "a" * 75, "a" * 76, "a" * 74 + " ", "." + "a" * 74, "", " "]),
    ),
    soft_end=st.booleans(),
)
def test_the_quoted_printable_fast_path_gives_the_general_encoding(
    text: str, soft_end: bool
) -> None:
    """A short plain value's encoding, itself and a soft break, is byte for byte what the
    general encoder writes, for any text and at every length around the 76-character line."""
    expected = message._qp_encode(text, soft_end=soft_end)
    assert message.qp_encode(text, soft_end=soft_end) == expected


@given(
    name=st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=120),
        st.text(st.sampled_from("a é€😀"), min_size=10, max_size=80),  # 1 to 4 bytes each
    )
)
def test_encoded_words_hold_as_many_whole_characters_as_fit(name: str) -> None:
    """Each RFC 2047 word of a display name is whole UTF-8 characters within 45 bytes, and each
    but the last is full: the next character would not have fitted."""
    words = message._encoded_words(name).split("\r\n ")
    raw = [base64.b64decode(w.removeprefix("=?utf-8?b?").removesuffix("?=")) for w in words]
    assert "".join(word.decode("utf-8") for word in raw) == name
    assert all(len(word) <= message.ENCODED_WORD_BYTES for word in raw)
    for word, after in itertools.pairwise(raw):
        first = after.decode("utf-8")[0].encode("utf-8")
        assert len(word) + len(first) > message.ENCODED_WORD_BYTES


def test_a_composed_copy_has_no_line_for_smtp_to_dot_stuff(
    example: tuple[Config, Issue, Rendered],
) -> None:
    """The example issue (its <style> block is full of ".class" lines) needs no stuffing."""
    config, issue, rendered = example
    copy = composer(config, issue, rendered).compose(READERS[0])
    data = copy.data
    assert b".view-online" in binascii.a2b_qp(data) or b"=2Eview-online" in data
    assert b"\r\n." not in data
    assert copy.dot_free  # so the sender does not look for one


@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="needs Debian's spamassassin")
def test_the_example_issue_scores_under_2_with_spamassassins_local_rules(
    example: tuple[Config, Issue, Rendered], tmp_path: Path
) -> None:
    """`spamassassin -L -t` (no network tests) gives the example week's message under 2.0."""
    config, issue, rendered = example
    data = composer(config, issue, rendered).compose(READERS[0]).data
    checked = subprocess.run(
        ["spamassassin", "-L", "-t"],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},  # its user_prefs go here, not in ~
    )
    status = re.search(rb"X-Spam-Status: \w+, score=(-?[0-9.]+)", checked.stdout)
    assert status is not None, checked.stdout[-2000:]
    assert float(status[1]) < 2.0, checked.stdout.split(b"Content analysis details")[-1]
