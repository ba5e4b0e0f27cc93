"""Unsubscribe tokens: any address round-trips; any change, truncation or other list is refused."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest import tokens
from digest.config import Config, load_config
from digest.errors import ConfigError, TokenError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digest.toml"
SECRET = b"0bS8w2Kq-4cFzT1nLx9Vd7hJpQ3mRy6e"
LIST = "weekly.dispatch.example.org"
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_."


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLE, environ={})


def with_env(config: Config, **env: str) -> Config:
    return dataclasses.replace(config, env=env)


def with_sender(config: Config, sender: str) -> Config:
    return dataclasses.replace(
        config, newsletter=dataclasses.replace(config.newsletter, sender=sender)
    )


def test_list_id_is_the_from_address_as_a_dotted_name(config: Config) -> None:
    """The example's weekly@dispatch.example.org gives the id weekly.dispatch.example.org."""
    assert tokens.list_id(config) == "weekly.dispatch.example.org"


def test_list_id_survives_a_rename_but_not_a_new_address(config: Config) -> None:
    """Only the address counts: a new name keeps the id, a new address changes it."""
    renamed = dataclasses.replace(
        config, newsletter=dataclasses.replace(config.newsletter, name="The Harbor Weekly")
    )
    assert tokens.list_id(renamed) == tokens.list_id(config)
    moved = with_sender(config, "The Harbor Dispatch <Digest@News.Example.ORG>")
    assert tokens.list_id(moved) == "digest.news.example.org"


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("weekly@dispatch.example.org", "weekly.dispatch.example.org"),
        ('"Dispatch, Weekly" <news+weekly@example.org>', "news+weekly.example.org"),
        ("Boletín <boletín@correo.example>", "bolet-n.correo.example"),
        ("Noticias <news@café.example>", "news.xn--caf-dma.example"),
    ],
)
def test_list_id_is_a_valid_rfc_2919_dot_atom(config: Config, sender: str, expected: str) -> None:
    """Display names are ignored, case is folded, and what atext forbids is replaced."""
    assert tokens.list_id(with_sender(config, sender)) == expected


def test_secret_is_read_from_the_environment(config: Config) -> None:
    """A long, random DIGEST_SECRET is returned as bytes."""
    assert tokens.secret_from(with_env(config, DIGEST_SECRET=SECRET.decode())) == SECRET


def test_a_missing_secret_says_how_to_make_one(config: Config) -> None:
    """No DIGEST_SECRET is a ConfigError whose hint is the one-line command that makes one."""
    with pytest.raises(ConfigError) as caught:
        tokens.secret_from(with_env(config))
    assert caught.value.where == "DIGEST_SECRET"
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in caught.value.hint


@pytest.mark.parametrize(
    "weak",
    [
        "   ",
        "too-short-to-sign-with",
        "a" * 40,
        "passwordpasswordpasswordpassword",
        "0123456789abcdef0123456789abcdef",
    ],
)
def test_a_short_or_guessable_secret_is_refused(config: Config, weak: str) -> None:
    """Blank, short, one-character, few-character and repeated secrets are refused."""
    with pytest.raises(ConfigError, match="DIGEST_SECRET"):
        tokens.secret_from(with_env(config, DIGEST_SECRET=weak))


@given(st.emails())
def test_any_address_round_trips(email: str) -> None:
    """verify_token gives back exactly the address make_token was given."""
    token = tokens.make_token(email, list_id=LIST, secret=SECRET)
    assert tokens.verify_token(token, list_id=LIST, secret=SECRET) == email


@given(st.emails())
def test_tokens_are_url_safe_and_deterministic(email: str) -> None:
    """A token needs no escaping in a URL, and the same address always gets the same token."""
    token = tokens.make_token(email, list_id=LIST, secret=SECRET)
    assert quote(token, safe="") == token
    assert token == tokens.make_token(email, list_id=LIST, secret=SECRET)


@given(st.emails(), st.data())
def test_any_single_character_change_is_refused(email: str, data: st.DataObject) -> None:
    """Replacing one character anywhere (including base64's spare bits) is refused."""
    token = tokens.make_token(email, list_id=LIST, secret=SECRET)
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(
        st.sampled_from(TOKEN_ALPHABET + "=+/ é\n").filter(lambda c: c != token[index]),
        label="replacement",
    )
    altered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(TokenError):
        tokens.verify_token(altered, list_id=LIST, secret=SECRET)


@pytest.mark.parametrize("email", ["ana@example.org1", "ana@example.com12"])
def test_spare_base64_bits_are_refused(email: str) -> None:
    """Setting the spare low bits of either part's last character (which decoders drop) fails."""
    token = tokens.make_token(email, list_id=LIST, secret=SECRET)
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    head, mac = token.split(".")
    for part, spare_bits in ((head, 4 if len(head) % 4 == 2 else 2), (mac, 2)):
        last = alphabet.index(part[-1])
        assert last % (1 << spare_bits) == 0  # what make_token writes: spare bits clear
        for bits in range(1, 1 << spare_bits):
            twin = part[:-1] + alphabet[last | bits]
            altered = token.replace(part, twin)
            with pytest.raises(TokenError):
                tokens.verify_token(altered, list_id=LIST, secret=SECRET)


@given(st.emails(), st.data())
def test_any_truncation_is_refused(email: str, data: st.DataObject) -> None:
    """A link cut short by a mail client, anywhere, is refused."""
    token = tokens.make_token(email, list_id=LIST, secret=SECRET)
    cut = data.draw(st.integers(0, len(token) - 1), label="length")
    with pytest.raises(TokenError):
        tokens.verify_token(token[:cut], list_id=LIST, secret=SECRET)


def test_a_token_for_another_list_or_secret_is_refused() -> None:
    """The list id and the secret are both in the MAC."""
    token = tokens.make_token("ana@example.org", list_id=LIST, secret=SECRET)
    with pytest.raises(TokenError, match="does not verify"):
        tokens.verify_token(token, list_id="news.other.example", secret=SECRET)
    with pytest.raises(TokenError, match="does not verify"):
        tokens.verify_token(token, list_id=LIST, secret=SECRET[::-1])


def test_a_forged_token_for_another_address_is_refused() -> None:
    """Swapping in another address, with the MAC of a real token, does not verify."""
    real = tokens.make_token("ana@example.org", list_id=LIST, secret=SECRET)
    other = tokens.make_token("bo@example.org", list_id=LIST, secret=SECRET)
    forged = other.split(".")[0] + "." + real.split(".")[1]
    with pytest.raises(TokenError):
        tokens.verify_token(forged, list_id=LIST, secret=SECRET)


def test_addresses_keep_their_case_and_each_spelling_has_its_own_token() -> None:
    """The address comes back as it was written; a case change is a different, valid token."""
    upper = tokens.make_token("Ana.Perez@Example.org", list_id=LIST, secret=SECRET)
    lower = tokens.make_token("ana.perez@example.org", list_id=LIST, secret=SECRET)
    assert tokens.verify_token(upper, list_id=LIST, secret=SECRET) == "Ana.Perez@Example.org"
    assert upper != lower


@pytest.mark.parametrize(
    "malformed",
    ["", ".", "abc", "YW5h.", ".abc", "YW5h.short", "YW5h..x", "a" * 5000, "YW5h. " + "A" * 43],
)
def test_malformed_tokens_are_refused(malformed: str) -> None:
    """Empty, dotless, short-MAC, huge and spaced tokens are TokenErrors, not crashes."""
    with pytest.raises(TokenError, match="malformed"):
        tokens.verify_token(malformed, list_id=LIST, secret=SECRET)


def test_padding_and_trailing_newlines_are_refused() -> None:
    """Only the exact unpadded spelling verifies: no `=` padding, no trailing newline."""
    token = tokens.make_token("ana@example.org", list_id=LIST, secret=SECRET)  # 15 bytes: no pad
    padded = tokens.make_token("ana@example.com1", list_id=LIST, secret=SECRET)
    head, mac = padded.split(".")
    for bad in (f"{head}==.{mac}", f"{token}\n", f"{token}=", f" {token}"):
        with pytest.raises(TokenError):
            tokens.verify_token(bad, list_id=LIST, secret=SECRET)


@pytest.mark.parametrize("email", ["", "a\n@example.org", "x" * 400 + "@example.org"])
def test_make_token_refuses_what_cannot_be_an_address(email: str) -> None:
    """An empty, multi-line or over-long address is a programming error, not a token."""
    with pytest.raises(ValueError):
        tokens.make_token(email, list_id=LIST, secret=SECRET)


def test_links_point_at_the_public_url(config: Config) -> None:
    """The unsubscribe and preferences URLs sit under [newsletter] public_url."""
    assert (
        tokens.unsubscribe_url(config, "T.K")
        == "https://dispatch.example.org/digest/unsubscribe?t=T.K"
    )
    assert tokens.preferences_url(config, "T.K").endswith("/digest/preferences?t=T.K")
