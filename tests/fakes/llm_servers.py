"""Local HTTP servers that speak the OpenAI Chat Completions and Anthropic Messages wire formats.

Each server answers from a script: a queue of behaviours consumed one per
request (the last one repeats). Behaviours: ``ok``, ``429`` (with a
``Retry-After``), ``500``, ``slow`` (answers after ``slow_s``), ``malformed``
(a 200 whose body is not the protocol), ``broken_stream`` (a stream cut after
two deltas). Streaming is chosen by the request, as with the real APIs.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER_WORDS = ["The", " answer", " is", " in", " passage", " [1]", "."]


@dataclass
class Script:
    behaviours: deque[str] = field(default_factory=lambda: deque(["ok"]))
    retry_after: str = "1"
    slow_s: float = 3.0
    stream_delay_s: float = 0.0  # between streamed events
    # Report the most a request could use: every byte of its messages as a prompt token
    # and every output token it allowed (budget tests: real use as close to the hold as
    # it gets).
    worst_case_usage: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> str:
        with self.lock:
            if len(self.behaviours) > 1:
                return self.behaviours.popleft()
            return self.behaviours[0]

    def set(self, *behaviours: str) -> None:
        with self.lock:
            self.behaviours = deque(behaviours)
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        script = self.server.script
        with script.lock:
            script.requests.append(
                {
                    "path": self.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            )
        behaviour = script.next()
        if behaviour == "429":
            self._json(
                429,
                {"error": {"message": "slow down", "type": "rate_limit_error"}},
                {"retry-after": script.retry_after},
            )
            return
        if behaviour == "500":
            self._json(500, {"error": {"message": "boom", "type": "api_error"}})
            return
        if behaviour == "slow":
            time.sleep(script.slow_s)
        if behaviour == "malformed":
            self._json(200, {"unexpected": True})
            return
        if body.get("stream"):
            self._stream(body, broken=behaviour == "broken_stream")
        else:
            self._json(200, self.server.answer(body))

    def _stream(self, body: dict[str, Any], *, broken: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        events = self.server.stream_events(body)
        for index, (name, data) in enumerate(events):
            if broken and index == 3:
                self.wfile.flush()
                self.connection.shutdown(2)  # cut mid-stream, no terminator
                return
            if name:
                self.wfile.write(f"event: {name}\n".encode())
            self.wfile.write(
                f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            )
            self.wfile.flush()
            if self.server.script.stream_delay_s:
                time.sleep(self.server.script.stream_delay_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def stream_events(self, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
        raise NotImplementedError


def _openai_usage(script: Script, body: dict[str, Any]) -> dict[str, int]:
    if not script.worst_case_usage:
        return {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    prompt = sum(len(str(m.get("content", "")).encode()) for m in body.get("messages", []))
    completion = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


class _OpenAI(_Server):
    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(ANSWER_WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _openai_usage(self.script, body),
        }

    def stream_events(self, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant"}))]
        events += [(None, chunk({"content": word})) for word in ANSWER_WORDS]
        events.append((None, chunk({}, "stop")))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                (
                    None,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body["model"],
                        "choices": [],
                        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
                    },
                )
            )
        events.append((None, "[DONE]"))
        return events


class _Anthropic(_Server):
    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "".join(ANSWER_WORDS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 40, "output_tokens": 7},
        }

    def stream_events(self, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 40, "output_tokens": 1},
            },
        }
        events: list[tuple[str | None, Any]] = [
            ("message_start", start),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        ]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": w},
                },
            )
            for w in ANSWER_WORDS
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 7},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return events


@dataclass
class FakeServer:
    server: _Server
    script: Script
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(kind: str) -> FakeServer:
    script = Script()
    server: _Server = _OpenAI(script) if kind == "openai" else _Anthropic(script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return FakeServer(server, script, thread)
