"""`earthsnap registry --backend sagemaker` against moto in server mode.

moto is an EMULATOR of the AWS API, not AWS: it runs here as a separate HTTP server on 127.0.0.1, which the
test starts and stops by its process id (the `moto_url` fixture). It checks that the SageMaker registry's calls
are well formed and behave like the local registry; it says nothing about IAM permissions or EventBridge.
"""

from __future__ import annotations

import boto3
import pytest

from conftest import clean_env

BUCKET = "es-registry"


@pytest.fixture
def aws(moto_url, tmp_path):
    "The environment of a project whose SageMaker backend is the emulator, with a bucket and one registered package."
    env = clean_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=moto_url,
        EARTHSNAP_S3_ENDPOINT_URL=moto_url,
        EARTHSNAP_SAGEMAKER_REGION="us-east-1",
        EARTHSNAP_SAGEMAKER_BUCKET=f"s3://{BUCKET}/earthsnap",
        EARTHSNAP_SAGEMAKER_SERVING_IMAGE="111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap-serving:1",
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    return env


def test_list_show_approve_reject_through_the_cli(earthsnap, aws, tmp_path, monkeypatch):
    for k, v in aws.items():
        if k.startswith(("AWS_", "EARTHSNAP_")):
            monkeypatch.setenv(k, v)
    from earthsnap.sagemaker.registry import SageMakerRegistry

    (tmp_path / "model.tar.gz").write_bytes(b"a model archive " + str(tmp_path).encode())
    reg = SageMakerRegistry(
        aws["EARTHSNAP_SAGEMAKER_BUCKET"],
        aws["EARTHSNAP_SAGEMAKER_SERVING_IMAGE"],
        "us-east-1",
        aws["AWS_ENDPOINT_URL"],
    )
    group = f"fauna-{tmp_path.name[-6:].replace('_', '-')}"
    ref = reg.register(
        group, tmp_path / "model.tar.gz", {"accuracy": {"value": 0.93}}, {"run": "earthsnap-20261125-x"}, by="pipeline"
    ).ref

    r = earthsnap("registry", "list", "--backend", "sagemaker", "--group", group, cwd=tmp_path, env=aws)
    assert r.returncode == 0 and ref in r.stdout and "PendingManualApproval" in r.stdout and "0.930" in r.stdout, (
        r.stdout + r.stderr
    )
    r = earthsnap(
        "registry", "approve", ref, "--backend", "sagemaker", "--reason", "good", "--by", "ana", cwd=tmp_path, env=aws
    )
    assert r.returncode == 0 and f"{ref} approved." in r.stdout and "EventBridge" in r.stdout, r.stdout + r.stderr
    shown = earthsnap("registry", "show", ref, "--backend", "sagemaker", cwd=tmp_path, env=aws).stdout
    assert (
        f"{ref}  Approved" in shown and "by ana: good" in shown and f"s3://{BUCKET}/earthsnap/models/{group}/" in shown
    )
    r = earthsnap("registry", "reject", ref, "--backend", "sagemaker", "--reason", "no", cwd=tmp_path, env=aws)
    assert r.returncode == 2 and f"Cannot reject {ref}: it is already Approved" in r.stderr


def test_missing_settings_are_named(earthsnap, aws, tmp_path):
    no_bucket = {k: v for k, v in aws.items() if k != "EARTHSNAP_SAGEMAKER_BUCKET"}
    r = earthsnap("registry", "list", "--backend", "sagemaker", cwd=tmp_path, env=no_bucket)
    assert r.returncode == 2 and "sagemaker_bucket" in r.stderr and "EARTHSNAP_SAGEMAKER_BUCKET" in r.stderr, r.stderr
    no_region = {
        k: v for k, v in aws.items() if k not in ("EARTHSNAP_SAGEMAKER_REGION", "AWS_DEFAULT_REGION", "AWS_REGION")
    }
    r = earthsnap("registry", "list", "--backend", "sagemaker", cwd=tmp_path, env=no_region)
    assert r.returncode == 2 and "sagemaker_region" in r.stderr, r.stderr
    r = earthsnap("registry", "list", "--backend", "cloud", cwd=tmp_path, env=aws)
    assert r.returncode == 2 and "Unknown registry backend 'cloud'" in r.stderr


# botocore's patterns of the values AWS checks (Java regular expressions), which the `regex` package reads as Java
# does; the emulator checks none of them
METADATA_VALUE = r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,256}"
METADATA_KEY = r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,128}"


class AwsValidating:
    """The emulator's SageMaker, which checks no pattern, with AWS's check of CreateModelPackage and
    UpdateModelPackage: metadata keys and values against their patterns and lengths, ApprovalDescription at most
    1,024 characters of one line (Java's `.*`). A request AWS would refuse is refused as AWS does
    (ValidationException); the requests sent are kept.
    """

    def __init__(self, sm):
        self._sm, self.sent = sm, []

    def __getattr__(self, name):
        return getattr(self._sm, name)

    def _check(self, operation: str, kw: dict):
        import botocore.exceptions
        import regex

        model = self._sm.meta.service_model
        shapes = {n: model.shape_for(n).metadata for n in ("CustomerMetadataKey", "CustomerMetadataValue")}
        assert (shapes["CustomerMetadataKey"]["pattern"], shapes["CustomerMetadataValue"]["pattern"]) == (
            METADATA_KEY,
            METADATA_VALUE,
        )
        cls = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*"
        wrong = [
            f"{k!r}: {v!r}"
            for k, v in kw.get("CustomerMetadataProperties", {}).items()
            if not (regex.fullmatch(cls, k) and regex.fullmatch(cls, v) and 0 < len(k) <= 128 and 0 < len(v) <= 256)
        ]
        text = kw.get("ApprovalDescription", "")
        if len(text) > 1024 or regex.search(r"[\n\r\x85\u2028\u2029]", text):
            wrong.append(f"ApprovalDescription {text[:40]!r}... ({len(text)} characters)")
        if wrong:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {
                        "Code": "ValidationException",
                        "Message": "1 validation error detected: " + "; ".join(wrong),
                    }
                },
                operation,
            )
        self.sent.append((operation, kw))

    def create_model_package(self, **kw):
        self._check("CreateModelPackage", kw)
        return self._sm.create_model_package(**kw)

    def update_model_package(self, **kw):
        self._check("UpdateModelPackage", kw)
        return self._sm.update_model_package(**kw)


REASONS = [
    "low accuracy, retrain",
    'the "new" labels (v2) are wrong 🙂',
    "first line\nsecond line",
    "why: " + "too few photos of juveniles, " * 70,  # over 2,000 characters
]


@pytest.fixture
def registry(aws, tmp_path, monkeypatch):
    "A SageMakerRegistry on the emulator, its client checking requests as AWS would; credentials set before it is made."
    from earthsnap.sagemaker.registry import SageMakerRegistry

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sm = AwsValidating(boto3.client("sagemaker", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1"))
    reg = SageMakerRegistry(
        aws["EARTHSNAP_SAGEMAKER_BUCKET"],
        aws["EARTHSNAP_SAGEMAKER_SERVING_IMAGE"],
        s3_endpoint_url=aws["AWS_ENDPOINT_URL"],
        client=sm,
    )
    return reg, sm


@pytest.mark.parametrize("reason", REASONS, ids=["comma", "quotes-emoji", "lines", "2000"])
def test_a_reason_in_ordinary_words_is_kept_whole(registry, aws, tmp_path, reason):
    reg, sm = registry
    (tmp_path / "model.tar.gz").write_bytes(b"a model archive " + str(tmp_path).encode())
    group = f"birds-{tmp_path.name[-6:].replace('_', '-')}"
    ref = reg.register(group, tmp_path / "model.tar.gz", by="ci").ref
    reg.reject(ref, by="Ana (QA), night shift", reason=reason)
    last = reg.history(ref)[-1]
    assert (last["to_status"], last["by"], last["reason"]) == ("Rejected", "Ana (QA), night shift", reason)
    (operation, sent) = sm.sent[-1]
    assert operation == "UpdateModelPackage" and len(sent["ApprovalDescription"]) <= 1024


def test_lineage_and_names_of_any_text_are_registered_and_read_back(registry, aws, tmp_path):
    reg, sm = registry
    (tmp_path / "model.tar.gz").write_bytes(b"another archive " + str(tmp_path).encode())
    backbone = {
        "arch": "resnet18",
        "weights": {"source": "hf://microsoft/resnet-18@" + "0" * 40, "licence": "apache-2.0"},
        "input": {"input_size": 224, "crop_pct": 0.875, "interpolation": "bicubic"},  # JSON: braces, quotes, commas
    }
    lineage = {"run": "earthsnap-20261125-x", "dataset": "birds (spring, 2026)", "backbone": backbone}
    v = reg.register(
        f"trees-{tmp_path.name[-6:].replace('_', '-')}",
        tmp_path / "model.tar.gz",
        {"accuracy": {"value": 0.9}},
        lineage,
        by="Zoë, CI",
    )
    assert (v.created_by, v.lineage["dataset"], v.lineage["backbone"]) == ("Zoë, CI", "birds (spring, 2026)", backbone)
