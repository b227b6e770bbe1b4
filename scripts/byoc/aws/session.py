"""boto3 clients for one ``byoc`` command, with dry-run and a manifest of what gets created.

Everything that talks to AWS takes an :class:`AwsContext` so the same code runs against real AWS,
against moto (``endpoint_url`` pointing at 127.0.0.1), or in dry-run mode (nothing is sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import boto3
from botocore.config import Config

from byoc.aws.dry_run import DryRun
from byoc.aws.manifest import Manifest
from byoc.settings import Settings


@dataclass
class AwsContext:
    settings: Settings
    manifest: Manifest
    dry_run: DryRun | None = None
    session: boto3.session.Session = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.session is None:
            self.session = boto3.session.Session(region_name=self.settings.region)
        if self.settings.dry_run and self.dry_run is None:
            self.dry_run = DryRun()

    @classmethod
    def from_settings(cls, settings: Settings, session: boto3.session.Session | None = None) -> AwsContext:
        settings.require("region")
        manifest = Manifest.load_or_new(settings.run_dir, region=settings.region)
        return cls(settings=settings, manifest=manifest, session=session)  # type: ignore[arg-type]

    @property
    def region(self) -> str:
        return self.settings.region or self.session.region_name

    def client(self, service: str, **config):
        client = self.session.client(
            service,
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, **config),
        )
        if self.dry_run is not None:
            self.dry_run.attach(client)
        return client

    @cached_property
    def sagemaker(self):
        return self.client("sagemaker")

    @cached_property
    def runtime(self):
        # SageMaker answers InvokeEndpoint within 60 s, botocore's default read timeout: 70 s leaves the
        # answer (a ModelNotReadyException for a cold model) time to arrive ("Invoke a Multi-Model Endpoint").
        return self.client("sagemaker-runtime", read_timeout=70)

    @cached_property
    def s3(self):
        return self.client("s3")

    @property
    def is_dry_run(self) -> bool:
        return self.dry_run is not None

    def record(self, kind: str, name: str, **details) -> None:
        """Remember a created resource for ``byoc cleanup`` (not in dry-run: nothing was created)."""
        if not self.is_dry_run:
            self.manifest.add(kind, name, **details)
            self.manifest.save()
