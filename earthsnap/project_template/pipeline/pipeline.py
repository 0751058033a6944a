"""The EarthSnap pipeline: the step notebooks of this folder, wired by what each reads from the others.

`earthsnap run` runs it here, `earthsnap dag` draws it, and `earthsnap.run()` runs it from a notebook.
Each notebook step gets its inputs as papermill parameters, plus `out_dir`, under which it writes one
directory per output it declares (`out_dir/dataset/`, `out_dir/records/`, `out_dir/model/`): locally the
executor hands over run directories, on SageMaker the same names are processing outputs and the model.

explore_data, data_qa -> preprocess -> tune -> train -> evaluate -> accuracy_gate -> register (pending approval),
or -> below_threshold. A person then approves the version: `earthsnap registry approve <group>/<n>`.
"""

from pathlib import Path

from earthsnap.data.dataqa import SMALL_CLASS_POLICIES
from earthsnap.data.images import MODES, ImageRules
from earthsnap.data.preprocess import SIZES
from earthsnap.data.sources import list_source
from earthsnap.data.taxonomy import load_taxonomy
from earthsnap.engine.definition import (
    Compute,
    ConditionStep,
    FailStep,
    NotebookStep,
    Parameter,
    Pipeline,
    RegisterStep,
    from_config,
)
from earthsnap.model.zoo import OWN, ZOO
from earthsnap.release.weights import locate_weights

RULES = ImageRules()  # the data rules' defaults

# Parameters: `earthsnap run -p name=value` overrides a default. Path parameters are read for their content
# (a changed photo re-runs data QA) and, where they name a reader, read before the run is recorded (a taxonomy or
# listing that cannot be read is refused then); `{store}` is the configured store. Ranges and choices are checked the
# same way.
source = Parameter(
    "source",
    str,
    "{store}/demo-data",
    "Photos: a directory of <label path>/<file> (local or s3://), "
    "or a CSV / JSON lines listing of uri,label. Draw the demo set with `earthsnap demo-data`.",
    path=True,
    read=list_source,
)
taxonomy = Parameter(
    "taxonomy",
    str,
    "{store}/demo-data/taxonomy.yaml",
    "taxonomy.yaml (group -> species) that labels "
    "are checked against (`groups:` and the plain group: [species] form); empty for none.",
    path=True,
    read=load_taxonomy,
)
dataset_name = Parameter(
    "dataset_name", str, "demo", "Name of the dataset in the store; each QA run commits a version of it."
)
dataset_parent = Parameter(
    "dataset_parent",
    str,
    "",
    "The dataset version the new one derives from (NAME@VERSION; a retraining names "
    "the version the live model was trained on); empty: the latest version of dataset_name.",
)
# Data QA: what a usable image is (earthsnap.data.images.ImageRules) and what happens to a class that is too small.
formats = Parameter(
    "formats",
    str,
    ",".join(RULES.formats),
    "Image formats accepted, comma-separated (Pillow's names, e.g. JPEG,PNG,WEBP).",
)
min_side = Parameter(
    "min_side", int, RULES.min_side, "Shortest side, in pixels, an image must have to be accepted.", min=1
)
max_pixels = Parameter(
    "max_pixels",
    int,
    RULES.max_pixels,
    "Most pixels an image may claim (checked before decoding: a decompression-bomb guard).",
    min=1,
)
accept_modes = Parameter(
    "accept_modes",
    str,
    ",".join(RULES.accept_modes),
    "Colour modes accepted and converted to RGB, e.g. rgb,grayscale for grayscale photos or silhouettes.",
    choices=MODES,
    many=True,
)
min_per_class = Parameter("min_per_class", int, 1, "Fewest accepted images a class must keep.", min=1)
small_classes = Parameter(
    "small_classes",
    str,
    "drop",
    "What happens to a class under min_per_class: drop it from the dataset, or fail the step.",
    choices=SMALL_CLASS_POLICIES,
)
image_size = Parameter(
    "image_size", int, 64, "Shorter side of the images written to RecordIO, in pixels.", min=SIZES[0], max=SIZES[1]
)
train_fraction = Parameter("train_fraction", float, 0.8, "Fraction of images in the train split.", min=0, max=1)
val_fraction = Parameter("val_fraction", float, 0.1, "Fraction of images in the validation split.", min=0, max=1)
test_fraction = Parameter("test_fraction", float, 0.1, "Fraction of images in the test split.", min=0, max=1)
split_seed = Parameter("split_seed", int, 0, "Seed of the split assignment.", min=0)
tune_fraction = Parameter("tune_fraction", float, 0.25, "Fraction of train and val in the tuning subset.", min=0, max=1)
tune_trials = Parameter("tune_trials", int, 8, "Hyperparameter tuning: trials in all.", min=1)
tune_parallel = Parameter(
    "tune_parallel", int, 2, "Hyperparameter tuning: trials at once, each in its own process.", min=1
)
tune_epochs = Parameter(
    "tune_epochs", int, 6, "Hyperparameter tuning: epochs of each trial (pruning may stop one sooner).", min=1
)
search_space = Parameter(
    "search_space", str, "", 'Search space as JSON, e.g. {"lr": [0.001, 0.01, "log"]}; empty for the default.'
)
epochs = Parameter("epochs", int, 20, "Full training: epochs at most (early stopping may end sooner).", min=1)
hyperparameters = Parameter(
    "hyperparameters", str, "", 'Full training: hyperparameters as JSON over the tuned ones, e.g. {"width": 48}.'
)
arch = Parameter(
    "arch",
    str,
    "",
    "Network: empty lets tuning choose between earthsnap's own resnet and separable; a network of the model zoo ("
    + ", ".join(ZOO)
    + ") is fine-tuned, best from -p weights=imagenet (it needs the zoo extra: pip install 'earthsnap[zoo]').",
    choices=("", *OWN, *ZOO),
)
weights = Parameter(
    "weights",
    str,
    "",
    "Starting weights of tuning trials and training. imagenet (the zoo network's, from the Hugging Face hub or its "
    "cache), hf://ORG/NAME[@COMMIT], a registered version (species/3), a checkpoint folder or .safetensors, or an "
    "s3:// URI; "
    "fetched once into the weights folder, named in the lineage by sha256. Empty: random (or init_weights).",
    path=True,
    locate=locate_weights,
)
init_weights = Parameter(
    "init_weights",
    str,
    "",
    "Full training: start from these weights: a model directory or .safetensors of the same network (e.g. the "
    'model of an earlier run), or for a zoo network (hyperparameters {"arch": "resnet50"}, ...) a checkpoint '
    "folder in the zoo's format (config.json, model.safetensors), whose classifier is replaced; empty for random ones.",
    path=True,
)
processes_per_node = Parameter(
    "processes_per_node",
    int,
    0,
    "Full training: processes on each machine, training together (torchrun, distributed data parallel); 0: one per "
    "GPU, or 1 without GPUs. The global batch stays batch_size, which the processes must divide.",
    min=0,
)
sync_batchnorm = Parameter(
    "sync_batchnorm",
    bool,
    False,
    "Full training in several processes on GPUs: BatchNorm's statistics over the whole global batch (SyncBatchNorm).",
)
compile_mode = Parameter(
    "compile",
    str,
    "off",
    "Full training through torch.compile in this mode (off, default, reduce-overhead, max-autotune, "
    "max-autotune-no-cudagraphs): faster steps on GPUs once the first batches have paid for the compilation.",
    choices=("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
)
deterministic = Parameter(
    "deterministic",
    bool,
    False,
    "Full training on GPUs: cuDNN's deterministic algorithms, for runs that repeat (as far as cuDNN goes); off, cuDNN "
    "autotunes its convolutions for speed. Training on CPUs is deterministic either way.",
)
train_shards = Parameter(
    "train_shards",
    int,
    1,
    "Preprocessing: the train split in this many RecordIO files of equal size in bytes (train-00000-of-00016.rec, "
    "...); on SageMaker with instance_count > 1 each training instance is then handed its own shards (ShardedByS3Key) "
    "rather than a copy of them all, and trains as many batches an epoch as the instance with the fewest images has: "
    "use a multiple of instance_count. 1: one train.rec. Fixed when the pipeline is compiled.",
    min=1,
    max=4096,
)
training_instance_type = Parameter(
    "training_instance_type",
    str,
    "ml.m5.xlarge",
    "SageMaker: the instance type of the tuning trials and the full training; a GPU type (ml.g5.xlarge, ml.p4d...) "
    "runs the GPU variant of earthsnap's image. Applied when the pipeline is compiled; a local run ignores it.",
)
instance_count = Parameter(
    "instance_count",
    int,
    1,
    "SageMaker: instances of the full training, training one model together (each runs processes_per_node). "
    "Applied when the pipeline is compiled; a local run ignores it.",
    min=1,
)
use_spot_instances = Parameter(
    "use_spot_instances",
    bool,
    False,
    "SageMaker: the full training and the tuning trials on managed spot capacity (cheaper; after an interruption a "
    "training goes on from its newest checkpoint; the notebook trainer only). Applied when the pipeline is compiled; a "
    "local run ignores it.",
)
max_wait = Parameter(
    "max_wait",
    int,
    0,
    "SageMaker, with use_spot_instances: seconds a training may wait for capacity and run, in all (at least its run "
    "time); 0: twice its run time. Applied when the pipeline is compiled; a local run ignores it.",
    min=0,
)
model_group = Parameter(
    "model_group", str, "species", "Model group in the registry that a model passing the gate is registered in."
)
min_accuracy = Parameter(
    "min_accuracy", float, 0.85, "Test accuracy a model needs to go on to registration.", min=0, max=1
)

explore = NotebookStep("explore_data", notebook="explore_data.ipynb", inputs={"data_dir": source, "taxonomy": taxonomy})

data_qa = NotebookStep(
    "data_qa",
    notebook="data_qa.ipynb",
    output_names=("dataset",),
    inputs={
        "source": source,
        "taxonomy": taxonomy,
        "name": dataset_name,
        "formats": formats,
        "min_side": min_side,
        "max_pixels": max_pixels,
        "accept_modes": accept_modes,
        "min_per_class": min_per_class,
        "small_classes": small_classes,
        "datasets": from_config("datasets"),
        "workers": from_config("workers"),
        "parent": dataset_parent,
    },
)

# Preprocessing reads the dataset by its version (name@manifest hash), from the content-addressed store: so a
# cached preprocessing result is reused exactly when the data is the same, here and on SageMaker.
preprocess = NotebookStep(
    "preprocess",
    notebook="preprocess.ipynb",
    output_names=("records",),
    inputs={
        "dataset": data_qa.outputs["dataset"].json("qa.json", "dataset"),
        "datasets": from_config("datasets"),
        "size": image_size,
        "train": train_fraction,
        "val": val_fraction,
        "test": test_fraction,
        "seed": split_seed,
        "tune_fraction": tune_fraction,
        "train_shards": train_shards,
        "workers": from_config("workers"),
    },
)

tune = NotebookStep(
    "tune",
    notebook="tune.ipynb",
    kind="tuning",
    output_names=("tuning",),
    inputs={
        "records": preprocess.outputs["records"],
        "trials": tune_trials,
        "parallel": tune_parallel,
        "epochs": tune_epochs,
        "space": search_space,
        "arch": arch,
        "weights": weights,
    },
)

train = NotebookStep(
    "train",
    notebook="train.ipynb",
    kind="training",
    output_names=("model", "artifact"),
    compute=Compute(
        instance_type=training_instance_type, instance_count=instance_count, spot=use_spot_instances, max_wait=max_wait
    ),
    inputs={
        "records": preprocess.outputs["records"],
        "tuning": tune.outputs["tuning"],
        "epochs": epochs,
        "hyperparameters": hyperparameters,
        "init_weights": init_weights,
        "arch": arch,
        "weights": weights,
        "workers": from_config("workers"),
        "processes": processes_per_node,
        "sync_batchnorm": sync_batchnorm,
        "compile": compile_mode,
        "deterministic": deterministic,
    },
)

evaluate = NotebookStep(
    "evaluate",
    notebook="evaluate.ipynb",
    output_names=("evaluation",),
    inputs={"model": train.outputs["model"], "records": preprocess.outputs["records"]},
)

# The gate: SageMaker's ConditionStep reading evaluation.json through a PropertyFile and JsonGet.
accuracy = evaluate.outputs["evaluation"].json("evaluation.json", "metrics.accuracy.value")
below_threshold = FailStep(
    "below_threshold",
    inputs={"accuracy": accuracy, "threshold": min_accuracy},
    message=(
        "Test accuracy {accuracy:.3f} is below the threshold min_accuracy={threshold}, so the "
        "model is not registered. The evaluation report (evaluate.html in the run) shows "
        "which classes fail; more data, more epochs (-p epochs=...) or a wider search may help."
    ),
)
register = RegisterStep(
    "register",
    model=train.outputs["artifact"],
    group=model_group,
    # metrics and lineage
    inputs={"evaluation": evaluate.outputs["evaluation"], "records": preprocess.outputs["records"]},
)
accuracy_gate = ConditionStep(
    "accuracy_gate", left=accuracy, op=">=", right=min_accuracy, if_true=[register], if_false=[below_threshold]
)

pipeline = Pipeline(
    "earthsnap",
    parameters=[
        source,
        taxonomy,
        dataset_name,
        dataset_parent,
        formats,
        min_side,
        max_pixels,
        accept_modes,
        min_per_class,
        small_classes,
        image_size,
        train_fraction,
        val_fraction,
        test_fraction,
        split_seed,
        tune_fraction,
        tune_trials,
        tune_parallel,
        tune_epochs,
        search_space,
        epochs,
        hyperparameters,
        arch,
        weights,
        init_weights,
        processes_per_node,
        sync_batchnorm,
        compile_mode,
        deterministic,
        train_shards,
        training_instance_type,
        instance_count,
        use_spot_instances,
        max_wait,
        min_accuracy,
        model_group,
    ],
    steps=[explore, data_qa, preprocess, tune, train, evaluate, accuracy_gate, register, below_threshold],
    pipeline_dir=Path(__file__).parent,
)
