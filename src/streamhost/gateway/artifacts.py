"""Model data: a container's `ModelDataUrl` or `ModelDataSource` made into a model folder.

SageMaker downloads a model's `.tar.gz` and unpacks it into `/opt/ml/model` before the
container starts (or, for `ModelDataSource` with `CompressionType: None`, copies the
objects under an S3 prefix there). `materialize` does the same into an instance's model
folder, from `s3://` (boto3, so `AWS_ENDPOINT_URL_S3` and the usual credential chain
apply), `file://` or a plain local path.

Archives come from users, so extraction is defensive: a member with an absolute path, a
`..` component, a link that leaves the folder, or a device node fails the whole
deployment with a reason naming the member, before anything is written. The work is
blocking (call it in a thread); a deadline (`ModelDataDownloadTimeoutInSeconds`) is
checked between blocks of copying and between archive members.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

__all__ = [
    "ArtifactError",
    "location_problem",
    "materialize",
    "model_root",
    "unsafe_member",
]

_BLOCK = 1024 * 1024
# Python's extraction-filter errors (PEP 706); absent (so nothing to catch) before 3.10.12.
_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(tarfile, name) for name in ("FilterError",) if hasattr(tarfile, name)
)
# Files that mark a folder as an LMI/DJL model (what DJL Serving looks for).
_MODEL_MARKERS = ("serving.properties", "model.py")

S3ClientFactory = Callable[[], Any]


class ArtifactError(Exception):
    """Model data could not be made ready; the message is the endpoint's FailureReason."""


def location_problem(container: Mapping[str, Any]) -> str | None:
    """Why a container's model data location cannot be used (checked at CreateModel), or
    None. Cheap: looks at the URL only, touches nothing."""
    url = container.get("ModelDataUrl")
    source = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if url and source:
        return "Specify either ModelDataUrl or ModelDataSource, not both."
    location = url or (source or {}).get("S3Uri")
    if not location:
        return None
    scheme = urlparse(location).scheme
    if scheme in ("", "file", "s3"):
        return None
    return (
        f"Model data location {location} is not supported by streamhost: "
        "use s3://bucket/key, file:///path or a local path."
    )


def materialize(
    container: Mapping[str, Any],
    dest: Path,
    *,
    timeout: float,
    s3_client: S3ClientFactory | None = None,
) -> None:
    """Put the container's model data into `dest` (created if needed; nothing to do if the
    container names none). `ArtifactError` with a readable reason on any failure."""
    dest.mkdir(parents=True, exist_ok=True)
    problem = location_problem(container)
    if problem is not None:
        raise ArtifactError(problem)
    fetch = _Fetcher(time.monotonic() + timeout, timeout, s3_client or _default_s3_client)
    url = container.get("ModelDataUrl")
    source = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if url:
        fetch.archive(url, dest)
    elif source:
        fetch.source(source, dest)


def model_root(folder: Path) -> Path:
    """The folder an LMI model server should load: `folder` itself, or its only
    subfolder when that is where `serving.properties` / `model.py` is.

    DJL Serving treats each subfolder of `/opt/ml/model` as a model, so archives made with
    `tar czvf mymodel.tar.gz mymodel/` (as the SageMaker streaming blog does) work there.
    """
    if any((folder / marker).exists() for marker in _MODEL_MARKERS):
        return folder
    try:
        children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return folder
    if len(children) == 1 and children[0].is_dir():
        child = children[0]
        if any((child / marker).exists() for marker in _MODEL_MARKERS):
            return child
    return folder


class _Fetcher:
    """One materialisation: the deadline, and how to reach S3."""

    def __init__(self, deadline: float, timeout: float, s3_client: S3ClientFactory) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self._s3_factory = s3_client
        self._s3: Any = None

    # -- entry points ----------------------------------------------------------------

    def archive(self, location: str, dest: Path) -> None:
        """A `.tar.gz` (or, locally, a folder) unpacked into `dest`."""
        if urlparse(location).scheme == "s3":
            with self._download(location) as path:
                self._extract(path, location, dest)
            return
        path = _local_path(location)
        if path.is_dir():
            self._copy_tree(path, dest)
        elif path.is_file():
            self._extract(path, location, dest)
        else:
            raise ArtifactError(f"Model data {location} does not exist.")

    def source(self, source: Mapping[str, Any], dest: Path) -> None:
        """`ModelDataSource.S3DataSource`: an object or a prefix, compressed or not."""
        uri = source.get("S3Uri", "")
        data_type = source.get("S3DataType", "S3Object")
        compression = source.get("CompressionType", "None")
        if compression == "Gzip":
            if data_type != "S3Object":
                raise ArtifactError(
                    f"CompressionType Gzip needs S3DataType S3Object, not {data_type} ({uri})."
                )
            self.archive(uri, dest)
        elif data_type == "S3Object":
            name = PurePosixPath(urlparse(uri).path).name
            if not name:
                raise ArtifactError(f"S3Uri {uri} names no object.")
            self._copy_object(uri, dest / name)
        else:
            self._copy_prefix(uri, dest)

    # -- archives ----------------------------------------------------------------------

    def _extract(self, archive: Path, location: str, dest: Path) -> None:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                members = tar.getmembers()
                if not members:
                    raise ArtifactError(f"Model data archive {location} is empty.")
                for member in members:
                    problem = unsafe_member(member)
                    if problem is not None:
                        raise ArtifactError(
                            f"Model data archive {location} is unsafe: member "
                            f"{member.name!r} {problem}; nothing was extracted."
                        )
                for member in members:
                    self._check_deadline()
                    _extract_member(tar, member, dest)
        except ArtifactError:
            raise
        except _FILTER_ERRORS as error:
            raise ArtifactError(
                f"Model data archive {location} is unsafe: {error}; extraction stopped."
            ) from None
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise ArtifactError(
                f"Model data {location} is not a valid .tar.gz archive: {error}"
            ) from None

    # -- local copies ------------------------------------------------------------------

    def _copy_tree(self, source: Path, dest: Path) -> None:
        for path in sorted(source.rglob("*")):
            self._check_deadline()
            target = dest / path.relative_to(source)
            if path.is_symlink():
                continue  # a link may lead anywhere; the copy takes regular files only
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with path.open("rb") as reader:
                    self._copy_stream(reader, target)

    def _copy_object(self, location: str, target: Path) -> None:
        if urlparse(location).scheme == "s3":
            bucket, key = _split_s3(location)
            body = self._get_object(bucket, key, location)
            try:
                self._copy_stream(body, target)
            finally:
                body.close()
            return
        path = _local_path(location)
        if not path.is_file():
            raise ArtifactError(f"Model data {location} does not exist.")
        with path.open("rb") as reader:
            self._copy_stream(reader, target)

    def _copy_prefix(self, location: str, dest: Path) -> None:
        if urlparse(location).scheme != "s3":
            path = _local_path(location)
            if not path.is_dir():
                raise ArtifactError(f"Model data prefix {location} is not a folder.")
            self._copy_tree(path, dest)
            return
        bucket, prefix = _split_s3(location)
        if prefix and not prefix.endswith("/"):
            raise ArtifactError(f"S3Prefix {location} must end with '/'.")
        count = 0
        for key in self._list_keys(bucket, prefix, location):
            relative = key[len(prefix) :]
            if not relative or relative.endswith("/"):
                continue  # "folder" placeholder objects
            parts = PurePosixPath(relative).parts
            if relative.startswith("/") or ".." in parts:
                raise ArtifactError(f"S3 object key {key!r} under {location} is unsafe.")
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._copy_object(f"s3://{bucket}/{key}", target)
            count += 1
        if count == 0:
            raise ArtifactError(f"No objects found under model data prefix {location}.")

    def _copy_stream(self, reader: BinaryIO, target: Path) -> None:
        with target.open("wb") as writer:
            while True:
                self._check_deadline()
                block = reader.read(_BLOCK)
                if not block:
                    return
                writer.write(block)

    # -- S3 ----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def _download(self, location: str) -> _TemporaryDownload:
        bucket, key = _split_s3(location)
        body = self._get_object(bucket, key, location)
        download = _TemporaryDownload()
        try:
            self._copy_stream(body, download.path)
        except BaseException:
            download.cleanup()
            raise
        finally:
            body.close()
        return download

    def _get_object(self, bucket: str, key: str, location: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client().get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            detail = error.response.get("Error", {})
            raise ArtifactError(
                f"Could not download model data {location}: "
                f"{detail.get('Code', 'Error')}: {detail.get('Message', '')}".rstrip(": ")
            ) from None
        except BotoCoreError as error:
            raise ArtifactError(f"Could not download model data {location}: {error}") from None

    def _list_keys(self, bucket: str, prefix: str, location: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = (
                self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=prefix)
            )
            for page in pages:
                self._check_deadline()
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as error:
            raise ArtifactError(f"Could not list model data {location}: {error}") from None

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise ArtifactError(
                f"Model data was not ready within ModelDataDownloadTimeoutInSeconds="
                f"{self.timeout:g}."
            )


class _TemporaryDownload:
    """A temporary file holding a downloaded archive; removed on exit."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="streamhost-model-", suffix=".tar.gz")
        os.close(handle)
        self.path = Path(name)

    def cleanup(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting `member` could write outside the target folder, or None if it is safe.

    Our own check runs whatever Python's `tarfile` filters offer, and before anything is
    written, so one bad member rejects the whole archive.
    """
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if ".." in parts:
        return "has a '..' path component"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO"
    # Where the member lands ("a/" and "a/." are "a"): links resolve from its folder.
    placed = posixpath.normpath(name)
    if (member.issym() or member.islnk()) and placed in (".", ""):
        return "is a link in place of the model folder itself"
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            return f"is a symbolic link to the absolute path {target!r}"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(placed), target))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a symbolic link pointing outside the model folder ({target!r})"
    elif member.islnk():
        target = member.linkname
        resolved = posixpath.normpath(target)
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"is a hard link pointing outside the model folder ({target!r})"
    elif not (member.isfile() or member.isdir()):
        return "has an unsupported type"
    return None


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        # Python's own "data" filter as a second line: it also drops setuid bits and
        # catches anything our check did not think of.
        tar.extract(member, dest, filter="data")
    else:  # pragma: no cover - Python without PEP 706
        tar.extract(member, dest)


def _local_path(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"file:// URL {location} names a remote host.")
        return Path(unquote(parsed.path))
    return Path(location).expanduser()


def _split_s3(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise ArtifactError(f"S3 URI {location} names no bucket.")
    return bucket, key


def _default_s3_client() -> Any:
    from botocore.config import Config

    from streamhost.client.boto import boto3_session

    # boto3 reads AWS_ENDPOINT_URL_S3, the region and credentials from the environment.
    return boto3_session().client(
        "s3", config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})
    )
