"""Move data between this machine and S3: upload a dataset folder, upload or copy one artifact,
download a prefix (e.g. batch-transform outputs), delete everything under a prefix."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from byoc.aws.session import AwsContext
from byoc.errors import ByocError


class S3UriError(ByocError, ValueError):
    pass


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not uri.startswith("s3://"):
        raise S3UriError(f"not an S3 URI (s3://bucket/key): {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise S3UriError(f"S3 URI has no bucket: {uri!r}")
    return bucket, key


def join_s3(prefix_uri: str, *parts: str) -> str:
    return prefix_uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)


def iter_objects(ctx: AwsContext, prefix_uri: str) -> Iterator[dict]:
    """Every object under ``prefix_uri`` (paginated ListObjectsV2)."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    for page in ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def prefix_has_objects(ctx: AwsContext, prefix_uri: str) -> bool:
    """Whether any object's key starts with ``prefix_uri``'s key (what an ``S3Prefix`` channel
    downloads); one ListObjectsV2 call of at most one key."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    return ctx.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0


def upload_folder(ctx: AwsContext, folder: str | os.PathLike, dest_uri: str,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Upload every file under ``folder`` to ``dest_uri`` keeping relative paths.

    Hidden files are skipped. Resume-friendly: files already in S3 with the same size are skipped. ``on_progress(done_bytes,
    total_bytes)`` is called as bytes go out (boto3's ``upload_file`` callback). Returns
    ``(uploaded, skipped)`` file counts; a dry run uploads nothing (0) and prints one line per channel.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    bucket, prefix = parse_s3_uri(dest_uri.rstrip("/") + "/")
    existing = {o["Key"]: o["Size"] for o in iter_objects(ctx, f"s3://{bucket}/{prefix}")}
    # Hidden files (e.g. the ``.complete`` marker of a prepared dataset) are bookkeeping, not data.
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    todo = [p for p in files if existing.get(prefix + p.relative_to(folder).as_posix()) != p.stat().st_size]
    total = sum(p.stat().st_size for p in todo)
    done = 0

    def _callback(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)

    if ctx.is_dry_run:
        _summarize_uploads(ctx, folder, todo, dest_uri)
        return 0, len(files) - len(todo)
    for p in todo:
        ctx.s3.upload_file(str(p), bucket, prefix + p.relative_to(folder).as_posix(), Callback=_callback)
    return len(todo), len(files) - len(todo)


def _summarize_uploads(ctx: AwsContext, folder: Path, todo: list[Path], dest_uri: str) -> None:
    """A dry run's account of a folder upload: one line per channel (a top-level subfolder such as
    ``train/``; files at the top count as one), never one per file."""
    groups: dict[str, list[Path]] = {}
    for p in todo:
        parts = p.relative_to(folder).parts
        groups.setdefault(parts[0] if len(parts) > 1 else "", []).append(p)
    for sub, paths in sorted(groups.items()):
        ctx.dry_run.summarize("s3", "upload_file", {
            "files": len(paths), "bytes": sum(p.stat().st_size for p in paths), "from": str(folder / sub),
            "to": join_s3(dest_uri, sub) + "/" if sub else dest_uri})


def put_new_file(ctx: AwsContext, path: str | os.PathLike, dest_uri: str,
                 metadata: dict[str, str] | None = None) -> str:
    """Upload one local file to exactly ``dest_uri`` unless an object is already there (a single
    PutObject with ``If-None-Match: *``, S3's conditional write: a concurrent writer cannot slip
    in between a check and the upload; up to 5 GB). Returns the URI; :class:`ObjectExistsError`
    when the key is taken."""
    bucket, key = parse_s3_uri(dest_uri)
    with open(path, "rb") as body:
        _write_once(lambda: ctx.s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                                              Metadata=metadata or {}), dest_uri)
    return dest_uri


def copy_new_object(ctx: AwsContext, src_uri: str, dest_uri: str,
                    metadata: dict[str, str] | None = None) -> str:
    """Server-side copy (no bytes pass through this machine) to a key that must not exist yet
    (``If-None-Match: *`` on CopyObject); returns ``dest_uri``."""
    src_bucket, src_key = parse_s3_uri(src_uri)
    bucket, key = parse_s3_uri(dest_uri)
    _write_once(lambda: ctx.s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key},
                                           IfNoneMatch="*", MetadataDirective="REPLACE",
                                           Metadata=metadata or {}), dest_uri)
    return dest_uri


class ObjectExistsError(ByocError):
    """A write-once key already holds an object."""


def _write_once(write: Callable[[], object], dest_uri: str) -> None:
    """S3 answers a conditional write to a taken key with 412 PreconditionFailed, and one racing
    another write of that key with 409 ConditionalRequestConflict (S3 user guide, "How to prevent
    object overwrites with conditional writes"): either way the key is not ours to write."""
    try:
        write()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise ObjectExistsError(f"{dest_uri} already exists") from None
        raise


def head_object(ctx: AwsContext, uri: str) -> dict | None:
    """HeadObject of ``uri`` (ETag, Metadata, ...), or None when there is no such object."""
    bucket, key = parse_s3_uri(uri)
    try:
        return ctx.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def download_prefix(ctx: AwsContext, prefix_uri: str, dest: str | os.PathLike) -> list[Path]:
    """Download every object under ``prefix_uri`` into ``dest`` (relative paths kept)."""
    bucket, prefix = parse_s3_uri(prefix_uri.rstrip("/") + "/")
    dest = Path(dest)
    out = []
    for obj in iter_objects(ctx, f"s3://{bucket}/{prefix}"):
        target = dest / obj["Key"][len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        ctx.s3.download_file(bucket, obj["Key"], str(target))
        out.append(target)
    return out


def delete_prefix(ctx: AwsContext, prefix_uri: str) -> int:
    """Delete every object under ``prefix_uri`` (DeleteObjects, 1000 keys a request)."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    if not prefix.strip("/"):
        raise S3UriError(f"refusing to delete a whole bucket: {prefix_uri!r} has no key prefix")
    keys = [o["Key"] for o in iter_objects(ctx, prefix_uri)]
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i:i + 1000]]
        ctx.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    return len(keys)
