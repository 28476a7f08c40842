"""Event signatures of a bidirectional stream, checked against AWS's own signer
(aws_sdk_signers.AsyncEventSigner, run in the Python >= 3.12 environment `make test` makes)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.eventstream import EventStreamBuffer

from streamhost.client.eventencode import encode_message, stream_part
from streamhost.client.eventsign import EventSigner
from streamhost.gateway.bidi import InputEvents, InputRejected
from streamhost.gateway.sigv4 import (
    CredentialStore,
    EventChain,
    InvalidSignatureException,
    verify_event_stream,
)

ROOT = Path(__file__).resolve().parents[2]
AWS_PYTHON = Path(os.environ.get("STREAMHOST_AWS_PYTHON", ROOT / ".venv-aws" / "bin" / "python"))
SEED = "6161927c3834b6c7b913a4e94a6984911b04ad92194f08475b7f0fc87cd086c3"
SECRET = "streamhost-test-secret"

# AWS's signer, as its event publisher uses it, on the payloads given as hex on stdin.
AWS_SIGNS = """
import asyncio, json, sys
from aws_sdk_signers import AsyncEventSigner
from smithy_aws_core.identity import AWSCredentialsIdentity
from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage

async def main():
    signer = AsyncEventSigner(initial_signature=sys.argv[1].encode(), event_encoder_cls=EventHeaderEncoder)
    identity = AWSCredentialsIdentity(access_key_id="AKIDSTREAMHOSTTEST", secret_access_key=sys.argv[2])
    properties = {"region": "us-east-1", "service": "sagemaker"}
    out = []
    for payload in json.load(sys.stdin):
        event = EventMessage(payload=bytes.fromhex(payload))
        if payload:
            signed = await signer._sign_payload(event=event, payload=bytes.fromhex(payload), identity=identity, properties=properties)
        else:
            signed = await signer.sign_empty(event=EventMessage(), identity=identity, properties=properties)
        out.append(signed.encode().hex())
    print(json.dumps(out))

asyncio.run(main())
"""


def part(text: str, state: str = "COMPLETE") -> bytes:
    return stream_part(text.encode(), True, state == "COMPLETE")


def aws_signed(payloads: list[bytes]) -> list[bytes]:
    if not AWS_PYTHON.exists():
        pytest.skip(f"AWS's signer is not installed ({AWS_PYTHON}): run make test")
    done = subprocess.run(
        [str(AWS_PYTHON), "-c", AWS_SIGNS, SEED, SECRET],
        input=json.dumps([p.hex() for p in payloads]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [bytes.fromhex(h) for h in json.loads(done.stdout)]


def chain():
    store = CredentialStore({"AKIDSTREAMHOSTTEST": SECRET})
    signer = store._signer(store.lookup("AKIDSTREAMHOSTTEST"), "sagemaker", "us-east-1")
    return EventChain(signer, SEED)


PAYLOADS = [part('{"inputs": "Hel', "PARTIAL"), part('lo"}'), part("\u00e9t\u00e9 \U0001f600"), b""]


def test_awss_signed_events_verify_in_order():
    events = InputEvents(chain())
    parts = []
    for message in aws_signed(PAYLOADS):
        parts += events.feed(message)
    assert events.ended
    assert [(data.decode(), complete) for data, _, complete in parts] == [
        ('{"inputs": "Hel', False),
        ('lo"}', True),
        ("\u00e9t\u00e9 \U0001f600", True),
    ]


def test_our_signer_writes_the_bytes_awss_writes():
    theirs = aws_signed(PAYLOADS)
    ours = EventSigner("AKIDSTREAMHOSTTEST", SECRET, "us-east-1", SEED)
    for message in theirs:
        (decoded,) = list(_messages(message))
        moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(
            milliseconds=decoded.headers[":date"]
        )
        assert ours.sign(decoded.payload, now=moment) == message


@pytest.mark.parametrize("order", [[1, 0, 2, 3], [0, 0, 1, 2, 3], [0, 2, 3]])
def test_events_out_of_the_chain_are_refused(order):
    signed = aws_signed(PAYLOADS)
    events = InputEvents(chain())
    with pytest.raises(InputRejected) as refused:
        for index in order:
            events.feed(signed[index])
    assert refused.value.code == "InvalidSignatureException"


def test_a_tampered_payload_is_refused():
    (decoded,) = list(_messages(aws_signed(PAYLOADS[:1])[0]))
    tampered = encode_message(
        {
            ":date": _moment(decoded.headers[":date"]),
            ":chunk-signature": decoded.headers[":chunk-signature"],
        },
        part('{"inputs": "Bye', "PARTIAL"),
    )
    with pytest.raises(InputRejected):
        InputEvents(chain()).feed(tampered)


def test_an_old_event_is_refused_even_when_signed_right():
    old = datetime.now(timezone.utc) - timedelta(minutes=20)
    message = EventSigner("AKIDSTREAMHOSTTEST", SECRET, "us-east-1", SEED).sign(
        PAYLOADS[0], now=old
    )
    with pytest.raises(InputRejected) as refused:
        InputEvents(chain()).feed(message)
    assert "expired" in str(refused.value).lower()


def test_unsigned_events_are_refused_when_authentication_is_on():
    with pytest.raises(InputRejected) as refused:
        InputEvents(chain()).feed(PAYLOADS[0])
    assert refused.value.code == "MissingSignature"


def test_the_head_must_declare_the_event_stream_payload():
    headers = {"authorization": "AWS4-HMAC-SHA256 Credential=x", "x-amz-content-sha256": "abc"}
    with pytest.raises(InvalidSignatureException):
        verify_event_stream(
            "POST",
            "/endpoints/e/invocations-bidirectional-stream",
            headers,
            store=CredentialStore({"AKIDSTREAMHOSTTEST": SECRET}),
            lowercased=True,
        )


def _moment(millis: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis)


def _messages(data: bytes):
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return iter(buffer)
