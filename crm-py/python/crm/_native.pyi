# Stubs of the native module (crm-py/src). Checked against the built module by
# mypy.stubtest in scripts/test.sh.
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, Dict, Optional, Tuple, Union, final

__all__ = [
    "__version__",
    "Client",
    "Webhook",
    "whatsapp_verify_signature",
    "whatsapp_handshake",
    "calcom_verify_signature",
    "password_hash",
    "password_verify",
    "password_check_policy",
    "sample_error",
]

__version__: str

@final
class Client:
    @staticmethod
    def connect(
        url: str,
        *,
        master_key: Optional[str] = None,
        master_key_id: Optional[str] = None,
        max_connections: Optional[int] = None,
        rate_limits: Optional[Dict[str, Tuple[int, float]]] = None,
        webhook_allow_networks: Optional[list[str]] = None,
    ) -> Awaitable[Client]: ...
    def call(self, workspace: str, op: str, id: Optional[str], payload: str) -> Awaitable[str]: ...
    def whatsapp_receive(
        self, workspace: str, app_secret: str, signature: Optional[str], body: bytes
    ) -> Awaitable[str]: ...
    def calcom_receive(
        self, workspace: str, secret: str, signature: Optional[str], body: bytes
    ) -> Awaitable[str]: ...
    def idempotency_claim(
        self, workspace: str, scope: str, key: str, request: list[bytes]
    ) -> Awaitable[Tuple[str, Optional[int], Optional[str]]]: ...
    def idempotency_complete(
        self, workspace: str, scope: str, key: str, status: int, body: str
    ) -> Awaitable[None]: ...
    def idempotency_release(self, workspace: str, scope: str, key: str) -> Awaitable[None]: ...
    def start_dispatcher(self) -> None: ...
    def close(self) -> Awaitable[None]: ...

@final
class Webhook:
    def __new__(cls, secret: Union[str, bytes]) -> Webhook: ...
    def sign(self, msg_id: str, timestamp: Union[int, datetime], data: Union[str, bytes]) -> str: ...
    def verify(
        self,
        data: Union[str, bytes],
        headers: Mapping[str, str],
        *,
        json_parse: bool = True,
        now: Optional[int] = None,
    ) -> Any: ...

def whatsapp_verify_signature(app_secret: str, body: Union[str, bytes], header: Optional[str]) -> None: ...
def whatsapp_handshake(
    mode: Optional[str], token: Optional[str], challenge: Optional[str], verify_token: str
) -> str: ...
def calcom_verify_signature(secret: str, body: Union[str, bytes], header: Optional[str]) -> None: ...
def password_hash(
    password: str, *, memory_kib: int = 19456, iterations: int = 2, parallelism: int = 1
) -> str: ...
def password_verify(password: str, phc: str) -> bool: ...
def password_check_policy(password: str) -> None: ...
def sample_error(code: str) -> None: ...
