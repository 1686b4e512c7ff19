"""AWS clients (botocore's: boto3's session adds only its S3 transfer methods and resources,
which nothing here uses, for about 20-50 ms more of every cold start: its import, its session,
the transfer manager it injects into the first S3 client), created lazily (after moto starts in
tests) and cached per process.

The endpoint comes from botocore's own ``AWS_ENDPOINT_URL`` setting, which is how the local
stack points every function at the embedded moto server.

Identity: deployed, a function's clients sign with its execution role's credentials (from
the environment, as Lambda provides them). The local stack runs every function in one
process, so it runs each one under ``as_identity(its role's credentials)``: a client made
while an identity is active signs with it for its whole life, whoever calls it later.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import pickle
import threading
from dataclasses import dataclass

import botocore.loaders
import botocore.session
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 4}, max_pool_connections=32)
_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    name: str = ""  # whose they are (a function's role, the administrator), for messages


_identity: contextvars.ContextVar[Credentials | None] = contextvars.ContextVar("aws_identity", default=None)
# botocore's data loader (service models, endpoint rules: JSON files in botocore's package),
# shared by every session and kept by reset(): each is parsed once per process. Deployed there
# is one identity, so one session anyway; the local stack and the tests sign as a dozen roles
# and start a fresh moto per test, and each new session parsed the models again (about 1 s of
# every functional test's setup, profiled 2026-12-07).
_loader = None


@contextlib.contextmanager
def as_identity(credentials: Credentials | None):
    """Clients created inside sign with ``credentials`` (None: the environment's)."""
    token = _identity.set(credentials)
    try:
        yield
    finally:
        _identity.reset(token)


def current_identity() -> Credentials | None:
    return _identity.get()


PICKLED = ".pickle"  # beside botocore's JSON data in the edge bundle (infra/edge_build.py)


class PickledFirst(botocore.loaders.JSONFileLoader):
    """botocore's data files read from the pickles the edge bundle's build writes beside them
    (``infra/edge_build.py``: exactly what botocore's JSON loader returns, its OrderedDicts
    included), and from the JSON where there is none. Installed only where the build pickled
    botocore's data (``_pickled_data``: not in the layers nor a dev venv). Unpickling takes
    about half the time of botocore's JSON parse (an OrderedDict per object) and needs no
    gunzip of the 0.9 MB S3 endpoint rules: a cold start makes five clients.

    - Only inside botocore's own package (its ``data`` folder, as code is; the path resolved): a
      pickle found on ``AWS_DATA_PATH`` or in ``~/.aws/models`` is never loaded.
    - Only beside its JSON: a pickle whose JSON is gone (a reused build folder) is ignored, and
      botocore sees exactly the files it would without pickles.
    - A pickle that cannot be read (truncated, corrupt) is logged with its path, once, and the
      JSON beside it is read instead: never a client that fails where the JSON would not."""

    def _pickle(self, file_path: str) -> str | None:
        """The pickle's resolved path, used for every check and the read itself (AWS_DATA_PATH or
        HOME may name botocore's folder and climb out of it, or a link may be swapped between a
        check and the read); None when it is not to be read."""
        path = os.path.realpath(file_path + PICKLED)
        if not path.startswith(_BUILTIN_DATA) or path in _unreadable:
            return None
        return path if os.path.isfile(path) and super().exists(file_path) else None

    def load_file(self, file_path):
        path = self._pickle(file_path)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    return pickle.load(f)  # noqa: S301 - botocore's own package data, written by our build
            except Exception as exc:  # noqa: BLE001 - any damage: the JSON beside it is the truth
                _unreadable.add(path)
                logging.getLogger(__name__).warning("botocore data %s unreadable (%s: %s); reading its JSON",
                                                    path, type(exc).__name__, exc)
        return super().load_file(file_path)


_unreadable: set[str] = set()  # pickles that failed to load: not tried again in this process
_BUILTIN_DATA = os.path.join(os.path.realpath(botocore.loaders.Loader.BUILTIN_DATA_PATH), "")


def _pickled_data() -> bool:
    """Whether this botocore's data was pickled by the edge bundle's build (the layers' and a
    dev venv's never is: their loader stays botocore's own, without a look for pickles)."""
    return os.path.isfile(os.path.join(_BUILTIN_DATA, "endpoints" + PICKLED))


@functools.cache
def _session(identity: Credentials | None = None) -> botocore.session.Session:
    # One session per identity (its credentials), all with the one data loader (``_loader``).
    global _loader
    session = botocore.session.Session()
    if _loader is None:
        _loader = session.get_component("data_loader")
        if _pickled_data():
            _loader.file_loader = PickledFirst()
    else:
        session.register_component("data_loader", _loader)
    if identity is not None:
        session.set_credentials(identity.access_key_id, identity.secret_access_key, identity.session_token)
    return session


def client(service: str, region: str | None = None, connect_timeout: float = 2.0, read_timeout: float = 5.0,
           attempts: int = 4):
    """``attempts``: botocore's total attempts (the first and its retries)."""
    return _client(service, region, connect_timeout, read_timeout, _identity.get(), attempts)


@functools.cache
def _client(service, region, connect_timeout, read_timeout, identity, attempts=4):
    config = _CONFIG.merge(Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                  retries={"mode": "standard", "total_max_attempts": attempts}))
    with _lock:  # creating clients from one session is not thread-safe
        return _hooked(_session(identity).create_client(service, region_name=region, config=config))


def uncached_client(service: str, region: str | None, config: Config):
    """An uncached client with its own config (serving's tight timeouts)."""
    with _lock:
        return _hooked(_session(_identity.get()).create_client(service, region_name=region, config=config))


# Called with every client made from now on: how the tests put AWS's limits in front of an
# in-process moto (infra/local/aws_limits.py). Nothing registers one when deployed.
_client_hooks: list = []


def on_new_client(hook) -> None:
    if hook not in _client_hooks:  # once, however often it is asked
        _client_hooks.append(hook)


def remove_client_hook(hook) -> None:
    if hook in _client_hooks:
        _client_hooks.remove(hook)


def _hooked(client):
    for hook in list(_client_hooks):
        hook(client)
    return client


def reset() -> None:
    """Forget cached clients and sessions (tests that start a fresh moto)."""
    _client.cache_clear()
    _session.cache_clear()


THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "Throttling", "TooManyRequestsException", "InternalServerError", "ServiceUnavailable",
})


def error_code(exc: Exception) -> str:
    """A botocore ClientError's error code; "" for anything else (an exception without a
    ``response``, or whose ``response`` is None or not AWS's shape: it raised AttributeError
    in the handler that was classifying it)."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""
