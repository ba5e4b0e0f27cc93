"""How fast a send composes its messages: 10,000 personalised copies of a 40-article issue.

The variant is rendered and inlined once (not timed here; see bench/render.py); each copy is
then its headers, signed links and four values encoded into the variant's quoted-printable
template. DKIM signing is per copy (each body differs), timed on a smaller sample. Checking the
addresses (once per reader, when the send is frozen) is timed on bench/subscribers.py's list.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import best_of
from bench.render import SECRET, ZONE, heavy_issue
from bench.subscribers import write_list
from digest import message, pipeline, render, tokens
from digest.config import load_config
from digest.models import Subscriber
from digest.project import data_dir

ARTICLES = 40
COPIES = 10_000
SIGNED = 500
ADDRESSES = 100_000
TARGET_PER_SECOND = 5_000  # the issue's bar: composing must not be what limits a send
NOW = datetime(2026, 11, 23, 9, tzinfo=ZONE)


def run() -> Iterator[str]:
    """Time composing 10,000 copies unsigned and 500 DKIM-signed ones, and checking addresses."""
    config = load_config(
        data_dir() / "examples" / "digest.toml", environ={tokens.SECRET_VAR: SECRET}
    )
    issue = heavy_issue(ARTICLES)
    variant = render.variant_for(config)
    rendered = {variant: pipeline.render_issue(config, issue, variant)}
    readers = [
        Subscriber(email=f"reader.{n}@example.org", first_name=f"Zoë {n}", last_name="Laurent")
        for n in range(COPIES)
    ]
    composer = message.Composer(config, issue, rendered, now=NOW)
    composer.compose(readers[0])  # encode the variant's template outside the timing
    started = time.perf_counter()
    size = sum(len(composer.compose(reader).data) for reader in readers)
    seconds = time.perf_counter() - started
    yield (
        f"compose {COPIES:,} personalised messages ({size / COPIES / 1000:.1f} KB each): "
        f"{seconds:.2f} s, {COPIES / seconds:,.0f} messages/s (target > {TARGET_PER_SECOND:,}/s)"
    )
    # A send checks each address once, when it freezes the issue, then composes to the ledger's.
    addresses = [message.checked_address(reader.email, where="bench") for reader in readers]
    per_copy = best_of(lambda: compose_to(composer, readers, addresses)) / COPIES
    yield f"of which compose_to (the address checked already): {per_copy * 1e6:.1f} µs a copy"

    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "dkim.pem"
        key.write_bytes(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        env = {"DKIM_PRIVATE_KEY_FILE": str(key), "DKIM_SELECTOR": "bench"}
        signing = replace(config, env={**config.env, **env, "DKIM_DOMAIN": "example.org"})
        composer = message.Composer(signing, issue, rendered, now=NOW)
        composer.compose(readers[0])
        started = time.perf_counter()
        for reader in readers[:SIGNED]:
            composer.compose(reader)
        per_copy = (time.perf_counter() - started) / SIGNED
        sample = readers[:SIGNED], addresses[:SIGNED]
        signed_to = best_of(lambda: compose_to(composer, *sample)) / SIGNED
    yield (
        f"compose and DKIM-sign (RSA 2048, relaxed/relaxed) {SIGNED} messages: "
        f"{per_copy * 1000:.2f} ms each, {1 / per_copy:,.0f} messages/s, "
        f"{per_copy * COPIES:.1f} s for {COPIES:,} (compose_to alone: {signed_to * 1e6:.0f} µs)"
    )

    with tempfile.TemporaryDirectory() as folder:
        path, _ = write_list(Path(folder) / "subscribers.csv", ADDRESSES)
        with path.open(encoding="utf-8", newline="") as handle:
            emails = [row["email"] for row in csv.DictReader(handle)]
    started = time.perf_counter()  # once, as a send checks them: the first of each domain too
    for email in emails:
        message.checked_address(email, where="bench")
    seconds = time.perf_counter() - started
    yield (
        f"check {ADDRESSES:,} subscriber addresses (bench/subscribers.py's list): "
        f"{seconds:.2f} s, {seconds / ADDRESSES * 1e6:.1f} µs each"
    )


def compose_to(composer: message.Composer, readers: list[Subscriber], addresses: list[str]) -> None:
    """Each reader's copy to their checked address, as `digest send` makes them."""
    for reader, address in zip(readers, addresses, strict=True):
        composer.compose_to(reader, address)
