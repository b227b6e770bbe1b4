"""Issue 24 item 6: InvokeEndpoint on a cold multi-model target that answers ModelNotReadyException (429) is
retried as AWS documents ("Invoke a Multi-Model Endpoint": the model goes on loading for up to 360 s),
with a progress line each time; botocore's Stubber plays SageMaker's answers, a fake clock the time."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from byoc.aws import endpoints
from byoc.aws.errors import LaunchError
from byoc.aws.session import AwsContext

EXPECTED = {"EndpointName": "ep", "Body": b"img", "ContentType": "image/jpeg", "Accept": "application/json",
            "TargetModel": "fashion.tar.gz"}


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _not_ready(stub: Stubber, times: int) -> None:
    for _ in range(times):
        stub.add_client_error("invoke_endpoint", service_error_code="ModelNotReadyException",
                              service_message="Model fashion.tar.gz is not ready", http_status_code=429,
                              expected_params=EXPECTED)


def _invoke(ctx, clock):
    return endpoints.invoke(ctx, "ep", b"img", "image/jpeg", target_model="fashion", clock=clock, sleep=clock.sleep)


@pytest.fixture
def runtime_ctx(settings_for):
    return AwsContext.from_settings(settings_for())


def test_a_cold_model_is_retried_until_it_answers_with_progress(runtime_ctx, capsys):
    clock = FakeClock()
    with Stubber(runtime_ctx.runtime) as stub:
        _not_ready(stub, 3)
        stub.add_response("invoke_endpoint", {"ContentType": "application/json",
                                              "Body": StreamingBody(io.BytesIO(b'{"label": "Shirt"}'), 18)},
                          EXPECTED)
        assert _invoke(runtime_ctx, clock) == ("application/json", b'{"label": "Shirt"}')
        stub.assert_no_pending_responses()
    assert clock.sleeps == [2.0, 4.0, 8.0]
    progress = [line for line in capsys.readouterr().err.splitlines() if "ModelNotReadyException" in line]
    assert len(progress) == 3 and "retry 3 in 8 s (6 of 360 s)" in progress[-1]


def test_it_gives_up_at_360_seconds_with_the_reason(runtime_ctx):
    clock = FakeClock()
    with Stubber(runtime_ctx.runtime) as stub:
        _not_ready(stub, 30)       # more than the limit allows
        with pytest.raises(LaunchError, match=r"fashion.tar.gz on endpoint ep was still not ready after 360 s"):
            _invoke(runtime_ctx, clock)
    assert sum(clock.sleeps) == 360.0 and max(clock.sleeps) == 15.0     # the last wait stops at the limit


def test_other_errors_are_not_retried(runtime_ctx):
    clock = FakeClock()
    with Stubber(runtime_ctx.runtime) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                              expected_params=EXPECTED)
        with pytest.raises(ClientError, match="ModelError"):
            _invoke(runtime_ctx, clock)
    assert clock.sleeps == []


def test_the_runtime_client_waits_past_sagemakers_60_s_answer(runtime_ctx):
    assert runtime_ctx.runtime.meta.config.read_timeout == 70
