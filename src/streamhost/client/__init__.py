"""Client side of streamhost: read a streamed LLM response, whatever protocol it speaks.

``stream_text`` turns a boto3 ``invoke_endpoint_with_response_stream`` response, an HTTP
response or raw bytes from TGI, LMI or an OpenAI-compatible server into text deltas::

    from streamhost.client import runtime_client, stream_text

    smr = runtime_client("http://127.0.0.1:8080")
    response = smr.invoke_endpoint_with_response_stream(EndpointName="default", Body=body)
    for text in stream_text(response):
        print(text, end="", flush=True)

Depends on nothing else in streamhost; boto3 is imported only when a client is built.
"""

from streamhost.client.boto import (
    credentials_file,
    load_credentials,
    runtime_client,
    sagemaker_client,
)
from streamhost.client.decoders import (
    FORMATS,
    CompleteDecoder,
    Decoder,
    LMIOutputsDecoder,
    OpenAIDecoder,
    StreamResult,
    TextDelta,
    TokenDecoder,
    decoder_for,
    detect_format,
)
from streamhost.client.errors import (
    GenerationError,
    InternalStreamFailure,
    ModelStreamError,
    OverloadedError,
    ProtocolError,
    StreamError,
    ValidationError,
    error_from_payload,
    error_from_response,
)
from streamhost.client.eventstream import (
    EVENTSTREAM_CONTENT_TYPE,
    EventStreamDecoder,
    adecode_eventstream,
    apayload_parts,
    decode_eventstream,
    error_from_event_stream_error,
    payload_parts,
)
from streamhost.client.lines import LineIterator, LineSplitter, aiter_lines, iter_lines
from streamhost.client.sse import DONE, ServerSentEvent, SSEParser, aiter_sse, iter_sse
from streamhost.client.stream import (
    STREAM_FORMATS,
    AsyncTextStream,
    StreamDecoder,
    TextStream,
    astream_text,
    stream_text,
)

__all__ = [
    "DONE",
    "EVENTSTREAM_CONTENT_TYPE",
    "FORMATS",
    "STREAM_FORMATS",
    "AsyncTextStream",
    "CompleteDecoder",
    "Decoder",
    "EventStreamDecoder",
    "GenerationError",
    "InternalStreamFailure",
    "LMIOutputsDecoder",
    "LineIterator",
    "LineSplitter",
    "ModelStreamError",
    "OpenAIDecoder",
    "OverloadedError",
    "ProtocolError",
    "SSEParser",
    "ServerSentEvent",
    "StreamDecoder",
    "StreamError",
    "StreamResult",
    "TextDelta",
    "TextStream",
    "TokenDecoder",
    "ValidationError",
    "adecode_eventstream",
    "aiter_lines",
    "aiter_sse",
    "apayload_parts",
    "astream_text",
    "credentials_file",
    "decode_eventstream",
    "decoder_for",
    "detect_format",
    "error_from_event_stream_error",
    "error_from_payload",
    "error_from_response",
    "iter_lines",
    "iter_sse",
    "load_credentials",
    "payload_parts",
    "runtime_client",
    "sagemaker_client",
    "stream_text",
]
