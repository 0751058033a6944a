"""A pipeline fine-tunes a network of the model zoo from a checkpoint a team brings, offline.

The test makes its own "pretrained" checkpoint: a ResNet-18 of the zoo trained on demo species drawn for it (other
photos, other species), saved in the zoo's own format (`save_pretrained`: config.json and model.safetensors, with a
model card naming its licence). `earthsnap run` then fine-tunes on the project's species from that folder: the
backbone starts from the file's weights, the head has the project's classes, the registry names the file by sha256,
a run with nothing changed trains nothing, and a changed file trains again. Nothing is downloaded."""

from __future__ import annotations

import hashlib

import pytest
import torch

from conftest import demo_project, run_id_in, steps_of

SMALL = ["-p", "image_size=32", "-p", "epochs=2", "-p", "tune_trials=1", "-p", "tune_epochs=1", "-p", "min_accuracy=0"]
ZOO = ["-p", 'hyperparameters={"arch": "resnet18", "lr": 0.001, "batch_size": 16}']


@pytest.fixture
def checkpoint(tmp_path):
    "A ResNet-18 of the zoo trained on 8 demo species (another draw than the project's), in the zoo's own format."
    from earthsnap.data.records import demo_records
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    records = demo_records(tmp_path / "pretraining", groups=4, species=2, images=10, size=32, seed=7)
    hp = Hyperparameters(arch="resnet18", epochs=1, batch_size=16, lr=0.001)
    trained = train(records, hp, progress=False, log=lambda _: None)
    folder = tmp_path / "resnet18-pretrained"
    trained.model[1].body.save_pretrained(folder)  # the backbone alone, as the zoo's base model is published
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A ResNet-18 pretrained for this test\n")
    return folder


@pytest.mark.timeout(900)
def test_a_run_fine_tunes_a_zoo_checkpoint_and_the_registry_names_its_weights(tmp_path, checkpoint, earthsnap):
    from safetensors.torch import load_file, save_file

    from earthsnap.core.config import load_config
    from earthsnap.model.export import load_torch_model
    from earthsnap.model.training import initial_model
    from earthsnap.release.registry import open_registry

    project = demo_project(tmp_path / "p", faults=False)
    args = ["run", *SMALL, *ZOO, "-p", f"init_weights={checkpoint}"]
    r = earthsnap(*args, cwd=project, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    sha = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    reg = open_registry(load_config(project, env={}))
    v = reg.get("species/1")
    assert v.status == "PendingManualApproval"
    assert v.lineage["backbone"] == {
        "arch": "resnet18",
        "weights": {"source": str(checkpoint), "sha256": sha, "licence": "apache-2.0"},
    }
    model, classes, hp = load_torch_model(v.artifact)
    assert hp.arch == "resnet18" and len(classes) == 4 and model[-1].out_features == 4  # the project's 4, not 8
    # the backbone started from the file's weights: what training starts from for these inputs is the file
    start, _ = initial_model(hp, len(classes), 32, checkpoint)
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.equal(t, saved[k]) for k, t in start[1].body.state_dict().items())
    # ... and training moved it
    assert not torch.equal(
        model[1].body.state_dict()["embedder.embedder.convolution.weight"],
        saved["embedder.embedder.convolution.weight"],
    )
    # the training step's report says which network started from where
    executed = next((project / ".earthsnap" / "runs" / run_id_in(r.stdout)).rglob("train.ipynb")).read_text()
    assert f"training resnet18 (11.2M parameters, from the weights in {checkpoint})" in executed

    # nothing changed: nothing trains again
    again = earthsnap(*args, cwd=project, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert steps_of(earthsnap, project, run_id_in(again.stdout))["train"][0] == "cached", again.stdout

    # a changed checkpoint file trains again, and the new version names the new file
    state = load_file(str(checkpoint / "model.safetensors"))
    state["embedder.embedder.convolution.weight"] = state["embedder.embedder.convolution.weight"] * 0.5
    save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    changed = earthsnap(*args, cwd=project, timeout=600)
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    ran = steps_of(earthsnap, project, run_id_in(changed.stdout))
    assert ran["train"][0] == "succeeded" and ran["preprocess"][0] == "cached", changed.stdout
    new = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert reg.get("species/2").lineage["backbone"]["weights"]["sha256"] == new != sha

    # a ViT asked to start from this ResNet checkpoint: the train step fails naming both families, its notebook kept
    vit = ["-p", 'hyperparameters={"arch": "vit_base_patch16_224"}', "-p", f"init_weights={checkpoint}"]
    wrong = earthsnap("run", *SMALL, *vit, cwd=project, timeout=600)
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0 and "is a resnet network, and arch=vit_base_patch16_224 is a vit" in out, out[-3000:]
    assert steps_of(earthsnap, project, run_id_in(wrong.stdout))["train"][0] == "failed"
