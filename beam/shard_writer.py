"""Deterministic, retry-safe shard files on any Beam filesystem.

Why not `WriteToTFRecord`: record order inside its shards depends on bundle
scheduling, and we promise byte-identical outputs for the same seed and
input. Each shard here is written by exactly one `process` call from
already-sorted records, to a temporary name that is renamed at the end, so a
retried bundle overwrites rather than duplicates.
"""

from __future__ import annotations

import struct
import uuid

from apache_beam.io.filesystems import FileSystems

from trainer import features


def _masked_crc(data: bytes) -> bytes:
    import google_crc32c

    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def shard_path(output_dir: str, name: str, shard: int, num_shards: int) -> str:
    """`<output_dir>/<name>-00003-of-00016.tfrecord`."""
    return FileSystems.join(
        output_dir, f"{name}-{shard:05d}-of-{num_shards:05d}{features.TFRECORD_SUFFIX}"
    )


class TFRecordShard:
    """Context manager writing TFRecord framing (length, crc, data, crc)."""

    def __init__(self, path: str):
        self.path = path
        self._tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self._handle = None
        self.count = 0

    def __enter__(self) -> "TFRecordShard":
        self._handle = FileSystems.create(self._tmp)
        return self

    def write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._handle.write(header + _masked_crc(header) + data + _masked_crc(data))
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._handle.close()
        if exc_type is not None:
            FileSystems.delete([self._tmp])
            return
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])
        FileSystems.rename([self._tmp], [self.path])


def write_text(path: str, text: str) -> None:
    """Writes a small text artifact atomically (temp name, then rename)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as handle:
        handle.write(text.encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
