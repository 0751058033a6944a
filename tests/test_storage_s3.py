"""s3:// storage through fsspec/s3fs, against moto in server mode.

moto is an EMULATOR of the AWS API, not AWS: it runs here as a separate HTTP server on 127.0.0.1, which the
test starts and stops by its process id. It checks that our S3 code path speaks the S3 API correctly
(endpoint override, atomic uploads, listing, hashing); it says nothing about AWS permissions or latency.
"""

from __future__ import annotations

import time

import boto3
import pytest

from conftest import ROOT
from earthsnap.core import storage
from earthsnap.core.config import load_config
from earthsnap.core.errors import StorageError
from earthsnap.core.hashing import sha256_bytes
from earthsnap.data.recordio import MXIndexedRecordIO, MXRecordIO, unpack_img

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def bucket(moto_url, monkeypatch):
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    for k in ("EARTHSNAP_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    name = f"es-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_write_read_list_hash(moto_url, bucket):
    root = f"s3://{bucket}/datasets/flowers"
    storage.write_json(storage.join(root, "v1", "manifest.json"), {"rows": 3}, endpoint_url=moto_url)
    storage.write_bytes(storage.join(root, "v1", "a.bin"), b"abc", endpoint_url=moto_url)
    storage.write_text(storage.join(root, "v0", "notes.txt"), "first", endpoint_url=moto_url)
    assert storage.read_json(f"{root}/v1/manifest.json", endpoint_url=moto_url) == {"rows": 3}
    assert storage.exists(f"{root}/v1/a.bin", endpoint_url=moto_url)
    listed = list(storage.list_files(root, endpoint_url=moto_url))
    assert listed == [
        (f"{root}/v0/notes.txt", 5),
        (f"{root}/v1/a.bin", 3),
        (f"{root}/v1/manifest.json", len(b'{\n  "rows": 3\n}\n')),
    ]
    assert storage.sha256_uri(f"{root}/v1/a.bin", endpoint_url=moto_url) == sha256_bytes(b"abc")
    # the object is really there, seen through another S3 client
    body = (
        boto3.client("s3", endpoint_url=moto_url)
        .get_object(Bucket=bucket, Key="datasets/flowers/v1/a.bin")["Body"]
        .read()
    )
    assert body == b"abc"


def test_failed_upload_leaves_previous_object(moto_url, bucket):
    uri = f"s3://{bucket}/model.json"
    storage.write_text(uri, "v1", endpoint_url=moto_url)
    with pytest.raises(RuntimeError):
        with storage.atomic_write(uri, "w", endpoint_url=moto_url) as f:
            f.write("v2, half written")
            raise RuntimeError("killed mid-upload")
    assert storage.read_text(uri, endpoint_url=moto_url) == "v1"
    with pytest.raises(RuntimeError):
        with storage.atomic_write(f"s3://{bucket}/never.bin", endpoint_url=moto_url) as f:
            f.write(b"x" * (6 << 20))  # past one multipart block: the upload has started, and is aborted
            raise RuntimeError("killed mid-upload")
    assert not storage.exists(f"s3://{bucket}/never.bin", endpoint_url=moto_url)


def test_endpoint_from_environment_and_config(moto_url, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("EARTHSNAP_S3_ENDPOINT_URL", moto_url)
    cfg = load_config(tmp_path, env={"EARTHSNAP_STORE": f"s3://{bucket}/earthsnap"})
    assert cfg.datasets == f"s3://{bucket}/earthsnap/datasets"
    storage.write_text(storage.join(cfg.datasets, "x.txt"), "hello")
    assert storage.read_text(f"s3://{bucket}/earthsnap/datasets/x.txt") == "hello"


def test_missing_object_and_bucket_errors(moto_url, bucket):
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes(f"s3://{bucket}/nope", endpoint_url=moto_url)
    with pytest.raises(StorageError, match="does not exist"):
        list(storage.list_files(f"s3://{bucket}/no/prefix", endpoint_url=moto_url))
    # not the SDK's traceback (issue 21: an upsert to a missing bucket)
    with pytest.raises(StorageError, match="its bucket or folder does not exist"):
        storage.write_bytes(f"s3://{bucket}-missing/code/bundle.tar.gz", b"x", endpoint_url=moto_url)


def test_recordio_reads_from_s3(moto_url, bucket, monkeypatch):
    """RecordIO files written by MXNet 1.9.1, read back from a bucket by key and in sequence."""
    monkeypatch.setenv("EARTHSNAP_S3_ENDPOINT_URL", moto_url)
    golden = ROOT / "tests" / "golden" / "recordio"
    for name in ("single.rec", "single.idx"):
        storage.write_bytes(f"s3://{bucket}/rec/{name}", (golden / name).read_bytes())
    remote = MXIndexedRecordIO(f"s3://{bucket}/rec/single.idx", f"s3://{bucket}/rec/single.rec", "r")
    local = MXIndexedRecordIO(golden / "single.idx", golden / "single.rec", "r")
    assert remote.keys == local.keys
    header, img = unpack_img(remote.read_idx(remote.keys[-1]))
    assert header.id == remote.keys[-1] and img.ndim == 3
    assert list(MXRecordIO(f"s3://{bucket}/rec/single.rec", "r")) == list(MXRecordIO(golden / "single.rec", "r"))


def test_data_qa_and_preprocess_from_a_bucket(moto_url, bucket, monkeypatch, tmp_path):
    """A photo source on S3 (emulated): QA lists and reads it there, and the dataset it commits preprocesses."""
    from earthsnap.data.dataqa import run_qa
    from earthsnap.data.demodata import generate_demo_data
    from earthsnap.data.preprocess import PreprocessParams, preprocess

    monkeypatch.setenv("EARTHSNAP_S3_ENDPOINT_URL", moto_url)
    photos = generate_demo_data(tmp_path / "photos", groups=1, species=2, images=5, faults=True, progress=False)
    for p in sorted(photos.root.rglob("*")):
        if p.is_file():
            storage.write_bytes(f"s3://{bucket}/photos/{p.relative_to(photos.root).as_posix()}", p.read_bytes())
    result = run_qa(
        f"s3://{bucket}/photos",
        "flora",
        datasets=f"s3://{bucket}/datasets",
        taxonomy=f"s3://{bucket}/photos/taxonomy.yaml",
        progress=False,
    )
    assert len(result.accepted) == 10 and len(result.rejected) == 9
    assert result.dataset.root == f"s3://{bucket}/datasets/flora/{result.dataset.version}"
    local = run_qa(photos.root, "flora", datasets=tmp_path / "datasets", progress=False)
    assert local.dataset.version == result.dataset.version  # the version names the content, not where it lives
    summary = preprocess(result.dataset, tmp_path / "rec", PreprocessParams(size=32), progress=False)
    assert summary["images"]["full"] == 10


def test_a_backup_to_s3_restores_and_a_second_one_copies_only_what_is_new(moto_url, bucket, tmp_path):
    "earthsnap backup/restore through fsspec to s3:// (the emulator): the records come back with their paths moved."
    from earthsnap.engine.fingerprint import fingerprint
    from earthsnap.engine.runs import RunStore
    from earthsnap.operations.backup import backup, backup_ids, restore
    from earthsnap.release.registry import SqliteRegistry

    project = tmp_path / "p"
    project.mkdir()
    cfg = load_config(project, env={}, s3_endpoint_url=moto_url)
    out = project / ".earthsnap" / "runs" / "r1" / "prep"
    out.mkdir(parents=True)
    (out / "records.rec").write_bytes(b"\x00records" * 1000)
    runs = RunStore(cfg.registry)
    runs.create_run("earthsnap", {}, out.parent, project_dir=project, run_id="r1")
    runs.start_step("r1", "prep")
    runs.finish_step("r1", "prep", "succeeded", outputs={"records": {"path": str(out), "sha256": fingerprint(out)}})
    (tmp_path / "m.tar.gz").write_bytes(b"model")
    SqliteRegistry(cfg.registry).register("flora", tmp_path / "m.tar.gz", by="ci")
    dest = f"s3://{bucket}/backups"
    first = backup(cfg, dest)
    assert (first.files, first.copied) == (3, 3)
    (out.parent / "notes.txt").write_text("new")
    second = backup(cfg, dest)
    assert (second.files, second.copied) == (4, 1) and backup_ids(dest, moto_url) == [first.id, second.id]
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_url).list_objects_v2(Bucket=bucket)["Contents"]]
    assert (
        sum(k.startswith("backups/objects/") for k in keys) == 4
        and f"backups/backups/{second.id}/manifest.json" in keys
    )

    other = tmp_path / "q"
    other.mkdir()
    new = load_config(other, env={}, s3_endpoint_url=moto_url)
    done = restore(new, dest)
    assert (done.id, done.files, done.counts["runs"], done.counts["model versions"]) == (second.id, 4, 1, 1)
    step = RunStore(new.registry).run("r1")["steps"][0]["outputs"]["records"]
    assert (
        step["path"] == str(other / ".earthsnap" / "runs" / "r1" / "prep")
        and fingerprint(step["path"]) == step["sha256"]
    )
    assert SqliteRegistry(new.registry).get("flora/1").artifact.startswith(str(other))
