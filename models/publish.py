"""``make publish-model NAME=ranker-mlp VERSION=v1 [ENV=dev|prod|local]``: upload a model
version folder to the stack's artifacts bucket (``models/<name>/<version>/``), after
checking its manifest against the file, so serving can load it by name and version.

``ENV=local`` (the default) targets the running local stack (``build/local-stack.json``);
``dev``/``prod`` read the bucket from the CloudFormation stack named in samconfig.toml.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, Manifest, verify

ROOT = Path(__file__).resolve().parents[1]
BUCKET_OUTPUT = "ArtifactsBucketName"
PUBLISHER_OUTPUT = "ModelPublisherRoleArn"


def model_prefix(name: str, version: str) -> str:
    return f"models/{name}/{version}/"


def bucket_for(env: str) -> tuple[str, dict]:
    """(bucket, boto3 client kwargs) for an environment."""
    if env == "local":
        state = json.loads((ROOT / "build" / "local-stack.json").read_text())
        credentials = state["aws_credentials"]  # the local AWS enforces IAM: the administrator's keys
        return state["resources"]["ArtifactsBucket"], {"endpoint_url": state["aws_endpoint"],
                                                       "region_name": state["region"],
                                                       "aws_access_key_id": credentials["access_key_id"],
                                                       "aws_secret_access_key": credentials["secret_access_key"]}
    import boto3

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    stack = config["global"]["parameters"]["stack_name"]
    region = config["deploy"]["parameters"]["region"]
    cloudformation = boto3.client("cloudformation", region_name=region)
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
    # Only the publisher role may write models/ (the bucket policy denies everyone else).
    creds = boto3.client("sts", region_name=region).assume_role(
        RoleArn=outputs[PUBLISHER_OUTPUT], RoleSessionName="publish-model")["Credentials"]
    return outputs[BUCKET_OUTPUT], {"region_name": region, "aws_access_key_id": creds["AccessKeyId"],
                                    "aws_secret_access_key": creds["SecretAccessKey"],
                                    "aws_session_token": creds["SessionToken"]}


def publish(folder: Path, bucket: str, client) -> list[str]:
    manifest = Manifest.from_dict(json.loads((folder / MANIFEST_FILE).read_text()))
    model = (folder / MODEL_FILE).read_bytes()
    verify(manifest, model)
    prefix = model_prefix(manifest.name, manifest.version)
    # The model first, then its manifest: a reader that finds the manifest finds the model.
    client.put_object(Bucket=bucket, Key=prefix + MODEL_FILE, Body=model, ContentType="application/octet-stream")
    client.put_object(Bucket=bucket, Key=prefix + MANIFEST_FILE, Body=(folder / MANIFEST_FILE).read_bytes(),
                      ContentType="application/json")
    return [prefix + MODEL_FILE, prefix + MANIFEST_FILE]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    args = parser.parse_args()
    folder = ROOT / "models" / args.name / args.version
    if not folder.is_dir():
        print(f"no model folder {folder}", file=sys.stderr)
        return 2
    import boto3

    bucket, kwargs = bucket_for(args.env)
    keys = publish(folder, bucket, boto3.client("s3", **kwargs))
    print(f"published {args.name}/{args.version} to s3://{bucket}/{keys[0].rsplit('/', 1)[0]}/")
    from personalize.serving.models import artifact_digest

    pin = artifact_digest((folder / MODEL_FILE).read_bytes(), (folder / MANIFEST_FILE).read_bytes())
    print(f"pin {pin}: `make experiment-start` puts it in the flags document (serving refuses unpinned models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
