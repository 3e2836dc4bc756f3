"""Throwaway Google service-account key files for tests, in the shape the Cloud console hands out.

One RSA 2048 key is made per process (generating one costs ~50 ms); every file written here
carries it, under the same ``private_key_id``. `public_keys()` gives the matching public key, so a
`SheetsEmulator(public_keys=public_keys())` can verify the JWT assertions really are signed with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_EMAIL = "connector@test-project.iam.gserviceaccount.com"
PROJECT_ID = "test-project"


@functools.cache
def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem() -> bytes:
    return (
        _private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def private_key_id() -> str:
    """The ``kid`` google-auth puts in each assertion's header: 40 hex digits, like Google's."""
    return hashlib.sha1(_public_pem(), usedforsecurity=False).hexdigest()


def public_keys() -> dict[str, bytes]:
    """``{private_key_id: PEM public key}`` of the key every file from this module holds."""
    return {private_key_id(): _public_pem()}


def service_account_file(folder: Path, token_uri: str, email: str = DEFAULT_EMAIL) -> Path:
    """Write a service-account JSON key whose ``token_uri`` is the emulator's; return its path."""
    pem = _private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    info = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": private_key_id(),
        "private_key": pem.decode("ascii"),
        "client_email": email,
        "client_id": str(int(hashlib.sha256(email.encode()).hexdigest()[:16], 16)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{quote(email)}",
        "universe_domain": "googleapis.com",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{email.split('@', 1)[0]}-key.json"
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    # a real key file is a secret: keep the test double's permissions as strict
    path.chmod(0o600)
    return path
