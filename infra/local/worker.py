"""One function "container" of the local stack: a process that imports the handler once,
then handles one invocation at a time, as a Lambda execution environment does.

    python -m infra.local.worker NAME REQUEST_FD RESPONSE_FD

The pool (``pool.FunctionPool``) starts it with the function's environment, including its
role's credentials (as Lambda provides them), so every client it makes signs as that role.
Messages are length-prefixed JSON on two pipes (Lambda's events and responses are JSON):

- worker -> pool, once: ``{"ready": init_ms}`` (or ``{"init_error": ...}``);
- pool -> worker: ``{"event", "request_id", "deadline_ms"}``;
- worker -> pool: ``{"result", "ms", "aws_ms"}`` or ``{"error": {"errorType", "errorMessage"}, "ms", "aws_ms"}``
  (``ms``: the handler's time; ``aws_ms``: the part of it spent waiting on AWS calls).

What the function prints (structured logs, EMF metrics) goes to the stack's log file, as
CloudWatch Logs would get it. Between invocations the pool freezes the process (SIGSTOP):
its background threads get no CPU until the next invocation, as in Lambda.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

from . import lifecycle

_HEADER = struct.Struct("!I")


def read_message(fd: int) -> dict | None:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


def write_message(fd: int, message: dict) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None  # the pool closed the pipe (or died): the container goes away
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Context:
    """The Lambda context Powertools reads, with the invocation's real deadline."""

    memory_limit_in_mb = 1024

    def __init__(self, name: str, request_id: str, deadline_ms: float):
        self.function_name = name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = request_id
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


class AwsClock:
    """Wall time during which at least one AWS call is in flight (the handler waiting on the
    embedded AWS, which is moto here and a network round trip when deployed), so the
    handler's own time can be told apart. Counted around botocore's endpoint requests."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.in_flight = 0
        self.since = 0.0
        self.total = 0.0

    def install(self) -> None:
        from botocore.endpoint import Endpoint

        original, clock = Endpoint.make_request, self

        def make_request(endpoint, *args, **kwargs):
            clock._enter()
            try:
                return original(endpoint, *args, **kwargs)
            finally:
                clock._leave()

        Endpoint.make_request = make_request

    def _enter(self) -> None:
        with self.lock:
            if not self.in_flight:
                self.since = time.perf_counter()
            self.in_flight += 1

    def _leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            if not self.in_flight:
                self.total += time.perf_counter() - self.since

    def take_ms(self) -> float:
        with self.lock:
            total, self.total = self.total, 0.0
            if self.in_flight:  # a background call still running: count up to now
                now = time.perf_counter()
                total += now - self.since
                self.since = now
        return total * 1000


def _apply_overrides(module, overrides: dict) -> None:
    for attribute, value in overrides.items():
        if isinstance(getattr(module, attribute, None), Path):
            value = Path(value)
        setattr(module, attribute, value)


def main() -> None:
    name, request_fd, response_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the stack, which stops us
    lifecycle.die_with_parent()  # and a killed stack too, frozen or not
    started = time.perf_counter()
    aws_clock = AwsClock()
    try:
        aws_clock.install()
        from . import handlers

        if name == "edge":
            handlers.edge_process()  # the bundle's SDK knows only the edge's services
        module = handlers.load(name)  # credentials: the role's, from this process's environment
        _apply_overrides(module, json.loads(os.environ.get("LOCAL_FUNCTION_OVERRIDES") or "{}"))
    except Exception as exc:  # noqa: BLE001 - reported to the pool as Lambda reports an init error
        traceback.print_exc()
        write_message(response_fd, {"init_error": f"{type(exc).__name__}: {exc}"})
        return
    write_message(response_fd, {"ready": (time.perf_counter() - started) * 1000})
    while True:
        request = read_message(request_fd)
        if request is None:
            return
        context = _Context(name, request["request_id"], request["deadline_ms"])
        aws_clock.take_ms()
        began = time.perf_counter()
        try:
            result = module.lambda_handler(request["event"], context)
            reply = {"result": result}
        except Exception as exc:  # noqa: BLE001 - a function error, as Lambda returns it
            traceback.print_exc()
            reply = {"error": {"errorType": type(exc).__name__, "errorMessage": str(exc)[:2000]}}
        reply["ms"] = (time.perf_counter() - began) * 1000
        reply["aws_ms"] = min(reply["ms"], aws_clock.take_ms())
        sys.stdout.flush()
        try:
            write_message(response_fd, reply)
        except TypeError as exc:  # a response JSON cannot carry
            write_message(response_fd, {"error": {"errorType": "Runtime.MarshalError", "errorMessage": str(exc)},
                                        "ms": reply["ms"]})


if __name__ == "__main__":
    main()
