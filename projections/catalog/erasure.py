"""Erasure certificates: what an erasure did, signed so that it can be checked offline.

A certificate is the canonical JSON of its body (sorted keys, no spaces) signed
with the audit trail's Ed25519 key; it carries the public key and its id, so
``verify_certificate`` (and ``kf documents verify-erasure FILE``) needs nothing
but the file. ``complete`` says whether every read model that keeps document
content has confirmed, and that no key or blob of the document is left.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from infra.signing import Signer, load_public_key, verify

FORMAT = "kf.erasure.v1"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def erasure_certificate(
    found: dict[str, Any], expected: list[str], signer: Signer
) -> dict[str, Any]:
    """The signed certificate; ``expected``: the read models that must confirm."""
    confirmed = {m["name"] for m in found["read_models"]}
    pending = [name for name in expected if name not in confirmed]
    body = {
        "format": FORMAT,
        **found,
        "pending_read_models": pending,
        "complete": not pending
        and not found["key_still_stored"]
        and found["blobs_still_stored"] == 0,
        "issued_at": datetime.now(UTC).isoformat(),
    }
    return {
        "certificate": body,
        "signature": signer.sign(_canonical(body)),
        "key_id": signer.key_id,
        "public_key": signer.public_pem,
    }


def verify_certificate(signed: dict[str, Any], trusted_public_key: str | None = None) -> bool:
    """Whether the certificate is intact and signed by the key it names (or the one trusted)."""
    pem = trusted_public_key or signed["public_key"]
    return verify(load_public_key(pem), _canonical(signed["certificate"]), signed["signature"])
