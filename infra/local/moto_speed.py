"""moto's DynamoDB Query, without sorting the whole table on every call.

moto 5.2's ``Table.query`` on the base table (no index) sorts *every* item of the table by
its keys (``all_items``) and then keeps those of the queried partition: O(N log N) Python
comparisons per Query. Our rows are queried by partition all the time (aggregate's loads,
serving's reads, the availability log), so one functional test's setup spent about two
thirds of its time in that sort (profiled 2026-12-05: 42 of 69 s).

``install()`` makes ``all_items`` answer only the queried partition's items while a base-table
Query runs; moto's own code then sorts, pages, filters and projects them as before, so the
answer is the same (``tests/unit/test_moto_speed.py`` compares both on random tables).
Queries on an index, scans and everything else are untouched. Installed by the tests'
``moto_stack`` and by the local stack's moto server.

The moto server also finds each request's backend from its host by listing moto's package
directory, ``isdir`` on each entry, then up to a few hundred URL regexes, under one lock every
request thread waits for: about 40% of the local stack's moto process in the demo (py-spy,
2026-12-07). The answer depends on the host alone, so ``install()`` remembers it per host.

And moto 5.2 serializes each answer by walking botocore's output shape, asking for every
member a chain of alias providers made anew per value (the shape's name, its parent's prefix,
the object's class...): a fifth of the moto process's time in the demo, mostly DynamoDB's
attribute-value maps. For a plain ``dict`` the keys it tries depend only on the member's
shape, its parent and its name, so ``install()`` remembers them per shape; other objects, or
a picker or alias provider this module does not know, take moto's own path. The answer is
the same byte for byte (``tests/unit/test_moto_speed.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import threading

_installed = False
_local = threading.local()


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models.table import Table

    original_query, original_all_items = Table.query, Table.all_items
    signature = inspect.signature(original_query)

    def query(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        hash_key = bound.arguments.get("hash_key")
        if bound.arguments.get("index_name") or hash_key is None or getattr(_local, "off", False):
            return original_query(self, *args, **kwargs)
        previous = getattr(_local, "partition", None)
        _local.partition = (self, hash_key)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            _local.partition = previous

    def all_items(self):
        partition = getattr(_local, "partition", None)
        if partition is None or partition[0] is not self:
            return original_all_items(self)
        bucket = self.items.get(partition[1])  # .get: items is a defaultdict
        if bucket is None:
            return []
        if self.range_key_attr:
            return sorted(bucket.values(), key=lambda item: item.range_key)
        return [bucket]

    query.__wrapped__ = original_query
    Table.query, Table.all_items = query, all_items
    _remember_backends_by_host()
    _remember_member_keys()
    _remember_method_names()
    _installed = True


def _remember_method_names() -> None:
    """moto lists a response class's methods (``inspect.getmembers``) on every request to find
    the action's: 2% of a functional test's time. A class's methods do not change."""
    from moto.core import responses

    original = responses.method_names_from_class
    remembered: dict = {}

    def method_names_from_class(clazz):
        names = remembered.get(clazz)
        if names is None:
            names = remembered[clazz] = original(clazz)
        return list(names)

    method_names_from_class.__wrapped__ = original
    responses.method_names_from_class = method_names_from_class


def _remember_member_keys() -> None:
    from moto.core import serialize
    from moto.core.utils import get_value

    known_providers = {serialize.ExplicitAlias, serialize.ShapeNameAlias, serialize.NoAlias,
                       serialize.ShapePrefixAlias, serialize.ClassPrefixAlias, serialize.ModelAlias}
    original = serialize.ResponseSerializer.get_value
    missing = serialize.MISSING
    remembered: dict = {}

    def member_value(self, value, key, shape):
        picker = self._value_picker
        if (type(value) is not dict or type(picker) is not serialize.XFormedAttributePicker
                or picker.response_transformers or getattr(_local, "off", False)):
            return original(self, value, key, shape)
        providers = tuple(picker.alias_providers)
        memo = (key, shape, getattr(shape, "parent", None), providers)
        keys = remembered.get(memo)
        if keys is None:
            if not known_providers.issuperset(providers):
                return original(self, value, key, shape)
            context = serialize.AttributePickerContext(obj={}, key=key, shape=shape)
            keys = remembered[memo] = tuple(picker.get_possible_keys(context))
        for possible in keys:
            found = get_value(value, possible, missing)
            if found is not missing:
                return found
        return None

    member_value.__wrapped__ = original
    serialize.ResponseSerializer.get_value = member_value


def _remember_backends_by_host() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_backend_for_host
    known: dict = {}

    def get_backend_for_host(self, host):
        try:
            return known[host]
        except KeyError:
            backend = original(self, host)
            if len(known) < 1024:  # a client's invented hosts (regions) cannot grow it without bound
                known[host] = backend
            return backend

    get_backend_for_host.__wrapped__ = original
    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


@contextlib.contextmanager
def moto_as_is():
    """moto's own Query in this thread (to compare the two)."""
    _local.off = True
    try:
        yield
    finally:
        _local.off = False
