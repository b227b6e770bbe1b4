"""The Debugger rule-evaluator accounts, pinned against the SageMaker Python SDK's own table, and
what a region without Debugger gets: the job, without hook, rules and profiler (as the SDK does).

``data/sagemaker_sdk_debugger.json`` is the SDK's ``src/sagemaker/image_uri_config/debugger.json``
copied byte for byte from aws/sagemaker-python-sdk tag v2.257.6 (commit
fc582aaa46faf7b7e16ab1e13840869712174cd0; the file last changed in 0171bf580 "update debugger for
KIX (#2604)", which set ap-northeast-3 to 479947661362). The sagemaker-2.257.7 wheel on PyPI ships
the same bytes (sha256 below). The copy keeps this test offline (installing ``sagemaker`` 2.257 here
is not possible: it needs pandas>=2.3, the training image's smdebug needs pandas<2.3).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from byoc.aws import debugger as dbg
from byoc.aws import training_jobs as tj

SDK_COPY = Path(__file__).with_name("data") / "sagemaker_sdk_debugger.json"
SDK_COPY_SHA256 = "9884fa8110f5c4595041ddc7cddbae57e84a74dd02505affe73c591b13e5bee4"
# src/sagemaker/fw_utils.py DEBUGGER_UNSUPPORTED_REGIONS at v2.257.6: the SDK turns Debugger off there.
SDK_DEBUGGER_UNSUPPORTED_REGIONS = ("us-iso-east-1", "us-isob-east-1", "ap-southeast-3", "ap-southeast-4",
                                    "eu-south-2", "me-central-1", "ap-south-2", "eu-central-2", "us-gov-east-1")


def _registries(config: dict) -> tuple[str, dict[str, str]]:
    latest = config["versions"]["latest"]
    return latest["repository"], latest["registries"]


def test_the_copy_is_the_sdk_file_it_says_it_is():
    assert hashlib.sha256(SDK_COPY.read_bytes()).hexdigest() == SDK_COPY_SHA256


def test_every_region_and_account_matches_the_sdk():
    repository, registries = _registries(json.loads(SDK_COPY.read_text()))
    assert dbg.DEBUGGER_RULES_REPOSITORY == repository
    assert dbg.DEBUGGER_RULES_REGISTRIES == registries      # same regions, same accounts
    assert dbg.DEBUGGER_RULES_REGISTRIES["ap-northeast-3"] == "479947661362"   # not DLC's 364406365360
    assert dbg.debugger_rules_image("ap-northeast-3") == \
        "479947661362.dkr.ecr.ap-northeast-3.amazonaws.com/sagemaker-debugger-rules:latest"


def test_regions_the_sdk_runs_without_debugger_have_no_rules_here():
    assert not set(SDK_DEBUGGER_UNSUPPORTED_REGIONS) & set(dbg.DEBUGGER_RULES_REGISTRIES)
    for region in SDK_DEBUGGER_UNSUPPORTED_REGIONS:
        assert not dbg.debugger_available(region)


def test_region_without_debugger_trains_without_hook_rules_or_profiler():
    settings, why = dbg.settings_for_region("ap-southeast-3")
    assert settings is None and "not published in ap-southeast-3" in why and "without the Debugger hook" in why
    resources = tj.TrainingResources(image_uri="1.dkr.ecr.ap-southeast-3.amazonaws.com/t:1",
                                     role_arn="arn:aws:iam::123456789012:role/R",
                                     channels={"training": "s3://b/d/train/"}, output_s3_uri="s3://b/out")
    request = tj.build_training_job_request("job-1", {"debugger": "true"}, resources, settings)
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerConfig",
                "ProfilerRuleConfigurations"} & set(request)
    assert request["HyperParameters"]["debugger"] == "false"   # no tensors left on the volume either


def test_supported_region_and_turned_off():
    settings, why = dbg.settings_for_region("eu-west-1")
    assert why is None and settings == dbg.DebuggerSettings(region="eu-west-1")
    settings, why = dbg.settings_for_region("eu-west-1", enabled=False)
    assert settings is None and "--no-debugger" in why
