"""Testing support that ships with raftka: real broker clusters for tests, chaos runs and benchmarks."""
