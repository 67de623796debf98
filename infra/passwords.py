"""Password hashes for people's accounts: argon2id (RFC 9106), through argon2-cffi.

The parameters are argon2-cffi's defaults (RFC 9106's second recommendation:
3 passes over 64 MiB, 4 lanes), kept in each hash's PHC string so that a later
change of parameters still verifies old hashes (and ``needs_rehash`` says which
to upgrade at the next sign-in). Verifying a made-up hash for an unknown
address costs what a real one costs, so timing does not say which addresses
have accounts.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(self, *, time_cost: int = 3, memory_cost_kib: int = 65_536, lanes: int = 4):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=lanes, type=Type.ID
        )
        self._decoy = self._hasher.hash("a password nobody has: timing decoy")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash, as slow as a real check, then False."""
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
