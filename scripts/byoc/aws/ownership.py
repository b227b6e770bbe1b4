"""Re-runnable SageMaker resources: a model or endpoint config is reused when the existing one is this
run's and the same, made under a new name when not, and another run's is never touched.

SageMaker names are unique per account and region, and ``CreateModel`` / ``CreateEndpointConfig`` on
a taken name fail ("Cannot create already existing model"); neither can be changed after creation. So
:func:`ensure` looks before it creates:

* the base name is free: create it, tagged with this run's id (``byoc-run-id``, the manifest's
  ``run_id``), and record it for ``byoc cleanup``;
* it exists, carries this run's id and has the same settings (what changes its behaviour: image,
  ``ModelDataUrl``, mode, environment, role; a config's variants: model, instance type and count):
  reuse it, nothing is sent;
* otherwise (other settings, or another run's, or untagged): the name ``<base>-<hash>``, the hash of
  the settings and the run id, goes through the same two checks; two runs or two settings never
  share it.

The endpoint keeps its name (``byoc invoke`` finds it by name): this run's is reused when it already
serves the config, moved to the new config with ``UpdateEndpoint`` when not (SageMaker's way to change
a live endpoint without downtime); another run's is refused. ``byoc cleanup`` asks :func:`owned_elsewhere`
before each delete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from byoc.aws.errors import LaunchError
from byoc.aws.session import AwsContext

RUN_ID_TAG = "byoc-run-id"


def run_tags(ctx: AwsContext) -> list[dict[str, str]]:
    """The tag that marks a resource as this run's. The run id is saved before the first resource
    carries it, so the next ``byoc`` in this run dir knows it."""
    if not ctx.is_dry_run and not ctx.manifest.path.is_file():
        ctx.manifest.save()
    return [{"Key": RUN_ID_TAG, "Value": ctx.manifest.run_id}]


@dataclass(frozen=True)
class _Kind:
    what: str                                  # the manifest's kind, and the words of errors
    describe: str                              # the client method and its name parameter
    create: str
    name_param: str
    arn_key: str                               # where the describe answer holds the ARN

    def described(self, ctx: AwsContext, name: str) -> dict | None:
        try:
            return getattr(ctx.sagemaker, self.describe)(**{self.name_param: name})
        except ClientError as e:                   # SageMaker: ValidationException "Could not find ..."
            if e.response.get("Error", {}).get("Code") == "ValidationException":
                return None
            raise


MODEL = _Kind("model", "describe_model", "create_model", "ModelName", "ModelArn")
ENDPOINT_CONFIG = _Kind("endpoint_config", "describe_endpoint_config", "create_endpoint_config",
                        "EndpointConfigName", "EndpointConfigArn")
ENDPOINT = _Kind("endpoint", "describe_endpoint", "create_endpoint", "EndpointName", "EndpointArn")
KINDS = {k.what: k for k in (MODEL, ENDPOINT_CONFIG, ENDPOINT)}


def _run_id_of(ctx: AwsContext, arn: str) -> str | None:
    pages = ctx.sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn)
    return next((t["Value"] for page in pages for t in page.get("Tags", []) if t["Key"] == RUN_ID_TAG), None)


def _ours(ctx: AwsContext, kind: _Kind, name: str, existing: Mapping[str, Any]) -> bool:
    """This run's: tagged with its id, or untagged and in its manifest (made before resources were tagged)."""
    owner = _run_id_of(ctx, existing[kind.arn_key])
    return owner == ctx.manifest.run_id or (owner is None and name in ctx.manifest.names(kind.what))


def _same(existing: Any, wanted: Any) -> bool:
    """Whether every field we send has the value we send (SageMaker adds fields of its own)."""
    if isinstance(wanted, Mapping):
        return isinstance(existing, Mapping) and all(_same(existing.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(existing, list) and len(existing) == len(wanted) and all(
            _same(e, w) for e, w in zip(existing, wanted, strict=True))
    if isinstance(wanted, float) and isinstance(existing, int | float):
        return float(existing) == wanted
    return existing == wanted


def settings_hash(ctx: AwsContext, wanted: Mapping[str, Any]) -> str:
    payload = json.dumps({"run": ctx.manifest.run_id, "settings": wanted}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def ensure(ctx: AwsContext, kind: _Kind, base: str, wanted: Mapping[str, Any],
           check_name: Callable[[str], str], log: Callable[[str], None]) -> str:
    """The name of this run's ``kind`` resource with the settings ``wanted`` (the Create request's fields
    besides the name and tags): reused, or created under ``base`` or ``base-<hash>``."""
    suffix = "-" + settings_hash(ctx, wanted)
    candidates = [base, check_name(base[: 63 - len(suffix)].rstrip("-") + suffix)]
    for name in candidates:
        existing = None if ctx.is_dry_run else kind.described(ctx, name)
        if existing is None:
            getattr(ctx.sagemaker, kind.create)(**{kind.name_param: name, **wanted, "Tags": run_tags(ctx)})
            ctx.record(kind.what, name)
            return name
        if _same(existing, wanted) and _ours(ctx, kind, name, existing):
            log(f"{kind.what.replace('_', ' ')} {name}: this run's, same settings, reused")
            return name
    raise LaunchError(f"the {kind.what.replace('_', ' ')} names {' and '.join(candidates)} are both taken by "
                      "resources this run did not make, or made with other settings; byoc never changes another "
                      "run's resources: use another --run-dir or --endpoint-name")


def ensure_endpoint(ctx: AwsContext, name: str, config_name: str, log: Callable[[str], None]) -> str:
    """Create endpoint ``name`` on ``config_name``, or reuse/update this run's; returns what was done
    (``created``, ``reused``, ``updated``)."""
    existing = None if ctx.is_dry_run else ENDPOINT.described(ctx, name)
    if existing is None:
        ctx.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name, Tags=run_tags(ctx))
        ctx.record("endpoint", name)
        return "created"
    if not _ours(ctx, ENDPOINT, name, existing):
        raise LaunchError(f"endpoint {name} already exists and this run did not make it (tag {RUN_ID_TAG}); "
                          "byoc never changes another run's endpoint: pass --endpoint-name NAME")
    if existing.get("EndpointConfigName") == config_name:
        log(f"endpoint {name}: this run's, already on {config_name}, reused")
        return "reused"
    if existing.get("EndpointStatus") != "InService":
        raise LaunchError(f"endpoint {name} is {existing.get('EndpointStatus')} on {existing.get('EndpointConfigName')}"
                          f"; it can move to {config_name} only when InService (`byoc cleanup` removes it)")
    ctx.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
    log(f"endpoint {name}: this run's, moved from {existing.get('EndpointConfigName')} to {config_name}")
    return "updated"


def owned_elsewhere(ctx: AwsContext, kind: str, name: str) -> str | None:
    """Another run's id when resource ``name`` carries one (cleanup leaves it alone), else None: this
    run's, untagged (made before tags), or gone."""
    if ctx.is_dry_run or kind not in KINDS:
        return None
    existing = KINDS[kind].described(ctx, name)
    if existing is None:
        return None
    owner = _run_id_of(ctx, existing[KINDS[kind].arn_key])
    return owner if owner not in (None, ctx.manifest.run_id) else None
