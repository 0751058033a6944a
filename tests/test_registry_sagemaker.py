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
