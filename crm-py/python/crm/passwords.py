"""Passwords: Argon2id PHC strings and crm's password policy, synchronous and
releasing the GIL while hashing (other Python threads keep running).

``hash(password)`` uses OWASP's minimum (19 MiB, 2 passes, 1 lane) unless given
more; lower parameters raise ``CrmError`` (code ``configuration_error``).
``verify(password, phc)`` never raises: a malformed hash does not match.
``check_policy(password)`` raises ``ValidationError`` naming every broken rule
(12+ characters, upper, lower, digit, symbol, not a common password).
"""

from ._native import password_check_policy as check_policy
from ._native import password_hash as hash
from ._native import password_verify as verify

__all__ = ["hash", "verify", "check_policy"]
