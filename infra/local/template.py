"""Read template.yaml (with its CloudFormation short-form tags) as plain data."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@functools.cache
def load(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def resources(path: Path = TEMPLATE) -> dict[str, dict]:
    return load(path)["Resources"]


def of_type(kind: str, path: Path = TEMPLATE) -> dict[str, dict]:
    return {name: r for name, r in resources(path).items() if r["Type"] == kind}


@functools.cache
def iam_routes(path: Path = TEMPLATE) -> tuple[tuple[str, str], ...]:
    """(METHOD, path template) of the HTTP API routes the IAM authorizer guards (read once:
    the local front asks on every request)."""
    return tuple(sorted((e["Properties"]["Method"].upper(), e["Properties"]["Path"])
                  for f in of_type("AWS::Serverless::Function", path).values()
                  for e in f["Properties"].get("Events", {}).values()
                  if e["Type"] == "HttpApi" and (e["Properties"].get("Auth") or {}).get("Authorizer") == "AWS_IAM"))


def route_matches(template_path: str, path: str) -> bool:
    """``/features/users/{user_id}`` matches ``/features/users/u1`` (one non-empty segment)."""
    want, got = template_path.strip("/").split("/"), path.strip("/").split("/")
    return len(want) == len(got) and all(
        (w.startswith("{") and w.endswith("}") and g) or w == g for w, g in zip(want, got))


def is_iam_route(method: str, path: str) -> bool:
    return any(m == method.upper() and route_matches(p, path) for m, p in iam_routes())


# AWS managed policies the SAM transform attaches (its policy loader needs their ARNs).
SAM_MANAGED_POLICIES = ("AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess", "AWSLambdaKinesisExecutionRole",
                        "AWSLambdaRole")


@functools.cache
def _transformed(text: str) -> dict:
    import copy

    from samtranslator.translator.transform import transform

    class Policies:
        def load(self):
            return {name: f"arn:aws:iam::aws:policy/{name}" for name in SAM_MANAGED_POLICIES}

    doc = copy.deepcopy(yaml.load(text, Loader=_CfnLoader))  # noqa: S506 - SafeLoader subclass
    for resource in doc["Resources"].values():  # as `sam package` leaves them
        for uri in ("CodeUri", "ContentUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = "s3://bucket/key"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the transform reads the region from boto3
    return transform(doc, {}, Policies())


def transformed(path: Path = TEMPLATE) -> dict:
    """The template after the SAM transform (what CloudFormation deploys): function roles
    with their policies, HTTP API routes, event source mappings."""
    import copy

    return copy.deepcopy(_transformed(path.read_text()))


_NO_VALUE = object()


class Evaluator:
    """The template's conditions and ``Fn::If`` choices for given parameter values (what
    CloudFormation decides at deploy), to check a resource as an environment deploys it.
    Only the functions conditions may hold are evaluated; anything else is left as it is."""

    def __init__(self, parameters: dict[str, str], path: Path = TEMPLATE):
        doc = load(path)
        self.parameters = {name: str(p.get("Default", "")) for name, p in doc.get("Parameters", {}).items()}
        unknown = set(parameters) - set(self.parameters)
        if unknown:
            raise KeyError(f"parameters the template does not declare: {sorted(unknown)}")
        self.parameters.update(parameters)
        self._conditions = doc.get("Conditions", {})
        self._cache: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._cache:
            self._cache[name] = bool(self._value(self._conditions[name]))
        return self._cache[name]

    def _value(self, node):
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.parameters.get(arg, node) if arg != "AWS::NoValue" else _NO_VALUE
            if key == "Fn::Equals":
                return self._value(arg[0]) == self._value(arg[1])
            if key == "Fn::Not":
                return not self._value(arg[0])
            if key == "Fn::And":
                return all(self._value(a) for a in arg)
            if key == "Fn::Or":
                return any(self._value(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
        return node

    def __call__(self, node):
        """``node`` with every Fn::If decided and AWS::NoValue dropped."""
        if isinstance(node, list):
            out = [self(v) for v in node]
            return [v for v in out if v is not _NO_VALUE]
        if isinstance(node, dict):
            if len(node) == 1 and "Fn::If" in node:
                name, yes, no = node["Fn::If"]
                return self(yes if self.condition(name) else no)
            if node == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            if len(node) == 1 and node.get("Ref") in self.parameters:
                return self.parameters[node["Ref"]]
            out = {k: self(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not _NO_VALUE}
        return node

    def resource(self, logical_id: str) -> dict | None:
        """The resource's properties as deployed, or None when its condition leaves it out."""
        resource = resources()[logical_id]
        if "Condition" in resource and not self.condition(resource["Condition"]):
            return None
        return self(resource.get("Properties", {}))
