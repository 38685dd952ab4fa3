"""The JSON hub protocol: UTF-8 JSON objects, each followed by 0x1E."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import EncodeError
from .hub_protocol import MAX_VERSION
from .json_decoder import JsonMessageDecoder
from .messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from .wire_values import json_default

RECORD_SEPARATOR = b"\x1e"


def _invocation_fields(message: InvocationMessage | StreamInvocationMessage) -> dict[str, Any]:
    record: dict[str, Any] = {"type": int(message.message_type)}
    if message.invocation_id is not None:
        record["invocationId"] = message.invocation_id
    record["target"] = message.target
    record["arguments"] = message.arguments
    if message.stream_ids:
        record["streamIds"] = message.stream_ids
    return record


def to_json_record(message: HubMessage) -> dict[str, Any]:
    """The JSON object for ``message``, with exactly the fields the spec defines."""
    record: dict[str, Any]
    match message:
        case InvocationMessage() | StreamInvocationMessage():
            record = _invocation_fields(message)
        case StreamItemMessage():
            record = {"type": 2, "invocationId": message.invocation_id, "item": message.item}
        case CompletionMessage():
            record = {"type": 3, "invocationId": message.invocation_id}
            if message.error is not None:
                record["error"] = message.error
            elif message.has_result:
                record["result"] = message.result
        case CancelInvocationMessage():
            record = {"type": 5, "invocationId": message.invocation_id}
        case PingMessage():
            return {"type": 6}
        case CloseMessage():
            record = {"type": 7}
            if message.error is not None:
                record["error"] = message.error
            if message.allow_reconnect:
                record["allowReconnect"] = True
            return record
        case AckMessage():
            return {"type": 8, "sequenceId": message.sequence_id}
        case SequenceMessage():
            return {"type": 9, "sequenceId": message.sequence_id}
        case _:
            raise TypeError(f"Not a hub message: {type(message).__name__}.")
    if message.headers:
        record["headers"] = message.headers
    return record


def dumps_json(value: object) -> str:
    """Compact, strictly valid JSON text; raises EncodeError for what JSON cannot hold."""
    try:
        return json.dumps(
            value,
            allow_nan=False,
            separators=(",", ":"),
            ensure_ascii=False,
            default=json_default,
        )
    except EncodeError:
        raise
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise EncodeError(
                "NaN and Infinity cannot be sent as JSON; replace them with null or a string."
            ) from exc
        raise EncodeError(f"Cannot encode message as JSON: {exc}") from exc
    except (TypeError, RecursionError) as exc:
        raise EncodeError(f"Cannot encode message as JSON: {exc}") from exc


class JsonHubProtocol:
    """Codec for ``{"protocol": "json"}``; records are sent in WebSocket text frames."""

    name = "json"
    transfer_format = "Text"

    def is_version_supported(self, version: int) -> bool:
        """Any version up to 2, as ASP.NET's ``version <= Version``: 0 and 1 too."""
        return version <= MAX_VERSION

    def decoder(self, max_message_size: int) -> JsonMessageDecoder:
        """A per-connection decoder limiting each record to ``max_message_size`` bytes."""
        return JsonMessageDecoder(max_message_size)

    def encode(self, message: HubMessage) -> bytes:
        """One UTF-8 record ending with 0x1E (decode it to str for a text frame)."""
        text = dumps_json(to_json_record(message))
        try:
            return text.encode("utf-8") + RECORD_SEPARATOR
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"Cannot encode message as JSON: a string is not valid Unicode ({exc.reason})."
            ) from exc

    def encode_many(self, messages: Iterable[HubMessage]) -> bytes:
        """Several whole records concatenated, for one frame."""
        return b"".join(self.encode(message) for message in messages)
