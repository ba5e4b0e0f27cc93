"""Signed, stateless tokens for each subscriber's unsubscribe and preferences links.

A token is `base64url(address) "." base64url(HMAC-SHA256(DIGEST_SECRET, list id, address))`: it
carries the address, so nothing is stored, and only someone holding the secret can make one. The
list id is in the MAC, so a token for one newsletter does nothing on another that shares the secret.
Verification refuses anything but the exact bytes `make_token` writes (non-canonical base64 too)
and compares MACs with `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
from email.utils import parseaddr

from digest.config import Config
from digest.errors import ConfigError, TokenError, echoed

SECRET_VAR = "DIGEST_SECRET"
MIN_SECRET_LENGTH = 32
MAX_ADDRESS_BYTES = 320  # 64 (local part) + 1 + 255 (domain): longer is no address
MAX_TOKEN_LENGTH = 4 * ((MAX_ADDRESS_BYTES + 2) // 3) + 1 + 43
SECRET_HINT = (
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))" '
    f"and set {SECRET_VAR} in the environment or the .env file beside digest.toml"
)

# Versioned, so a different kind of token (or a new format) can never verify as this one.
_PURPOSE = b"digest subscriber link v1\n"
_SHAPE = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")  # 43 characters: 32 bytes
_NOT_ATEXT = re.compile(r"[^a-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 5322 atext, lower case


def list_id(config: Config) -> str:
    """The RFC 2919 list id, `<local-part>.<domain>` of the `from` address.

    It ignores the newsletter's name, so renaming the newsletter keeps every link valid; a new
    `from` address is a new list id, and links in issues sent before stop verifying.
    """
    _, address = parseaddr(config.newsletter.sender)
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        raise ConfigError(
            f"cannot read an address from {config.newsletter.sender!r}",
            where="newsletter.from",
            hint='write it as "Name <news@example.org>"',
        )
    with contextlib.suppress(UnicodeError):  # not a valid IDN: the atext filter still copes
        domain = domain.encode("idna").decode("ascii")
    labels = (_NOT_ATEXT.sub("-", label) for label in f"{local}.{domain}".lower().split("."))
    return ".".join(label for label in labels if label)


def secret_from(config: Config) -> bytes:
    """DIGEST_SECRET from the environment (or .env), refused when missing, short or guessable."""
    value = config.env.get(SECRET_VAR, "").strip()
    if not value:
        raise ConfigError(
            "not set; unsubscribe and preferences links are signed with it",
            where=SECRET_VAR,
            hint=SECRET_HINT,
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{len(value)} characters is too short to sign links; use at least {MIN_SECRET_LENGTH}",
            where=SECRET_VAR,
            hint=SECRET_HINT,
        )
    if _looks_guessable(value):
        raise ConfigError(
            "looks guessable (a repeated pattern or fewer than 8 different characters)",
            where=SECRET_VAR,
            hint=SECRET_HINT,
        )
    return value.encode("utf-8")


def make_token(email: str, *, list_id: str, secret: bytes) -> str:
    """A url-safe token for `email` on this list; the same inputs always give the same token."""
    carried = email.encode("utf-8")
    if not carried or len(carried) > MAX_ADDRESS_BYTES or "\n" in email or "\r" in email:
        raise ValueError(f"not an address a token can carry: {echoed(email)}")
    return f"{_encode(carried)}.{_encode(_mac(carried, list_id, secret))}"


def verify_token(token: str, *, list_id: str, secret: bytes) -> str:
    """The address `token` was made for; TokenError if it is malformed, altered or not ours."""
    match = _SHAPE.fullmatch(token) if len(token) <= MAX_TOKEN_LENGTH else None
    carried = _decode(match[1]) if match else None
    mac = _decode(match[2]) if match else None
    if carried is None or mac is None:
        raise TokenError(
            "the token is malformed or incomplete", hint="copy the whole link from the email"
        )
    if not hmac.compare_digest(mac, _mac(carried, list_id, secret)):
        raise TokenError(
            "the token does not verify: it was altered, or made for another list or with "
            f"another {SECRET_VAR}"
        )
    return carried.decode("utf-8")  # we signed these bytes, and we only sign UTF-8


def unsubscribe_url(config: Config, token: str) -> str:
    """The reader's unsubscribe page, also the RFC 8058 one-click POST target."""
    return f"{config.newsletter.public_url}/unsubscribe?t={token}"


def preferences_url(config: Config, token: str) -> str:
    """The reader's page for choosing sections and language."""
    return f"{config.newsletter.public_url}/preferences?t={token}"


def _mac(carried: bytes, list_id: str, secret: bytes) -> bytes:
    if "\n" in list_id:
        raise ValueError(f"a list id is one line: {list_id!r}")
    message = _PURPOSE + list_id.encode("utf-8") + b"\n" + carried
    return hmac.new(secret, message, hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes | None:
    """The bytes `text` encodes, or None unless `_encode` would write exactly `text` for them."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # The last character's spare bits are ignored when decoding: require them to be zero.
    return raw if _encode(raw) == text else None


def _looks_guessable(value: str) -> bool:
    repeated = value in (value + value)[1:-1]  # "abcabc...": a shorter string repeated
    return repeated or len(set(value)) < 8
