"""LocalMetadataStore: a JSON-lines journal replayed at start, with (old, new) listeners."""

import json

from broker.metadata.image import MetadataImage
from broker.metadata.local_store import LocalMetadataStore
from broker.metadata.records import CreateTopic, DeleteTopic, RegisterBroker

RECORDS = [RegisterBroker(1, "127.0.0.1", 9092), CreateTopic("t", ((1,), (1,)), {"retention.ms": "9"}),
           CreateTopic("u", ((1,),)), DeleteTopic("u")]


def _filled(path):
    store = LocalMetadataStore(path, "c1")
    for r in RECORDS:
        store.submit(r)
    return store


def test_new_store_without_journal_is_an_empty_image(tmp_path):
    store = LocalMetadataStore(tmp_path / "meta.log", "c1")
    try:
        assert store.image == MetadataImage(cluster_id="c1")
    finally:
        store.close()


def test_submit_applies_and_persists_one_json_line_per_record(tmp_path):
    path = tmp_path / "meta.log"
    store = _filled(path)
    try:
        assert set(store.image.topics) == {"t"} and store.image.offset == len(RECORDS)
        lines = path.read_text().splitlines()
        assert [json.loads(line)["type"] for line in lines] == [
            "RegisterBroker", "CreateTopic", "CreateTopic", "DeleteTopic"]
    finally:
        store.close()


def test_submit_returns_the_new_image(tmp_path):
    store = LocalMetadataStore(tmp_path / "meta.log", "c1")
    try:
        new = store.submit(RegisterBroker(2, "h", 1))
        assert new is store.image and 2 in new.brokers
    finally:
        store.close()


def test_a_new_store_on_the_same_journal_replays_an_equal_image(tmp_path):
    path = tmp_path / "meta.log"
    first = _filled(path)
    first.close()
    second = LocalMetadataStore(path, "c1")
    try:
        assert second.image == first.image
        second.submit(DeleteTopic("t"))
    finally:
        second.close()
    third = LocalMetadataStore(path, "c1")
    try:
        assert "t" not in third.image.topics and third.image.offset == len(RECORDS) + 1
    finally:
        third.close()


def test_a_torn_last_line_is_cut_and_the_replay_keeps_the_rest(tmp_path):
    path = tmp_path / "meta.log"
    first = _filled(path)
    first.close()
    good = path.read_bytes()
    whole_line = json.dumps({"type": "CreateTopic", "name": "torn", "assignments": [[1]], "configs": {}})
    with open(path, "ab") as f:
        f.write(whole_line[: len(whole_line) // 2].encode())
    second = LocalMetadataStore(path, "c1")
    try:
        assert second.image == first.image
        assert path.read_bytes() == good
        second.submit(CreateTopic("after", ((1,),)))
    finally:
        second.close()
    third = LocalMetadataStore(path, "c1")
    try:
        assert set(third.image.topics) == {"t", "after"}
    finally:
        third.close()


def test_a_last_record_missing_only_its_newline_survives_the_next_append(tmp_path):
    # A crash between the JSON text and its "\n" leaves a complete record without a newline.
    # The replay applies it, so it must still be there after the next submit and restart.
    path = tmp_path / "meta.log"
    _filled(path).close()
    with open(path, "a") as f:
        f.write(json.dumps({"type": "CreateTopic", "name": "late", "assignments": [[1]], "configs": {}}))
    second = LocalMetadataStore(path, "c1")
    try:
        assert "late" in second.image.topics
        second.submit(CreateTopic("after", ((1,),)))
        expected = second.image
    finally:
        second.close()
    third = LocalMetadataStore(path, "c1")
    try:
        assert third.image == expected
    finally:
        third.close()


def test_listeners_get_the_old_and_new_image(tmp_path):
    store = LocalMetadataStore(tmp_path / "meta.log", "c1")
    seen = []
    store.add_listener(lambda old, new: seen.append((old, new)))
    try:
        before = store.image
        store.submit(RegisterBroker(1, "h", 1))
        after = store.image
        store.submit(CreateTopic("t", ((1,),)))
        assert len(seen) == 2
        assert seen[0] == (before, after)
        assert seen[1][0] is after and seen[1][1] is store.image
        assert 1 not in seen[0][0].brokers and 1 in seen[0][1].brokers
    finally:
        store.close()
