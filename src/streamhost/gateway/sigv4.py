"""Verification of AWS Signature Version 4 on requests that reach the gateway.

botocore's own signer (``botocore.auth.SigV4Auth``: its canonical request, string to sign and
key derivation) is the reference: the signature is recomputed with it from the request
exactly as it arrived, so the gateway accepts precisely what boto3 produces. Every request,
whatever its shape, goes through the one verification below, every check every time. What
makes it cheap is remembered rather than skipped: the parsed ``Authorization`` header up to
its signature, and one signer per key and scope, held by the `CredentialStore`, keeping the
day's signing key. The signer reads a light stand-in for botocore's ``AWSRequest``
(building one cost more than the signing). Keeping the signing key and normalised paths
takes two of botocore's private methods: that is confined to `_ClientSigner`, botocore's
versions are bounded in pyproject.toml, and `check_botocore` (run when a store is made)
fails in one line if they changed. Failures are named exceptions carrying the error code
and message AWS sends for the same fault, for the API layers to render in their protocol."""

from __future__ import annotations

import configparser
import hashlib
import hmac
import inspect
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import botocore
from botocore.auth import EMPTY_SHA256_HASH, SIGV4_TIMESTAMP, UNSIGNED_PAYLOAD, SigV4Auth
from botocore.credentials import Credentials

from streamhost.client.eventsign import EVENT_STREAM_PAYLOAD, event_signature
from streamhost.gateway.errors import AwsError

__all__ = [
    "ALGORITHM",
    "DEFAULT_MAX_SKEW",
    "SERVICE",
    "BotocoreUnsupported",
    "ClockSkewException",
    "CredentialConflict",
    "CredentialStore",
    "CredentialsFileError",
    "EventChain",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "PayloadHashMismatchException",
    "Principal",
    "SigV4Error",
    "StoredCredential",
    "UnrecognizedClientException",
    "check_botocore",
    "verify",
    "verify_event_stream",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SCOPE_TERMINATOR = "aws4_request"
# The signingName of both botocore models, ``sagemaker`` (control plane) and
# ``sagemaker-runtime``: boto3 scopes runtime requests to "sagemaker" too.
SERVICE = "sagemaker"
DEFAULT_MAX_SKEW = timedelta(minutes=5)

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
# Characters RFC 3986 leaves unencoded; what botocore's signer uses for query strings.
_UNRESERVED = "-_.~"
# Only the path and query of the URL reach the canonical request; the origin is a placeholder
# (http, so botocore never switches to its "unsigned payload over TLS" mode).
_PLACEHOLDER_ORIGIN = "http://gateway.invalid"


class SigV4Error(AwsError):
    """An authentication failure, with the AWS error code and message to send back."""

    def __init__(self, code: str, message: str) -> None:
        # 403, as the gateway issue specifies. Reports exist of SageMaker's front end using
        # 400 for some of these (JuliaCloud/AWS.jl#334, aws/amazon-sagemaker-operator-for-k8s#99);
        # botocore retries neither, and clients key on the error code, not the status.
        super().__init__(code, message, status=403)


class MissingAuthenticationTokenException(SigV4Error):
    """The request carries no ``Authorization`` header."""

    def __init__(self, message: str = "Missing Authentication Token") -> None:
        super().__init__("MissingAuthenticationTokenException", message)


class IncompleteSignatureException(SigV4Error):
    """The ``Authorization`` header or the request date is malformed or incomplete."""

    def __init__(self, message: str) -> None:
        super().__init__("IncompleteSignatureException", message)


class UnrecognizedClientException(SigV4Error):
    """The access key id (or its session token) is not one the gateway knows."""

    def __init__(
        self, message: str = "The security token included in the request is invalid."
    ) -> None:
        super().__init__("UnrecognizedClientException", message)


class InvalidSignatureException(SigV4Error):
    """The signature, its scope or its date does not check out."""

    def __init__(self, message: str = _SIGNATURE_MISMATCH) -> None:
        super().__init__("InvalidSignatureException", message)


class ClockSkewException(InvalidSignatureException):
    """The request was signed too long ago or too far in the future."""


class PayloadHashMismatchException(InvalidSignatureException):
    """``x-amz-content-sha256`` does not match the body that arrived."""


class CredentialsFileError(ValueError):
    """A shared-credentials file could not be read or holds no key pairs."""


class CredentialConflict(ValueError):
    """One access key id was given two different secrets."""


@dataclass(frozen=True)
class StoredCredential:
    """A key pair the gateway accepts, and where it came from."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    profile: str | None = None


class Principal(NamedTuple):
    """Who signed a verified request, and for which scope."""

    access_key_id: str
    profile: str | None
    region: str
    service: str
    signed_at: datetime


class CredentialStore:
    """Access key id → secret key for every caller the gateway accepts, and the signer that
    checks each key's requests (one per scope a client signs for, kept)."""

    def __init__(self, pairs: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        check_botocore()  # a store is made at start-up: fail then, not on the first request
        self._credentials: dict[str, StoredCredential] = {}
        self._signers: dict[tuple[str, str, str], _ClientSigner] = {}
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        for access_key_id, secret_access_key in items:
            self.add(access_key_id, secret_access_key)

    @classmethod
    def from_shared_credentials_file(cls, path: str | os.PathLike[str]) -> CredentialStore:
        """Build a store accepting the key pair of every profile in an AWS credentials file."""
        store = cls()
        store.load_shared_credentials_file(path)
        return store

    def add(
        self,
        access_key_id: str,
        secret_access_key: str,
        *,
        session_token: str | None = None,
        profile: str | None = None,
    ) -> None:
        """Accept this key pair; with a session token, requests must also carry that token."""
        credential = StoredCredential(access_key_id, secret_access_key, session_token, profile)
        existing = self._credentials.get(access_key_id)
        if existing is not None:
            if (existing.secret_access_key, existing.session_token) != (
                secret_access_key,
                session_token,
            ):
                raise CredentialConflict(
                    f"Access key id {access_key_id!r} is given two different secrets"
                )
            return
        self._credentials[access_key_id] = credential

    def load_shared_credentials_file(self, path: str | os.PathLike[str]) -> int:
        """Add every profile's key pair from an AWS shared-credentials file; return how many."""
        # No interpolation: secret keys may contain '%'.
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as file:
                parser.read_file(file)
        except (OSError, UnicodeDecodeError, configparser.Error) as error:
            raise CredentialsFileError(f"Cannot read credentials file {path}: {error}") from error
        loaded = 0
        for profile in parser.sections():
            section = parser[profile]
            access_key_id = section.get("aws_access_key_id", "").strip()
            secret_access_key = section.get("aws_secret_access_key", "").strip()
            if not access_key_id or not secret_access_key:
                continue  # e.g. a profile that only sets a region or a role to assume
            # aws_security_token is the name older boto and the CLI still accept.
            token = section.get("aws_session_token") or section.get("aws_security_token")
            self.add(
                access_key_id,
                secret_access_key,
                session_token=token.strip() if token else None,
                profile=profile,
            )
            loaded += 1
        if not loaded:
            raise CredentialsFileError(f"No profile in {path} has a complete key pair")
        return loaded

    def lookup(self, access_key_id: str) -> StoredCredential | None:
        """The credential for this access key id, or None if it is unknown."""
        return self._credentials.get(access_key_id)

    def _signer(self, credential: StoredCredential, service: str, region: str) -> _ClientSigner:
        """botocore's signer for this credential and scope, made on first use and kept."""
        key = (credential.access_key_id, service, region)
        signer = self._signers.get(key)
        if signer is None:
            credentials = Credentials(
                credential.access_key_id, credential.secret_access_key, credential.session_token
            )
            # Scopes a client chose: bounded.
            signer = _remember(
                self._signers, key, _ClientSigner(credentials, service, region), 1024
            )
        return signer

    def __contains__(self, access_key_id: object) -> bool:
        return access_key_id in self._credentials

    def __len__(self) -> int:
        return len(self._credentials)


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    canonical_names: tuple[str, ...]  # the signed headers sorted, each once


def verify(
    method: str,
    url_path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    store: CredentialStore,
    now: datetime | None = None,
    max_skew: timedelta | float = DEFAULT_MAX_SKEW,
    service: str | None = SERVICE,
    allow_unsigned_payload: bool = False,
    lowercased: bool = False,
) -> Principal:
    """Check a request's SigV4 ``Authorization`` header and return who signed it.

    ``url_path_with_query`` is the raw request target, percent-encoding intact (ASGI
    ``raw_path`` + ``?`` + ``query_string``); ``service=None`` accepts any scoped service.
    ``lowercased``: ``headers`` is a dict whose names are lower-case already, a repeated
    header's values joined with commas (the copy that would make it so is skipped).
    """
    principal, _, _ = _verify(
        method,
        url_path_with_query,
        headers,
        body,
        store=store,
        now=now,
        max_skew=max_skew,
        service=service,
        allow_unsigned_payload=allow_unsigned_payload,
        lowercased=lowercased,
        events=False,
    )
    return principal


def verify_event_stream(
    method: str,
    url_path_with_query: str,
    headers: Mapping[str, str],
    *,
    store: CredentialStore,
    now: datetime | None = None,
    max_skew: timedelta | float = DEFAULT_MAX_SKEW,
    service: str | None = SERVICE,
    lowercased: bool = False,
) -> EventChain:
    """Check the head of a request whose body is a stream of signed events
    (``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS``, as AWS's HTTP/2 streaming
    clients send it); the returned chain then checks each event as it arrives."""
    header_map = headers if lowercased else _lowercase_headers(headers)
    if header_map.get("x-amz-content-sha256", "").strip() != EVENT_STREAM_PAYLOAD:
        raise PayloadHashMismatchException(
            "This operation takes a stream of signed events: sign it with "
            f"'x-amz-content-sha256: {EVENT_STREAM_PAYLOAD}'."
        )
    _, signer, signature = _verify(
        method,
        url_path_with_query,
        header_map,
        b"",
        store=store,
        now=now,
        max_skew=max_skew,
        service=service,
        allow_unsigned_payload=False,
        lowercased=True,
        events=True,
    )
    return EventChain(signer, signature, max_skew)


def _verify(
    method: str,
    url_path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    store: CredentialStore,
    now: datetime | None,
    max_skew: timedelta | float,
    service: str | None,
    allow_unsigned_payload: bool,
    lowercased: bool,
    events: bool,
) -> tuple[Principal, _ClientSigner, str]:
    """`verify`, also giving the signer and the signature (an event stream's seed)."""
    header_map = headers if lowercased else _lowercase_headers(headers)
    authorization_value = header_map.get("authorization", "").strip()
    if not authorization_value:
        raise MissingAuthenticationTokenException()
    authorization, signature = _parse_authorization(authorization_value, header_map)
    signed, timestamp = _request_time(header_map)
    _check_clock(signed, now, max_skew)
    _check_scope(authorization, signed, timestamp, service)
    credential = _credential(store, authorization.access_key_id, header_map)
    declared_hash = header_map.get("x-amz-content-sha256")
    if declared_hash is not None and not events:  # boto3 sends none: the body is hashed in
        _check_payload_hash(declared_hash, body, allow_unsigned_payload)

    signer = store._signer(credential, authorization.service, authorization.region)
    request = _received(method, url_path_with_query, header_map, body, authorization, timestamp)
    canonical_request = signer.canonical_request(request)  # type: ignore[arg-type]
    string_to_sign = signer.string_to_sign(request, canonical_request)  # type: ignore[arg-type]
    expected = signer.signature(string_to_sign, request)  # type: ignore[arg-type]
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        # AWS explains itself the same way; neither string contains a secret.
        raise InvalidSignatureException(
            f"{_SIGNATURE_MISMATCH}\n\n"
            f"The Canonical String for this request should have been\n'{canonical_request}'\n\n"
            f"The String-to-Sign should have been\n'{string_to_sign}'\n"
        )
    principal = Principal(
        access_key_id=credential.access_key_id,
        profile=credential.profile,
        region=authorization.region,
        service=authorization.service,
        # Within the clock window by now, so any platform's fromtimestamp takes it.
        signed_at=datetime.fromtimestamp(signed, timezone.utc),
    )
    return principal, signer, signature


# -- signed events ------------------------------------------------------------------------
# A bidirectional stream's events are signed one by one, chained from the request's
# signature: `streamhost.client.eventsign` holds the computation, shared with the client.


class EventChain:
    """The running check of a request's signed events, seeded by its verified signature."""

    def __init__(
        self, signer: _ClientSigner, seed: str, max_skew: timedelta | float = DEFAULT_MAX_SKEW
    ) -> None:
        self._signer = signer
        self.prior = seed
        self._max_skew = max_skew

    def verify(
        self, date_millis: int, signature: bytes, payload: bytes, now: datetime | None = None
    ) -> None:
        """Check the next event (its `:date` in milliseconds, its `:chunk-signature`, its
        payload: the encoded inner event, or b"" for the last); it becomes the prior one."""
        _check_clock(date_millis / 1000, now, self._max_skew)
        moment = _EPOCH + timedelta(milliseconds=date_millis)
        expected = event_signature(self._signer, moment, self.prior, payload)
        if not hmac.compare_digest(expected, signature):
            raise InvalidSignatureException(
                "The event's signature does not match: it was not signed with the request's "
                "key, or not in order after the event before it."
            )
        self.prior = expected.hex()


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _lowercase_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    # items() rather than a dict copy: multi-valued mappings (Starlette's Headers, http.server's
    # message) list a repeated header once per value, and SigV4 joins those with commas.
    for name, value in headers.items():
        key = name.lower()
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    return lowered


def _parse_authorization(value: str, headers: Mapping[str, str]) -> tuple[_Authorization, str]:
    """The header's scope and signed headers, and its signature."""
    if "x-amz-date" not in headers and "date" not in headers:
        _parse_fields(value, dated=False)  # raises, naming every problem at once
    # A client repeats everything before the signature on every request of a day: what
    # it parses to is remembered (the signature itself is a new string every time).
    prefix, marker, signature = value.rpartition("Signature=")
    signature = signature.strip()
    if marker and signature and "," not in signature and "=" not in signature:
        authorization = _authorizations.get(prefix)
        if authorization is None:
            authorization, parsed_signature = _parse_fields(value, dated=True)
            if parsed_signature != signature:
                return authorization, parsed_signature
            _remember(_authorizations, prefix, authorization, 1024)
        return authorization, signature
    return _parse_fields(value, dated=True)


_authorizations: dict[str, _Authorization] = {}


def _parse_fields(value: str, *, dated: bool) -> tuple[_Authorization, str]:
    algorithm, _, rest = value.partition(" ")
    parameters: dict[str, str] = {}
    for part in rest.split(","):
        key, equals, parameter = part.strip().partition("=")
        if equals:
            parameters[key] = parameter.strip()
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not parameters.get(name)
    ]
    if not dated:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        raise IncompleteSignatureException(" ".join([*problems, f"Authorization={value}"]))
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{algorithm}'")

    credential = parameters["Credential"]
    scope = credential.split("/")
    if len(scope) != 5:
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{credential}'"
        )
    signed_headers = tuple(name.lower() for name in parameters["SignedHeaders"].split(";"))
    if "host" not in signed_headers:
        raise IncompleteSignatureException(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    access_key_id, scope_date, region, service, terminator = scope
    authorization = _Authorization(
        access_key_id=access_key_id,
        scope_date=scope_date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=signed_headers,
        canonical_names=tuple(sorted(set(signed_headers))),
    )
    return authorization, parameters["Signature"]


def _request_time(headers: Mapping[str, str]) -> tuple[float, str]:
    """When the request was signed (seconds since the epoch), and that time as SigV4's
    timestamp."""
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        amz_date = amz_date.strip()
        try:
            # "YYYYMMDDTHHMMSSZ" (isdecimal is what a regex's \d matches), sliced by hand
            # and the day's midnight remembered: a regex, strptime or a datetime per request
            # cost more than the rest of the date handling. The header, once it passed, is
            # already the timestamp in SigV4's format.
            if not (
                len(amz_date) == 16
                and amz_date[8] == "T"
                and amz_date[15] == "Z"
                and amz_date[0:8].isdecimal()
                and amz_date[9:15].isdecimal()
            ):
                raise ValueError(amz_date)
            day = amz_date[0:8]
            midnight = _midnights.get(day)
            if midnight is None:
                date = datetime(int(day[0:4]), int(day[4:6]), int(day[6:8]), tzinfo=timezone.utc)
                midnight = _remember(_midnights, day, (date - _EPOCH) // _SECOND, 64)
            hour, minute, second = int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15])
            if hour > 23 or minute > 59 or second > 59:
                raise ValueError(amz_date)
            return midnight + hour * 3600 + minute * 60 + second, amz_date
        except ValueError:
            raise IncompleteSignatureException(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None
    # botocore signs with the Date header instead when a request already has one.
    date = headers["date"]
    try:
        parsed = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise IncompleteSignatureException(
            f"Date must be in RFC 1123 format when X-Amz-Date is absent. Got '{date}'."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    signed_at = parsed.astimezone(timezone.utc)
    return (signed_at - _EPOCH) / _SECOND, signed_at.strftime(SIGV4_TIMESTAMP)


# Epoch seconds of a day's midnight (UTC), by the day as SigV4 writes it ("20261126").
_midnights: dict[str, int] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def _moment(seconds: float) -> datetime:
    """The UTC datetime of these seconds since the epoch (any year a datetime holds)."""
    return _EPOCH + timedelta(seconds=seconds)


def _check_clock(signed: float, now: datetime | None, max_skew: timedelta | float) -> None:
    seconds = max_skew.total_seconds() if isinstance(max_skew, timedelta) else float(max_skew)
    if now is None:
        offset = signed - time.time()
        if -seconds <= offset <= seconds:
            return  # the usual case, without building datetimes
        now = datetime.now(timezone.utc)
    else:
        now = _as_utc(now)
    signed_at = _moment(signed)
    skew = timedelta(seconds=seconds)
    earliest, latest = now - skew, now + skew
    if signed_at < earliest:
        raise ClockSkewException(
            f"Signature expired: {_stamp(signed_at)} is now earlier than {_stamp(earliest)} "
            f"({_stamp(now)} - {_duration_text(skew)}.)"
        )
    if signed_at > latest:
        raise ClockSkewException(
            f"Signature not yet current: {_stamp(signed_at)} is still later than "
            f"{_stamp(latest)} ({_stamp(now)} + {_duration_text(skew)}.)"
        )


def _check_scope(
    authorization: _Authorization, signed: float, timestamp: str, service: str | None
) -> None:
    problems = []
    if not authorization.region:
        problems.append("Credential should be scoped to a valid region, not ''.")
    if service is not None and authorization.service != service:
        problems.append(f"Credential should be scoped to correct service: '{service}'.")
    if authorization.terminator != SCOPE_TERMINATOR:
        problems.append(
            f"Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', "
            f"not '{authorization.terminator}'."
        )
    request_date = timestamp[0:8]
    if authorization.scope_date != request_date:
        problems.append(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{authorization.scope_date}' != '{request_date}', "
            f"from '{_stamp(_moment(signed))}'."
        )
    if problems:
        # AWS ends each sentence with a space, trailing one included ("... 'sagemaker'. ").
        raise InvalidSignatureException("".join(f"{problem} " for problem in problems))


def _credential(
    store: CredentialStore, access_key_id: str, headers: Mapping[str, str]
) -> StoredCredential:
    """The stored credential of this access key id, its session token checked if it has one."""
    credential = store.lookup(access_key_id)
    if credential is None:
        raise UnrecognizedClientException()
    if credential.session_token is not None:
        token = headers.get("x-amz-security-token", "")
        if not hmac.compare_digest(token.encode(), credential.session_token.encode()):
            raise UnrecognizedClientException()
    return credential


def _check_payload_hash(declared: str, body: bytes, allow_unsigned: bool) -> None:
    # Without this check a signed x-amz-content-sha256 header would vouch for any body: the
    # canonical request uses the header's value, not a hash of what arrived.
    declared = declared.strip()
    if declared == UNSIGNED_PAYLOAD:
        if allow_unsigned:
            return
        raise PayloadHashMismatchException(
            "This endpoint requires a signed payload; "
            f"'x-amz-content-sha256: {UNSIGNED_PAYLOAD}' is not accepted."
        )
    actual = hashlib.sha256(body).hexdigest()
    if not hmac.compare_digest(declared.lower().encode(), actual.encode()):
        raise PayloadHashMismatchException(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )


def _canonical_query(query: str) -> str:
    # Decode then re-encode each name and value the way botocore's signer encodes its own
    # parameters, so any client's choice of escapes gives the same canonical query; botocore
    # then sorts the pairs.
    pairs = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        pairs.append(
            f"{quote(unquote(name), safe=_UNRESERVED)}={quote(unquote(value), safe=_UNRESERVED)}"
        )
    return "&".join(pairs)


class _SignedHeaders(dict):
    """The signed headers that arrived (lower-case name → value), with the lookups
    botocore's signer makes on an ``AWSRequest``'s headers."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get_all(self, name: str) -> list[str]:
        value = self.get(name.lower())
        return [] if value is None else [value]


class _Received:
    """A request as it arrived, shaped as botocore's signer reads an ``AWSRequest`` (method,
    url, params, headers, context) without building one: building it (and its
    ``email.message`` headers) cost more than the signing itself."""

    __slots__ = ("body", "context", "headers", "method", "params", "url")

    def __init__(
        self, method: str, url: str, headers: _SignedHeaders, body: bytes, timestamp: str
    ) -> None:
        self.method = method
        self.url = url
        self.params: dict[str, str] = {}
        self.headers = headers
        self.body = body
        self.context = {"timestamp": timestamp}


def _received(
    method: str,
    url_path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    authorization: _Authorization,
    timestamp: str,
) -> _Received:
    """The request for botocore's signer: the headers the client signed, the query in
    canonical form, the origin a placeholder."""
    path, _, query = url_path_with_query.partition("?")
    canonical_query = _canonical_query(query) if query else ""
    url = _PLACEHOLDER_ORIGIN + path + (f"?{canonical_query}" if canonical_query else "")
    signed = _SignedHeaders()
    for name in authorization.canonical_names:
        value = headers.get(name)
        if value is not None:
            signed[name] = value
    return _Received(method, url, signed, body, timestamp)


def _remember(memo: dict[Any, Any], key: Any, value: Any, limit: int) -> Any:
    """Store `value` under `key` in `memo` and return it; a memo that holds `limit` entries
    is emptied first (its keys come from what clients send, so it stays bounded)."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value


# -- botocore's private interface: used here and nowhere else -----------------------------
# SigV4Auth.signature() derives the day's signing key through four calls of its private
# _sign, and canonical_request() normalises the path through _normalize_url_path, on every
# request: ~30 and ~6 µs each time. _ClientSigner keeps their results (pure functions of
# their arguments; botocore's own code runs on a miss). Both methods read the same from
# botocore 1.34 to 1.44 (pyproject.toml allows 1.42.7 to 1.44); check_botocore() checks them.

_BOTOCORE_PRIVATE = {
    "_sign": ("self", "key", "msg", "hex"),
    "_normalize_url_path": ("self", "path"),
}


class BotocoreUnsupported(RuntimeError):
    """The installed botocore's signer lacks what the verification relies on."""


class _ClientSigner(SigV4Auth):
    """botocore's SigV4 signer, signing exactly the headers the client said it signed."""

    def __init__(self, credentials: Credentials, service: str, region: str) -> None:
        super().__init__(credentials, service, region)
        self._paths: dict[str, str] = {}
        self._keys: dict[tuple[bytes, str], bytes] = {}
        self._macs: dict[bytes, hmac.HMAC] = {}

    def headers_to_sign(self, request: _Received) -> _SignedHeaders:  # type: ignore[override]
        # botocore picks "all headers but a blocklist, plus host from the URL" because it is
        # about to send the request; here the client has already chosen, in SignedHeaders.
        return request.headers

    def payload(self, request: _Received) -> str:  # type: ignore[override]
        # botocore's payload hash for a body that arrived whole over plain HTTP (the
        # placeholder origin), without its checks for streamed or unsigned-over-TLS bodies.
        return hashlib.sha256(request.body).hexdigest() if request.body else EMPTY_SHA256_HASH

    def _normalize_url_path(self, path: str) -> str:
        normalized = self._paths.get(path)
        if normalized is None:
            normalized = _remember(self._paths, path, super()._normalize_url_path(path), 256)
        return normalized

    def _sign(self, key: bytes, msg: str, hex: bool = False):
        if hex:
            # The signature itself, a new string to sign every time, with the signing key's
            # HMAC state (the same all day) copied rather than keyed again.
            keyed = self._macs.get(key)
            if keyed is None:
                keyed = _remember(self._macs, key, hmac.new(key, digestmod=hashlib.sha256), 64)
            mac = keyed.copy()
            mac.update(msg.encode("utf-8"))
            return mac.hexdigest()
        # The signing-key chain (date, region, service, "aws4_request"): the same all day.
        derived = self._keys.get((key, msg))
        if derived is None:
            derived = _remember(self._keys, (key, msg), super()._sign(key, msg), 64)
        return derived


def check_botocore() -> None:
    """Raise `BotocoreUnsupported`, in one line, unless botocore's signer still has the
    private methods `_ClientSigner` keeps the results of, and signs as they are kept."""
    for name, expected in _BOTOCORE_PRIVATE.items():
        try:
            parameters = tuple(inspect.signature(getattr(SigV4Auth, name)).parameters)
        except (AttributeError, TypeError, ValueError):
            parameters = ()
        if parameters != expected:
            raise BotocoreUnsupported(
                _unsupported(f"SigV4Auth.{name}({', '.join(expected[1:])}) is gone or changed")
            )
    # One request signed by botocore's signer and by ours twice (results made, then kept).
    credentials = Credentials("AKIDCHECK", "check-secret")
    timestamp = "20240101T000000Z"
    headers = _SignedHeaders({"host": "gateway.invalid", "x-amz-date": timestamp})
    request = _Received("POST", _PLACEHOLDER_ORIGIN + "/a%20b/./c", headers, b"{}", timestamp)

    def signature(signer: SigV4Auth) -> str:
        canonical_request = signer.canonical_request(request)  # type: ignore[arg-type]
        string_to_sign = signer.string_to_sign(request, canonical_request)  # type: ignore[arg-type]
        return signer.signature(string_to_sign, request)  # type: ignore[arg-type,no-any-return]

    ours = _ClientSigner(credentials, SERVICE, "us-east-1")
    reference = signature(SigV4Auth(credentials, SERVICE, "us-east-1"))
    if not signature(ours) == signature(ours) == reference:
        raise BotocoreUnsupported(_unsupported("its signer no longer signs as it did"))


def _unsupported(reason: str) -> str:
    return (
        f"botocore {botocore.__version__} cannot be used to verify SigV4: {reason} "
        "(pyproject.toml bounds botocore to the versions streamhost was checked with)"
    )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(SIGV4_TIMESTAMP)


def _duration_text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} sec"
