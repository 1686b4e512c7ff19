"""Functions as Lambda runs them: a pool of worker processes per function ("containers",
``worker.py``), each importing the handler once and handling one invocation at a time.

An invocation takes an idle container; with none idle, the pool starts a new one (a cold
start, which that invocation waits for) up to ``max_workers`` (the function's concurrency
limit), past which the invocation waits for a container to come free. Idle containers are
frozen (SIGSTOP) and thawed (SIGCONT) for the next invocation, as Lambda freezes an
execution environment between invocations: nothing of the function runs in between.

Each invocation's time is split into what Lambda would bill (``durations_ms``, measured in
the container around ``lambda_handler``; ``aws_ms`` of it waiting on AWS calls, i.e. on
moto here) and the emulator's own cost around it: ``wait_ms`` for a free container (the
concurrency bound), ``dispatch_ms`` for thawing it, the pipes and JSON, and freezing it.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid

from . import lifecycle
from .worker import read_message, write_message

log = logging.getLogger(__name__)
# POSIX: freezing needs SIGSTOP/SIGCONT (not on Windows, where containers stay thawed).
CAN_FREEZE = hasattr(signal, "SIGSTOP")
INVOCATION_TIMEOUT_S = 30.0  # one limit for every local invocation (the template's range from 5 to 120 s)
INIT_TIMEOUT_S = 120.0  # Lambda allows 10 s; a busy 2-core machine importing onnxruntime needs more


def _reply(fd: int, timeout_s: float) -> dict | None:
    """The container's next message, or None when it died or ran out of time."""
    ready, _, _ = select.select([fd], [], [], timeout_s)
    return read_message(fd) if ready else None


class FunctionError(Exception):
    """The handler raised (Lambda's "Unhandled" function error)."""

    def __init__(self, name: str, error: dict):
        super().__init__(f"{name}: {error.get('errorType')}: {error.get('errorMessage')}")
        self.error = error


class Container:
    def __init__(self, name: str, env: dict, log_file, freeze: bool):
        self.name = name
        self.freeze = freeze and CAN_FREEZE
        request_read, self._request = os.pipe()
        self._response, response_write = os.pipe()
        started = time.perf_counter()
        self.process = lifecycle.spawn(
            [sys.executable, "-m", "infra.local.worker", name, str(request_read), str(response_write)],
            env, pass_fds=(request_read, response_write), stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=log_file, cwd=env.get("LOCAL_STACK_ROOT"))
        os.close(request_read)
        os.close(response_write)
        hello = _reply(self._response, INIT_TIMEOUT_S)
        if not hello or "ready" not in hello:
            self.kill()
            raise FunctionError(name, {"errorType": "Runtime.InitError", "errorMessage": (hello or {}).get(
                "init_error", f"the container exited or did not start within {INIT_TIMEOUT_S:.0f} s")})
        self.init_ms = (time.perf_counter() - started) * 1000  # process start, imports, module init
        self.frozen = False
        self._freeze()

    def invoke(self, event: dict) -> dict:
        reply = None
        self._thaw()
        try:
            write_message(self._request, {"event": event, "request_id": str(uuid.uuid4()),
                                          "deadline_ms": time.time() * 1000 + INVOCATION_TIMEOUT_S * 1000})
            reply = _reply(self._response, INVOCATION_TIMEOUT_S)
        finally:
            if reply is None:  # timed out or died: Lambda discards the environment
                self.kill()
            self._freeze()
        if reply is None:
            raise FunctionError(self.name, {"errorType": "Runtime.ExitError", "errorMessage":
                                            f"the container died or timed out ({INVOCATION_TIMEOUT_S:.0f} s)"})
        return reply

    def _freeze(self) -> None:
        if self.freeze and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGSTOP)
            # Until it has stopped (signals are delivered asynchronously): frozen means frozen.
            try:
                _, status = os.waitpid(self.process.pid, os.WUNTRACED)
            except ChildProcessError:
                return
            if not os.WIFSTOPPED(status):  # it exited meanwhile: we reaped it, tell Popen
                self.process.returncode = os.waitstatus_to_exitcode(status)
                return
            self.frozen = True

    def _thaw(self) -> None:
        if self.frozen:
            os.kill(self.process.pid, signal.SIGCONT)
            self.frozen = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 3.0) -> None:
        for fd in (self._request, self._response):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._request = self._response = -1  # never close a number another file reuses
        if self.alive():
            self._thaw()  # a frozen process cannot see its pipe close
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        self.frozen = False  # never signal a pid that may be reused
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class FunctionPool:
    """Invoke like ``stack.Function``: ``pool(event)`` returns the handler's response and
    raises ``FunctionError`` when the handler raised."""

    def __init__(self, name: str, env: dict, max_workers: int, log_path, freeze: bool = True,
                 overrides: dict | None = None):
        self.name = name
        self.max_workers = max(1, max_workers)
        self.freeze = freeze
        self.env = {**env, "POWERTOOLS_SERVICE_NAME": name,
                    "LOCAL_FUNCTION_OVERRIDES": json.dumps({k: str(v) if isinstance(v, os.PathLike) else v
                                                            for k, v in (overrides or {}).items()})}
        self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._idle: list[Container] = []
        self._all: list[Container] = []
        self._starting = 0
        self._cond = threading.Condition()
        self._stopped = False
        self.durations_ms: list[float] = []  # handler time per invocation (what Lambda bills)
        self.aws_ms: list[float] = []  # the part of handler time spent waiting on AWS (moto here)
        self.wait_ms: list[float] = []  # waiting for a free container (the concurrency bound)
        self.dispatch_ms: list[float] = []  # the emulator's own time around each invocation
        self.init_ms: list[float] = []  # per cold start
        self.invocations = 0
        self.peak_busy = 0

    # --- containers ---
    def _take(self) -> tuple[Container | None, bool]:
        """An idle container, or (None, True) when the caller should start one."""
        with self._cond:
            while True:
                if self._stopped:
                    raise FunctionError(self.name, {"errorType": "Stopped", "errorMessage": "the stack stopped"})
                while self._idle and not self._idle[-1].alive():  # died while idle (killed, OOM)
                    dead = self._idle.pop()
                    self._all.remove(dead)
                    dead.stop()
                if self._idle:
                    return self._idle.pop(), False
                if len(self._all) + self._starting < self.max_workers:
                    self._starting += 1
                    return None, True
                self._cond.wait()

    def _give_back(self, container: Container) -> None:
        with self._cond:
            if container.alive() and not self._stopped:
                self._idle.append(container)
            else:
                if container in self._all:
                    self._all.remove(container)
                container.stop()
            self._cond.notify()

    def _start_container(self) -> Container:
        try:
            container = Container(self.name, self.env, self._log, self.freeze)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            self._all.append(container)
            self.init_ms.append(container.init_ms)
        return container

    def warm(self, n: int | None = None) -> None:
        """Start containers up front (provisioned concurrency): ``n``, default all."""
        want = min(self.max_workers, n or self.max_workers)
        while True:
            with self._cond:
                if len(self._all) + self._starting >= want:
                    return
                self._starting += 1
            self._give_back(self._start_container())

    # --- invocations ---
    def __call__(self, event: dict, ctx=None) -> dict:
        started = time.perf_counter()
        container, cold = self._take()
        waited_ms = (time.perf_counter() - started) * 1000
        if cold:
            container = self._start_container()
        with self._cond:
            self.invocations += 1
            self.peak_busy = max(self.peak_busy, len(self._all) - len(self._idle))
        try:
            reply = container.invoke(event)
        finally:
            self._give_back(container)
        handler_ms = reply.get("ms", 0.0)
        total_ms = (time.perf_counter() - started) * 1000
        cold_ms = container.init_ms if cold else 0.0
        self.durations_ms.append(handler_ms)
        self.aws_ms.append(reply.get("aws_ms", 0.0))
        self.wait_ms.append(waited_ms)
        self.dispatch_ms.append(total_ms - handler_ms - cold_ms - waited_ms)
        _charge(handler_ms, cold_ms)
        if "error" in reply:
            raise FunctionError(self.name, reply["error"])
        return reply["result"]

    @property
    def workers(self) -> int:
        return len(self._all)

    def reset_stats(self) -> None:
        self.durations_ms, self.dispatch_ms, self.init_ms, self.aws_ms, self.wait_ms = [], [], [], [], []
        self.invocations = 0
        self.peak_busy = self.workers - len(self._idle)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            containers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        for container in containers:
            container.stop()
        self._log.close()


# The front adds up the handler time of the invocations one request makes (the edge, then
# perhaps the regional function): the rest of the request's time is the emulator's own.


# A cold start (Lambda's "Init Duration") is reported apart too.
_request = threading.local()


def begin_request() -> None:
    _request.handler_ms = _request.cold_ms = 0.0


def handler_ms_of_request() -> float:
    """The handlers' time plus cold starts in the current request."""
    return getattr(_request, "handler_ms", 0.0) + getattr(_request, "cold_ms", 0.0)


def _charge(ms: float, cold_ms: float = 0.0) -> None:
    if hasattr(_request, "handler_ms"):
        _request.handler_ms += ms
        _request.cold_ms += cold_ms
