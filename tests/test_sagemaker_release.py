"""The release on SageMaker (`earthsnap.sagemaker.release`) where the emulator cannot show the behaviour.

Nothing here reaches AWS. SageMaker's answers are made at the HTTP level and read by botocore's own parser (a
boto3 client whose `before-send` hook returns the documented response instead of sending the request), or come
from moto, an EMULATOR of the AWS API run here as a separate server (the `moto_url` fixture).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.awsrequest import AWSResponse

FRONT_END_LIMIT = 6_291_456  # InvokeEndpoint's largest body (6 MiB)


class _Raw:
    "The raw body of an AWSResponse, as urllib3 streams it."

    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kw):
        yield self.body


def runtime_answering(answer):
    """A sagemaker-runtime client whose InvokeEndpoint gets `answer(request)` -> (status, headers, body) from a fake
    SageMaker, parsed by botocore as it parses SageMaker's answers.
    """
    from earthsnap.sagemaker.release import NO_RETRIES

    rt = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRIES(),
    )

    def send(request, **kw):
        status, headers, body = answer(request)
        return AWSResponse(request.url, status, headers, _Raw(body))

    rt.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", send)
    return rt


def fake_sagemaker(request):
    """SageMaker's front end: a body over its limit is refused by SageMaker itself (413, no OriginalStatusCode, as
    `An error occurred (413) when calling the InvokeEndpoint operation: HTTP content length exceeded ...` shows);
    anything else reaches a container that refuses what is not an image with 415, which SageMaker relays as a
    ModelError (424) carrying the container's status and answer.
    """
    body = request.body if isinstance(request.body, bytes) else request.body.read()
    if len(body) > FRONT_END_LIMIT:
        return (
            413,
            {"content-type": "application/json", "x-amzn-requestid": "r-413"},
            json.dumps({"message": f"HTTP content length exceeded {FRONT_END_LIMIT} bytes."}).encode(),
        )
    container = {"error": "unsupported_media_type", "message": "send a JPEG or PNG"}
    return (
        424,
        {
            "content-type": "application/json",
            "x-amzn-errortype": "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/",
        },
        json.dumps(
            {
                "Message": "Received client error (415) from primary with message ...",
                "OriginalStatusCode": 415,
                "OriginalMessage": json.dumps(container),
                "LogStreamArn": "arn:aws:logs:us-east-1:111111111111:log-group:/aws/sagemaker/Endpoints/e",
            }
        ).encode(),
    )


def test_a_body_over_the_limit_is_413_and_a_containers_415_stays_415():
    from earthsnap.release.deployment import malformed_payloads
    from earthsnap.sagemaker.release import RuntimeClient

    client = RuntimeClient(SimpleNamespace(), runtime_answering(fake_sagemaker), "earthsnap-species-stage", "species/1")
    (what, body, kind, query, want) = next(p for p in malformed_payloads() if p[-1] == 413)
    assert len(body) == FRONT_END_LIMIT + 1, "the stage check sends one byte over SageMaker's limit"
    status, answer = client.request("POST", f"/invocations{query}", body, kind)
    assert (status, answer["error"]) == (413, "413"), (what, status, answer)
    assert "content length exceeded" in answer["message"]
    status, answer = client.request("POST", "/invocations", b"hello", "text/plain")
    assert (status, answer) == (415, {"error": "unsupported_media_type", "message": "send a JPEG or PNG"})


def test_a_body_the_front_end_lets_through_is_refused_413_by_the_container():
    """Should SageMaker's front end take a little more than 6 MiB (its 5 MB limit once read "exceeded 5246976", 5 MiB
    and 4 KiB), the body one byte over reaches earthsnap's server, which refuses it with 413 itself (MAX_BYTES):
    SageMaker relays that as a ModelError with OriginalStatusCode 413, and the stage check still reads 413."""
    from earthsnap.release.deployment import malformed_payloads
    from earthsnap.release.serving import MAX_BYTES
    from earthsnap.sagemaker.release import RuntimeClient

    def lenient_front_end(request):
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        assert FRONT_END_LIMIT < len(body) <= FRONT_END_LIMIT + 4096 and len(body) > MAX_BYTES
        container = {"error": "payload_too_large", "message": f"at most {MAX_BYTES} bytes"}
        return (
            424,
            {"content-type": "application/json", "x-amzn-errortype": "ModelError:http://internal.amazon.com/coral/"},
            json.dumps(
                {
                    "Message": "Received client error (413)",
                    "OriginalStatusCode": 413,
                    "OriginalMessage": json.dumps(container),
                }
            ).encode(),
        )

    client = RuntimeClient(SimpleNamespace(), runtime_answering(lenient_front_end), "earthsnap-species-stage", "s/1")
    (what, body, kind, query, want) = next(p for p in malformed_payloads() if p[-1] == 413)
    status, answer = client.request("POST", f"/invocations{query}", body, kind)
    assert (status, answer["error"]) == (413, "payload_too_large"), (what, status, answer)


def _emulated(service: str, url: str, **kw):
    "A boto3 client of the emulator's `service`."
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **kw,
    )


class AwsPaging:
    """The emulator's SageMaker, with what of AWS's documented behaviour it lacks: ListModels answers a page of
    MaxResults (10 by default), newest first; CreateModel refuses a name that exists; UpdateEndpoint (which the
    emulator does not have) swaps the endpoint's config, and each request is kept in `updates`.
    """

    def __init__(self, sm):
        self._sm, self.updates = sm, []

    def __getattr__(self, name):
        return getattr(self._sm, name)

    def list_models(self, **kw):
        # the emulator's are oldest first, and it ignores NameContains
        models = [m for m in reversed(self._sm.list_models()["Models"]) if kw.get("NameContains", "") in m["ModelName"]]
        page = kw.get("MaxResults", 10)
        return {"Models": models[:page], **({"NextToken": "more"} if len(models) > page else {})}

    def create_model(self, **kw):
        import botocore.exceptions

        if kw["ModelName"] in [m["ModelName"] for m in self._sm.list_models()["Models"]]:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {
                        "Code": "ValidationException",
                        "Message": f'Cannot create already existing model "{kw["ModelName"]}".',
                    }
                },
                "CreateModel",
            )
        return self._sm.create_model(**kw)

    def update_endpoint(self, **kw):
        self.updates.append(kw)
        self.swap(kw["EndpointName"], kw["EndpointConfigName"])
        return {"EndpointArn": self._sm.describe_endpoint(EndpointName=kw["EndpointName"])["EndpointArn"]}

    def swap(self, endpoint: str, config: str):
        self._sm.delete_endpoint(EndpointName=endpoint)
        self._sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)


def _package(sm, group: str, image="111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap:1") -> str:
    if group not in [
        g["ModelPackageGroupName"] for g in sm.list_model_package_groups()["ModelPackageGroupSummaryList"]
    ]:
        sm.create_model_package_group(ModelPackageGroupName=group)
    return sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": "s3://es-team/earthsnap/models/x/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def _release(sm, url, **kw):
    from earthsnap.sagemaker.release import NO_RETRIES, SageMakerRelease

    return SageMakerRelease(
        "arn:aws:iam::111111111111:role/earthsnap-sagemaker",
        client=sm,
        runtime=_emulated("sagemaker-runtime", url, config=NO_RETRIES()),
        cloudwatch=_emulated("cloudwatch", url),
        poll_s=0.05,
        **kw,
    )


def test_an_old_version_is_released_again_beside_ten_newer_ones(moto_url):
    sm = AwsPaging(_emulated("sagemaker", moto_url))
    arns = [_package(sm, "species") for _ in range(19)]
    rel = _release(sm, moto_url)
    assert rel.deploy(arns[0], "canary") == "earthsnap-species-canary"  # species-1's model made
    for arn in arns[9:]:  # species-10 to species-19, newer
        rel.model_for(arn)
    assert "earthsnap-species-1" not in [
        m["ModelName"] for m in sm.list_models(NameContains="earthsnap-species-1")["Models"]
    ]
    assert rel.deploy(arns[0], "canary") == "earthsnap-species-canary"  # species/1 again: its model is found
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="earthsnap-species-canary")["EndpointConfigName"]
    )
    assert config["ProductionVariants"][0]["ModelName"] == "earthsnap-species-1"


def test_prod_updates_blue_green_rolled_back_by_its_alarms(moto_url, monkeypatch):
    from earthsnap.release.deployment import Check
    from earthsnap.sagemaker.release import SageMakerRelease
    from earthsnap.sagemaker.shapes import check_request

    sm = AwsPaging(_emulated("sagemaker", moto_url))
    v1, v2, v3 = (_package(sm, "flora") for _ in range(3))
    rel = _release(sm, moto_url, bake_s=900)
    monkeypatch.setattr(SageMakerRelease, "test", lambda self, *a, **kw: [Check("ping", True, "200", "stub")])
    assert rel.release(v1, 0.85, 150, log=lambda *a: None)["status"] == "live"  # prod created: nothing to roll back to
    assert sm.updates == []
    assert rel.release(v2, 0.85, 150, log=lambda *a: None)["status"] == "live"
    prod = [u for u in sm.updates if u["EndpointName"] == "earthsnap-flora-prod"]
    assert len(prod) == 1 and check_request("UpdateEndpoint", prod[0]) == []
    policy = prod[0]["DeploymentConfig"]
    assert policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 900,
    }
    names = [a["AlarmName"] for a in policy["AutoRollbackConfiguration"]["Alarms"]]
    alarms = {
        a["AlarmName"]: a for a in _emulated("cloudwatch", moto_url).describe_alarms(AlarmNames=names)["MetricAlarms"]
    }
    assert {a["MetricName"] for a in alarms.values()} == {"Invocation5XXErrors", "ModelLatency"}
    latency = next(a for a in alarms.values() if a["MetricName"] == "ModelLatency")
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p95", 150_000.0)
    assert {d["Name"]: d["Value"] for d in latency["Dimensions"]} == {
        "EndpointName": "earthsnap-flora-prod",
        "VariantName": "AllTraffic",
    }
    # the stage endpoint is updated plainly
    assert all("DeploymentConfig" not in u for u in sm.updates if u["EndpointName"] == "earthsnap-flora-stage")

    # v3 trips an alarm while baking: SageMaker puts prod back on v2's config, and the release says so
    live = sm.describe_endpoint(EndpointName="earthsnap-flora-prod")["EndpointConfigName"]
    real_update = sm.update_endpoint

    def rolled_back(**kw):
        out = real_update(**kw)
        if kw["EndpointName"] == "earthsnap-flora-prod":
            sm.swap(kw["EndpointName"], live)
        return out

    sm.update_endpoint = rolled_back
    out = rel.release(v3, 0.85, 150, log=lambda *a: None)
    assert out["status"] == "failed" and "to flora/3 back" in out["rolled_back"], out
    assert sm.describe_endpoint(EndpointName="earthsnap-flora-prod")["EndpointConfigName"] == live


def test_a_builtin_algorithms_package_is_refused_before_anything_is_deployed(moto_url):
    sm = _emulated("sagemaker", moto_url)
    arn = _package(sm, "fungi", image="685385470294.dkr.ecr.eu-west-1.amazonaws.com/image-classification:1")
    rel = _release(sm, moto_url)
    from earthsnap.sagemaker.service import SageMakerError

    try:
        rel.release(arn, 0.85, 150, log=lambda *a: None)
        raise AssertionError("released")
    except SageMakerError as e:
        assert "built-in image classifier" in str(e) and "sagemaker_trainer: notebook" in e.fix, e
    # (the emulator ignores NameContains)
    assert [e for e in sm.list_endpoints()["Endpoints"] if "fungi" in e["EndpointName"]] == []
    assert [m for m in sm.list_models()["Models"] if "fungi" in m["ModelName"]] == []


def test_the_monitor_refuses_an_endpoint_of_the_builtin_algorithm(moto_url):
    from earthsnap.monitor.watch import MonitorError
    from earthsnap.sagemaker.monitoring import live_model

    sm = _emulated("sagemaker", moto_url)
    arn = _package(sm, "lichens", image="685385470294.dkr.ecr.eu-west-1.amazonaws.com/image-classification:1")
    sm.create_model(
        ModelName="lichens-by-hand",
        ExecutionRoleArn="arn:aws:iam::111111111111:role/x",
        Containers=[{"ModelPackageName": arn}],
    )
    sm.create_endpoint_config(
        EndpointConfigName="lichens-by-hand",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "lichens-by-hand",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="lichens-by-hand", EndpointConfigName="lichens-by-hand")
    with pytest.raises(MonitorError, match="built-in image classifier .* whose MXNet model the monitor cannot read"):
        live_model(sm, "lichens-by-hand")
