"""A pipeline fine-tunes a network of the model zoo from pretrained weights, offline, with two `-p` options.

The test makes its own "pretrained" weights: a ResNet-18 of the zoo trained on demo species drawn for it (other
photos, other species), saved in the zoo's own format (`save_pretrained`: config.json and model.safetensors, with a
model card naming its licence) and laid out as the Hugging Face hub's cache holds microsoft/resnet-18. With
`HF_HUB_OFFLINE=1`, `earthsnap run -p arch=resnet18 -p weights=imagenet` fine-tunes on the project's species from
it: the backbone starts from the file's weights, the head has the project's classes, photos become inputs as the
checkpoint's image processor says (size, crop fraction, interpolation) in training and in the registered model, the
registry names the file by sha256, source and licence, a run with nothing changed trains nothing, a changed file
trains again, a registered version starts the next, and weights of the wrong family are refused before a run
starts. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import BIN, clean_env, demo_project, free_port, login_token, run_id_in, steps_of, wait_until_serving

SMALL = ["-p", "image_size=32", "-p", "epochs=2", "-p", "tune_trials=1", "-p", "tune_epochs=1", "-p", "min_accuracy=0"]
FINE_TUNE = ["-p", 'hyperparameters={"lr": 0.001, "batch_size": 16}']
COMMIT = "0" * 40
HUB_SOURCE = f"hf://microsoft/resnet-18@{COMMIT}"  # the lineage names the hub commit the weights are


@pytest.fixture
def hub(tmp_path):
    """A Hugging Face hub cache whose microsoft/resnet-18 is a ResNet-18 trained here on 8 demo species (another draw
    than the project's); returns (cache, snapshot folder).
    """
    from earthsnap.data.records import demo_records
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    records = demo_records(tmp_path / "pretraining", groups=4, species=2, images=10, size=32, seed=7)
    hp = Hyperparameters(arch="resnet18", epochs=1, batch_size=16, lr=0.001)
    trained = train(records, hp, progress=False, log=lambda _: None)
    cache = tmp_path / "hub"
    repo = cache / "models--microsoft--resnet-18"
    snapshot = repo / "snapshots" / COMMIT
    trained.model[1].body.save_pretrained(snapshot)  # the backbone alone, as the zoo's base model is published
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A ResNet-18 pretrained for this test\n")
    # how it wants its photos, as microsoft/resnet-18's image processor says (there 224 px, the centre 0.875, bicubic)
    view = {"size": {"shortest_edge": 28}, "crop_pct": 0.875, "resample": 3, "do_center_crop": True}
    (snapshot / "preprocessor_config.json").write_text(json.dumps(view))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache, snapshot


def version_page(cfg, ref: str) -> str:
    "The console's page of registry version `ref`, as a signed-in viewer gets it from a console started for it."
    import requests

    from earthsnap.access.users import UserStore

    UserStore.from_config(cfg).add("vic", "viewer", "vic reads the lineage", by="test")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(port)], cwd=cfg.project_dir, env=clean_env()
    )
    try:
        wait_until_serving(url + "/health", server, 60, "earthsnap console")
        session = requests.Session()
        form = {"name": "vic", "password": "vic reads the lineage", "login_token": login_token(session, url)}
        same = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        signed = session.post(url + "/console/login", data=form, headers=same, allow_redirects=False, timeout=60)
        assert signed.status_code == 303, signed.text[:300]
        group, n = ref.split("/")
        r = session.get(f"{url}/console/models/{group}/{n}", timeout=60)
        assert r.status_code == 200, r.text[:300]
        return r.text
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.timeout(900)
def test_a_run_fine_tunes_imagenet_weights_of_the_zoo_and_the_registry_names_them(tmp_path, hub, earthsnap):
    from safetensors.torch import load_file, save_file

    from earthsnap.core.config import load_config
    from earthsnap.model.export import load_torch_model
    from earthsnap.model.inference import InputView, open_model
    from earthsnap.model.training import initial_model
    from earthsnap.release.registry import open_registry

    cache, snapshot = hub
    env = clean_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    project = demo_project(tmp_path / "p", faults=False)
    args = ["run", *SMALL, *FINE_TUNE, "-p", "arch=resnet18", "-p", "weights=imagenet"]
    r = earthsnap(*args, cwd=project, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    sha = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    cfg = load_config(project, env={})
    reg = open_registry(cfg)
    v = reg.get("species/1")
    assert v.status == "PendingManualApproval"
    assert v.lineage["backbone"] == {
        "arch": "resnet18",
        "weights": {"source": HUB_SOURCE, "sha256": sha, "licence": "apache-2.0"},
        "input": {"input_size": 28, "crop_pct": 0.875, "interpolation": "bicubic"},
    }
    # ... and the console's version page shows a reviewer the same
    page = version_page(cfg, "species/1")
    assert f"<code>resnet18</code>, started from <code>{HUB_SOURCE}</code>" in page, page[-3000:]
    assert f"sha256 {sha[:16]}…, licence apache-2.0" in page
    assert "28 px, the centre 0.875 of the photo scaled to 32 px, bicubic" in page
    stored = Path(v.lineage["parameters"]["weights"])  # the run recorded the folder, named by content
    assert stored.parent == cfg.project_dir / ".earthsnap" / "weights" and stored.name.startswith(f"{sha}-")
    model, classes, hp = load_torch_model(v.artifact)
    assert hp.arch == "resnet18" and len(classes) == 4 and model[-1].out_features == 4  # the project's 4, not 8
    # the backbone started from the file's weights: what training starts from for these inputs is the file
    start, _ = initial_model(hp, len(classes), 28, stored)
    pretrained = load_file(str(snapshot / "model.safetensors"))
    assert all(torch.equal(t, pretrained[k]) for k, t in start[1].body.state_dict().items())
    first = "embedder.embedder.convolution.weight"
    assert not torch.equal(model[1].body.state_dict()[first], pretrained[first])  # ... and fine-tuning moved it
    # the training step's report says which network started from where
    executed = next((project / ".earthsnap" / "runs" / run_id_in(r.stdout)).rglob("train.ipynb")).read_text()
    assert f"training resnet18 (11.2M parameters, from {HUB_SOURCE} (sha256 {sha[:12]}))" in executed
    # photos became inputs as the checkpoint's image processor says, in training and in the model every endpoint opens
    assert "at 28 px (the centre 0.875 of photos scaled to 32 px, bicubic)" in executed
    served = open_model(v.artifact)
    assert served.view == InputView(28, 0.875, "bicubic")
    photo = next((project / ".earthsnap" / "demo-data").rglob("*.jpg")).read_bytes()
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(served.inputs([photo]))), 1).numpy()
    assert abs(served.predict([photo], 1)[0][0]["probability"] - want.max()) < 1e-4
    # ... and so does tuning's: its trials start from the same weights, on the network the arch fixes
    tuned = next((project / ".earthsnap" / "runs" / run_id_in(r.stdout)).rglob("tune.ipynb")).read_text()
    assert "every trial starts from the weights in" in tuned and str(project / ".earthsnap" / "weights") in tuned
    assert "network: resnet18 (fixed by the arch parameter; not searched: arch, width)" in tuned

    # nothing changed: nothing trains again
    again = earthsnap(*args, cwd=project, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert steps_of(earthsnap, project, run_id_in(again.stdout))["train"][0] == "cached", again.stdout

    # new weights behind the same name: training runs again, and the new version names the new file
    pretrained[first] = pretrained[first] * 0.5
    save_file(pretrained, str(snapshot / "model.safetensors"), metadata={"format": "pt"})
    changed = earthsnap(*args, cwd=project, env=env, timeout=600)
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    ran = steps_of(earthsnap, project, run_id_in(changed.stdout))
    assert ran["train"][0] == ran["tune"][0] == "succeeded" and ran["preprocess"][0] == "cached", changed.stdout
    new = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert reg.get("species/2").lineage["backbone"]["weights"]["sha256"] == new != sha

    # a registered version starts the next model: the same network, its weights, named in the lineage
    follow = ["run", *SMALL, *FINE_TUNE, "-p", "arch=resnet18", "-p", "weights=species/1"]
    r = earthsnap(*follow, cwd=project, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    source = reg.get("species/3").lineage["backbone"]["weights"]["source"]
    assert source.startswith(f"registry:species/1 ({v.sha256[:12]})"), source

    # weights of another family are refused before a run is recorded, with the families named
    runs_before = earthsnap("runs", "list", cwd=project).stdout
    vit = ["run", *SMALL, "-p", "arch=vit_base_patch16_224", "-p", "weights=imagenet"]
    wrong = earthsnap(*vit, "-p", "hyperparameters={}", cwd=project, env=env, timeout=300)
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0 and "google/vit-base-patch16-224" in out, out[-3000:]  # not in this hub cache
    folder = earthsnap("run", "-p", "arch=vit_base_patch16_224", "-p", f"weights={stored}", cwd=project)
    out = folder.stdout + folder.stderr
    assert folder.returncode != 0 and "a resnet network's, and arch=vit_base_patch16_224 is a vit" in out, out[-3000:]
    assert earthsnap("runs", "list", cwd=project).stdout == runs_before  # nothing was recorded
