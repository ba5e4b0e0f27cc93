"""How fast a send composes its messages: 10,000 personalised copies of a 40-article issue.

The variant is rendered and inlined once (not timed here; see bench/render.py); each copy is
then its headers, signed links and four values encoded into the variant's quoted-printable
template. DKIM signing is per copy (each body differs), timed on a smaller sample.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.render import SECRET, ZONE, heavy_issue
from digest import message, pipeline, render, tokens
from digest.config import load_config
from digest.models import Subscriber
from digest.project import data_dir

ARTICLES = 40
COPIES = 10_000
SIGNED = 500
TARGET_PER_SECOND = 5_000  # the issue's bar: composing must not be what limits a send
NOW = datetime(2026, 11, 23, 9, tzinfo=ZONE)


def run() -> Iterator[str]:
    """Time composing 10,000 copies unsigned and 500 DKIM-signed ones."""
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
    yield (
        f"compose and DKIM-sign (RSA 2048, relaxed/relaxed) {SIGNED} messages: "
        f"{per_copy * 1000:.2f} ms each, {1 / per_copy:,.0f} messages/s, "
        f"{per_copy * COPIES:.1f} s for {COPIES:,}"
    )
