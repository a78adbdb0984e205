"""Encryption at rest for shop access tokens (Fernet), keyed from LIFECYCLE_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class TokenDecryptionError(Exception):
    """The stored token was encrypted with another key (LIFECYCLE_SECRET_KEY changed) or is corrupt."""


def _fernet(secret_key: str) -> Fernet:
    # Fernet wants 32 url-safe base64 bytes; derive them from the configured secret of any length.
    digest = hashlib.sha256(b"lifecycle-token-encryption:" + str(secret_key).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_token(token: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError("access token cannot be decrypted with the current key") from None
