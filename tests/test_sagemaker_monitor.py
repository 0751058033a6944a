"""The drift monitor of a SageMaker endpoint, run as SageMaker runs it, against the emulator.

moto (in server mode, started by the `moto_url` fixture and stopped by its pid) is an EMULATOR of the AWS API, not
AWS: it keeps the model package, the endpoint and its configuration, S3, EventBridge and SQS, and runs no job and no
container. So the monitor's processing job runs here, as `earthsnap-job process` in a folder laid out as SageMaker
lays out /opt/ml, and the capture files an endpoint would have written are written by us, in SageMaker's format
(`earthsnap.sagemaker.monitoring.capture_line`), into the S3 prefix the endpoint's DataCaptureConfig names.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import BIN, ROOT, clean_env
from earthsnap.core.config import load_config
from earthsnap.sagemaker.compiler import BUNDLE, code_bundle, compile_project
from earthsnap.sagemaker.monitoring import capture_line, first_look
from earthsnap.sagemaker.release import SageMakerRelease
from earthsnap.sagemaker.shapes import check_definition

BUCKET, ROLE = "es-monitor", "arn:aws:iam::111111111111:role/earthsnap-sagemaker"
PERIOD_END = "2026-11-30T10:00:00Z"  # the period checked: 09:00 to 10:00 UTC


def emulated(service: str, url: str):
    return boto3.client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture(scope="module")
def released(moto_url, tmp_path_factory):
    """A demo model released to the emulated endpoint earthsnap-species-prod, capturing to S3, and the capture files of
    one hour of its traffic there: 160 clean photos, then 160 in other light, plus a photo that is not one and a line
    that is not a capture record."""
    tmp = tmp_path_factory.mktemp("sagemaker-monitor")
    s3, sm = emulated("s3", moto_url), emulated("sagemaker", moto_url)
    s3.create_bucket(Bucket=BUCKET)
    demo = first_look(tmp / "demo", until=datetime.fromisoformat(PERIOD_END.replace("Z", "+00:00")).timestamp())
    s3.upload_file(demo.model_data, BUCKET, "models/species-1/model.tar.gz")
    sm.create_model_package_group(ModelPackageGroupName="species")
    arn = sm.create_model_package(
        ModelPackageGroupName="species",
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap:1",
                    "ModelDataUrl": f"s3://{BUCKET}/models/species-1/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    release = SageMakerRelease(
        ROLE,
        client=sm,
        runtime=emulated("sagemaker-runtime", moto_url),
        poll_s=0.1,
        capture_uri=f"s3://{BUCKET}/capture",
    )
    endpoint = release.deploy(arn, "prod")
    local = Path(demo.capture) / demo.endpoint
    files = sorted(local.rglob("*.jsonl"))
    for f in files:  # where SageMaker writes them: <DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/
        s3.upload_file(str(f), BUCKET, f"capture/prod/{endpoint}/{f.relative_to(local)}")
    odd = f"capture/prod/{endpoint}/{files[0].parent.relative_to(local)}/odd.jsonl"
    s3.put_object(
        Bucket=BUCKET,
        Key=odd,
        Body=(
            capture_line(b"not a photo", [], datetime.fromisoformat("2026-11-30T09:30:00+00:00").timestamp(), "e-odd")
            + "\n{oops\n"
        ).encode(),
    )
    return {"endpoint": endpoint, "arn": arn, "tmp": tmp}


def job(moto_url: str, ml: Path, *params: str) -> subprocess.CompletedProcess:
    """`earthsnap-job process` for the monitor notebook, as the compiled pipeline starts it (see
    test_the_pipeline_compiles).
    """
    (ml / "processing" / "input" / "bundle").mkdir(parents=True, exist_ok=True)
    (ml / "processing" / "input" / "bundle" / BUNDLE).write_bytes(code_bundle(ROOT / "pipeline")[0])
    args = [a for i in range(0, len(params), 2) for a in ("--param", params[i], params[i + 1])]
    env = clean_env(
        EARTHSNAP_SM_ROOT=str(ml),
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return subprocess.run(
        [str(BIN / "earthsnap-job"), "process", "--notebook", "sagemaker_monitor.ipynb", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ml,
    )


def test_the_monitor_job_reads_the_endpoints_capture_and_alerts_on_eventbridge(moto_url, released):
    events, sqs = emulated("events", moto_url), emulated("sqs", moto_url)
    queue = sqs.create_queue(QueueName="drift")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="drift",
        EventPattern=json.dumps({"source": ["earthsnap.monitor"], "detail-type": ["earthsnap Drift Alert"]}),
    )
    events.put_targets(Rule="drift", Targets=[{"Id": "queue", "Arn": queue_arn}])
    # the release stack's DriftRule, its SNS topic replaced by a queue
    told = sqs.create_queue(QueueName="people")["QueueUrl"]
    rule = yaml.safe_load((ROOT / "cloud" / "release.yaml").read_text())["Resources"]["DriftRule"]["Properties"]
    events.put_rule(Name="people", EventPattern=json.dumps(rule["EventPattern"]))
    events.put_targets(
        Rule="people",
        Targets=[
            {
                "Id": "people",
                "InputTransformer": rule["Targets"][0]["InputTransformer"],
                "Arn": sqs.get_queue_attributes(QueueUrl=told, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
            }
        ],
    )

    ml = released["tmp"] / "ml"
    r = job(
        moto_url,
        ml,
        "endpoint",
        released["endpoint"],
        "minutes",
        "60",
        "window",
        "80",
        "period_end",
        PERIOD_END,
        "bus",
        "default",
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = ml / "processing" / "output"
    summary = json.loads((report / "report" / "summary.json").read_text())
    assert (summary["endpoint"], summary["version"]) == (released["endpoint"], "species/1")  # as the release named it
    # through the model package
    assert summary["model_data"] == f"s3://{BUCKET}/models/species-1/model.tar.gz"
    assert (summary["since"], summary["until"]) == ("2026-11-30T09:00:00.000000Z", "2026-11-30T10:00:00.000000Z")
    # the photo that is not one: rejected, with why
    assert summary["read"] == 321 and summary["imported"] == 320
    assert len(summary["rejected"]) == 1 and "e-odd: the photo cannot be read" in summary["rejected"][0]
    assert summary["problems"] == [
        "odd.jsonl line 2: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    ]
    assert [w["drifted"] for w in summary["windows"]] == [False, False, True, True], summary["windows"]
    executed = (report / "notebook" / "sagemaker_monitor.ipynb").read_text()
    assert (
        "4 window(s) checked, 2 drifting" in executed
        and "image/png" in executed
        and (report / "notebook" / "sagemaker_monitor.html").exists()
    )

    got = []  # what EventBridge delivered to the rule's target
    for _ in range(5):
        got += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if len(got) >= 2:
            break
    alerts = [json.loads(m["Body"]) for m in got]
    assert sorted(a["detail"]["Window"]["FirstId"] for a in alerts) == [161, 241] and len(summary["published"]) == 2
    messages = [
        m["Body"]
        for m in sqs.receive_message(QueueUrl=told, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    ]
    assert len(messages) == 2 and all(
        f"endpoint {released['endpoint']} (species/1) serves drifts" in m for m in messages
    ), messages
    assert any("requests 161 to 240" in m for m in messages) and all(
        f"earthsnap retrain {released['endpoint']} --backend sagemaker" in m for m in messages
    )
    assert all(
        a["detail-type"] == "earthsnap Drift Alert"
        and a["detail"]["Endpoint"] == released["endpoint"]
        and a["resources"]
        == [emulated("sagemaker", moto_url).describe_endpoint(EndpointName=released["endpoint"])["EndpointArn"]]
        for a in alerts
    ), alerts


def test_an_endpoint_that_cannot_be_monitored_is_refused_with_why(moto_url, released):
    r = job(moto_url, released["tmp"] / "ml-none", "endpoint", "earthsnap-species-nope", "period_end", PERIOD_END)
    assert (
        r.returncode == 1 and "SageMaker refused describe_endpoint" in r.stderr and "earthsnap-species-nope" in r.stderr
    ), r.stderr[-2000:]
    sm = emulated("sagemaker", moto_url)  # an endpoint released without capture
    quiet = SageMakerRelease(
        ROLE, client=sm, runtime=emulated("sagemaker-runtime", moto_url), poll_s=0.1, prefix="quiet"
    ).deploy(released["arn"], "prod")
    r = job(moto_url, released["tmp"] / "ml-quiet", "endpoint", quiet, "period_end", PERIOD_END)
    assert r.returncode == 1 and f"Endpoint {quiet} does not capture what it serves" in r.stderr, r.stderr[-2000:]
    r = job(moto_url, released["tmp"] / "ml-bad", "endpoint", released["endpoint"], "minutes", "0")
    assert r.returncode == 1 and "A monitoring period must be longer than 0 minutes, not 0.0" in r.stderr, r.stderr[
        -2000:
    ]


def test_the_pipeline_compiles_and_the_release_stack_schedules_it(earthsnap, moto_url):
    """pipeline/monitoring.py compiles to one processing step that SageMaker's API takes (botocore's shapes), runs in
    every execution (never cached) with network access; `earthsnap sagemaker upsert/start --pipeline` create and start
    it (the emulator), and cloud/release.yaml starts it on a schedule with the prod endpoint's name."""
    settings = dict(
        sagemaker_region="us-east-1",
        sagemaker_bucket=f"s3://{BUCKET}/earthsnap",
        sagemaker_role=ROLE,
        sagemaker_image_repository="111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap",
    )
    _, compiled = compile_project(
        load_config(ROOT, env={}, **settings), pipeline_file=ROOT / "pipeline" / "monitoring.py"
    )
    d = compiled.definition()
    assert check_definition(d, compiled.pipeline.name) == [] and compiled.pipeline.name == "earthsnap-monitor"
    (step,) = d["Steps"]
    app = step["Arguments"]["AppSpecification"]
    assert (
        step["Type"] == "Processing"
        and "CacheConfig" not in step
        and app["ContainerEntrypoint"] == ["earthsnap-job", "process"]
    )
    assert (
        app["ContainerArguments"][:2] == ["--notebook", "sagemaker_monitor.ipynb"]
        and {"Get": "Parameters.endpoint"} in app["ContainerArguments"]
    )
    # it reaches SageMaker, S3 and EventBridge
    assert step["Arguments"]["NetworkConfig"]["EnableNetworkIsolation"] is False
    assert {p["Name"] for p in d["Parameters"]} == {"endpoint", "minutes", "window", "period_end", "bus"}

    env = clean_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=moto_url,
        EARTHSNAP_S3_ENDPOINT_URL=moto_url,
        **{f"EARTHSNAP_{k.upper()}": v for k, v in settings.items()},
    )
    r = earthsnap(
        "sagemaker",
        "upsert",
        "--pipeline",
        "pipeline/monitoring.py",
        cwd=ROOT,
        env={**env, "EARTHSNAP_SAGEMAKER_BUCKET": "s3://es-nowhere/x"},
    )
    assert (
        r.returncode == 2
        and "Cannot write 's3://es-nowhere/x/code/" in r.stderr
        and "bucket or folder does not exist" in r.stderr
    ), r.stderr[-2000:]
    s3 = emulated("s3", moto_url)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    r = earthsnap("sagemaker", "upsert", "--pipeline", "pipeline/monitoring.py", cwd=ROOT, env=env)
    assert (
        r.returncode == 0 and "created arn:aws:sagemaker:" in r.stdout and ":pipeline/earthsnap-monitor" in r.stdout
    ), r.stdout + r.stderr
    r = earthsnap(
        "sagemaker",
        "start",
        "--pipeline",
        "pipeline/monitoring.py",
        "-p",
        "endpoint=earthsnap-species-prod",
        "-p",
        "minutes=0",
        cwd=ROOT,
        env=env,
    )
    # refused before anything starts
    assert r.returncode == 2 and "Parameter 'minutes' must be at least 1" in r.stderr, r.stderr
    r = earthsnap(
        "sagemaker",
        "start",
        "--pipeline",
        "pipeline/monitoring.py",
        "-p",
        "endpoint=earthsnap-species-prod",
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    sent = emulated("sagemaker", moto_url).list_pipeline_parameters_for_execution(
        PipelineExecutionArn=r.stdout.split()[1]
    )["PipelineParameters"]
    assert sent == [{"Name": "endpoint", "Value": "earthsnap-species-prod"}]

    stack = yaml.safe_load((ROOT / "cloud" / "release.yaml").read_text())
    rule = stack["Resources"]["MonitorSchedule"]["Properties"]
    # every MonitorMinutes (rendered for 1 and more in tests/test_stack.py)
    assert "${MonitorMinutes}" in json.dumps(rule["ScheduleExpression"]) and rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert (
        target["Arn"]["Fn::Sub"].endswith(":pipeline/${MonitorPipelineName}")
        and stack["Parameters"]["MonitorPipelineName"]["Default"] == "earthsnap-monitor"
    )
    assert target["SageMakerPipelineParameters"]["PipelineParameterList"] == [
        {"Name": "endpoint", "Value": {"Ref": "MonitorEndpoint"}},
        {"Name": "minutes", "Value": {"Ref": "MonitorMinutes"}},
    ]
    role = stack["Resources"]["MonitorRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert role["Action"] == "sagemaker:StartPipelineExecution" and role["Resource"] == target["Arn"]
    from earthsnap.monitor.watch import ALERT_TYPE
    from earthsnap.sagemaker.monitoring import ALERT_SOURCE

    drift = stack["Resources"]["DriftRule"]["Properties"]  # the alerts the job puts are told to people (SNS)
    assert drift["EventPattern"] == {"source": [ALERT_SOURCE], "detail-type": [ALERT_TYPE]} and drift["Targets"][0][
        "Arn"
    ] == {"Ref": "DriftTopic"}
    (publish,) = stack["Resources"]["DriftTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    # EventBridge publishes to the topic, for DriftRule only
    assert publish["Principal"] == {"Service": "events.amazonaws.com"} and publish["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["DriftRule", "Arn"]}}
    }
    ci = yaml.safe_load(stack["Resources"]["CiProject"]["Properties"]["Source"]["BuildSpec"])["phases"]["build"][
        "commands"
    ]
    assert ".venv/bin/earthsnap sagemaker upsert --pipeline pipeline/monitoring.py" in ci


def test_photos_sagemaker_served_are_reviewed_here_and_retrain_on_sagemaker(earthsnap, moto_url, released, tmp_path):
    """What a SageMaker endpoint captured is pulled into the review queue here; the photos people labelled become the
    listing of a new dataset version in the bucket, derived from the live model's, and an execution of the project's
    SageMaker pipeline starts on it from the live weights (against the emulator: the execution is started, not run)."""
    import shutil
    import sqlite3
    import time

    project = tmp_path / "project"
    shutil.copytree(ROOT / "pipeline", project / "pipeline")
    base = f"s3://{BUCKET}/earthsnap"
    env = clean_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=moto_url,
        EARTHSNAP_S3_ENDPOINT_URL=moto_url,
        EARTHSNAP_SAGEMAKER_REGION="us-east-1",
        EARTHSNAP_SAGEMAKER_BUCKET=base,
        EARTHSNAP_SAGEMAKER_ROLE=ROLE,
        EARTHSNAP_SAGEMAKER_IMAGE="111111111111.dkr.ecr.us-east-1.amazonaws.com/earthsnap:team-1",
        EARTHSNAP_DATASETS=f"{base}/datasets",
    )

    def ok(*args):
        r = earthsnap(*args, cwd=project, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    # the live model's lineage: a dataset version in the bucket, the records made from it, the package that names them
    ok("demo-data", "photos", "--groups", "2", "--species", "2", "--images", "6", "-q")
    committed = ok("qa", "photos", "--name", "demo", "--taxonomy", "photos/taxonomy.yaml", "-q")
    dataset = next(w.strip(",.:") for w in committed.split() if w.startswith("demo@"))
    records = f"{base}/earthsnap/runs/x/preprocess/records"
    s3, sm = emulated("s3", moto_url), emulated("sagemaker", moto_url)
    # the records the demo model was trained on, as if made from that version
    made = released["tmp"] / "demo" / "model" / "data" / "records"

    def upload_records(prefix: str):
        for f in made.iterdir():
            body = (
                f.read_bytes()
                if f.name != "summary.json"
                else json.dumps({**json.loads(f.read_text()), "dataset": dataset}).encode()
            )
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{f.name}", Body=body)

    upload_records("earthsnap/earthsnap/runs/x/preprocess/records")
    arn = sm.create_model_package(
        ModelPackageGroupName="species",
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties={"input_records": records},
        InferenceSpecification=sm.describe_model_package(ModelPackageName=released["arn"])["InferenceSpecification"],
    )["ModelPackageArn"]
    endpoint = SageMakerRelease(
        ROLE,
        client=sm,
        runtime=emulated("sagemaker-runtime", moto_url),
        poll_s=0.1,
        prefix="retrain",
        capture_uri=f"s3://{BUCKET}/capture",
    ).deploy(arn, "prod")
    # the same hour of traffic
    for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"capture/prod/{released['endpoint']}/")["Contents"]:
        s3.copy_object(
            Bucket=BUCKET,
            Key=o["Key"].replace(released["endpoint"], endpoint),
            CopySource={"Bucket": BUCKET, "Key": o["Key"]},
        )
    ok("sagemaker", "upsert")

    # a package without lineage
    r = earthsnap("retrain", released["endpoint"], "--backend", "sagemaker", cwd=project, env=env)
    assert r.returncode == 2 and "has no records in its metadata (input_records)" in r.stderr, r.stdout + r.stderr
    r = earthsnap("retrain", endpoint, "--backend", "sagemaker", cwd=project, env=env)
    assert (
        r.returncode == 2
        and f"No photo from {endpoint} has been labelled yet" in r.stderr
        and "--sagemaker" in r.stderr
    ), r.stderr

    since = datetime.fromisoformat(PERIOD_END.replace("Z", "+00:00")).timestamp() - 3600
    minutes = str(int((time.time() - since) / 60) + 5)
    pulled = ok("review", "fill", endpoint, "--sagemaker", "--minutes", minutes)
    assert (
        f"pulled 320 new request(s) of {endpoint} (species/2)" in pulled and "e-odd: the photo cannot be read" in pulled
    ), pulled
    assert "photo(s) queued" in pulled and "0 photo(s) queued" not in pulled, pulled
    # pulled twice, kept once
    assert "pulled 0 new request(s)" in ok("review", "fill", endpoint, "--sagemaker", "--minutes", minutes)

    from earthsnap.core.config import load_config as config_of
    from earthsnap.monitor.review import ReviewQueue

    q = ReviewQueue(config_of(project, env=env))
    waiting = q.items(pending=True, endpoint=endpoint)
    assert len(waiting) >= 5 and all(i.version == "species/2" for i in waiting)
    for item in waiting[:4]:
        q.decide(item.id, "relabelled", "tester", label=item.predicted)
    q.decide(waiting[4].id, "not_in_taxonomy", "tester")

    started = ok("retrain", endpoint, "--backend", "sagemaker", "-p", "epochs=7")
    arn_line = next(line for line in started.splitlines() if line.startswith("started "))
    execution = arn_line.split()[1]
    assert "4 reviewed photo(s) added to " + dataset in started and "1 kept apart" in started, started
    sent = {
        p["Name"]: p["Value"]
        for p in sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution)["PipelineParameters"]
    }
    assert sent["dataset_parent"] == dataset and sent["dataset_name"] == "demo" and sent["epochs"] == "7", sent
    assert sent["source"].startswith(f"{base}/retrain/retrain-") and sent["source"].endswith("/listing.jsonl")
    assert (
        sent["init_weights"] == sent["source"].replace("listing.jsonl", "live/model.safetensors")
        and json.loads(sent["hyperparameters"])["width"] > 0
    )
    assert sent["taxonomy"].startswith(f"{base}/datasets/demo/")

    def key(uri):
        return uri.removeprefix(f"s3://{BUCKET}/")

    rows = [
        json.loads(line)
        for line in s3.get_object(Bucket=BUCKET, Key=key(sent["source"]))["Body"].read().decode().splitlines()
    ]
    reviewed = [r for r in rows if "/retrain/" in r["uri"]]
    assert (
        len(rows) == 24 + 4 and len(reviewed) == 4 and all(r["uri"].startswith(f"{base}/retrain/") for r in rows[-4:])
    )
    # the photos are there
    assert all(s3.head_object(Bucket=BUCKET, Key=key(r["uri"]))["ContentLength"] > 0 for r in reviewed)
    prov = [
        json.loads(line)
        for line in s3.get_object(Bucket=BUCKET, Key=key(sent["source"].replace("listing", "provenance")))["Body"]
        .read()
        .decode()
        .splitlines()
    ]
    assert {(p["reviewer"], p["endpoint"], p["model_version"]) for p in prov} == {("tester", endpoint, "species/2")}
    with sqlite3.connect(project / ".earthsnap" / "registry.db") as db:
        assert db.execute("SELECT endpoint, live, labelled, run_id FROM retrain_runs").fetchall() == [
            (endpoint, "species/2", 4, execution)
        ]

    waiting = ok("retrain-status")  # the emulator runs no execution: nothing registered yet
    assert f"execution {execution}: " in waiting and "no candidate registered yet" in waiting, waiting
    # what the execution's register step does on SageMaker: a package pending approval naming the execution and its
    # records
    upload_records("earthsnap/earthsnap/runs/y/preprocess/records")
    sm.create_model_package(
        ModelPackageGroupName="species",
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={
            "execution": execution.rsplit("/", 1)[-1],
            "input_records": f"{base}/earthsnap/runs/y/preprocess/records",
        },
        InferenceSpecification=sm.describe_model_package(ModelPackageName=arn)["InferenceSpecification"],
    )
    shown = ok("retrain-status")
    assert "candidate species/3 (PendingManualApproval) against live species/2:" in shown, shown
    original = next(line for line in shown.splitlines() if "original test split" in line).split()
    # the same archive: the same accuracy
    assert original[-3:] == [original[-3], original[-2], original[-2]] and original[-3] == "22", shown
    assert "earthsnap registry approve species/3 --backend sagemaker" in shown
    with sqlite3.connect(project / ".earthsnap" / "registry.db") as db:
        assert db.execute("SELECT candidate FROM retrain_runs").fetchall() == [("species/3",)]
