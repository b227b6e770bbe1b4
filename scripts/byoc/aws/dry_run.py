"""``--dry-run``: print every AWS request a command would make, and send none of them.

Implemented with two botocore events on each client:

* ``before-parameter-build.*.*`` sees the operation's parameters exactly as the code passed them
  (botocore has not serialized them yet), and stashes them in the request context;
* ``before-call.*.*`` fires after botocore validated those parameters against the service model
  (so a dry run still catches a misspelled or missing field) and right before the HTTP request
  would be signed and sent. A handler that returns ``(http_response, parsed)`` there replaces the
  call: botocore never signs, never opens a connection, and needs no credentials.

The printed line is ``DRY-RUN <service>.<Operation> <params as JSON>``; file bodies are shown as
``<file NAME, N bytes>`` instead of their bytes. A folder upload prints one ``s3.upload_file`` line per
channel (files, bytes, from, to) instead of one line per file (:meth:`DryRun.summarize`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from container_serve import content_types as ct

# Just enough of a response for code that reads ids from what a Create* call returns.
_FAKE_RESPONSES: dict[str, dict[str, Any]] = {
    "CreateModel": {"ModelArn": "arn:aws:sagemaker:dry-run:000000000000:model/dry-run"},
    "CreateEndpointConfig": {"EndpointConfigArn": "arn:aws:sagemaker:dry-run:000000000000:endpoint-config/dry-run"},
    "CreateEndpoint": {"EndpointArn": "arn:aws:sagemaker:dry-run:000000000000:endpoint/dry-run"},
    "CreateTransformJob": {"TransformJobArn": "arn:aws:sagemaker:dry-run:000000000000:transform-job/dry-run"},
    "CreateTrainingJob": {"TrainingJobArn": "arn:aws:sagemaker:dry-run:000000000000:training-job/dry-run"},
    "CreateHyperParameterTuningJob": {
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:dry-run:000000000000:hyper-parameter-tuning-job/dry-run"},
    "InvokeEndpoint": {"ContentType": ct.JSON, "Body": None},
    "CreateMultipartUpload": {"UploadId": "dry-run"},
    "ListObjectsV2": {"KeyCount": 0, "IsTruncated": False},
    "DeleteObjects": {"Deleted": []},
    "RegisterScalableTarget": {
        "ScalableTargetARN": "arn:aws:application-autoscaling:dry-run:000000000000:scalable-target/dry-run"},
    "PutScalingPolicy": {"PolicyARN": "arn:aws:autoscaling:dry-run:000000000000:scalingPolicy:dry-run", "Alarms": []},
}


class _FakeHttpResponse:
    status_code = 200
    headers: dict[str, str] = {}
    content = b""
    text = ""


def _printable(value: Any) -> Any:
    """JSON-friendly view of request parameters (file bodies and bytes summarised)."""
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    # s3transfer wraps the file several times (ReadFileChunk -> InterruptReader -> DeferredOpenFile).
    size = getattr(value, "_size", None)
    inner, name = value, None
    for _ in range(5):
        name = getattr(inner, "name", None)
        if isinstance(name, str) or not hasattr(inner, "_fileobj"):
            break
        inner = inner._fileobj
    if isinstance(name, str):
        return f"<file {name}{f', {size} bytes' if size is not None else ''}>"
    return f"<{type(value).__name__}>"


@dataclass
class DryRun:
    """Attach to clients with :meth:`attach`; every request is recorded and printed, none sent."""

    stream: TextIO | None = None
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def attach(self, client) -> None:
        events = client.meta.events
        events.register("before-parameter-build.*.*", self._remember_params)
        # Registered first so it runs before any other before-call handler can send anything.
        events.register_first("before-call.*.*", self._intercept)

    def _remember_params(self, params, model, context, **_):
        context["byoc_dry_run_params"] = _printable(dict(params))

    def _intercept(self, model, context, **_):
        service = model.service_model.service_name
        params = context.get("byoc_dry_run_params", {})
        self.requests.append((service, model.name, params))
        stream = self.stream or sys.stdout
        print(f"DRY-RUN {service}.{model.name} {json.dumps(params, sort_keys=True, default=str)}",
              file=stream, flush=True)
        parsed = json.loads(json.dumps(_FAKE_RESPONSES.get(model.name, {})))
        parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": 200, "DryRun": True})
        return _FakeHttpResponse(), parsed

    def summarize(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """Record and print one line for many requests of one kind (a folder's uploads: one line per
        channel, not 12,000), in the same ``DRY-RUN <service>.<operation> <JSON>`` form."""
        self.requests.append((service, operation, params))
        print(f"DRY-RUN {service}.{operation} {json.dumps(params, sort_keys=True, default=str)}",
              file=self.stream or sys.stdout, flush=True)

    def operations(self) -> list[str]:
        return [f"{service}.{op}" for service, op, _ in self.requests]
