"""The compiled SageMaker definitions, checked offline the way SageMaker reads them (issue 18's defects).

Nothing here reaches AWS or the emulator: the definitions are checked against botocore's request shapes
(`earthsnap.sagemaker.shapes`), and two executions are simulated to compare the cache-key attributes SageMaker
compares, resolved the way the service resolves them.
"""

from __future__ import annotations

import copy
import functools
import json
import re

import pytest

from conftest import ROOT
from earthsnap.core.config import load_config
from earthsnap.model.training import METRIC_DEFINITIONS
from earthsnap.sagemaker.compiler import CompileError, compile_project
from earthsnap.sagemaker.shapes import check_definition

SETTINGS = dict(
    sagemaker_region="eu-west-1",
    sagemaker_bucket="s3://es-team/earthsnap",
    sagemaker_role="arn:aws:iam::111111111111:role/earthsnap-sagemaker",
    sagemaker_image_repository="111111111111.dkr.ecr.eu-west-1.amazonaws.com/earthsnap",
)
WEIGHTS = "s3://es-team/earthsnap/weights/" + "5" * 64 + "-0123456789ab"  # as `earthsnap weights fetch --to` names
ZOO_VALUES = {"arch": "resnet18", "weights": WEIGHTS}
BUILTIN_SPACE = {"search_space": '{"lr": [0.001, 0.1, "log"], "optimizer": ["sgd"]}'}
# AWS's "default cache key attributes by pipeline step type"
# (https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html)
KEYED = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
    "Tuning": ("HyperParameterTuningJobConfig", "TrainingJobDefinition", "TrainingJobDefinitions"),
}
# (of a tuning step's TrainingJobDefinition, AWS keys AlgorithmSpecification, HyperParameterRanges,
# InputDataConfig, StaticHyperParameters and TuningObjective; the simulation keys all of it: stricter)


def cfg(**extra):
    return load_config(ROOT, env={}, **SETTINGS, **extra)


VARIANTS = {
    "notebook": lambda: compile_project(cfg()),
    "builtin": lambda: compile_project(cfg(), BUILTIN_SPACE, trainer="builtin"),
    "zoo backbone": lambda: compile_project(cfg(), ZOO_VALUES),
    "builtin pretrained": lambda: compile_project(
        cfg(), {**BUILTIN_SPACE, "arch": "resnet50", "weights": "imagenet", "image_size": 224}, trainer="builtin"
    ),
    "spot": lambda: compile_project(cfg(), {"use_spot_instances": True}),
    "two instances": lambda: compile_project(cfg(), {"instance_count": 2, "processes_per_node": 4}),
    "shards on two instances": lambda: compile_project(cfg(), {"instance_count": 2, "train_shards": 8}),
    "gpu training": lambda: compile_project(cfg(), {"training_instance_type": "ml.g5.2xlarge", "compile": "default"}),
    "hierarchy model": lambda: compile_project(cfg(), model="acantha"),
    "hierarchy model with an underscore": lambda: compile_project(cfg(), model="sea_birds"),
    "builtin hierarchy model": lambda: compile_project(cfg(), BUILTIN_SPACE, trainer="builtin", model="sea_birds"),
}


@functools.cache
def compiled_once(variant: str):
    "VARIANTS[variant], compiled once for the tests that only read it."
    return VARIANTS[variant]()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_definition_fits_the_api_shapes(variant):
    "Every definition the project compiles passes the check of botocore's request shapes (compile_project runs it too)."
    pipeline, compiled = compiled_once(variant)
    d = compiled.definition()
    assert check_definition(d, compiled.pipeline.name) == []
    assert json.loads(compiled.pipeline.definition()) == d


def test_builtin_trainer_defects_are_fixed_or_refused():
    _, c = compiled_once("builtin")
    steps = {s["Name"]: s for s in c.definition()["Steps"]}
    hp = steps["train"]["Arguments"]["HyperParameters"]
    assert all(isinstance(v, str) or "Std:Join" in v or "Get" in v for v in hp.values()), hp  # no bare JSON numbers
    assert steps["train"]["Arguments"]["ResourceConfig"]["InstanceType"].startswith(("ml.p", "ml.g"))
    tune = steps["tune"]["Arguments"]
    assert tune["TrainingJobDefinition"]["ResourceConfig"]["InstanceType"].startswith(("ml.p", "ml.g"))
    cats = {
        r["Name"]: r["Values"]
        for r in tune["HyperParameterTuningJobConfig"]["ParameterRanges"]["CategoricalParameterRanges"]
    }
    assert cats == {"optimizer": ["nag"]}
    with pytest.raises(CompileError, match="tries optimizer 'adamw'"):
        compile_project(cfg(), {"search_space": '{"optimizer": ["adamw"]}'}, trainer="builtin")
    # what the old compiler emitted is what the shape check refuses: a JSON number where a hyperparameter is text
    bare = copy.deepcopy(steps)
    bare["train"]["Arguments"]["HyperParameters"]["num_classes"] = hp["num_classes"]["Std:Join"]["Values"][0]
    found = check_definition({**c.definition(), "Steps": list(bare.values())})
    assert any(
        "HyperParameters['num_classes']: JsonGet classes is integer; the API takes string" in p for p in found
    ), found


def _walk(o):
    "Every dict inside a definition (conditions hold their steps inside them)."
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from _walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from _walk(v)


def test_a_zoo_backbone_gets_its_weights_from_s3_as_an_input():
    "Weights reach the trials and the training job as a channel, offline, isolated; a name only a hub has is refused."
    _, c = compiled_once("zoo backbone")
    d = c.definition()
    assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}["weights"] == WEIGHTS + "/"  # a folder
    steps = {s["Name"]: s["Arguments"] for s in d["Steps"]}
    train, trial = steps["train"], steps["tune"]["TrainingJobDefinition"]
    for job, hp in ((train, train["HyperParameters"]), (trial, trial["StaticHyperParameters"])):
        (chan,) = [ch for ch in job["InputDataConfig"] if ch["ChannelName"] == "weights"]
        assert chan["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.weights"}
        assert hp["earthsnap_channels"] == "weights" and "earthsnap_param_weights" not in hp
        assert job["Environment"] == {"HF_HUB_OFFLINE": "1", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert trial["EnableNetworkIsolation"] is True  # it reads nothing but its channels
    assert all(s["Environment"]["HF_HUB_OFFLINE"] == "1" for s in steps.values() if "ProcessingResources" in s)
    ranges = steps["tune"]["HyperParameterTuningJobConfig"]["ParameterRanges"].values()
    searched = {r["Name"] for rs in ranges for r in rs}
    assert "lr" in searched and not searched & {"arch", "width", "depth"}, searched  # arch fixes the network
    # weights of earthsnap's own network fix its width and depth; weights without arch cannot be searched across
    own = compile_project(cfg(), {"arch": "resnet", "weights": WEIGHTS})[1].definition()
    tune = {s["Name"]: s["Arguments"] for s in own["Steps"]}["tune"]["HyperParameterTuningJobConfig"]
    searched = {r["Name"] for rs in tune["ParameterRanges"].values() for r in rs}
    assert "lr" in searched and not searched & {"arch", "width", "depth"}, searched
    with pytest.raises(CompileError, match="Give -p arch=NAME, the network the weights are for"):
        compile_project(cfg(), {"weights": WEIGHTS})
    # the registered package names the network and the S3 folder its weights came from (named by their sha256)
    meta = [o["CustomerMetadataProperties"] for o in _walk(d) if "CustomerMetadataProperties" in o]
    assert meta and meta[0]["lineage.backbone.arch"] == "resnet18"
    assert meta[0]["lineage.backbone.weights.source"] == {"Get": "Parameters.weights"}
    # without weights: no channel, and no parameter an execution could set to ask for one
    _, plain = compiled_once("notebook")
    pd = plain.definition()
    assert "weights" not in {p["Name"] for p in pd["Parameters"]}
    assert {s["Name"]: s["Arguments"] for s in pd["Steps"]}["train"]["HyperParameters"]["earthsnap_param_weights"] == ""
    # names that only the hub, the registry or this machine can resolve are refused, with the command that helps
    for value, fetch in (("imagenet", "resnet18"), ("species/3", "species/3"), ("weights/resnet", "weights/resnet")):
        with pytest.raises(CompileError, match=f"earthsnap weights fetch {fetch} --to s3://es-team/earthsnap/weights"):
            compile_project(cfg(), {**ZOO_VALUES, "weights": value})


def test_the_builtin_trainers_own_transfer_learning_is_reachable():
    _, c = compiled_once("builtin pretrained")
    hp = {s["Name"]: s["Arguments"] for s in c.definition()["Steps"]}["train"]["HyperParameters"]
    assert (hp["use_pretrained_model"], hp["num_layers"]) == ("1", "50")
    _, plain = compiled_once("builtin")
    hp = {s["Name"]: s["Arguments"] for s in plain.definition()["Steps"]}["train"]["HyperParameters"]
    assert (hp["use_pretrained_model"], hp["num_layers"]) == ("0", "18")
    refused = {
        "pretrained networks take 224 px images, and image_size is 64": {"weights": "imagenet"},
        "arch=mobilenet_v2 is not a network of SageMaker's built-in image classifier": {"arch": "mobilenet_v2"},
        "starts from its own ImageNet weights": {"weights": WEIGHTS, "image_size": 224},
    }
    for message, values in refused.items():
        with pytest.raises(CompileError, match=message):
            compile_project(cfg(), {**BUILTIN_SPACE, **values}, trainer="builtin")


def test_spot_training_waits_for_capacity_and_keeps_its_checkpoints():
    "use_spot_instances trains on spot capacity with a wait SageMaker accepts; the checkpoint prefix is there to go on."
    pipeline, c = compiled_once("spot")
    train = {s["Name"]: s["Arguments"] for s in c.definition()["Steps"]}["train"]
    runtime = next(s for s in pipeline.steps if s.name == "train").timeout or 86_400  # SageMaker's default: a day
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": runtime, "MaxWaitTimeInSeconds": 2 * runtime}
    assert train["CheckpointConfig"]["S3Uri"]["Std:Join"]["Values"][:4] == [
        "s3://es-team/earthsnap",
        "earthsnap",
        "notebooks",
        "train",
    ]
    assert any(n.startswith("parameter use_spot_instances: applied when the pipeline is compiled") for n in c.notes)
    _, plain = compiled_once("notebook")
    train = {s["Name"]: s["Arguments"] for s in plain.definition()["Steps"]}["train"]
    assert not train.get("EnableManagedSpotTraining")
    assert "MaxWaitTimeInSeconds" not in train.get("StoppingCondition", {})
    waited = compile_project(cfg(), {"use_spot_instances": True, "max_wait": 3 * runtime})[1].definition()
    train = {s["Name"]: s["Arguments"] for s in waited["Steps"]}["train"]
    assert train["StoppingCondition"]["MaxWaitTimeInSeconds"] == 3 * runtime
    trial = {s["Name"]: s["Arguments"] for s in compiled_once("spot")[1].definition()["Steps"]}["tune"]
    assert trial["TrainingJobDefinition"]["EnableManagedSpotTraining"] is True  # the trials too, from their checkpoints
    with pytest.raises(CompileError, match="built-in image classifier keeps none"):
        compile_project(cfg(), {**BUILTIN_SPACE, "use_spot_instances": True}, trainer="builtin")
    with pytest.raises(CompileError, match=f"(?s)less than it may run \\({runtime} s\\).*-p max_wait={2 * runtime}"):
        compile_project(cfg(), {"use_spot_instances": True, "max_wait": 600})


def test_jobs_on_gpu_instances_run_the_gpu_image():
    """training_instance_type puts the trials and the training on GPU instances, which run the GPU variant of
    earthsnap's image; the processing jobs keep the CPU image, and so do the trainings on CPU instances."""
    ecr = SETTINGS["sagemaker_image_repository"]
    _, c = compiled_once("gpu training")
    steps = {s["Name"]: s["Arguments"] for s in c.definition()["Steps"]}
    trial = steps["tune"]["TrainingJobDefinition"]
    for job in (steps["train"], trial):
        assert job["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
        image = job["AlgorithmSpecification"]["TrainingImage"]
        assert image.startswith(f"{ecr}:es-") and image.endswith("-gpu"), image
    processing = [s["AppSpecification"]["ImageUri"] for s in steps.values() if "AppSpecification" in s]
    assert processing and all(i.startswith(f"{ecr}:es-") and not i.endswith("-gpu") for i in processing), processing
    assert (
        processing[0] + "-gpu" == steps["train"]["AlgorithmSpecification"]["TrainingImage"]
    )  # one build, two variants
    assert c.fixed["training_instance_type"] == "ml.g5.2xlarge"
    assert steps["train"]["HyperParameters"]["earthsnap_param_compile"] == {"Get": "Parameters.compile"}
    _, plain = compiled_once("notebook")
    train = {s["Name"]: s["Arguments"] for s in plain.definition()["Steps"]}["train"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == processing[0]
    own = compile_project(
        cfg(sagemaker_image="team/own:1", sagemaker_gpu_image="team/own:1-cuda"),
        {"training_instance_type": "ml.p4d.24xlarge"},
    )[1].definition()
    images = {s["Name"]: json.dumps(s["Arguments"]) for s in own["Steps"]}
    assert '"team/own:1-cuda"' in images["train"] and '"team/own:1"' in images["preprocess"]
    with pytest.raises(Exception, match="ml.x9.huge"):  # not an instance type SageMaker has: the shapes check says
        compile_project(cfg(), {"training_instance_type": "ml.x9.huge"})


def test_each_instance_is_handed_its_own_shards():
    """With the train split in shards and several instances, the training's train channel is ShardedByS3Key over the
    shards; train_shards is fixed when compiled (it decides the channel), the other channels are whole."""
    _, c = compiled_once("shards on two instances")
    steps = {s["Name"]: s["Arguments"] for s in c.definition()["Steps"]}
    channels = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"] for ch in steps["train"]["InputDataConfig"]}
    assert channels["train"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert channels["train"]["S3Uri"]["Std:Join"]["Values"][-1] == "train-"  # the shards' .rec files: nothing else
    assert channels["train_index"]["S3Uri"]["Std:Join"]["Values"][-1] == "index/train-"  # their indexes, to each
    assert all(ch.get("S3DataDistributionType", "FullyReplicated") == "FullyReplicated"
               for name, ch in channels.items() if name != "train")  # fmt: skip
    trial = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"]
             for ch in steps["tune"]["TrainingJobDefinition"]["InputDataConfig"]}  # fmt: skip
    assert trial["train"]["S3Uri"]["Std:Join"]["Values"][-1] == "tune_train."  # the tuning subset is one file
    args = steps["preprocess"]["AppSpecification"]["ContainerArguments"]
    assert args[args.index("train_shards") + 1] == "8"  # the very count the channel was made for
    assert c.fixed["train_shards"] == 8
    assert "train_shards" not in {p["Name"] for p in c.definition()["Parameters"]}
    one = compile_project(cfg(), {"train_shards": 8})[1].definition()
    train = {s["Name"]: s["Arguments"] for s in one["Steps"]}["train"]
    source = next(ch for ch in train["InputDataConfig"] if ch["ChannelName"] == "train")["DataSource"]["S3DataSource"]
    assert source["S3Uri"]["Std:Join"]["Values"][-1] == "train-"  # one instance: all shards, a copy
    assert source.get("S3DataDistributionType", "FullyReplicated") == "FullyReplicated"
    with pytest.raises(CompileError, match=r"(?s)train_shards=3 for 4 instances.*-p train_shards=8"):
        compile_project(cfg(), {"instance_count": 4, "train_shards": 3})
    with pytest.raises(CompileError, match="reads one .rec a channel; train_shards=8"):
        compile_project(cfg(), {**BUILTIN_SPACE, "train_shards": 8}, trainer="builtin")


def test_a_training_can_use_several_instances():
    "instance_count makes the training job's InstanceCount (fixed when compiled); the other steps stay on one."
    _, c = compiled_once("two instances")
    steps = {s["Name"]: s["Arguments"] for s in c.definition()["Steps"]}
    assert steps["train"]["ResourceConfig"]["InstanceCount"] == 2
    assert steps["tune"]["TrainingJobDefinition"]["ResourceConfig"]["InstanceCount"] == 1
    assert all(
        s["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
        for s in steps.values()
        if "ProcessingResources" in s
    )
    processes = steps["train"]["HyperParameters"]["earthsnap_param_processes"]  # text, as hyperparameters are
    assert processes == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.processes_per_node"}]}}
    assert c.fixed["instance_count"] == 2


def test_names_are_derived_valid_or_refused():
    _, c = compiled_once("hierarchy model with an underscore")
    d = c.definition()
    assert c.pipeline.name == "earthsnap-sea-birds"
    assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}["model_group"] == "hierarchy-sea-birds"
    # (a dataset name may keep it)
    assert "earthsnap-sea-birds" in json.dumps(d) and "sea_birds" not in json.dumps(d).replace("demo-sea_birds", "")
    # the old names are what the shape check refuses
    found = check_definition(
        {
            **d,
            "Parameters": [
                {**p, "DefaultValue": "hierarchy-sea_birds"} if p["Name"] == "model_group" else p
                for p in d["Parameters"]
            ],
        },
        "earthsnap-sea_birds",
    )
    assert any("pipeline name: 'earthsnap-sea_birds' does not match" in p for p in found), found
    assert any("(default of Parameters.model_group): 'hierarchy-sea_birds' does not match" in p for p in found), found


def resolve(v, ex):
    "A definition value as the service resolves it in execution `ex` (parameters at their defaults)."
    if isinstance(v, list):
        return [resolve(x, ex) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1 and "Get" in v:
        ref = v["Get"]
        if ref.startswith("Parameters."):
            return ex["params"][ref.split(".", 1)[1]]
        if ref.startswith("Execution."):
            return ex["id"] if ref == "Execution.PipelineExecutionId" else ex["name"]
        step, _, path = ref.split(".", 1)[1].partition(".")
        return ex["props"][step][path]
    if len(v) == 1 and "Std:Join" in v:
        return v["Std:Join"]["On"].join(str(resolve(x, ex)) for x in v["Std:Join"]["Values"])
    if len(v) == 1 and "Std:JsonGet" in v:  # the same photos: data QA writes the same qa.json
        return f"json:{v['Std:JsonGet']['PropertyFile']['Get']}:{v['Std:JsonGet']['Path']}"
    return {k: resolve(x, ex) for k, x in v.items()}


def execute(definition: dict, ex_id: str, before: dict | None = None) -> dict:
    """Simulate an execution: each job step hits the cache when it is cached and its resolved keyed attributes equal the
    earlier run's.
    """
    ex = {
        "id": ex_id,
        "name": "earthsnap",
        "params": {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]},
        "props": {},
        "keys": {},
        "hits": set(),
    }
    for s in definition["Steps"]:
        if s["Type"] not in KEYED:
            continue
        a = s["Arguments"]
        key = json.dumps({k: resolve(a.get(k), ex) for k in KEYED[s["Type"]]}, sort_keys=True)
        ex["keys"][s["Name"]] = key
        if before and s.get("CacheConfig", {}).get("Enabled") and before["keys"].get(s["Name"]) == key:
            ex["hits"].add(s["Name"])
            ex["props"][s["Name"]] = before["props"][s["Name"]]
            continue
        if s["Type"] == "Processing":  # a new job, a new name, writes its outputs where this execution says
            ex["props"][s["Name"]] = {
                f"ProcessingOutputConfig.Outputs['{o['OutputName']}'].S3Output.S3Uri": resolve(
                    o["S3Output"]["S3Uri"], ex
                )
                for o in a["ProcessingOutputConfig"]["Outputs"]
            } | {"ProcessingJobName": f"{s['Name']}-{ex_id}"}
        elif s["Type"] == "Training":  # a new job, a new name: a new model
            ex["props"][s["Name"]] = {
                "ModelArtifacts.S3ModelArtifacts": (
                    f"{a['OutputDataConfig']['S3OutputPath']}/{s['Name']}-{ex_id}/output/model.tar.gz"
                )
            }
        else:  # a new tuning job: its best trial's values may differ
            names = [r["Name"] for rs in a["HyperParameterTuningJobConfig"]["ParameterRanges"].values() for r in rs]
            ex["props"][s["Name"]] = {f"BestTrainingJob.TunedHyperParameters['{n}']": f"{n}-of-{ex_id}" for n in names}
    return ex


@pytest.mark.parametrize("variant", ["notebook", "builtin", "zoo backbone"])
def test_a_second_execution_of_the_same_inputs_hits_every_cached_step(variant):
    "Compiled twice, executed twice with different execution ids and the same parameters: every cached step is a hit."
    first_def, second_def = compiled_once(variant)[1].definition(), VARIANTS[variant]()[1].definition()  # two compiles
    assert first_def == second_def  # compiling is deterministic
    cached = {s["Name"] for s in first_def["Steps"] if s.get("CacheConfig", {}).get("Enabled")}
    assert {"preprocess", "tune"} <= cached
    first = execute(first_def, "exec-1111")
    second = execute(second_def, "exec-2222", before=first)
    assert second["hits"] == cached, (
        cached - second["hits"],
        {n: (first["keys"][n], second["keys"][n]) for n in cached - second["hits"]},
    )
    for name in cached:
        # nothing of this execution in a key (the first one's outputs are handed on)
        assert "exec-2222" not in second["keys"][name], name
    # (while outputs of steps that run go under the execution)
    assert "exec-2222" in json.dumps(second["props"]["data_qa"])


def _jobs(definition: dict) -> dict:
    "Step name -> the job request of each job step (a tuning step's: its trials' training job definition)."
    steps = {s["Name"]: s for s in _walk(definition["Steps"]) if "Type" in s and "Arguments" in s}
    return {
        n: s["Arguments"]["TrainingJobDefinition"] if s["Type"] == "Tuning" else s["Arguments"]
        for n, s in steps.items()
        if s["Type"] in KEYED
    }


@pytest.mark.parametrize("variant", ["notebook", "zoo backbone", "builtin", "monitoring"])
def test_every_job_of_earthsnaps_image_has_the_region_where_boto3_reads_it(variant):
    """AWS_DEFAULT_REGION is the pipeline's region in every job that runs earthsnap's image (botocore does not read
    AWS_REGION): the monitor's job makes boto3 clients of SageMaker and EventBridge."""
    if variant == "monitoring":
        d = compile_project(cfg(), pipeline_file=ROOT / "pipeline" / "monitoring.py")[1].definition()
    else:
        d = compiled_once(variant)[1].definition()
    image = SETTINGS["sagemaker_image_repository"]
    ours = {
        n: j
        for n, j in _jobs(d).items()
        if (j.get("AppSpecification", {}).get("ImageUri") or j["AlgorithmSpecification"]["TrainingImage"]).startswith(
            image
        )
    }
    assert ours and (variant != "notebook" or set(ours) >= {"preprocess", "tune", "train", "evaluate"}), ours
    for name, job in ours.items():
        assert job["Environment"]["AWS_DEFAULT_REGION"] == "eu-west-1", name
        assert job["Environment"]["HF_HUB_OFFLINE"] == "1", name


def test_training_jobs_declare_the_metrics_the_notebook_prints():
    """The training step's job declares train and validation loss and accuracy (SageMaker's console and CloudWatch
    show them), as the trials do; the built-in algorithm publishes its own."""
    names = ["train:loss", "train:accuracy", "validation:loss", "validation:accuracy"]
    assert sorted(d["Name"] for d in METRIC_DEFINITIONS) == sorted(names)
    line = "kept epoch 2: train_loss=0.4113 train:accuracy=0.8800 validation:loss=0.3901 validation:accuracy=0.8700"
    assert [re.findall(d["Regex"], line) for d in METRIC_DEFINITIONS] == [
        ["0.4113"],
        ["0.8800"],
        ["0.3901"],
        ["0.8700"],
    ]
    for variant in ("notebook", "zoo backbone", "spot"):
        jobs = _jobs(compiled_once(variant)[1].definition())
        assert jobs["train"]["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS, variant
        assert jobs["tune"]["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS, variant
    builtin = _jobs(compiled_once("builtin")[1].definition())
    assert "MetricDefinitions" not in builtin["train"]["AlgorithmSpecification"]


def test_each_job_keeps_its_notebooks_and_checkpoints_under_a_prefix_of_its_own():
    """SageMaker copies a job's whole checkpoint prefix into it when it starts: the training (not cached) has one per
    execution, the tuning step's trials (cached) one per records it tunes on, which its cache key holds already, so a
    second execution still hits the cache (test above) and a new one downloads nothing of the others'."""
    d = compiled_once("notebook")[1].definition()
    first = execute(d, "exec-1111")
    second = execute(d, "exec-2222", before=first)
    assert "tune" in second["hits"] and "train" not in second["hits"]

    def prefix(ex, step):
        return resolve(_jobs(d)[step]["CheckpointConfig"]["S3Uri"], ex)

    assert prefix(first, "train") == "s3://es-team/earthsnap/earthsnap/notebooks/train/exec-1111"
    assert prefix(second, "train") == "s3://es-team/earthsnap/earthsnap/notebooks/train/exec-2222"
    assert (
        prefix(first, "tune")
        == prefix(second, "tune")
        == ("s3://es-team/earthsnap/earthsnap/notebooks/tune/preprocess-exec-1111")
    )
    # new records (here: a preprocessing job run anew): the tuning runs again, under a prefix of its own
    third = execute(d, "exec-3333", before={**second, "keys": {**second["keys"], "preprocess": "other photos"}})
    assert "tune" not in third["hits"] and prefix(third, "tune").endswith("/notebooks/tune/preprocess-exec-3333")
    # the executed notebooks under each: the folder of each training job (earthsnap.sagemaker.job), every trial's own
    assert all(j["CheckpointConfig"].get("LocalPath", "/opt/ml/checkpoints") == "/opt/ml/checkpoints"
               for n, j in _jobs(d).items() if "CheckpointConfig" in j)  # fmt: skip
