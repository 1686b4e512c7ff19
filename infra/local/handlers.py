"""Import ``functions/<name>/app.py`` in-process, under a unique module name, running as
that function's role when the stack set identities (``use_identities``)."""

from __future__ import annotations

import functools
import importlib.util
import sys

from personalize.adapters import aws

from .template import ROOT

_identities: dict[str, aws.Credentials] = {}
# Module-level callables through which a function does its work: run as the function's role.
ENTRY_POINTS = ("lambda_handler", "recommender")


def use_identities(identities: dict[str, aws.Credentials] | None) -> None:
    """Functions loaded from now on run with these credentials (None: the environment's)."""
    _identities.clear()
    _identities.update(identities or {})
    if identities:
        aws.on_new_client(_edge_sdk)


def _edge_sdk(client) -> None:
    """The edge's bundle carries an AWS SDK that knows only ``EDGE_SERVICES``
    (``infra/edge_build.py``): a client the edge's role makes of any other service through
    ``aws`` fails here as it would there (this process's SDK knows every service). Its
    serving pool carries the role to its threads (``wiring._ContextPool``)."""
    edge, current = _identities.get("edge"), aws.current_identity()
    if edge is not None and current is not None and current.access_key_id == edge.access_key_id:
        _bundled_services_only(client)


def edge_process() -> None:
    """This process runs the edge alone (``worker.py``): every client it makes through ``aws``
    is held to the edge bundle's SDK."""
    aws.on_new_client(_bundled_services_only)


def _bundled_services_only(client) -> None:
    from botocore.exceptions import UnknownServiceError

    from infra.edge_build import EDGE_SERVICES

    service = client.meta.service_model.service_name
    if service not in EDGE_SERVICES:
        raise UnknownServiceError(service_name=service, known_service_names=", ".join(sorted(EDGE_SERVICES)))


def identity(name: str) -> aws.Credentials | None:
    return _identities.get(name)


def _as(credentials, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with aws.as_identity(credentials):
            return function(*args, **kwargs)

    return wrapper


def load(name: str, fresh: bool = True):
    module_name = f"functions_{name}_app"
    if not fresh and module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    credentials = _identities.get(name)
    with aws.as_identity(credentials):  # clients made at import sign as the function's role
        spec.loader.exec_module(module)
    if credentials is not None:
        for entry in ENTRY_POINTS:
            if callable(getattr(module, entry, None)):
                setattr(module, entry, _as(credentials, getattr(module, entry)))
    return module
