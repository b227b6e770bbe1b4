"""The SageMaker launcher sends exactly the requests SageMaker documents (botocore Stubber).

The Stubber checks each call's parameters against ``expected_params`` (exact equality) and runs
botocore's own parameter validation against the SageMaker service model, so a misspelt field or
a wrong type fails here as it would against AWS.
"""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import debugger as dbg
from byoc.aws import errors
from byoc.aws import training_jobs as tj
from byoc.aws import tuning_jobs as hpo
from byoc.tuning.spec import load_spec, parse_spec
from container_train import contract
from container_train.hyperparameters import to_sagemaker_strings

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-train:latest"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
RULES_IMAGE = "929884845733.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-debugger-rules:latest"

EXPECTED_CHANNELS = [
    {"ChannelName": "training",
     "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/data/train/",
                                     "S3DataDistributionType": "FullyReplicated"}},
     "InputMode": "File"},
    {"ChannelName": "validation",
     "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/data/valid/",
                                     "S3DataDistributionType": "FullyReplicated"}},
     "InputMode": "File"},
]


def resources(**kw) -> tj.TrainingResources:
    base = dict(image_uri=IMAGE, role_arn=ROLE,
                channels={"training": "s3://bkt/data/train/", "validation": "s3://bkt/data/valid/"},
                output_s3_uri="s3://bkt/out", instance_type="ml.g4dn.xlarge", max_runtime_s=2400)
    base.update(kw)
    return tj.TrainingResources(**base)


MIXED_SPEC = {
    "objective": {"metric": "validation:accuracy", "direction": "Maximize"},
    "strategy": "Bayesian", "max_jobs": 12, "max_parallel_jobs": 3, "early_stopping": "Auto",
    "random_seed": 7,
    "parameters": {
        "lr": {"type": "continuous", "min": 0.0001, "max": 0.1, "scaling": "log"},
        "epochs": {"type": "integer", "min": 2, "max": 6},
        "batch-size": {"type": "categorical", "values": [32, 64]},
        "pretrained": {"type": "categorical", "values": [True, False]},
    },
    "static": {"arch": "resnet50", "image-size": 224},
}


def test_tuning_request_is_exact_and_accepted_by_botocore():
    spec = parse_spec(MIXED_SPEC)
    res = resources(spot=True, checkpoint_s3_uri="s3://bkt/out/checkpoints", tags={"project": "byoc"})
    request = hpo.build_tuning_job_request(spec, "byoc-hpo-1", res)
    expected = {
        "HyperParameterTuningJobName": "byoc-hpo-1",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}],
                "IntegerParameterRanges": [
                    {"Name": "epochs", "MinValue": "2", "MaxValue": "6", "ScalingType": "Linear"}],
                "CategoricalParameterRanges": [
                    {"Name": "batch-size", "Values": ["32", "64"]},
                    {"Name": "pretrained", "Values": ["true", "false"]}],
            },
            "TrainingJobEarlyStoppingType": "Auto",
            "RandomSeed": 7,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"arch": "resnet50", "image-size": "224", "debugger": "false"},
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                       "MetricDefinitions": contract.METRIC_DEFINITIONS},
            "RoleArn": ROLE,
            "InputDataConfig": EXPECTED_CHANNELS,
            "OutputDataConfig": {"S3OutputPath": "s3://bkt/out"},
            "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 2400, "MaxWaitTimeInSeconds": 4800},
            "EnableManagedSpotTraining": True,
            # No CheckpointConfig: one in the definition would be every trial's (test_aws_jobs_semantics).
        },
        "Tags": [{"Key": "project", "Value": "byoc"}],
    }
    assert request == expected
    # The objective's regex SageMaker will use is the trainer's one.
    objective_def = next(d for d in request["TrainingJobDefinition"]["AlgorithmSpecification"]
                         ["MetricDefinitions"] if d["Name"] == "validation:accuracy")
    assert objective_def["Regex"] == spec.objective.regex

    client = boto3.client("sagemaker", region_name="eu-west-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:hyper-parameter-tuning-job/byoc-hpo-1"
    with Stubber(client) as stub:
        stub.add_response("create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": arn},
                          expected_params=expected)
        assert hpo.send_tuning_job(client, request) == arn
        stub.assert_no_pending_responses()


def test_repo_spec_builds_a_grid_tuning_job():
    spec = load_spec("tuning")
    config = hpo.build_tuning_job_request(spec, "byoc-hpo", resources())["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Grid"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2}
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "lr", "Values": ["0.001", "0.01"]},
        {"Name": "batch-size", "Values": ["32", "64"]},
        {"Name": "epochs", "Values": ["2", "4"]},
    ]


def test_hyperband_strategy_config():
    raw = {**MIXED_SPEC, "strategy": "Hyperband", "early_stopping": "Off",
           "hyperband": {"min_resource": 1, "max_resource": 6}}
    config = hpo.build_tuning_job_request(parse_spec(raw), "hb", resources())["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 6}}
    assert config["TrainingJobEarlyStoppingType"] == "Off"


EXPECTED_RULES = [
    {"RuleConfigurationName": name, "RuleEvaluatorImage": RULES_IMAGE,
     "RuleParameters": {"rule_to_invoke": name}}
    for name in ("VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization")
] + [{"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluatorImage": RULES_IMAGE,
      "RuleParameters": {"rule_to_invoke": "LossNotDecreasing", "num_steps": "20"}}]


def test_final_training_request_carries_debugger_rules_and_profiler():
    debugger = dbg.DebuggerSettings(region="eu-west-1", save_interval=50,
                                   rule_parameters={"LossNotDecreasing": {"num_steps": 20}})
    request = tj.build_training_job_request(
        "byoc-final-1", {"arch": "resnet50", "pretrained": True, "lr": "0.01", "batch-size": 64},
        resources(), debugger)
    expected = {
        "TrainingJobName": "byoc-final-1",
        "HyperParameters": {"arch": "resnet50", "pretrained": "true", "lr": "0.01", "batch-size": "64",
                            "debugger": "true"},
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": contract.METRIC_DEFINITIONS},
        "RoleArn": ROLE,
        "InputDataConfig": EXPECTED_CHANNELS,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/out"},
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 2400},
        "EnableManagedSpotTraining": False,
        "DebugHookConfig": {
            "S3OutputPath": "s3://bkt/out",     # SageMaker appends <job>/debug-output
            "LocalPath": "/opt/ml/output/tensors",
            "CollectionConfigurations": [
                {"CollectionName": "losses", "CollectionParameters": {"save_interval": "50"}},
                {"CollectionName": "weights", "CollectionParameters": {"save_interval": "50"}},
                {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "50"}},
                {"CollectionName": "biases", "CollectionParameters": {"save_interval": "50"}},
            ],
        },
        "DebugRuleConfigurations": EXPECTED_RULES,
        "ProfilerConfig": {"S3OutputPath": "s3://bkt/out",   # SageMaker appends <job>/profiler-output
                           "ProfilingIntervalInMilliseconds": 500},
        "ProfilerRuleConfigurations": [
            {"RuleConfigurationName": "ProfilerReport", "RuleEvaluatorImage": RULES_IMAGE,
             "RuleParameters": {"rule_to_invoke": "ProfilerReport"}}],
    }
    assert request == expected
    client = boto3.client("sagemaker", region_name="eu-west-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:training-job/byoc-final-1"
    with Stubber(client) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": arn}, expected_params=expected)
        assert tj.send_training_job(client, request) == arn


def _describe_tuning(status: str, best: dict | None = None) -> dict:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    answer = {
        "HyperParameterTuningJobName": "byoc-hpo-1",
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:hyper-parameter-tuning-job/byoc-hpo-1",
        "HyperParameterTuningJobConfig": {"Strategy": "Grid",
                                          "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": status,
        "CreationTime": now,
        "TrainingJobStatusCounters": {"Completed": 3 if best else 1, "InProgress": 1},
        "ObjectiveStatusCounters": {"Succeeded": 1},
    }
    if best:
        answer["BestTrainingJob"] = {
            "TrainingJobName": "byoc-hpo-1-003-abc", "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:"
            "123456789012:training-job/byoc-hpo-1-003-abc", "CreationTime": now,
            "TrainingJobStatus": "Completed", "TunedHyperParameters": best,
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:accuracy",
                                                            "Value": 0.91}}
    return answer


def test_tuning_job_is_polled_and_its_best_job_feeds_the_final_run():
    spec = load_spec("tuning")
    res = resources()
    debugger_settings = dbg.DebuggerSettings(region="eu-west-1")
    client = boto3.client("sagemaker", region_name="eu-west-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    tuned = {"lr": "0.01", "batch-size": "32", "epochs": "4"}
    final_hp = {"arch": "resnet50", "pretrained": "true", "freeze": "layer4", "image-size": "224", **tuned}
    sleeps: list[float] = []
    with Stubber(client) as stub:
        stub.add_response("create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": "arn:x"},
                          expected_params=hpo.build_tuning_job_request(spec, "byoc-hpo-1", res))
        name = {"HyperParameterTuningJobName": "byoc-hpo-1"}
        stub.add_response("describe_hyper_parameter_tuning_job", _describe_tuning("InProgress"), name)
        stub.add_response("describe_hyper_parameter_tuning_job",
                          _describe_tuning("Completed", {**tuned, "_tuning_objective_metric": "x"}), name)
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:y"},
                          expected_params=tj.build_training_job_request("byoc-final-1", final_hp, res,
                                                                        debugger_settings))
        hpo.send_tuning_job(client, hpo.build_tuning_job_request(spec, "byoc-hpo-1", res))
        answer = hpo.wait_for_tuning_job(client, "byoc-hpo-1", poll_s=5, sleep=sleeps.append)
        best = hpo.best_training_job(answer)
        final = hpo.final_hyperparameters(spec, best)
        tj.send_training_job(client, tj.build_training_job_request("byoc-final-1", final, res, debugger_settings))
        stub.assert_no_pending_responses()
    assert sleeps == [5]                      # polled once more after "InProgress"
    assert best.training_job_name == "byoc-hpo-1-003-abc"
    assert best.objective_value == pytest.approx(0.91)
    # SageMaker's internal _tuning_objective_metric is not passed on to the final job; the rest is typed.
    assert to_sagemaker_strings(final) == final_hp
    request = tj.build_training_job_request("byoc-final-1", final, res, debugger_settings)
    assert request["HyperParameters"] == {**final_hp, "debugger": "true"}


def test_best_training_job_missing_is_a_clear_error():
    answer = _describe_tuning("Failed")
    answer["FailureReason"] = "All training jobs failed"
    with pytest.raises(errors.LaunchError, match="no best training job: All training jobs failed"):
        hpo.best_training_job(answer)


@pytest.mark.parametrize("region, image", [
    ("us-east-1", "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"),
    ("us-west-2", "895741380848.dkr.ecr.us-west-2.amazonaws.com/sagemaker-debugger-rules:latest"),
    ("eu-central-1", "482524230118.dkr.ecr.eu-central-1.amazonaws.com/sagemaker-debugger-rules:latest"),
    ("cn-north-1", "618459771430.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-debugger-rules:latest"),
])
def test_debugger_rules_image_per_region(region, image):
    assert dbg.debugger_rules_image(region) == image


def test_unknown_region_and_bad_settings_are_clear_errors():
    with pytest.raises(errors.LaunchError, match="not published for region 'mars-1'"):
        dbg.debugger_rules_image("mars-1")
    with pytest.raises(errors.LaunchError, match="unknown or unused Debugger rule"):
        dbg.DebuggerSettings(region="us-east-1", rules=("ExplodingTensorX",))
    with pytest.raises(errors.LaunchError, match="LossNotDecreasing has no parameter"):
        dbg.DebuggerSettings(region="us-east-1", rule_parameters={"LossNotDecreasing": {"num_stepz": "5"}})
    spec = load_spec("tuning")
    with pytest.raises(errors.LaunchError, match="is not an s3:// URI"):
        hpo.build_tuning_job_request(spec, "ok", resources(output_s3_uri="/tmp/out"))
    with pytest.raises(errors.LaunchError, match="1-32 letters"):
        hpo.build_tuning_job_request(spec, "x" * 33, resources())
    with pytest.raises(errors.LaunchError, match="max_wait_s"):
        resources(spot=True, max_wait_s=10).validate()


def test_unique_job_names_fit_sagemaker_limits():
    now = dt.datetime(2026, 11, 25, 22, 1, 2, 345678, tzinfo=dt.UTC)
    name = tj.unique_job_name("my_very_long_project_name_for_tuning", 32, now)
    assert name == "my-very-long-p-261125-220102-345"
    hpo.check_tuning_job_name(name)


