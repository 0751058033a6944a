"""`earthsnap sagemaker ...`: the definition offline, upsert/start/status and release against moto, the release stack.

moto is an EMULATOR of the AWS API, not AWS: a separate HTTP server on 127.0.0.1 that the `moto_url` fixture starts
and stops by its process id. It checks that the calls are well formed and follow each other; it runs no job and no
container, and says nothing about IAM permissions.
"""

from __future__ import annotations

import json
import re
import subprocess

import boto3
import pytest
import yaml

from conftest import BIN, ROOT, clean_env

BUCKET = "es-pipelines"
SETTINGS = dict(
    EARTHSNAP_SAGEMAKER_REGION="eu-west-1",
    EARTHSNAP_SAGEMAKER_BUCKET=f"s3://{BUCKET}/earthsnap",
    EARTHSNAP_SAGEMAKER_ROLE="arn:aws:iam::111111111111:role/earthsnap-sagemaker",
    EARTHSNAP_SAGEMAKER_IMAGE_REPOSITORY="111111111111.dkr.ecr.eu-west-1.amazonaws.com/earthsnap",
)


def offline_env(**extra):
    "No AWS credentials, no AWS configuration files, no metadata service."
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    return {
        **env,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def test_definition_offline_without_credentials(earthsnap, tmp_path):
    r = earthsnap(
        "sagemaker", "definition", "-p", "epochs=30", "-o", tmp_path / "def.json", cwd=ROOT, env=offline_env(**SETTINGS)
    )
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "def.json").read_text())
    top = {s["Name"]: s["Type"] for s in d["Steps"]}
    assert top == {
        "explore_data": "Processing",
        "data_qa": "Processing",
        "preprocess": "Processing",
        "tune": "Tuning",
        "train": "Training",
        "evaluate": "Processing",
        "accuracy_gate": "Condition",
    }
    assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}["epochs"] == 30  # -p sets the default
    assert "note: parameter tune_trials: applied when the pipeline is compiled" in r.stderr
    assert "DEBUG" not in r.stderr and "WARNING" not in r.stderr  # the SDK's narration is kept out
    r = earthsnap(
        "sagemaker",
        "definition",
        "--trainer",
        "builtin",
        "-p",
        'search_space={"lr": [0.001, 0.1, "log"]}',
        cwd=ROOT,
        env=offline_env(**SETTINGS),
    )
    assert r.returncode == 0 and "image-classification" in r.stdout and "evaluate: left out" in r.stderr, r.stderr
    # one pipeline per model of a hierarchy: its own name (in every output location), registry group and dataset
    r = earthsnap(
        "sagemaker",
        "definition",
        "--model",
        "acantha",
        "-p",
        "source=s3://photos/hierarchy/acantha.jsonl",
        cwd=ROOT,
        env=offline_env(**SETTINGS),
    )
    assert r.returncode == 0, r.stderr
    defaults = {p["Name"]: p.get("DefaultValue") for p in json.loads(r.stdout)["Parameters"]}
    assert defaults["model_group"] == "hierarchy-acantha" and defaults["dataset_name"] == "demo-acantha"
    # outputs under <bucket>/earthsnap-acantha/runs
    assert defaults["source"] == "s3://photos/hierarchy/acantha.jsonl" and '"earthsnap-acantha",' in r.stdout
    r = earthsnap("sagemaker", "definition", "--model", "Bad Name", cwd=ROOT, env=offline_env(**SETTINGS))
    assert r.returncode == 2 and "is not a model of a hierarchy" in r.stderr


@pytest.mark.parametrize(
    "setting", ["EARTHSNAP_SAGEMAKER_ROLE", "EARTHSNAP_SAGEMAKER_BUCKET", "EARTHSNAP_SAGEMAKER_REGION"]
)
def test_missing_settings_are_named(earthsnap, setting):
    env = offline_env(**{k: v for k, v in SETTINGS.items() if k != setting})
    r = earthsnap("sagemaker", "definition", cwd=ROOT, env=env)
    name = setting[len("EARTHSNAP_") :].lower()
    assert (
        r.returncode == 2
        and f"setting {name} is empty" in r.stderr
        and setting in r.stderr
        and "earthsnap.yaml" in r.stderr
    ), r.stderr
    assert not r.stdout


def test_bad_options_are_refused_before_anything(earthsnap):
    r = earthsnap("sagemaker", "definition", "-p", "epoch=3", cwd=ROOT, env=offline_env(**SETTINGS))
    assert r.returncode == 2 and "has no parameter 'epoch'" in r.stderr and "epochs" in r.stderr
    r = earthsnap("sagemaker", "definition", "--trainer", "builtin", cwd=ROOT, env=offline_env(**SETTINGS))
    # arch, width: no built-in counterpart
    assert r.returncode != 0 and "Tuning step 'tune' searches" in r.stderr, r.stderr


def emulated(service: str, url: str):
    "A boto3 client of the emulator at `url`."
    return boto3.client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def aws(moto_url):
    env = clean_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=moto_url,
        EARTHSNAP_S3_ENDPOINT_URL=moto_url,
        **{**SETTINGS, "EARTHSNAP_SAGEMAKER_REGION": "us-east-1"},
    )
    s3 = emulated("s3", moto_url)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    return env


def test_upsert_start_status_against_the_emulator(earthsnap, aws):
    r = earthsnap("sagemaker", "upsert", cwd=ROOT, env=aws)
    assert r.returncode == 0 and r.stdout.count("uploaded s3://") == 1 and "created arn:aws:sagemaker:" in r.stdout, (
        r.stdout + r.stderr
    )
    r = earthsnap("sagemaker", "upsert", cwd=ROOT, env=aws)
    assert r.returncode == 0 and "uploaded" not in r.stdout and "updated arn:aws:sagemaker:" in r.stdout, (
        r.stdout + r.stderr
    )
    r = earthsnap("sagemaker", "start", "-p", "epochs=5", "--name", "from-test", cwd=ROOT, env=aws)
    assert r.returncode == 0 and "started arn:aws:sagemaker:" in r.stdout, r.stdout + r.stderr
    arn = r.stdout.split()[1]
    sm = emulated("sagemaker", aws["AWS_ENDPOINT_URL"])
    sent = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert sent == [{"Name": "epochs", "Value": "5"}]
    r = earthsnap("sagemaker", "status", cwd=ROOT, env=aws)
    assert r.returncode == 0 and arn in r.stdout, r.stdout + r.stderr
    for bad, says in (
        ("tune_trials=3", "fixed in the SageMaker definition"),
        ("epochs=many", "is int; 'many' is not"),
        # the message `earthsnap run` gives
        ("epochs=0", "Parameter 'epochs' must be at least 1, got 0."),
        # (a group name SageMaker refuses: the service notebook)
        ("dataset_name=", "SageMaker refuses an empty parameter value"),
    ):
        r = earthsnap("sagemaker", "start", "-p", bad, cwd=ROOT, env=aws)
        assert r.returncode == 2 and says in r.stderr, r.stderr
    assert len(sm.list_pipeline_executions(PipelineName="earthsnap")["PipelineExecutionSummaries"]) == 1
    # empty, as the default: left out
    r = earthsnap("sagemaker", "start", "-p", "init_weights=", "-p", "epochs=4", cwd=ROOT, env=aws)
    assert r.returncode == 0, r.stdout + r.stderr
    sent = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=r.stdout.split()[1])["PipelineParameters"]
    assert sent == [{"Name": "epochs", "Value": "4"}]


def test_release_refuses_a_package_that_is_not_approved(earthsnap, aws):
    sm = emulated("sagemaker", aws["AWS_ENDPOINT_URL"])
    sm.create_model_package_group(ModelPackageGroupName="fauna")
    arn = sm.create_model_package(
        ModelPackageGroupName="fauna",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/serve:1",
                    "ModelDataUrl": f"s3://{BUCKET}/m.tar.gz",
                }
            ],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    r = earthsnap("sagemaker", "release", arn, cwd=ROOT, env=aws)
    assert r.returncode != 0 and "fauna/1 is PendingManualApproval" in r.stderr, r.stdout + r.stderr
    assert sm.list_endpoints()["Endpoints"] == []


def test_release_stack_template():
    t = yaml.safe_load((ROOT / "cloud" / "release.yaml").read_text())
    res = t["Resources"]
    rule = res["ApprovedRule"]["Properties"]
    assert rule["EventPattern"]["detail-type"] == ["SageMaker Model Package State Change"]
    assert rule["EventPattern"]["detail"]["ModelApprovalStatus"] == ["Approved"]
    target = rule["Targets"][0]
    assert (
        target["Arn"] == {"Fn::GetAtt": ["ReleaseProject", "Arn"]}
        and "MODEL_PACKAGE_ARN" in target["InputTransformer"]["InputTemplate"]
    )
    assert (
        'earthsnap sagemaker release "$MODEL_PACKAGE_ARN"' in res["ReleaseProject"]["Properties"]["Source"]["BuildSpec"]
    )
    method = res["StartMethod"]["Properties"]
    assert method["HttpMethod"] == "POST" and method["AuthorizationType"] == "AWS_IAM"
    assert (
        method["Integration"]["RequestParameters"]["integration.request.header.X-Amz-Target"]
        == "'SageMaker.StartPipelineExecution'"
    )
    assert res["CiProject"]["Condition"] == "CiOnCodeBuild"  # CI on CodeBuild or GitHub Actions (tests/test_stack.py)
    ci = res["CiProject"]["Properties"]
    spec = yaml.safe_load(ci["Source"]["BuildSpec"])["phases"]["build"]["commands"]
    assert spec[0] == "make test" and "docker login" in spec[1] and spec[2] == "make image-push"
    assert "earthsnap sagemaker upsert" in spec[3] and "earthsnap sagemaker start" in spec[4]
    assert ci["Environment"]["PrivilegedMode"] is True  # docker builds the image
    image_vars = {v["Name"]: v["Value"] for v in ci["Environment"]["EnvironmentVariables"]}
    assert image_vars["EARTHSNAP_SAGEMAKER_IMAGE_REPOSITORY"] == {"Fn::GetAtt": ["ImageRepository", "RepositoryUri"]}
    assert res["ImageRepository"]["Type"] == "AWS::ECR::Repository" and "ImageRepositoryUri" in t["Outputs"]
    assert {"Type": "EVENT", "Pattern": "PUSH"} in ci["Triggers"]["FilterGroups"][0]
    r = subprocess.run([str(BIN / "cfn-lint"), str(ROOT / "cloud" / "release.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hierarchy_listings_in_the_bucket_start_each_models_pipeline(earthsnap, aws, tmp_path):
    """A dataset version committed in the bucket is cut into each model's listing there, and the printed commands create
    and start that model's own pipeline, reading its listing (against the emulator)."""
    import shlex
    import shutil

    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    # a prefix of its own: no code bundle shared with other tests
    env = {
        **aws,
        "EARTHSNAP_SAGEMAKER_BUCKET": f"s3://{BUCKET}/hier",
        # a project without a Dockerfile names its image
        "EARTHSNAP_SAGEMAKER_IMAGE": "111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap:team-1",
    }
    r = earthsnap("hierarchy", "listings", "--sagemaker", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "Run data QA on SageMaker first" in r.stderr, r.stdout + r.stderr
    r = earthsnap(
        "demo-data", "photos", "--groups", "2", "--species", "2", "--images", "4", "-q", cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr
    r = earthsnap(
        "qa",
        "photos",
        "--name",
        "demo",
        "--taxonomy",
        "photos/taxonomy.yaml",
        "-q",
        cwd=tmp_path,
        # where data QA commits it on SageMaker
        env={**env, "EARTHSNAP_DATASETS": f"s3://{BUCKET}/hier/datasets"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = earthsnap("hierarchy", "listings", "--sagemaker", "--model", "parnet", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "'parnet': not a model of the hierarchy" in r.stderr and "parent" in r.stderr, r.stderr

    r = earthsnap("hierarchy", "listings", "--sagemaker", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    uris = dict(re.findall(r"^  (\S+) .* (s3://\S+\.jsonl)$", r.stdout, re.M))
    assert list(uris) == ["parent", "acantha", "betula", "flat"], r.stdout
    s3 = emulated("s3", aws["AWS_ENDPOINT_URL"])

    def rows(uri):
        key = uri.removeprefix(f"s3://{BUCKET}/")
        return [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()]

    assert {x["label"] for x in rows(uris["parent"])} == {"acantha", "betula"}
    assert {x["label"] for x in rows(uris["acantha"])} == {"acantha_marginata", "acantha_glabra"} and len(
        rows(uris["flat"])
    ) == 16
    assert all(x["uri"].startswith(f"s3://{BUCKET}/hier/datasets/demo/objects/") for x in rows(uris["flat"]))

    line = next(s.strip() for s in r.stdout.splitlines() if "upsert --model acantha " in s)
    for command in line.split(" && "):
        args = shlex.split(command)
        assert args[0] == "earthsnap"
        done = earthsnap(*args[1:], cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    sm = emulated("sagemaker", aws["AWS_ENDPOINT_URL"])
    d = json.loads(sm.describe_pipeline(PipelineName="earthsnap-acantha")["PipelineDefinition"])
    defaults = {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}
    assert (
        defaults["source"] == uris["acantha"]
        and defaults["model_group"] == "hierarchy-acantha"
        and defaults["dataset_name"] == "demo-acantha"
    )
    assert len(sm.list_pipeline_executions(PipelineName="earthsnap-acantha")["PipelineExecutionSummaries"]) == 1
