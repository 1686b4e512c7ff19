"""Child processes of the local stack end with their parent, even when it is killed (a
SIGKILL leaves no time for cleanup, and a worker frozen with SIGSTOP cannot notice its
pipes closing): Linux's parent-death signal, set by the child itself at start.

The kernel sends it when the *thread* that started the child ends, so the pool starts its
containers from one long-lived thread (``spawn``), never from a request's thread."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PARENT_ENV = "LOCAL_STACK_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_spawner = ThreadPoolExecutor(1, thread_name_prefix="local-spawner")  # lives as long as the process


def spawn(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    """Popen from the long-lived spawner thread, telling the child who its parent is."""
    env = {**env, PARENT_ENV: str(os.getpid())}
    return _spawner.submit(subprocess.Popen, args, env=env, **kwargs).result()


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """In the child: get ``signum`` when the parent ends; exit now if it already has."""
    expected = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: cleanup then relies on the parent's signal handlers
    if expected and os.getppid() != int(expected):  # the parent died before prctl: too late for the signal
        os._exit(1)
