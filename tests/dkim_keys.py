"""A fresh DKIM key for tests: the private key in a PEM file and the DNS record publishing it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class DkimKeyFile:
    path: Path
    record: str  # the TXT record publishing its public half

    def env(self, domain: str, selector: str = "digest") -> dict[str, str]:
        """The DKIM_* settings that sign with this key for `domain`."""
        return {
            "DKIM_PRIVATE_KEY_FILE": str(self.path),
            "DKIM_SELECTOR": selector,
            "DKIM_DOMAIN": domain,
        }


def make_key(folder: Path, bits: int = 2048) -> DkimKeyFile:
    """An RSA key of `bits` written to `folder` (generating one takes a moment: share it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path = folder / f"dkim-{bits}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKeyFile(path, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")
