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
