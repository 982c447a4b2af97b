"""Storage: partition logs made of segments, a sparse offset index, the leader-epoch
cache and checkpoints (DESIGN.md section 7). Knows nothing of replication."""

from broker.log.config import LogConfig
from broker.log.log import AppendInfo, PartitionLog
from broker.log.manager import DataDirLockedError, InconsistentDataDirError, LogManager
from broker.log.meta_properties import MetaProperties, UnformattedDataDirError

__all__ = ["AppendInfo", "DataDirLockedError", "InconsistentDataDirError", "LogConfig", "LogManager",
           "MetaProperties", "PartitionLog", "UnformattedDataDirError"]
