"""A loopback HTTP server speaking the Anthropic Messages API wire format, for tests and examples.

It is driven by the real ``anthropic`` SDK pointed at ``base_url``. It serves ``POST /v1/messages``
both as one JSON body and as a Server-Sent-Events stream (``"stream": true``), records every
request it receives so a test can assert what the model saw, and answers from a *script*:

- a list of steps, consumed one per request (a retried request consumes the next step), or
- a callable ``step(request) -> step`` deciding from the request (e.g. from the tool_result the
  agent sent back), or built with :func:`per_turn` / :func:`route` for parallel conversations.

A step is a :class:`Reply` (content blocks, stop reason, usage), an :class:`ErrorReply` (HTTP
error with the API's JSON error body and headers such as ``retry-after``) or a
:class:`StreamErrorReply` (HTTP 200, then an ``error`` event in the middle of the stream).

Wire format (docs.anthropic.com, "Messages" and "Streaming Messages"): a stream is
``message_start`` (the message with empty content and the input usage), ``ping``, then per content
block ``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta`` with
partial JSON) / ``content_block_stop``, then ``message_delta`` (``stop_reason`` and cumulative
``usage.output_tokens``) and ``message_stop``. Errors are
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.

The server also rejects what the real API rejects and a buggy agent loop would send: a missing
credential (``x-api-key`` or ``Authorization: Bearer``, which SDK 2.x uses) or version header, a
``tool_use`` not answered by ``tool_result`` blocks in the next user message, an unknown
``tool_use_id``, more than four ``cache_control`` breakpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION_HEADER = "anthropic-version"
MAX_CACHE_BREAKPOINTS = 4


def text(value: str) -> dict:
    """A text content block."""
    return {"type": "text", "text": value}


def tool_use(name: str, input: dict, id: str | None = None) -> dict:
    """A tool_use content block (an id is generated when none is given)."""
    return {
        "type": "tool_use",
        "id": id or f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": input,
    }


@dataclass
class Reply:
    """A successful model response.

    ``stop_reason`` defaults to ``tool_use`` when the content holds a tool_use block, else
    ``end_turn``. ``usage`` keys are the API's (``input_tokens``, ``output_tokens``,
    ``cache_read_input_tokens``, ``cache_creation_input_tokens``); missing ones are estimated
    from the request and content sizes (about four characters a token). ``delay`` waits before
    the response starts; ``event_delay`` waits between stream events.
    """

    content: list[dict]
    stop_reason: str | None = None
    usage: dict | None = None
    delay: float = 0.0
    event_delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ErrorReply:
    """An HTTP error with the API's error body, e.g. ``ErrorReply(429, "rate_limit_error")``."""

    status: int
    error_type: str
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamErrorReply:
    """HTTP 200 and ``message_start``, then an ``error`` event (how overload shows mid-stream)."""

    error_type: str = "overloaded_error"
    message: str = "Overloaded"


Step = Reply | ErrorReply | StreamErrorReply
Script = Sequence[Step | Callable[["RecordedRequest"], Step]] | Callable[["RecordedRequest"], Step]


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict
    received_at: float
    status: int = 0

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages") or []

    @property
    def tools(self) -> list[dict]:
        return self.body.get("tools") or []

    @property
    def system_blocks(self) -> list[dict]:
        system = self.body.get("system")
        if system is None:
            return []
        if isinstance(system, str):
            return [{"type": "text", "text": system}]
        return list(system)

    @property
    def system_text(self) -> str:
        return "\n".join(block.get("text", "") for block in self.system_blocks)

    @property
    def turn(self) -> int:
        """How many assistant messages came before: 0 for the first request of a conversation."""
        return sum(1 for message in self.messages if message.get("role") == "assistant")

    def tool_results(self) -> list[dict]:
        """The tool_result blocks of the last user message (what the tools returned)."""
        if not self.messages or self.messages[-1].get("role") != "user":
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, list):
            return []
        return [block for block in content if block.get("type") == "tool_result"]

    def tool_result_texts(self) -> list[str]:
        return [tool_result_text(block) for block in self.tool_results()]


def tool_result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def per_turn(steps: Sequence[Step | Callable[[RecordedRequest], Step]]):
    """A stateless script: the n-th assistant turn of a conversation gets ``steps[n]``.

    Stateless means it works for several conversations in parallel (see :func:`route`); a retried
    request gets the same step again, so use a list script to test retries.
    """

    def choose(request: RecordedRequest) -> Step:
        if request.turn >= len(steps):
            return ErrorReply(
                400, "invalid_request_error", f"loopback script has no turn {request.turn}"
            )
        step = steps[request.turn]
        return step(request) if callable(step) else step

    return choose


def route(key: Callable[[RecordedRequest], str], scripts: dict[str, Script]):
    """Send each request to the script named by ``key(request)`` (e.g. by system prompt)."""

    def choose(request: RecordedRequest) -> Step:
        name = key(request)
        script = scripts.get(name)
        if script is None:
            return ErrorReply(400, "invalid_request_error", f"loopback has no script for {name!r}")
        if not callable(script):
            script = per_turn(script)
        return script(request)

    return choose


class AnthropicServer:
    """``with AnthropicServer([...]) as server: Anthropic(base_url=server.base_url, ...)``."""

    def __init__(
        self,
        script: Script = (),
        *,
        api_key: str | None = "test-key",
        text_chunk_chars: int = 16,
        json_chunk_chars: int = 24,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.text_chunk_chars = text_chunk_chars
        self.json_chunk_chars = json_chunk_chars
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._callable: Callable[[RecordedRequest], Step] | None = None
        self._queue: list = []
        self.set_script(script)
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AnthropicServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="anthropic-loopback",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> AnthropicServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- scripting ---------------------------------------------------------------------------

    def set_script(self, script: Script) -> None:
        with self._lock:
            if callable(script):
                self._callable, self._queue = script, []
            else:
                self._callable, self._queue = None, list(script)

    def add(self, *steps: Step | Callable[[RecordedRequest], Step]) -> None:
        with self._lock:
            self._queue.extend(steps)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._queue)

    def message_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def _next_step(self, request: RecordedRequest) -> Step:
        with self._lock:
            if self._callable is not None:
                chooser = self._callable
            elif self._queue:
                chooser = self._queue.pop(0)
            else:
                served = sum(1 for r in self.requests if r.status)
                return ErrorReply(
                    400,
                    "invalid_request_error",
                    f"loopback script exhausted after {served} responses",
                )
        return chooser(request) if callable(chooser) else chooser

    # -- HTTP --------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read server.requests instead

            def do_POST(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                server._handle(self)

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body if isinstance(body, dict) else {"_body": body},
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)

        problem = self._check(request)
        step: Step = problem if problem is not None else self._next_step(request)
        request.status = step.status if isinstance(step, ErrorReply) else 200
        try:
            if isinstance(step, ErrorReply):
                self._send_error(handler, step)
            elif isinstance(step, StreamErrorReply):
                self._send_stream_error(handler, request, step)
            elif request.stream:
                self._send_stream(handler, request, step)
            else:
                self._send_message(handler, request, step)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client went away (e.g. a cancelled run)

    def _check(self, request: RecordedRequest) -> ErrorReply | None:
        if request.method != "POST" or request.path.split("?")[0] != "/v1/messages":
            return ErrorReply(404, "not_found_error", f"{request.method} {request.path} not found")
        if self.api_key is not None and presented_key(request.headers) != self.api_key:
            return ErrorReply(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get(API_VERSION_HEADER):
            return ErrorReply(400, "invalid_request_error", "anthropic-version header is required")
        return validate_messages_request(request.body)

    # -- responses ---------------------------------------------------------------------------

    def _common_headers(self) -> dict[str, str]:
        return {"request-id": f"req_{uuid.uuid4().hex[:24]}"}

    def _send_json(
        self, handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict
    ) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in {**self._common_headers(), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _send_error(self, handler: BaseHTTPRequestHandler, step: ErrorReply) -> None:
        headers = self._common_headers()
        payload = {
            "type": "error",
            "error": {"type": step.error_type, "message": step.message or step.error_type},
            "request_id": headers["request-id"],
        }
        self._send_json(handler, step.status, payload, {**headers, **step.headers})

    def _message(self, request: RecordedRequest, step: Reply) -> dict:
        content = [dict(block) for block in step.content]
        stop_reason = step.stop_reason or (
            "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
        )
        usage = {
            "input_tokens": max(1, len(json.dumps(request.body)) // 4),
            "output_tokens": max(1, len(json.dumps(content)) // 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        usage.update(step.usage or {})
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", "claude"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _send_message(
        self, handler: BaseHTTPRequestHandler, request: RecordedRequest, step: Reply
    ) -> None:
        if step.delay:
            time.sleep(step.delay)
        self._send_json(handler, 200, self._message(request, step), step.headers)

    def _start_stream(self, handler: BaseHTTPRequestHandler, headers: dict) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream; charset=utf-8")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("transfer-encoding", "chunked")
        for name, value in {**self._common_headers(), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()

    @staticmethod
    def _write_event(handler: BaseHTTPRequestHandler, name: str, data: dict) -> None:
        chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _end_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    def _send_stream(
        self, handler: BaseHTTPRequestHandler, request: RecordedRequest, step: Reply
    ) -> None:
        if step.delay:
            time.sleep(step.delay)
        message = self._message(request, step)
        usage = message["usage"]
        self._start_stream(handler, step.headers)

        def emit(name: str, data: dict) -> None:
            if step.event_delay:
                time.sleep(step.event_delay)
            self._write_event(handler, name, data)

        start_usage = {**usage, "output_tokens": 1}
        emit(
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        )
        emit("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            self._stream_block(emit, index, block)
        emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        emit("message_stop", {"type": "message_stop"})
        self._end_stream(handler)

    def _stream_block(self, emit: Callable[[str, dict], None], index: int, block: dict) -> None:
        kind = block.get("type")
        if kind == "text":
            emit(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _chunks(block.get("text", ""), self.text_chunk_chars):
                emit(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            emit(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                },
            )
            for piece in _chunks(json.dumps(block.get("input", {})), self.json_chunk_chars):
                emit(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        else:
            emit(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        emit("content_block_stop", {"type": "content_block_stop", "index": index})

    def _send_stream_error(
        self, handler: BaseHTTPRequestHandler, request: RecordedRequest, step: StreamErrorReply
    ) -> None:
        message = self._message(request, Reply(content=[]))
        self._start_stream(handler, {})
        self._write_event(
            handler,
            "message_start",
            {"type": "message_start", "message": {**message, "stop_reason": None}},
        )
        self._write_event(
            handler,
            "error",
            {"type": "error", "error": {"type": step.error_type, "message": step.message}},
        )
        self._end_stream(handler)


def presented_key(headers: dict[str, str]) -> str | None:
    """The credential of a request: ``x-api-key``, or a bearer token (how SDK 2.x sends keys)."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _chunks(value: str, size: int) -> Iterable[str]:
    for start in range(0, len(value), max(1, size)):
        yield value[start : start + size]


def validate_messages_request(body: dict) -> ErrorReply | None:
    """The subset of the API's request validation that catches agent-loop bugs."""

    def invalid(message: str) -> ErrorReply:
        return ErrorReply(400, "invalid_request_error", message)

    if not isinstance(body.get("model"), str) or not body["model"]:
        return invalid("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return invalid("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return invalid("messages: at least one message is required")
    if messages[0].get("role") != "user":
        return invalid('messages: first message must use the "user" role')

    breakpoints = 0
    for block in _all_blocks(body):
        if isinstance(block, dict) and block.get("cache_control") is not None:
            breakpoints += 1
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        return invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )

    for index, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if results:
            previous = messages[index - 1] if index else {}
            prev_blocks = (
                previous.get("content") if isinstance(previous.get("content"), list) else []
            )
            asked = {b.get("id") for b in prev_blocks if b.get("type") == "tool_use"}
            for block in results:
                if block.get("tool_use_id") not in asked:
                    return invalid(
                        f"messages.{index}.content: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
        if message.get("role") == "assistant":
            asked_ids = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            if asked_ids and index + 1 < len(messages):
                following = messages[index + 1]
                f_blocks = following.get("content")
                f_blocks = f_blocks if isinstance(f_blocks, list) else []
                answered = {
                    b.get("tool_use_id") for b in f_blocks if b.get("type") == "tool_result"
                }
                missing = [i for i in asked_ids if i not in answered]
                if following.get("role") != "user" or missing:
                    return invalid(
                        f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                        f"blocks immediately after: {', '.join(missing or asked_ids)}. Each "
                        "`tool_use` block must have a corresponding `tool_result` block in the "
                        "next message."
                    )
    return None


def _all_blocks(body: dict) -> Iterable[Any]:
    system = body.get("system")
    if isinstance(system, list):
        yield from system
    yield from body.get("tools") or []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            yield from content


@contextlib.contextmanager
def real_or_loopback(script: Script, *, out: Callable[[str], None] = print):
    """For examples: the real API when ``ANTHROPIC_API_KEY`` is set, else this loopback server
    playing ``script``. Yields an ``anthropic.Anthropic`` client and says which one it is."""
    import anthropic

    if os.environ.get("ANTHROPIC_API_KEY"):
        out("Model: the real Anthropic API (ANTHROPIC_API_KEY is set).")
        yield anthropic.Anthropic()
        return
    out(
        "Model: ANTHROPIC_API_KEY is not set, so this runs against the loopback Messages API "
        "server (tests/support/anthropic_server.py) replaying a scripted conversation. "
        "Set ANTHROPIC_API_KEY to use the real API."
    )
    with AnthropicServer(script, api_key="loopback-key") as server:
        yield anthropic.Anthropic(api_key="loopback-key", base_url=server.base_url)
