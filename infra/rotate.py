"""Rotate a secret without signing anyone out: ``make rotate-signing-key ENV=local|dev|prod``
and ``make rotate-origin-token ENV=...``.

A new random value becomes ``AWSCURRENT`` and the old one ``AWSPREVIOUS``. Everything that
verifies (cookies, rec_ids, the origin token) accepts both, and re-reads them within a minute
(never later than five), so a cookie signed before the rotation still names its shopper and a
rec_id issued before it still attributes. Whoever issues ``rt_uid`` cookies (the shop's login)
signs with ``AWSCURRENT`` and re-reads it after a rotation. A second rotation drops the key
before the previous one: every cookie and rec_id signed with it stops verifying. So this
refuses (without ``--force``) to rotate the signing key again within ``MIN_KEY_AGE_DAYS``
(rec_ids live 7 days; a shop whose cookies live longer must re-sign them on each visit).

The origin token is also baked into the CloudFront distribution (a dynamic reference that
CloudFormation resolves on deploy): after rotating it, build and deploy with the printed
``OriginTokenVersionId`` so CloudFront sends the new token; the functions accept the old one
meanwhile. Rotating it again before that deploy would cut every browser off, so this refuses
(without ``--force``) unless the stack already sends the current version.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import tomllib

from infra.local.template import ROOT

SECRETS = {"signing-key": ("SigningKeySecret", "{stack}/cookie-signing-key"),
           "origin-token": ("OriginVerifySecret", "{stack}/origin-verify-token")}


def secret_for(env: str, which: str) -> tuple[str, str | None]:
    """(secret id, region) of ``which`` in ``env``; points boto3 at the local stack for local."""
    logical_id, name = SECRETS[which]
    if env == "local":
        state = json.loads((ROOT / "build" / "local-stack.json").read_text())
        creds = state.get("aws_credentials") or {}
        os.environ.update(AWS_ENDPOINT_URL=state["aws_endpoint"], AWS_DEFAULT_REGION=state["region"],
                          AWS_ACCESS_KEY_ID=creds.get("access_key_id", "local"),
                          AWS_SECRET_ACCESS_KEY=creds.get("secret_access_key", "local"))
        return state["resources"][logical_id], state["region"]
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    stack = config["global"]["parameters"]["stack_name"]
    return name.format(stack=stack), config["deploy"]["parameters"]["region"]


MIN_KEY_AGE_DAYS = 7


def _versions(secret_id: str, region: str | None) -> dict[str, dict]:
    """Stage -> version ({VersionId, CreatedDate, ...}) of the secret."""
    from personalize.adapters import aws

    listed = aws.client("secretsmanager", region).list_secret_version_ids(SecretId=secret_id)["Versions"]
    return {stage: v for v in listed for stage in v.get("VersionStages", [])}


def refusal(env: str, which: str, secret_id: str, region: str | None, now: dt.datetime) -> str | None:
    """Why rotating now would sign people out or cut browsers off, or None."""
    stages = _versions(secret_id, region)
    current = stages.get("AWSCURRENT")
    if which == "signing-key":
        if "AWSPREVIOUS" in stages and current and now - current["CreatedDate"] < dt.timedelta(days=MIN_KEY_AGE_DAYS):
            age = now - current["CreatedDate"]
            return (f"the current key is {age.days} d {age.seconds // 3600} h old: rotating again drops the previous "
                    f"key, and cookies and rec_ids signed with it (rec_ids live {MIN_KEY_AGE_DAYS} days)")
        return None
    if env == "local" or current is None:
        return None
    import boto3

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    stack = boto3.client("cloudformation", region_name=region).describe_stacks(
        StackName=config["global"]["parameters"]["stack_name"])["Stacks"][0]
    deployed = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}.get(
        "OriginTokenVersionId", "")
    if deployed == current["VersionId"] or (not deployed and "AWSPREVIOUS" not in stages):
        return None
    return (f"CloudFront still sends version {deployed or '(the one current at the last deploy)'}, not the current "
            f"{current['VersionId']}: deploy that first, or this rotation cuts every browser off")


def rotate(secret_id: str, region: str | None) -> str:
    from personalize.adapters.secrets import SecretVersions

    return SecretVersions(secret_id, region).rotate(secrets.token_urlsafe(48))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(SECRETS))
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    parser.add_argument("--force", action="store_true", help="rotate even when it signs people out")
    args = parser.parse_args(argv)
    secret_id, region = secret_for(args.env, args.which)
    why = refusal(args.env, args.which, secret_id, region, dt.datetime.now(dt.UTC))
    if why and not args.force:
        print(f"refused: {why} (--force to rotate anyway)", file=sys.stderr)
        return 2
    version = rotate(secret_id, region)
    print(f"rotated {args.which} ({secret_id}): new AWSCURRENT version {version}; the old value stays "
          f"valid as AWSPREVIOUS")
    if args.which == "origin-token" and args.env != "local":
        print(f"now: make build ENV={args.env} && sam deploy --config-env {args.env} --parameter-overrides "
              f"OriginTokenVersionId={version}  (parameters not named keep their deployed values), so "
              f"CloudFront sends the new token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
