"""Where storage code reports that the data dir failed (Kafka's LogDirFailureChannel).

Kafka marks a log dir offline on the first IOException in it: its partitions answer
KAFKA_STORAGE_ERROR from then on, the controller is told and elects leaders
elsewhere, and a broker whose last log dir went offline halts. raftka has exactly
one data dir per broker, so the first storage failure takes the whole broker's
storage offline; the broker then halts (broker/broker.py says how and why).

What counts as a failure of the data dir:

- any OSError while reading or writing it: EIO, ENOSPC (disk full), EFBIG (a
  file-size limit, RLIMIT_FSIZE), EROFS or EACCES (made read-only), ENOENT (a
  file or folder deleted under the broker) - Kafka does not tell them apart either;
- a segment file unlinked while open (the broker could go on writing to an
  inode no one can find again: what it acknowledged would vanish at the next restart);
- a batch whose CRC or header does not check out when read back (the bytes on
  disk changed after they were written): the damaged copy must not be served, and
  only a restart's recovery can cut it away and re-fetch it from the leader.

This module is plain state: the first report wins and notifies the listeners
once; it does no I/O of its own.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

log = structlog.get_logger(__name__)

# What an errno means for the data dir, in words a person reading the log knows.
_ERRNO_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied (data dir made read-only?)",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "file or folder deleted under the broker",
    errno.EIO: "I/O error",
}


def storage_error_reason(error: BaseException) -> str:
    """A short reason for the log line: what kind of storage failure ``error`` is."""
    if isinstance(error, OSError) and error.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[error.errno]
    if isinstance(error, OSError):
        return "I/O error" if error.errno is None else f"I/O error ({errno.errorcode.get(error.errno, error.errno)})"
    return "corrupt data"


@dataclass(frozen=True)
class LogDirFailure:
    log_dir: Path
    reason: str      # storage_error_reason(...)
    message: str     # what was being done, with the error


Listener = Callable[[LogDirFailure], None]


class LogDirFailureChannel:
    """Collects the data dir's first failure and tells the listeners (once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: LogDirFailure | None = None
        self._listeners: list[Listener] = []

    @property
    def failure(self) -> LogDirFailure | None:
        return self._failure

    @property
    def offline(self) -> bool:
        return self._failure is not None

    def add_listener(self, listener: Listener) -> None:
        """``listener`` runs on the reporting thread; a failure reported earlier is passed at once."""
        with self._lock:
            self._listeners.append(listener)
            failure = self._failure
        if failure is not None:
            listener(failure)

    def maybe_add_offline_log_dir(self, log_dir: Path, message: str, error: BaseException) -> bool:
        """Report a failure of ``log_dir``; True if it was the first (the dir just went offline)."""
        failure = LogDirFailure(Path(log_dir), storage_error_reason(error), message)
        with self._lock:
            if self._failure is not None:
                log.debug("log_dir_already_offline", log_dir=str(log_dir), error=message)
                return False
            self._failure = failure
            listeners = list(self._listeners)
        log.error("log_dir_offline", log_dir=str(log_dir), reason=failure.reason, error=message)
        for listener in listeners:
            listener(failure)
        return True
