"""The raftka broker process: storage, partitions, metadata, the gRPC servers."""
