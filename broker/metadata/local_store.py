"""A single-broker metadata log: records appended to a JSON-lines journal and replayed at start.

This is the metadata store of the walking skeleton (one broker, no quorum). It has
the interface the Raft-replicated store keeps: ``image``, ``submit(record)`` and
change listeners called with (old, new) images, off the caller's locks.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable

import structlog

from broker.metadata.image import MetadataImage, apply
from broker.metadata.records import MetadataRecord, record_from_dict, record_to_dict

log = structlog.get_logger(__name__)

Listener = Callable[[MetadataImage, MetadataImage], None]


class LocalMetadataStore:
    def __init__(self, journal_path: Path, cluster_id: str):
        self._path = journal_path
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._image = self._replay(MetadataImage(cluster_id=cluster_id))
        self._file = open(journal_path, "a", encoding="utf-8")

    def _replay(self, image: MetadataImage) -> MetadataImage:
        if not self._path.exists():
            return image
        good_bytes = 0
        with open(self._path, "rb") as f:
            for line in f:
                try:
                    record = record_from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    break  # a torn last line from a kill -9 mid-write: cut it below
                image = apply(image, record)
                good_bytes += len(line)
                if not line.endswith(b"\n"):
                    # Whole record, newline lost: keep it, and end the line so the next
                    # append does not glue a second record onto it.
                    with open(self._path, "ab") as out:
                        out.write(b"\n")
                    good_bytes += 1
        if good_bytes != self._path.stat().st_size:
            log.warning("metadata_journal_tail_cut", path=str(self._path),
                        bytes_cut=self._path.stat().st_size - good_bytes)
            os.truncate(self._path, good_bytes)
        return image

    @property
    def image(self) -> MetadataImage:
        return self._image

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def submit(self, record: MetadataRecord) -> MetadataImage:
        """Append ``record`` durably (to the OS), apply it, tell the listeners; the new image."""
        with self._lock:
            old = self._image
            self._file.write(json.dumps(record_to_dict(record)) + "\n")
            self._file.flush()
            self._image = new = apply(old, record)
        for listener in self._listeners:
            listener(old, new)
        return new

    def close(self) -> None:
        self._file.close()
