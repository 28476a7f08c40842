"""Model data becomes the instance's model folder, and hostile archives are refused."""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st

from streamhost.client.boto import boto3_session
from streamhost.gateway.artifacts import (
    ArtifactError,
    location_problem,
    materialize,
    model_root,
    unsafe_member,
)
from tests.harness import targz


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_a_local_tar_gz_is_unpacked_into_the_model_folder(tmp_path):
    source = write(tmp_path / "model.tar.gz", targz({"serving.properties": b"engine=MPI\n"}))
    for location in (str(source), source.as_uri()):
        dest = tmp_path / location.replace("/", "_")
        materialize({"ModelDataUrl": location}, dest, timeout=60)
        assert (dest / "serving.properties").read_bytes() == b"engine=MPI\n"


def test_a_local_folder_is_copied(tmp_path):
    (tmp_path / "src" / "code").mkdir(parents=True)
    (tmp_path / "src" / "code" / "model.py").write_text("x = 1\n")
    materialize({"ModelDataUrl": str(tmp_path / "src")}, tmp_path / "dest", timeout=60)
    assert (tmp_path / "dest" / "code" / "model.py").read_text() == "x = 1\n"


def test_a_container_without_model_data_gets_an_empty_folder(tmp_path):
    materialize({"Image": "x"}, tmp_path / "dest", timeout=60)
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ((member("/etc/evil"), b"x"), "absolute path"),
        ((member("../evil"), b"x"), "'..'"),
        ((member("a/../../evil"), b"x"), "'..'"),
        ((member("link", tarfile.SYMTYPE, "/etc/passwd"), None), "absolute path '/etc/passwd'"),
        ((member("d/link", tarfile.SYMTYPE, "../../outside"), None), "pointing outside"),
        ((member("hard", tarfile.LNKTYPE, "../outside"), None), "hard link pointing outside"),
        ((member("dev", tarfile.CHRTYPE), None), "device or FIFO"),
        ((member("fifo", tarfile.FIFOTYPE), None), "device or FIFO"),
    ],
)
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, bad, reason):
    data = archive((member("good.txt"), b"fine"), bad)
    source = write(tmp_path / "model.tar.gz", data)
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactError, match="is unsafe") as raised:
        materialize({"ModelDataUrl": str(source)}, dest, timeout=60)
    assert reason in str(raised.value)
    assert not (dest / "good.txt").exists()
    assert not (tmp_path / "evil").exists()


def test_links_inside_the_folder_are_kept(tmp_path):
    data = archive(
        (member("weights.bin"), b"w"),
        (member("alias.bin", tarfile.SYMTYPE, "weights.bin"), None),
    )
    source = write(tmp_path / "model.tar.gz", data)
    materialize({"ModelDataUrl": str(source)}, tmp_path / "dest", timeout=60)
    assert (tmp_path / "dest" / "alias.bin").read_bytes() == b"w"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a valid .tar.gz"),
        (b"\x1f\x8b\x08garbage" * 10, "not a valid .tar.gz"),
        (targz({}), "is empty"),
    ],
)
def test_corrupt_or_empty_archives_have_a_clear_reason(tmp_path, content, reason):
    source = write(tmp_path / "model.tar.gz", content)
    with pytest.raises(ArtifactError, match=reason):
        materialize({"ModelDataUrl": str(source)}, tmp_path / "dest", timeout=60)


def test_missing_model_data_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        materialize({"ModelDataUrl": str(tmp_path / "nope.tar.gz")}, tmp_path / "d", timeout=60)


def test_the_download_timeout_is_honoured(tmp_path):
    source = write(tmp_path / "model.tar.gz", targz({"a": b"1"}))
    with pytest.raises(ArtifactError, match="ModelDataDownloadTimeoutInSeconds=0"):
        materialize({"ModelDataUrl": str(source)}, tmp_path / "dest", timeout=0)


def test_https_locations_are_reported_as_unsupported():
    problem = location_problem({"ModelDataUrl": "https://example.com/model.tar.gz"})
    assert problem is not None and "not supported by streamhost" in problem
    assert location_problem({"ModelDataUrl": "s3://bucket/model.tar.gz"}) is None


def s3_client_with(responses: list[tuple[str, dict, dict]]):
    client = boto3_session().client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    stubber = Stubber(client)
    for method, response, params in responses:
        stubber.add_response(method, response, params)
    stubber.activate()
    return client, stubber


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_an_s3_tar_gz_is_downloaded_and_unpacked(tmp_path):
    data = targz({"mymodel/serving.properties": b"option.model_id=tiny\n"})
    client, stubber = s3_client_with(
        [("get_object", {"Body": body(data)}, {"Bucket": "bucket", "Key": "m/model.tar.gz"})]
    )
    dest = tmp_path / "dest"
    materialize(
        {"ModelDataUrl": "s3://bucket/m/model.tar.gz"}, dest, timeout=60, s3_client=lambda: client
    )
    stubber.assert_no_pending_responses()
    assert (dest / "mymodel" / "serving.properties").exists()
    assert model_root(dest) == dest / "mymodel"


def test_an_uncompressed_s3_prefix_is_copied_key_by_key(tmp_path):
    listing = {
        "Contents": [
            {"Key": "models/m1/"},
            {"Key": "models/m1/config.json"},
            {"Key": "models/m1/sub/weights.bin"},
        ],
        "IsTruncated": False,
    }
    client, _ = s3_client_with(
        [
            ("list_objects_v2", listing, {"Bucket": "b", "Prefix": "models/m1/"}),
            ("get_object", {"Body": body(b"{}")}, {"Bucket": "b", "Key": "models/m1/config.json"}),
            (
                "get_object",
                {"Body": body(b"\x00\x01")},
                {"Bucket": "b", "Key": "models/m1/sub/weights.bin"},
            ),
        ]
    )
    source = {"S3Uri": "s3://b/models/m1/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    dest = tmp_path / "dest"
    materialize(
        {"ModelDataSource": {"S3DataSource": source}}, dest, timeout=60, s3_client=lambda: client
    )
    assert (dest / "config.json").read_bytes() == b"{}"
    assert (dest / "sub" / "weights.bin").read_bytes() == b"\x00\x01"


def test_an_s3_error_becomes_the_failure_reason(tmp_path):
    client = boto3_session().client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    stubber = Stubber(client)
    stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.")
    stubber.activate()
    with pytest.raises(ArtifactError, match="NoSuchKey: The specified key does not exist"):
        materialize(
            {"ModelDataUrl": "s3://b/missing.tar.gz"},
            tmp_path / "d",
            timeout=60,
            s3_client=lambda: client,
        )


def test_model_root_finds_the_single_model_subfolder(tmp_path):
    (tmp_path / "mymodel").mkdir()
    assert model_root(tmp_path) == tmp_path  # no marker anywhere
    (tmp_path / "mymodel" / "serving.properties").write_text("engine=MPI\n")
    assert model_root(tmp_path) == tmp_path / "mymodel"
    (tmp_path / "serving.properties").write_text("engine=Python\n")
    assert model_root(tmp_path) == tmp_path


segments = st.lists(st.sampled_from(["a", "b", "..", ".", ""]), min_size=1, max_size=6)


@given(segments, st.booleans(), segments)
def test_members_that_pass_the_check_stay_inside_the_folder(name_parts, is_link, target_parts):
    name = "/".join(name_parts)
    info = member(name, tarfile.SYMTYPE if is_link else tarfile.REGTYPE, "/".join(target_parts))
    if unsafe_member(info) is not None:
        return
    root = "/root/model"
    placed = posixpath.normpath(posixpath.join(root, name))
    assert placed == root or placed.startswith(root + "/")
    if is_link:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(placed), info.linkname))
        assert placed != root
        assert target == root or target.startswith(root + "/")
