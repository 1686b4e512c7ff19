"""IAM in the embedded AWS: every function runs with the credentials of its own role, built
from template.yaml's policies after the SAM transform, and moto enforces them.

How it is set up (``setup``), before enforcement starts: an administrator user with an
access key (``aws_credentials`` in ``build/local-stack.json``: operators, tests, the stack
itself), then per function its role (inline policies and the AWS managed policies the
template attaches, from moto's copy of their documents) and an ``sts:AssumeRole`` session
whose credentials the function's clients sign with (``aws.as_identity``).

What moto checks: the action of every request, against the role's statements; the resource
only for S3 (bucket/key) and SQS (queue ARN). For the other services it authorizes against
``*``, so a statement naming a specific resource would never match: locally, statements
whose actions are all on resource-blind services are widened to ``*`` (the resource-level
least privilege is checked statically: ``tests/unit/test_template.py``).

Stand-ins: moto has no AppConfig data API and no deployments, so the local flag reader and
admin run ``appconfig_fake`` (the AppConfig part of the limits model), whose state is one
object in the artifacts bucket. A role that may read the deployed configuration
(``appconfig:GetLatestConfiguration``) may locally read that object; a role that may deploy
(``StartDeployment``) may write it. Nothing else is granted beyond the template.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field

from personalize.adapters import aws

from . import template

ACCOUNT = "123456789012"
REGION = "us-east-1"
ADMIN_USER = "local-admin"
# Services whose requests moto authorizes with their real resource ARN; for every other
# service it authorizes against "*".
RESOURCE_AWARE = frozenset({"s3", "sqs", "sts", "iam"})
POINTER_KEY = "appconfig/world.json"  # appconfig.LOCAL_STATE_KEY


@dataclass
class Identities:
    admin: aws.Credentials
    functions: dict[str, aws.Credentials] = field(default_factory=dict)  # "aggregate" -> its role's
    policies: dict[str, list[dict]] = field(default_factory=dict)  # "aggregate" -> what its role holds


# A service the local stack emulates -> the template role it acts as (infra/local/firehose.py).
SERVICE_ROLES = {"firehose-archive": "ArchiveDeliveryRole"}


def function_roles(doc: dict) -> dict[str, str]:
    """Short function name ("aggregate") -> logical id of its role, from the transformed template."""
    out = {}
    for logical_id, resource in doc["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            role = resource["Properties"]["Role"]
            name = logical_id.removesuffix("Function").lower()
            out[name] = role["Fn::GetAtt"][0] if isinstance(role, dict) else role
    return out


class Resolver:
    """CloudFormation intrinsics, resolved to the local stack's names and ARNs."""

    def __init__(self, doc: dict, names: dict[str, str], arns: dict[str, str]):
        self.doc = doc
        self.names = names
        self.arns = arns
        self.parameters = {name: str(p.get("Default", "")) for name, p in doc.get("Parameters", {}).items()}
        self.pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                       "AWS::StackName": "local", "AWS::URLSuffix": "amazonaws.com"}

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.names.get(name, f"local-{name}")

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.doc["Resources"].get(name, {}).get("Type", "")
        if attribute == "Arn":
            if name in self.arns:
                return self.arns[name]
            if kind == "AWS::S3::Bucket":
                return f"arn:aws:s3:::{self.ref(name)}"
            return f"arn:aws:{kind.split('::')[1].lower() if '::' in kind else 'local'}:{REGION}:{ACCOUNT}:{name}"
        if attribute == "QueueName":
            return self.ref(name).rsplit("/", 1)[-1]
        return f"local-{name}-{attribute}"

    def __call__(self, value):
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                variables = {k: self(v) for k, v in variables.items()}

                def sub(match):
                    token = match.group(1)
                    if token in variables:
                        return str(variables[token])
                    if "." in token:
                        return self.get_att(*token.split(".", 1))
                    return self.ref(token)

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
            if key == "Fn::Join":
                return arg[0].join(str(self(v)) for v in arg[1])
            if key == "Fn::If":
                return self(arg[2])  # the local stack has no optional replicas: conditions are false
        return {k: self(v) for k, v in value.items()}


def local_statements(statements: list[dict], bucket_arn: str) -> list[dict]:
    """The role's statements as moto can check them, plus the stand-ins' permissions."""
    out = []
    actions_held: set[str] = set()
    for statement in statements:
        statement = dict(statement)
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else list(actions)
        if statement.get("Effect") == "Allow":
            actions_held.update(actions)
        if "Resource" in statement and not any(a.split(":")[0] in RESOURCE_AWARE for a in actions):
            statement["Resource"] = "*"
            statement.pop("Condition", None)  # moto would evaluate it without the request's context keys
        out.append(statement)
    # moto names CloudWatch actions after its signing name ("monitoring:PutMetricData").
    monitoring = sorted(f"monitoring:{a.split(':', 1)[1]}" for a in actions_held if a.startswith("cloudwatch:"))
    if monitoring:
        out.append({"Effect": "Allow", "Action": monitoring, "Resource": "*"})
    pointer = f"{bucket_arn}/{POINTER_KEY}"
    if "appconfig:GetLatestConfiguration" in actions_held:
        out += [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": pointer}]
    if "appconfig:StartDeployment" in actions_held:
        out += [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": pointer}]
    return out


@functools.lru_cache(maxsize=1)
def _managed_policies() -> dict:
    """moto's copy of AWS's managed policies, parsed once per process (a 1 MB document)."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def managed_policy(arn: str) -> dict:
    name = arn.rsplit("/", 1)[-1]
    return copy.deepcopy(_managed_policies()[name]["Document"])


def role_statements(doc: dict, role_id: str, resolve: Resolver) -> list[dict]:
    props = doc["Resources"][role_id]["Properties"]
    statements: list[dict] = []
    for policy in props.get("Policies", []):
        body = resolve(policy["PolicyDocument"])["Statement"]
        statements += body if isinstance(body, list) else [body]
    for arn in props.get("ManagedPolicyArns", []):
        statements += managed_policy(resolve(arn))["Statement"]
    for resource in doc["Resources"].values():  # policies of their own attached to the role
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", []):
            body = resolve(resource["Properties"]["PolicyDocument"])["Statement"]
            statements += body if isinstance(body, list) else [body]
    return statements


def _trust(admin_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        # Lambda assumes the role when deployed; locally, the stack (the administrator) does.
        "Principal": {"Service": ["lambda.amazonaws.com", "edgelambda.amazonaws.com"], "AWS": admin_arn}}]})


def setup(names: dict[str, str], arns: dict[str, str], template_path=template.TEMPLATE) -> Identities:
    """Create the administrator and every function's role and session. Run before IAM is
    enforced (resources are created by 'CloudFormation', which needs no credentials here)."""
    iam, sts = aws.client("iam"), aws.client("sts")
    admin_arn = iam.create_user(UserName=ADMIN_USER)["User"]["Arn"]
    iam.put_user_policy(UserName=ADMIN_USER, PolicyName="administrator", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    identities = Identities(aws.Credentials(key["AccessKeyId"], key["SecretAccessKey"], name=ADMIN_USER))
    doc = template.transformed(template_path)
    resolve = Resolver(doc, names, arns)
    bucket_arn = resolve.get_att("ArtifactsBucket", "Arn")
    # The functions' roles, and the roles of services the local stack emulates (Firehose).
    for function, role_id in {**function_roles(doc), **SERVICE_ROLES}.items():
        role_name = f"local-{role_id}"
        role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=_trust(admin_arn))["Role"]["Arn"]
        statements = local_statements(role_statements(doc, role_id, resolve), bucket_arn)
        iam.put_role_policy(RoleName=role_name, PolicyName="template", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
        identities.policies[function] = statements
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=function, DurationSeconds=43200)["Credentials"]
        identities.functions[function] = aws.Credentials(
            credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"], name=role_name)
    return identities


class Enforcement:
    """Turn moto's IAM checks on (and off again): in-process moto, or the moto server."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint
        self._context = None

    def _post(self, count: str) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self):
        if self.endpoint:
            self._post("0")
        else:
            from moto.core import enable_iam_authentication

            self._context = enable_iam_authentication()
            self._context.__enter__()
        return self

    def __exit__(self, *exc):
        if self.endpoint:
            try:
                self._post("inf")
            except OSError:
                pass  # the server is gone already
        else:
            self._context.__exit__(*exc)
        return False
