"""Rotate a secret without signing anyone out: ``make rotate-signing-key ENV=local|dev|prod``
and ``make rotate-origin-token ENV=...``.

A new random value becomes ``AWSCURRENT`` and the old one ``AWSPREVIOUS``. Everything that
verifies (cookies, rec_ids, the origin token) accepts both, and re-reads them within a minute
(never later than five), so a cookie signed before the rotation still names its shopper and a
rec_id issued before it still attributes. Whoever issues ``rt_uid`` cookies (the shop's login)
signs with ``AWSCURRENT``. Rotating twice within the staleness bound would drop the oldest key:
wait five minutes between rotations.

The origin token is also baked into the CloudFront distribution (a dynamic reference that
CloudFormation resolves on deploy): after rotating it, deploy with the printed
``OriginTokenVersionId`` so CloudFront sends the new token; the functions accept the old one
meanwhile.
"""

from __future__ import annotations

import argparse
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


def rotate(secret_id: str, region: str | None) -> str:
    from personalize.adapters.secrets import SecretVersions

    return SecretVersions(secret_id, region).rotate(secrets.token_urlsafe(48))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(SECRETS))
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    args = parser.parse_args(argv)
    secret_id, region = secret_for(args.env, args.which)
    version = rotate(secret_id, region)
    print(f"rotated {args.which} ({secret_id}): new AWSCURRENT version {version}; the old value stays "
          f"valid as AWSPREVIOUS")
    if args.which == "origin-token" and args.env != "local":
        print(f"now: sam deploy --config-env {args.env} --parameter-overrides OriginTokenVersionId={version} "
              f"(plus the environment's other overrides) so CloudFront sends the new token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
