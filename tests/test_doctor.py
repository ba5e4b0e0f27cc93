"""`digest doctor`: each check against real files, a real HTTP server and a real SMTP server."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
import trustme
from click.testing import CliRunner, Result
from conftest import HttpServer
from dkim_keys import DkimKeyFile, make_key
from smtp_server import (
    SmtpRecorder,
    free_port,
    password_checker,
    running,
    server_tls_context,
    starttls_relay,
)

from digest import doctor, project
from digest.cli import cli
from digest.config import Config, SourceConfig, load_config
from digest.doctor import Check

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("America/New_York"))
SECRET = "Qm3kd9Zp2Lx8Wv1Rt7Yb4Nc6Hs0Jf5Ga"
# The example's From address is weekly@dispatch.example.org.
FROM_DOMAIN = "dispatch.example.org"
LINE = re.compile(r"(OK   |WARN |FAIL ) [a-z][\w ]*: \S.*|      → \S.*")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The starter project `digest init` writes: example config, feeds and subscribers."""
    project.init_project(tmp_path / "news")
    return tmp_path / "news"


def config_of(folder: Path, **env: str) -> Config:
    return load_config(folder / "digest.toml", environ={"DIGEST_SECRET": SECRET, **env})


def lines(config: Config, name: str, resolver: dns.resolver.Resolver | None = None) -> list[Check]:
    """The lines check `name` gave, running every check as the command does."""
    return [c for c in doctor.examine(config, now=NOW, resolver=resolver) if c.name == name]


def checks(
    config: Config, name: str, resolver: dns.resolver.Resolver | None = None
) -> list[tuple[str, str]]:
    return [(c.status, c.message) for c in lines(config, name, resolver)]


def only(config: Config, name: str, resolver: dns.resolver.Resolver | None = None) -> Check:
    [found] = lines(config, name, resolver)
    return found


# -- the whole run ------------------------------------------------------------------------------


def test_a_starter_project_passes_with_warnings_for_what_is_not_set_up(folder: Path) -> None:
    """Sources, templates, subscribers, secret and links pass; no relay and no DKIM are WARNs."""
    found = {(c.name, c.status) for c in doctor.examine(config_of(folder), now=NOW)}
    assert found == {
        ("config", "ok"),
        ("source Harbor Dispatch", "ok"),
        ("source Labor Desk", "ok"),
        ("source Americas Bureau", "ok"),
        ("templates", "ok"),
        ("subscribers", "ok"),
        ("smtp", "warn"),
        ("dkim", "warn"),
        ("secret", "ok"),
        ("unsubscribe", "ok"),
    }


def test_doctor_writes_nothing(folder: Path) -> None:
    """No archive, ledger, outbox, lock or backup appears, and no file changes."""

    def snapshot() -> dict[Path, tuple[int, int]]:
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}

    before = snapshot()
    list(doctor.examine(config_of(folder), now=NOW))
    assert snapshot() == before


# -- sources ------------------------------------------------------------------------------------


def test_an_unreachable_or_unreadable_source_fails_and_the_others_still_pass(
    folder: Path, http_server: HttpServer
) -> None:
    """A 404, a closed port and a page that is no feed each FAIL; a served feed is OK."""
    config = config_of(folder)
    served = [
        SourceConfig("Served", http_server.url("/feeds/news-guardian-us-2018.rss"), "feed"),
        SourceConfig("Gone", http_server.url("/status/404")),
        SourceConfig("Closed", f"http://127.0.0.1:{free_port()}/feed.xml"),
        SourceConfig("Not a feed", http_server.url("/plain/")),
    ]
    found = {
        c.name: c
        for c in doctor.examine(replace(config, sources=tuple(served)), now=NOW)
        if c.name.startswith("source ")
    }
    assert found["source Served"].status == "ok"
    assert [found[f"source {n}"].status for n in ("Gone", "Closed", "Not a feed")] == ["fail"] * 3
    assert "404" in found["source Gone"].message
    assert "digest collect" in found["source Gone"].hint


# -- templates ----------------------------------------------------------------------------------


def test_a_broken_template_fails_naming_its_file_and_line(folder: Path) -> None:
    """An undefined name in the user's footer is a FAIL pointing at footer.html.j2:2."""
    partials = folder / "templates" / "partials"
    partials.mkdir(parents=True)
    (partials / "footer.html.j2").write_text("<p>Bye</p>\n{{ no_such_thing }}\n", encoding="utf-8")
    with (folder / "digest.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[email]\ntemplates = "templates"\n')
    check = only(config_of(folder), "templates")
    assert check.status == "fail"
    assert "footer.html.j2:2" in check.message and "no_such_thing" in check.message


def test_the_packaged_templates_render(folder: Path) -> None:
    """Without a templates folder, the packaged templates render the sample issue."""
    assert checks(config_of(folder), "templates") == [
        ("ok", "a sample issue renders in 'en'"),
    ]


# -- subscribers --------------------------------------------------------------------------------


def test_a_malformed_subscriber_file_fails_with_the_count_and_first_problem(folder: Path) -> None:
    """Problems are counted, the first shown with its line, and the file is left untouched."""
    csv = folder / "subscribers.csv"
    csv.write_text(
        "email,first_name,status\n"
        "ana@example.org,Ana,subscribed\n"
        "not-an-address,Bo,subscribed\n"
        "ANA@example.org,Ana,subscribed\n",
        encoding="utf-8",
    )
    before = csv.read_bytes()
    check = only(config_of(folder), "subscribers")
    assert check.status == "fail"
    assert check.message.startswith("2 problem(s); the first: subscribers.csv:3: ")
    assert "`digest subscribers validate`" in check.hint
    assert csv.read_bytes() == before
    assert sorted(p.name for p in folder.glob("subscribers.csv*")) == ["subscribers.csv"]


def test_a_missing_subscriber_file_is_a_warning(folder: Path) -> None:
    """No list yet is fine for trying digest out, but worth saying."""
    (folder / "subscribers.csv").unlink()
    check = only(config_of(folder), "subscribers")
    assert check.status == "warn" and "no subscriber list" in check.message


def test_a_subscriber_list_that_is_a_folder_fails(folder: Path) -> None:
    """[subscribers] file naming a folder is a FAIL saying so, not a missing list."""
    (folder / "subscribers.csv").unlink()
    (folder / "subscribers.csv").mkdir()
    check = only(config_of(folder), "subscribers")
    assert (check.status, check.message) == (
        "fail",
        f"{folder / 'subscribers.csv'} is a folder, not a subscriber list",
    )


def test_a_language_without_a_catalog_is_a_warning(folder: Path) -> None:
    """`language = "pt"` loads, and doctor says its words will be English."""
    toml = folder / "digest.toml"
    toml.write_text(
        re.sub(r'(?m)^language = ".*"$', 'language = "pt"', toml.read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    check = only(config_of(folder), "language")
    assert check.status == "warn" and "'pt'" in check.message and "English" in check.message


# -- SMTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine trusts the test CA, as with a private relay's CA in SSL_CERT_FILE."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))


@pytest.fixture(name="starttls_relay")
def relay_with_login(ca: trustme.CA) -> Iterator[SmtpRecorder]:
    """A relay offering STARTTLS with a test-CA certificate, and AUTH (news / s3cret) over it."""
    with starttls_relay(ca, username="news", password="s3cret") as relay:
        yield relay


def smtp_env(relay: SmtpRecorder, **more: str) -> dict[str, str]:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port), **more}


@pytest.mark.usefixtures("trusted")
def test_a_starttls_relay_that_takes_the_login_passes_and_gets_no_mail(
    folder: Path, starttls_relay: SmtpRecorder
) -> None:
    """EHLO, STARTTLS and the login are one OK line each, and no MAIL FROM is ever sent."""
    env = smtp_env(starttls_relay, SMTP_USERNAME="news", SMTP_PASSWORD="s3cret")
    assert checks(config_of(folder, **env), "smtp") == [
        ("ok", f"EHLO answered by {socket.getfqdn()} at 127.0.0.1:{starttls_relay.port}"),
        ("ok", "STARTTLS offered and negotiated, certificate valid"),
        ("ok", "login accepted for news"),
    ]
    assert starttls_relay.connections == 0 and starttls_relay.messages == []


@pytest.mark.usefixtures("trusted")
def test_wrong_credentials_fail_the_login_line(folder: Path, starttls_relay: SmtpRecorder) -> None:
    """A refused login is a FAIL with the relay's reply and which settings to check."""
    env = smtp_env(starttls_relay, SMTP_USERNAME="news", SMTP_PASSWORD="wrong")
    found = lines(config_of(folder, **env), "smtp")
    assert [c.status for c in found] == ["ok", "ok", "fail"]
    assert found[-1].message.startswith("login refused for news: 535 ")
    assert "SMTP_PASSWORD" in found[-1].hint
    assert starttls_relay.connections == 0


def test_a_relay_without_starttls_fails_when_starttls_is_required(folder: Path) -> None:
    """No STARTTLS on offer is a FAIL, and the login is not even tried in clear."""
    with running(SmtpRecorder(), authenticator=password_checker("news", "s3cret")) as relay:
        env = smtp_env(relay, SMTP_USERNAME="news", SMTP_PASSWORD="s3cret")
        found = lines(config_of(folder, **env), "smtp")
    assert [c.status for c in found] == ["ok", "fail"]
    assert "does not offer STARTTLS" in found[1].message
    assert "never sends in clear" in found[1].hint


def test_a_certificate_this_machine_does_not_trust_fails_starttls(
    folder: Path, starttls_relay: SmtpRecorder
) -> None:
    """Without the test CA in the trust store, STARTTLS fails and says what to trust."""
    found = lines(config_of(folder, **smtp_env(starttls_relay)), "smtp")
    assert [c.status for c in found] == ["ok", "fail"]
    assert found[1].message.startswith("STARTTLS failed: ")
    assert "SSL_CERT_FILE" in found[1].hint


def test_a_local_relay_without_tls_and_with_a_wrong_password_fails_the_login(
    folder: Path,
) -> None:
    """SMTP_SECURITY=none (loopback only) skips TLS, but the login is still checked."""
    with running(
        SmtpRecorder(), authenticator=password_checker("news", "s3cret"), auth_require_tls=False
    ) as relay:
        env = smtp_env(relay, SMTP_SECURITY="none", SMTP_USERNAME="news", SMTP_PASSWORD="nope")
        found = lines(config_of(folder, **env), "smtp")
    assert [c.status for c in found] == ["ok", "ok", "fail"]


@pytest.mark.usefixtures("trusted")
def test_implicit_tls_is_checked_when_security_is_tls(folder: Path, ca: trustme.CA) -> None:
    """SMTP_SECURITY=tls speaks TLS from the first byte; the certificate is verified."""
    tls = server_tls_context(ca.issue_cert("127.0.0.1"))
    with running(SmtpRecorder(), ssl_context=tls) as relay:
        found = checks(config_of(folder, **smtp_env(relay, SMTP_SECURITY="tls")), "smtp")
    assert [status for status, _ in found] == ["ok", "ok", "ok"]
    assert found[1][1].startswith("TLS from the first byte")


@pytest.mark.usefixtures("trusted")
def test_a_relay_offering_auth_without_a_login_set_is_a_warning(
    folder: Path, starttls_relay: SmtpRecorder
) -> None:
    """AUTH on offer and no SMTP_USERNAME: the relay may refuse to relay our mail."""
    found = checks(config_of(folder, **smtp_env(starttls_relay)), "smtp")
    assert [status for status, _ in found] == ["ok", "ok", "warn"]
    assert "SMTP_USERNAME is unset" in found[-1][1]


def test_a_login_set_for_a_relay_without_auth_fails(folder: Path) -> None:
    """Credentials the relay has no way to take are a mistake to point out, not to ignore."""
    with running(SmtpRecorder()) as relay:
        env = smtp_env(relay, SMTP_SECURITY="none", SMTP_USERNAME="news", SMTP_PASSWORD="s3cret")
        found = checks(config_of(folder, **env), "smtp")
    assert [status for status, _ in found] == ["ok", "ok", "fail"]
    assert "offers no AUTH" in found[-1][1]


@pytest.mark.parametrize("offered", [False, True], ids=["without", "with"])
def test_a_relay_without_smtputf8_is_a_warning_when_a_reader_needs_it(
    folder: Path, offered: bool
) -> None:
    """josé@exämple.org's copy needs SMTPUTF8: a relay without it gets a warning naming how
    many readers need it; one that offers it, none."""
    with (folder / "subscribers.csv").open("a", encoding="utf-8") as file:
        file.write("josé@exämple.org,José,,subscribed,,,,,\n")
    with running(SmtpRecorder(), enable_SMTPUTF8=offered) as relay:
        found = checks(config_of(folder, **smtp_env(relay, SMTP_SECURITY="none")), "smtp")
    warned = [text for status, text in found if status == "warn"]
    if offered:
        assert warned == []
    else:
        assert warned == [
            "the relay does not offer SMTPUTF8, and 1 subscribed reader(s) have an address "
            "with a non-ASCII local part: their copies will fail"
        ]


def test_no_relay_listening_is_one_fail_line_naming_host_and_port(folder: Path) -> None:
    """A refused connection is a single FAIL with host:port, not one per step."""
    port = free_port()
    [(status, text)] = checks(config_of(folder, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port)), "smtp")
    assert status == "fail" and text.startswith(f"cannot connect to 127.0.0.1:{port}: ")


def test_without_smtp_host_the_outbox_is_a_warning(folder: Path) -> None:
    """The Maildir default is named, with how to send for real; the outbox is not created."""
    check = only(config_of(folder), "smtp")
    assert check.status == "warn" and str(folder / "outbox") in check.message
    assert "SMTP_HOST" in check.hint
    assert not (folder / "outbox").exists()


def test_unusable_smtp_settings_fail_with_the_config_error_and_its_hint(folder: Path) -> None:
    """A ConfigError from the SMTP settings becomes the smtp line, its hint kept."""
    check = only(config_of(folder, SMTP_HOST="mail.example.org", SMTP_SECURITY="ssl"), "smtp")
    assert check.status == "fail" and "SMTP_SECURITY" in check.message
    assert check.hint == "starttls for port 587, tls for port 465"


# -- DKIM ---------------------------------------------------------------------------------------


class DnsServer:
    """A tiny DNS server on 127.0.0.1 (UDP) answering TXT queries from `records`; any other
    name is NXDOMAIN, and with `silent` set it answers nothing, like a network that is down."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.records: dict[str, str] = {}  # name (without the final dot) -> the TXT text
        self.silent = False
        self.running = True

    def serve(self) -> None:
        while self.running:
            try:
                data, peer = self.socket.recvfrom(4096)
            except TimeoutError:
                continue
            if self.silent:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            text = self.records.get(question.name.to_text().rstrip("."))
            if text is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                # As zone files do with long keys: strings of at most 255 bytes, joined by readers.
                chunks = " ".join(f'"{text[n : n + 200]}"' for n in range(0, len(text), 200))
                reply.find_rrset(
                    reply.answer, question.name, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
                ).add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, chunks), ttl=60)
            self.socket.sendto(reply.to_wire(), peer)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.socket.getsockname()[1]
        resolver.lifetime = 0.5
        return resolver


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    thread = threading.Thread(target=server.serve)
    thread.start()
    yield server
    server.running = False
    thread.join()
    server.socket.close()


@pytest.fixture
def nameserver(dns_server: DnsServer) -> Iterator[DnsServer]:
    """The DNS server, with no records at the start of each test."""
    yield dns_server
    dns_server.records.clear()
    dns_server.silent = False


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyFile:
    """A fresh 2048-bit RSA key, in PEM, and its DNS record."""
    return make_key(tmp_path_factory.mktemp("dkim"), 2048)


def dkim_env(key: Path, domain: str, selector: str = "s1") -> dict[str, str]:
    return {"DKIM_PRIVATE_KEY_FILE": str(key), "DKIM_SELECTOR": selector, "DKIM_DOMAIN": domain}


@pytest.mark.parametrize("domain", [FROM_DOMAIN, "example.org"])
def test_a_published_dkim_key_for_the_from_domain_or_its_parent_passes(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer, domain: str
) -> None:
    """Relaxed alignment: d= may be the From domain or a parent; DNS has the same key."""
    nameserver.records[f"s1._domainkey.{domain}"] = key.record
    config = config_of(folder, **dkim_env(key.path, domain))
    assert checks(config, "dkim", nameserver.resolver()) == [
        ("ok", "the key loads (RSA, 2048 bits), selector 's1'"),
        ("ok", f"DKIM_DOMAIN {domain} aligns with the From domain"),
        ("ok", f"s1._domainkey.{domain} publishes this key"),
    ]


def test_a_dkim_domain_that_does_not_align_fails_with_the_fix(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer
) -> None:
    """A signature for another domain does nothing for DMARC: FAIL, naming the right domain."""
    nameserver.records["s1._domainkey.example.net"] = key.record
    found = lines(
        config_of(folder, **dkim_env(key.path, "example.net")), "dkim", nameserver.resolver()
    )
    assert [c.status for c in found] == ["ok", "fail", "ok"]
    assert f"DKIM_DOMAIN={FROM_DOMAIN}" in found[1].hint
    assert f"s1._domainkey.{FROM_DOMAIN}" in found[1].hint


def test_a_dkim_record_with_another_key_fails_and_shows_the_record_to_publish(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer, tmp_path: Path
) -> None:
    """DNS still has an old key: receivers would reject every signature."""
    nameserver.records[f"s1._domainkey.{FROM_DOMAIN}"] = make_key(tmp_path, 1024).record
    config = config_of(folder, **dkim_env(key.path, FROM_DOMAIN))
    published = lines(config, "dkim", nameserver.resolver())[-1]
    assert published.status == "fail" and "publishes another key" in published.message
    assert published.hint == f'publish the TXT record s1._domainkey.{FROM_DOMAIN} = "{key.record}"'


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (None, "no TXT record at s1._domainkey.dispatch.example.org"),
        ("v=DKIM1; k=rsa; p=", "revokes the key"),
        ("v=spf1 -all", "no DKIM key"),
    ],
)
def test_a_missing_or_revoked_dkim_record_fails(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer, record: str | None, says: str
) -> None:
    """No such name, an empty p= and a TXT record that is no DKIM key are definite FAILs."""
    nameserver.records[FROM_DOMAIN] = "v=spf1 -all"  # the domain itself is in DNS
    if record is not None:
        nameserver.records[f"s1._domainkey.{FROM_DOMAIN}"] = record
    config = config_of(folder, **dkim_env(key.path, FROM_DOMAIN))
    published = lines(config, "dkim", nameserver.resolver())[-1]
    assert published.status == "fail" and says in published.message
    assert key.record in published.hint


def test_a_dkim_lookup_without_an_answer_is_only_a_warning(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer
) -> None:
    """No network (the server never answers): the record may be there, so WARN, not FAIL."""
    nameserver.silent = True
    config = config_of(folder, **dkim_env(key.path, FROM_DOMAIN))
    published = lines(config, "dkim", nameserver.resolver())[-1]
    assert published.status == "warn"
    assert published.message.startswith(f"cannot look up s1._domainkey.{FROM_DOMAIN}: ")
    assert "dig TXT" in published.hint


def test_no_such_name_from_dns_that_knows_no_domain_at_all_is_only_a_warning(
    folder: Path, key: DkimKeyFile, nameserver: DnsServer
) -> None:
    """Offline sandboxes answer "no such name" for everything: that proves nothing, so WARN."""
    config = config_of(folder, **dkim_env(key.path, FROM_DOMAIN))
    published = lines(config, "dkim", nameserver.resolver())[-1]
    assert (published.status, published.message) == (
        "warn",
        f"cannot look up s1._domainkey.{FROM_DOMAIN}: DNS here knows no {FROM_DOMAIN}",
    )


def test_a_dkim_key_file_that_is_no_key_fails(folder: Path) -> None:
    """dkim_key's ConfigError is the dkim line, with the command that makes a key."""
    bad = folder / "dkim.pem"
    bad.write_text("not a key\n", encoding="utf-8")
    check = only(config_of(folder, **dkim_env(bad, FROM_DOMAIN)), "dkim")
    assert check.status == "fail" and "openssl genrsa" in check.hint


def test_no_dkim_settings_is_a_warning(folder: Path) -> None:
    """Unsigned mail is allowed but risky with Gmail and Yahoo."""
    check = only(config_of(folder), "dkim")
    assert check.status == "warn" and "Gmail" in check.hint


# -- the secret and the links -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "status", "says"),
    [
        ("", "fail", "not set"),
        ("short-secret", "fail", "too short"),
        ("ab" * 20, "fail", "guessable"),
        (SECRET, "ok", "is set"),
    ],
)
def test_digest_secret_must_be_set_and_strong(
    folder: Path, secret: str, status: str, says: str
) -> None:
    """The send's own rules: unset, short or guessable fails, with how to make one."""
    check = only(config_of(folder, DIGEST_SECRET=secret), "secret")
    assert (check.status, says in check.message) == (status, True)
    if status == "fail":
        assert "secrets.token_urlsafe" in check.hint


@pytest.mark.parametrize(
    ("public_url", "status"),
    [
        ("https://dispatch.example.org/digest", "ok"),
        ("http://dispatch.example.org/digest", "fail"),
        ("http://127.0.0.1:8026", "warn"),
    ],
)
def test_unsubscribe_links_must_be_https_except_on_this_machine(
    folder: Path, public_url: str, status: str
) -> None:
    """Plain http to a remote host fails; on loopback it is a warning (testing)."""
    config = config_of(folder)
    config = replace(config, newsletter=replace(config.newsletter, public_url=public_url))
    check = only(config, "unsubscribe")
    assert check.status == status and public_url in check.message


# -- the command --------------------------------------------------------------------------------

UNSET: dict[str, str | None] = {
    name: None
    for name in (
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_SECURITY",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "DKIM_PRIVATE_KEY_FILE",
        "DKIM_SELECTOR",
        "DKIM_DOMAIN",
    )
}


def run(config: Path, env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "doctor"], env={**UNSET, **env})


def test_the_command_prints_one_line_per_check_and_exits_0_without_failures(folder: Path) -> None:
    """Every line is a check or its hint; warnings alone leave the exit code 0."""
    result = run(folder / "digest.toml", {"DIGEST_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert lines[0].startswith("OK    config: digest.toml")
    assert "WARN  smtp: SMTP_HOST is unset" in result.stdout
    assert result.stderr == ""


def test_a_failed_check_makes_the_command_exit_1_without_a_traceback(
    folder: Path, starttls_relay: SmtpRecorder
) -> None:
    """A relay without trusted TLS and no secret: FAIL lines with hints, then exit 1."""
    env = {"DIGEST_SECRET": None, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(starttls_relay.port)}
    result = run(folder / "digest.toml", env)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    fails = [line for line in lines if line.startswith("FAIL ")]
    assert [line.split(":")[0] for line in fails] == ["FAIL  smtp", "FAIL  secret"]
    assert lines[lines.index(fails[-1]) + 1].startswith("      → make one with")
    assert result.stderr == "error: 2 of 11 check(s) failed\n"
    assert "Traceback" not in result.output


def test_a_config_that_does_not_load_is_one_fail_line(folder: Path) -> None:
    """The other checks need the config, so a broken one is the only line, and exit 1."""
    (folder / "digest.toml").write_text("[newsletter]\nname = 1\n", encoding="utf-8")
    result = run(folder / "digest.toml", {"DIGEST_SECRET": SECRET})
    assert result.exit_code == 1
    [line, *hint] = result.stdout.splitlines()
    assert line.startswith("FAIL  config: digest.toml")
    assert all(LINE.fullmatch(h) for h in hint)
    assert "Traceback" not in result.output
