"""The signatures of an event stream's events, as AWS's HTTP/2 streaming clients write them.

A request whose body is a stream of events is signed with SigV4 and
``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS``; each event then travels as the
payload of an outer message whose headers are ``:date`` (a timestamp) and
``:chunk-signature`` (32 bytes): the HMAC-SHA256, with the day's signing key, of::

    AWS4-HMAC-SHA256-PAYLOAD
    <the :date as 20240101T000000Z>
    <day>/<region>/<service>/aws4_request
    <the signature before, hex: the request's own before the first event>
    <hex SHA-256 of the encoded :date header>
    <hex SHA-256 of the payload>

The last event is an outer message around an empty payload. `event_signature` is the one
computation: the client signs with it (`EventSigner`), the gateway checks with it
(`gateway.sigv4.EventChain`), both through botocore's SigV4 signer, which derives the
signing key. ``aws_sdk_signers.AsyncEventSigner`` signs the same way (the tests check it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.credentials import Credentials

from streamhost.client.eventencode import encode_headers, encode_message

__all__ = ["EVENT_ALGORITHM", "EVENT_STREAM_PAYLOAD", "EventSigner", "event_signature"]

EVENT_STREAM_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
EVENT_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"


class _Dated:
    """What botocore's signer reads of a request to scope and sign it: its timestamp."""

    def __init__(self, stamp: str) -> None:
        self.context: dict[str, Any] = {"timestamp": stamp}


def event_signature(signer: SigV4Auth, moment: datetime, prior: str, payload: bytes) -> bytes:
    """The signature of one event: dated `moment` (its `:date`, whole milliseconds),
    chained to `prior` (hex), over `payload` (the encoded inner event, or b"")."""
    stamp = moment.astimezone(timezone.utc).strftime(SIGV4_TIMESTAMP)
    dated = _Dated(stamp)
    string_to_sign = "\n".join(
        (
            EVENT_ALGORITHM,
            stamp,
            signer.credential_scope(dated),  # type: ignore[arg-type]
            prior,
            hashlib.sha256(encode_headers({":date": moment})).hexdigest(),
            hashlib.sha256(payload).hexdigest(),
        )
    )
    return bytes.fromhex(signer.signature(string_to_sign, dated))  # type: ignore[arg-type]


class EventSigner:
    """Signs events in order, chained from the request's signature (`seed`, hex)."""

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        seed: str,
        service: str = "sagemaker",
    ) -> None:
        self._signer = SigV4Auth(Credentials(access_key_id, secret_access_key), service, region)
        self.prior = seed

    def sign(self, payload: bytes, now: datetime | None = None) -> bytes:
        """The signed message wrapping `payload` (an encoded event, or b"" for the last)."""
        moment = now or datetime.now(timezone.utc)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # :date's unit
        signature = event_signature(self._signer, moment, self.prior, payload)
        self.prior = signature.hex()
        return encode_message({":date": moment, ":chunk-signature": signature}, payload)
