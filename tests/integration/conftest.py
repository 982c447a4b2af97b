import pytest

from tests.integration.cluster import write_cluster


@pytest.fixture(scope="module")
def single_broker(tmp_path_factory):
    """One broker shared by a module's tests (each test uses its own topic names)."""
    cluster = write_cluster(tmp_path_factory.mktemp("single"), 1)
    broker = cluster.brokers[1]
    broker.start()
    yield broker
    cluster.stop_all()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster config nobody started yet; every broker it started is killed at the end."""
    clusters = []

    def make(n: int = 1, config=None):
        c = write_cluster(tmp_path / f"c{len(clusters)}", n, config)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop_all()


@pytest.fixture
def running_cluster(fresh_cluster):
    """fresh_cluster, started: every broker up, registered and unfenced (killed at the end, by PID)."""
    def make(n: int = 3, config=None, timeout: float = 20.0):
        return fresh_cluster(n, config).start_all(timeout=timeout)

    return make
