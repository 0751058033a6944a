"""The release on SageMaker (`earthsnap.sagemaker.release`) where the emulator cannot show the behaviour.

Nothing here reaches AWS. SageMaker's answers are made at the HTTP level and read by botocore's own parser (a
boto3 client whose `before-send` hook returns the documented response instead of sending the request), or come
from moto, an EMULATOR of the AWS API run here as a separate server (the `moto_url` fixture).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
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
