"""The EarthSnap pipeline: the step notebooks of this folder, wired by what each reads from the others.

`earthsnap run` runs it here, `earthsnap dag` draws it, and `earthsnap.run()` runs it from a notebook.
Each notebook step gets its inputs as papermill parameters, plus `out_dir`, under which it writes one
directory per output it declares (`out_dir/dataset/`, `out_dir/records/`): locally the executor hands over
run directories, on SageMaker the same names are ProcessingOutputs.

The stages still to come (tuning, training, evaluation, the accuracy gate, registration) join this file as
they are built; the data half is here today.
"""
from pathlib import Path

from earthsnap.definition import NotebookStep, Parameter, Pipeline, from_config

# Parameters: `earthsnap run -p name=value` overrides a default. Path parameters are read for their content
# (a changed photo re-runs data QA); `{store}` is the configured store.
source = Parameter("source", str, "{store}/demo-data", "Photos: a directory of <label path>/<file> (local or s3://), "
                   "or a CSV / JSON lines listing of uri,label. Draw the demo set with `earthsnap demo-data`.", path=True)
taxonomy = Parameter("taxonomy", str, "{store}/demo-data/taxonomy.yaml", "taxonomy.yaml (group -> species) that labels "
                     "are checked against; empty for none.", path=True)
dataset_name = Parameter("dataset_name", str, "demo", "Name of the dataset in the store; each QA run commits a version of it.")
min_side = Parameter("min_side", int, 32, "Shortest side, in pixels, an image must have to be accepted.")
min_per_class = Parameter("min_per_class", int, 1, "Fewest accepted images a class must keep (smaller classes are dropped).")
image_size = Parameter("image_size", int, 64, "Shorter side of the images written to RecordIO, in pixels.")
train_fraction = Parameter("train_fraction", float, 0.8, "Fraction of images in the train split.")
val_fraction = Parameter("val_fraction", float, 0.1, "Fraction of images in the validation split.")
test_fraction = Parameter("test_fraction", float, 0.1, "Fraction of images in the test split.")
split_seed = Parameter("split_seed", int, 0, "Seed of the split assignment.")

explore = NotebookStep("explore_data", notebook="explore_data.ipynb", inputs={"data_dir": source, "taxonomy": taxonomy})

data_qa = NotebookStep(
    "data_qa", notebook="data_qa.ipynb", output_names=("dataset",),
    inputs={"source": source, "taxonomy": taxonomy, "name": dataset_name, "min_side": min_side,
            "min_per_class": min_per_class, "datasets": from_config("datasets"), "workers": from_config("workers")})

preprocess = NotebookStep(
    "preprocess", notebook="preprocess.ipynb", output_names=("records",),
    inputs={"dataset": data_qa.outputs["dataset"], "size": image_size, "train": train_fraction, "val": val_fraction,
            "test": test_fraction, "seed": split_seed, "workers": from_config("workers")})

pipeline = Pipeline(
    "earthsnap",
    parameters=[source, taxonomy, dataset_name, min_side, min_per_class, image_size, train_fraction, val_fraction,
                test_fraction, split_seed],
    steps=[explore, data_qa, preprocess],
    pipeline_dir=Path(__file__).parent,
)
