"""The writer logs, after every batch, how many uploads wait; counting them must not cost a
look at every waiting file per batch (a backlog's length, squared)."""

import os

from hisparc_datastore.queue import Queue


def test_what_waits_is_counted_from_the_claims_listing_until_it_is_used_up(tmp_path, monkeypatch):
    queue = Queue(tmp_path, fsync=False)
    for n in range(10):
        (queue.incoming / f"upload-{n}").write_bytes(b"x")
    (queue.incoming / ".upload-10.tmp").write_bytes(b"being written")
    assert queue.waiting() == 10  # nothing listed yet: counted, the dot file not
    assert len(queue.claim(4)) == 4
    (queue.incoming / "upload-late").write_bytes(b"x")  # in the next listing
    looks = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: looks.append(path) or real_scandir(path))
    assert queue.waiting() == 6 and looks == []
    assert len(queue.claim(6)) == 6
    assert queue.waiting() == 1 and looks  # the listing used up: incoming/ counted again
    assert queue.claim(10) == ["upload-late"]
    assert queue.waiting() == 0
