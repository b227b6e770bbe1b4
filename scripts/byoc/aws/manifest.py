"""A local record of every AWS resource a run created, so ``byoc cleanup`` can delete exactly those.

Stored as ``<run dir>/aws-resources.json``::

    {"region": "eu-west-1", "run_id": "3f2a...",
     "resources": [{"kind": "s3_prefix", "name": "s3://bucket/byoc/pipeline/"},
                   {"kind": "model", "name": "byoc-pipeline-mme"},
                   {"kind": "endpoint_config", "name": "..."}, {"kind": "endpoint", "name": "..."},
                   {"kind": "training_job", ...}, {"kind": "tuning_job", ...}, {"kind": "transform_job", ...}]}
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from byoc_common import durable

MANIFEST_FILE = "aws-resources.json"
KINDS = ("s3_prefix", "model", "endpoint_config", "endpoint", "training_job", "tuning_job", "transform_job")


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Manifest:
    path: Path
    region: str | None = None
    resources: list[dict] = field(default_factory=list)
    # Tagged on every resource the run creates (byoc.aws.ownership): a resource carrying another run's id
    # is never reused, updated or deleted by this one. Made once, with the manifest.
    run_id: str = field(default_factory=new_run_id)

    @classmethod
    def load_or_new(cls, run_dir: str | os.PathLike, region: str | None = None) -> Manifest:
        path = Path(run_dir) / MANIFEST_FILE
        if path.is_file():
            data = json.loads(path.read_text())
            return cls(path=path, region=data.get("region", region), resources=data.get("resources", []),
                       run_id=data.get("run_id") or new_run_id())
        return cls(path=path, region=region)

    def add(self, kind: str, name: str, **details) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown resource kind {kind!r}")
        if not any(r["kind"] == kind and r["name"] == name for r in self.resources):
            self.resources.append({"kind": kind, "name": name, **details})

    def remove(self, kind: str, name: str) -> None:
        self.resources = [r for r in self.resources if not (r["kind"] == kind and r["name"] == name)]

    def names(self, kind: str) -> list[str]:
        return [r["name"] for r in self.resources if r["kind"] == kind]

    def save(self) -> None:
        durable.write_json(self.path, {"region": self.region, "run_id": self.run_id, "resources": self.resources})
