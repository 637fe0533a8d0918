"""The key pair Airflow signs its JWTs with (`[api_auth] jwt_private_key_path`, EdDSA).

Generated on the first `up` into the control plane's AIRFLOW_HOME (mode 600, owner the control-plane
user). Only the components that sign tokens get the private key: the api-server (UI/REST tokens and
the execution tokens it swaps for workload tokens) and the scheduler (workload tokens of queued
tasks). Verifiers read the public key set (`[api_auth] trusted_jwks_url`, a local JWKS file).
The Celery workers get neither: they only present the token each workload carries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pwd
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stack import safefs

ALGORITHM = "EdDSA"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    """The public JWK of `key` with the `kid` Airflow derives (the RFC 7638 thumbprint of the
    key's JWK as PyJWT writes it), so tokens signed without `[api_auth] jwt_kid` match it."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    digest = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {**jwk, "kid": _b64url(digest), "alg": ALGORITHM, "use": "sig"}


def ensure_key_pair(private_path: Path, jwks_path: Path, owner: str) -> bool:
    """Create the signing key once and (re)write its public JWKS; True when the key is new. The
    folder belongs to `owner`: everything is done through stack/safefs.py (no link followed)."""
    account = pwd.getpwnam(owner)
    uid, gid = account.pw_uid, account.pw_gid
    safefs.make_dir(private_path.parent, uid, gid, 0o700)
    created = False
    pem = safefs.read_file(private_path)
    if pem is not None:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private_path}: not an Ed25519 private key")
        safefs.set_owner(private_path, uid, gid, 0o600)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        created = safefs.create_file(private_path, pem, uid, gid, 0o600)
        if not created:
            raise safefs.UnsafePathError(f"{private_path} appeared while it was being created; run again")
    safefs.write_file(jwks_path, json.dumps({"keys": [public_jwk(key)]}, indent=1) + "\n", uid, gid, 0o644)
    return created
