"""The SageMaker backend (boto3; ``--dry-run`` prints the requests instead of sending them).

S3 layout of a run (``s3://BUCKET/PREFIX/<run>/``)::

    data/{train,valid,test}/...      the dataset (byoc data); other datasets under <name>/
    jobs/<job>/output/model.tar.gz   training job outputs (SageMaker's layout)
    models/<name>.tar.gz             the multi-model endpoint's artifacts (TargetModel=<name>.tar.gz)
    batch/<name>/input|output-*/     batch transform inputs and <input>.out answers
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from byoc.aws import autoscaling, batch_transform, endpoints, feature_jobs, s3_data
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.aws.debugger import HOOK_HYPERPARAMETER, DebuggerSettings, settings_for_region, with_hook
from byoc.aws.instance_types import check_amd64_instance_type
from byoc.aws.session import AwsContext
from byoc.backends.base import Backend, BackendError, job_hyperparameters
from byoc.backends.results import (
    EndpointInfo,
    Explanation,
    Invocation,
    ReportResult,
    TrainResult,
    TransformResult,
    TuneResult,
)
from byoc.console import console, progress_bar
from byoc.gradcam import write_gradcam_png
from container_serve import content_types as ct
from container_train.contract import CHANNEL_SPLITS
from container_train.hyperparameters import sagemaker_string

POLL_S = 60     # DescribeTrainingJob / DescribeHyperParameterTuningJob interval while waiting
LOCAL_ONLY_URL = "it is the local endpoint's address; on SageMaker the endpoint is --endpoint-name"


class SageMakerBackend(Backend):
    name = "sagemaker"

    @cached_property
    def ctx(self) -> AwsContext:
        return AwsContext.from_settings(self.settings)

    def _record_run_prefix(self) -> None:
        self.ctx.record("s3_prefix", self.settings.s3_run_prefix)

    # ---- data --------------------------------------------------------------------------------
    def dataset_location(self, root, name):
        dest_uri = s3_data.join_s3(self.settings.s3_run_prefix, name) + "/"
        if self.ctx.is_dry_run:        # one DRY-RUN line per channel; nothing is sent or claimed
            s3_data.upload_folder(self.ctx, root, dest_uri)
            console.print(f"dry run: nothing uploaded; {root} would go to {dest_uri}")
            return dest_uri
        with progress_bar(f"upload to {dest_uri}", unit="bytes") as update:
            uploaded, skipped = s3_data.upload_folder(self.ctx, root, dest_uri, on_progress=update)
        self._record_run_prefix()
        console.print(f"uploaded {uploaded} files ({skipped} already there) to {dest_uri}")
        return dest_uri

    def _resources(self, data: str, instance_count: int = 1, distribution: str | None = None,
                   kind: str = "final") -> tj.TrainingResources:
        s = self.settings
        s.require("role_arn", "bucket", "train_image")
        check_amd64_instance_type(s.train_instance_type, "train_instance_type")   # before any request
        root = (data or "").rstrip("/")
        if not root.startswith("s3://"):
            raise s3_data.S3UriError(f"on SageMaker --data must be an s3:// prefix (upload with `byoc data "
                                     f"--backend sagemaker`), got {data!r}")
        channels = {name: f"{root}/{folder}/" for name, folder in CHANNEL_SPLITS.items()}
        # A dry run sends nothing, so it cannot know which prefixes hold objects: it shows them all.
        has_objects = (lambda uri: True) if self.ctx.is_dry_run else (
            lambda uri: s3_data.prefix_has_objects(self.ctx, uri))
        channels = tj.select_channels(channels, has_objects)
        return tj.TrainingResources(image_uri=s.train_image, role_arn=s.role_arn, channels=channels,
                                    output_s3_uri=s3_data.join_s3(s.s3_run_prefix, "jobs"),
                                    instance_type=s.train_instance_type, instance_count=instance_count,
                                    distribution=distribution, **tj.limits_from_settings(s, kind))

    # ---- tuning and training -------------------------------------------------------------------
    def tune(self, data, spec, max_jobs=None, max_parallel_jobs=None, static=None, out_dir=None,
             instance_count=None, distribution=None, storage=None, study_name=None, final=True):
        """CreateHyperParameterTuningJob; every trial on the spec's (or the given) instance count.

        A head-only spec tunes on a features channel (:mod:`byoc.tuning.features_flow`): an extraction
        job first (or the run's earlier one with the same key), every trial on its output, then (with
        ``final``) the final training job on it with the best hyperparameters."""
        from byoc.tuning.best import placeholder_best
        from byoc.tuning.features_flow import blocker
        from byoc.tuning.spec import load_spec

        why = "a SageMaker tuning job keeps its own trials"
        self.refuse("--storage", storage, why)
        self.refuse("--study-name", study_name, why)
        loaded = load_spec(spec).with_overrides(max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs,
                                                static=static or None, instance_count=instance_count,
                                                distribution=distribution)
        resources, features = self._resources(data, kind="trial"), {}
        not_head_only = blocker(loaded)
        if not_head_only:
            console.print(f"tuning on the images: {not_head_only}")
        else:
            features = self._extraction(loaded, replace(resources, **tj.limits_from_settings(self.settings,
                                                                                             "extraction")))
            resources = feature_jobs.on_features(resources, features["features"])
        # The final job trains on the trials' hosts: the tuned learning rate belongs to their global batch.
        final_resources = replace(hpo.on_spec_hosts(resources, loaded), **tj.limits_from_settings(self.settings,
                                                                                                  "final"))
        name = tj.unique_job_name(f"byoc-{self.settings.run_name}", 32)
        hpo.send_tuning_job(self.ctx.sagemaker, hpo.build_tuning_job_request(loaded, name, resources))
        self.ctx.record("tuning_job", name)
        self._record_run_prefix()
        on_features = not not_head_only and final
        if self.ctx.is_dry_run:     # what the tuning job will choose goes where placeholders show
            best = loaded.static | placeholder_best(loaded.parameter_names, name)
            final_job = self._launch_training(best, final_resources, "final", debugger=True) if on_features else None
            return TuneResult(tuning_job=name, best_hyperparameters=best, final=final_job, dry_run=True, **features)
        if not self.settings.wait:
            return TuneResult(tuning_job=name, **features)
        answer = hpo.wait_for_tuning_job(self.ctx.sagemaker, name, poll_s=POLL_S, on_status=lambda a: console.print(
            f"{name}: {a['HyperParameterTuningJobStatus']}"))
        best = hpo.best_training_job(answer)
        hps = hpo.final_hyperparameters(loaded, best)
        out = Path(out_dir) if out_dir else Path(self.settings.run_dir) / "tune"
        from byoc.tuning.best import write_best_hyperparameters

        write_best_hyperparameters(out, metric=loaded.objective.metric, direction=loaded.objective.direction,
                                   value=best.objective_value, hyperparameters=hps,
                                   tuned=best.tuned_hyperparameters, training_job=best.training_job_name)
        final_job = self._launch_training(hps, final_resources, "final", debugger=True) if on_features else None
        return TuneResult(tuning_job=name, best_training_job=best.training_job_name, best_value=best.objective_value,
                          best_hyperparameters=hps, out_dir=str(out), final=final_job, **features)

    def _extraction(self, spec, resources: tj.TrainingResources) -> dict:
        """The features of the run's dataset: a completed extraction recorded under the same key, or a
        new extraction job, waited for (the trials need its output). Returns :class:`TuneResult`'s fields
        about the features channel."""
        from byoc.tuning.features_flow import extraction_hyperparameters, features_key

        hps = extraction_hyperparameters(spec)
        key = features_key(resources.image_uri, feature_jobs.data_version(self.ctx, resources.channels), hps)
        found = feature_jobs.recorded_extraction(self.ctx, key)
        if found:
            console.print(f"features: reusing extraction job {found[0]} ({found[1]})")
            return {"extraction_job": found[0], "features": found[1], "features_reused": True}
        name = tj.unique_job_name(f"byoc-{self.settings.run_name}-features", 63)
        request = tj.build_training_job_request(name, hps, resources, None)
        tj.send_training_job(self.ctx.sagemaker, request)
        self.ctx.record("training_job", name, role=feature_jobs.ROLE, features_key=key)
        model_data = feature_jobs.model_data_uri(resources.output_s3_uri, name)
        if not self.ctx.is_dry_run:      # features are whole only when the job completed
            model_data = self._wait_for_training(name, time_limit_usable=False).model_data
        return {"extraction_job": name, "features": model_data, "features_reused": False}
    def train(self, data, hyperparameters, job_dir=None, description="training", stop_on=None, debugger=True,
              instance_count=1, distribution=None, name="train"):
        """CreateTrainingJob with the Debugger hook, built-in rules and the profiler report (none of
        them with ``debugger=False`` or in a region without Debugger), on ``instance_count`` hosts."""
        hyperparameters = job_hyperparameters(hyperparameters)     # before any request, S3's included
        self.refuse("--job-dir", job_dir, "a SageMaker job's files live under the run's S3 prefix")
        self.refuse("--stop-on", stop_on, "the local rule watcher stops local jobs; on SageMaker a rule's "
                    "StopTraining action is configured on the rule itself")
        return self._launch_training(hyperparameters, self._resources(data, instance_count, distribution), name,
                                     debugger)

    def _launch_training(self, hyperparameters, resources: tj.TrainingResources, suffix: str, debugger: bool
                         ) -> TrainResult:
        name = tj.unique_job_name(f"byoc-{self.settings.run_name}-{suffix}", 63)
        settings = self._debugger_settings(hyperparameters, debugger)
        request = tj.build_training_job_request(name, hyperparameters, resources, settings)
        tj.send_training_job(self.ctx.sagemaker, request)
        self.ctx.record("training_job", name)
        self._record_run_prefix()
        model_data = feature_jobs.model_data_uri(request["OutputDataConfig"]["S3OutputPath"], name)
        if self.ctx.is_dry_run:
            return TrainResult(job=name, model_data=model_data, status="NotSent", dry_run=True)
        if not self.settings.wait:
            return TrainResult(job=name, model_data=model_data, status="InProgress")
        finished = self._wait_for_training(name)
        return TrainResult(job=name, model_data=finished.model_data, status=finished.status, note=finished.note)

    def _wait_for_training(self, name: str, time_limit_usable: bool = True) -> tj.FinishedJob:
        """DescribeTrainingJob until the job ends; raises unless it left a usable model
        (:func:`~byoc.aws.training_jobs.finished_job`: completed, or stopped at its time limit)."""
        answer = tj.wait_for_training_job(self.ctx.sagemaker, name, poll_s=POLL_S, on_status=lambda a: console.print(
            f"{name}: {a['TrainingJobStatus']}"))
        finished = tj.finished_job(answer, time_limit_usable=time_limit_usable)
        if finished.note:
            console.print(f"[yellow]{finished.note}[/]")
        return finished

    def _debugger_settings(self, hyperparameters: dict, enabled: bool) -> DebuggerSettings | None:
        """Debugger for the job about to start, saying why when it goes without, or when the hook
        hyperparameter the caller gave is overridden to match (aws.debugger.with_hook)."""
        settings, why = settings_for_region(self.ctx.region, enabled=enabled)
        if why:
            console.print(f"[yellow]{why}[/]")
        if with_hook(hyperparameters, on=settings is not None)[1]:
            state = "on: the job runs the Debugger rules" if settings else "off: the job has no Debugger"
            given = sagemaker_string(hyperparameters[HOOK_HYPERPARAMETER])
            console.print(f"[yellow]hyperparameter {HOOK_HYPERPARAMETER}={given} "
                          f"overridden, hook {state}[/]")
        return settings

    def report(self, job):
        """Rule statuses of training job ``job`` and its profiler report, downloaded next to the
        run dir once the ProfilerReport rule has written it."""
        desc = self.ctx.sagemaker.describe_training_job(TrainingJobName=job)
        statuses = desc.get("DebugRuleEvaluationStatuses", []) + desc.get("ProfilerRuleEvaluationStatuses", [])
        rules = {r["RuleConfigurationName"]: r.get("RuleEvaluationStatus") for r in statuses}
        report = None
        output = desc.get("OutputDataConfig", {}).get("S3OutputPath")
        if output:
            prefix = s3_data.join_s3(output, job, "rule-output") + "/"
            bucket, _ = s3_data.parse_s3_uri(prefix)
            for obj in s3_data.iter_objects(self.ctx, prefix):
                if obj["Key"].endswith("profiler-output/profiler-report.html"):
                    dest = Path(self.settings.run_dir) / f"{job}-profiler-report.html"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.ctx.s3.download_file(bucket, obj["Key"], str(dest))
                    report = str(dest)
        return ReportResult(job=job, rules=rules, profiler_report=report)

    # ---- the multi-model endpoint --------------------------------------------------------------
    @property
    def _endpoint(self) -> endpoints.MultiModelEndpoint:
        return endpoints.MultiModelEndpoint.for_run(self.ctx)

    def start_endpoint(self, port=None, model_root=None):
        self.refuse("--port", port, "SageMaker endpoints answer on their own HTTPS address")
        self.refuse("--model-root", model_root, "a multi-model endpoint loads from the run's models/ prefix")
        ep = self._endpoint
        desc = endpoints.create_multi_model_endpoint(self.ctx, ep)
        return EndpointInfo(address=ep.endpoint_name, models_at=ep.model_data_prefix,
                            status=desc.get("EndpointStatus"), dry_run=self.ctx.is_dry_run)

    def stop_endpoint(self):
        """Nothing to stop in this process: the endpoint stays up until `byoc cleanup`."""

    def serve(self, port=None, model_root=None):
        info = self.start_endpoint(port, model_root)
        console.print(f"endpoint {info.address}: {info.status}; models go under {info.models_at}")
        return 0

    def deploy(self, artifact, name, url=None, scaling=None):
        """Copy the artifact under the endpoint's model prefix; with ``scaling``, also attach
        Application Auto Scaling to the endpoint's variant (:mod:`byoc.aws.autoscaling`)."""
        self.refuse("--url", url, LOCAL_ONLY_URL)
        ep = self._endpoint
        if scaling is not None:
            scaling.validate()          # before anything is copied
        target = endpoints.add_model(self.ctx, ep, artifact, name)
        if scaling is not None:
            attached = autoscaling.attach_autoscaling(self.ctx, ep.endpoint_name, scaling)
            console.print(f"autoscaling {attached['resource_id']}: {attached['min_instances']}-"
                          f"{attached['max_instances']} instances, target {attached['target_invocations']:g} "
                          f"invocations per instance per minute")
        return target

    def loaded_models(self, url=None):
        self.refuse("--url", url, LOCAL_ONLY_URL)
        return endpoints.list_models(self.ctx, self._endpoint)

    def invoke(self, image, target_model=None, content_type=None, accept=ct.JSON, topk=None, explain=False,
               url=None):
        self.refuse("--url", url, LOCAL_ONLY_URL)
        attributes = ct.format_custom_attributes(topk=topk, explain="gradcam" if explain else None) or None
        answer = endpoints.invoke(self.ctx, self._endpoint.endpoint_name, Path(image).read_bytes(),
                                  content_type or ct.content_type_for(image), accept, target_model, attributes)
        return Invocation(*answer, sent=not self.ctx.is_dry_run)

    def explain(self, image, target_model, content_type, output, url=None):
        answer = self.invoke(image, target_model, content_type, ct.JSON, None, True, url)
        if not answer.sent:
            return Explanation(dry_run=True)
        prediction = write_gradcam_png(json.loads(answer.body), output, image)
        return Explanation(label=prediction.get("label"), probability=prediction.get("probability"), png=str(output))

    def batch(self, input_dir, output_dir, target_model=None, model_data=None, content_type=None,
              accept=ct.JSON, max_payload_mb=6, url=None):
        self.refuse("--url", url, LOCAL_ONLY_URL)
        if not model_data:
            if not target_model:
                raise BackendError("batch on SageMaker needs --model-data s3://.../model.tar.gz or "
                                   "--target-model NAME of a deployed model")
            model_data = self._endpoint.model_data_prefix + endpoints.target_model_name(target_model)
        name = (target_model or "model").removesuffix(".tar.gz")
        result = batch_transform.run_transform_job(self.ctx, name, model_data, input_dir,
                                                   content_type or ct.X_IMAGE, accept,
                                                   download_to=output_dir, max_payload_mb=max_payload_mb)
        return TransformResult(outputs=result["Outputs"], transform_job=result["TransformJobName"],
                               dry_run=self.ctx.is_dry_run)

    def cleanup(self, keep_data=False):
        from byoc.aws.cleanup import cleanup as run_cleanup

        done = run_cleanup(self.ctx, keep_data=keep_data, log=console.print)
        console.print(f"cleaned up: {json.dumps(done)}" if done else "nothing recorded to clean up")
        return 0
