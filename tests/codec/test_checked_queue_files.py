"""Queue files this package writes open with a key that lets the writer read them with the C
unpickler; every other file, a station's bytes included, goes through the bounded reader."""

import datetime
import os
import pickle

import pytest

from hisparc_datastore.codec import decoding
from hisparc_datastore.codec.decoding import (
    CHECKED_KEY,
    DecodeError,
    Upload,
    parse_event_list,
    parse_queue_file,
)
from hisparc_datastore.testing.helpers import event

HOSTILE = ["billion-laughs-9", "tuple-hash-key-8", "int-hash-collisions-20k", "int-amplify-100kB-x15k",
           "deep-nesting-100k", "sin-value-billion-laughs-9"]
DAY = datetime.datetime(2024, 5, 6, 7, 0, 0)


def refuse_bounded_reader(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("the bounded reader was used")
    monkeypatch.setattr(decoding, "load_plain", refused)


@pytest.fixture
def station_510(testdata):
    return parse_event_list((testdata / "uploads" / "py2_s510_100events").read_bytes())


@pytest.mark.parametrize("events", [0, 1, 100], ids=["empty", "one event (unframed)", "100 events"])
def test_a_queue_file_of_this_package_is_read_without_the_bounded_reader(monkeypatch, station_510,
                                                                        events):
    upload = Upload(510, "Amsterdam", station_510[:events])
    payload = upload.to_queue_bytes()
    refuse_bounded_reader(monkeypatch)
    assert parse_queue_file(payload) == upload  # the key is not part of the upload


def test_both_readers_give_the_same_upload(station_510):
    payload = Upload(510, "Amsterdam", station_510).to_queue_bytes()
    fast = parse_queue_file(payload)
    slow = decoding.loads(payload)
    assert slow.pop(CHECKED_KEY) is True
    assert fast == Upload(**slow)
    assert fast.event_list[0]["header"]["datetime"] == datetime.datetime(2017, 2, 26, 7, 26, 4)


def test_the_deployed_writers_keys_are_all_there(station_510):
    # The writer deployed before (the way back after a switch-over) reads these three keys.
    data = pickle.loads(Upload(510, "Amsterdam", station_510[:3]).to_queue_bytes())
    assert list(data) == [CHECKED_KEY, "station_id", "cluster", "event_list"]
    assert (data["station_id"], data["cluster"], len(data["event_list"])) == (510, "Amsterdam", 3)


def test_files_without_the_key_first_take_the_bounded_reader(monkeypatch):
    events = [event("SIN", DAY, {"MAS_CH1_LOW": 1})]
    others = [
        pickle.dumps({"station_id": 501, "cluster": "Utrecht", "event_list": events}, protocol=4),
        pickle.dumps({"station_id": 501, "cluster": "Utrecht", "event_list": events}, protocol=2),
        # the key, but not first: as a station could place it inside its own event list
        pickle.dumps({"station_id": 501, "cluster": "Utrecht", CHECKED_KEY: True, "event_list": events},
                     protocol=4),
        pickle.dumps({"station_id": 501, "cluster": "Utrecht",
                      "event_list": [{CHECKED_KEY: True}, *events]}, protocol=4),
    ]
    for payload in others:
        assert parse_queue_file(payload).station_id == 501
    refuse_bounded_reader(monkeypatch)
    for payload in others:
        with pytest.raises(AssertionError, match="bounded reader was used"):
            parse_queue_file(payload)


@pytest.mark.parametrize("name", HOSTILE)
def test_the_hostile_queue_files_are_not_taken_as_checked(testdata, name):
    payload = (testdata / "hostile" / f"{name}.queue").read_bytes()
    assert not decoding._checked(payload)
    with pytest.raises(DecodeError):
        parse_queue_file(payload)


class Shell:
    def __reduce__(self):
        return (os.system, ("touch /tmp/checked-was-here",))


def test_a_forged_checked_file_naming_a_global_is_refused_and_runs_nothing(tmp_path):
    forged = pickle.dumps({CHECKED_KEY: True, "station_id": 501, "cluster": "Utrecht",
                           "event_list": [Shell()]}, protocol=4)
    assert decoding._checked(forged)
    with pytest.raises(DecodeError, match="global|names"):
        parse_queue_file(forged)
    assert not os.path.exists("/tmp/checked-was-here")


def test_a_forged_checked_file_with_a_set_falls_back_to_the_bounded_reader():
    forged = pickle.dumps({CHECKED_KEY: True, "station_id": 501, "cluster": "Utrecht",
                           "event_list": [{"header": {1, 2}}]}, protocol=4)
    assert decoding._checked(forged)
    # The C reader builds the set, but the bounded reader's verdict is what counts for a
    # file that does not hold what this package writes.
    with pytest.raises(DecodeError):
        parse_queue_file(forged)


def test_a_forged_checked_file_sharing_lists_is_walked_within_its_size_and_refused():
    laughs = ["ha"]
    for _ in range(9):
        laughs = [laughs] * 10  # 10**9 slots through shared references, a few hundred bytes
    forged = pickle.dumps({CHECKED_KEY: True, "station_id": 501, "cluster": "Utrecht",
                           "event_list": [{"header": {"x": laughs}}]}, protocol=4)
    assert decoding._checked(forged) and len(forged) < 1000
    assert decoding._plain_walk(pickle.loads(forged), 99, len(forged)) == -1
    with pytest.raises(DecodeError):
        parse_queue_file(forged)


def test_the_walk_counts_every_entry_and_refuses_what_the_bounded_reader_refuses():
    ok = {"a": [1, 2.5, "x", b"y", None, True, DAY], "b": {"c": 2**127}}
    assert decoding._plain_walk(ok, 2, 100) == 100 - 2 - 7 - 1
    assert decoding._plain_walk(ok, 1, 100) == -1  # deeper than allowed
    assert decoding._plain_walk(ok, 2, 9) == -1  # more entries than the budget
    for odd in [{"a": (1,)}, {1: "a"}, {"a": {1, 2}}, {"a": 2**128}, {"a": bytearray(b"x")},
                {"a": datetime.date(2024, 1, 1)}, {"a": Shell}]:
        assert decoding._plain_walk(odd, 5, 100) == -1, odd


def test_a_checked_file_sharing_a_datalist_is_read_by_the_bounded_reader_into_a_tree():
    # Our receiver never writes one (the bounded reader's result is a tree), but an Upload built
    # by hand may share: the walk leaves it to the bounded reader, which copies what is shared.
    datalist = [{"data_uploadcode": "CFG_GPS_LAT", "data": 52.35}]
    shared = [{"header": {"eventtype_uploadcode": "CFG", "datetime": DAY}, "datalist": datalist}] * 2
    payload = Upload(501, "Utrecht", shared).to_queue_bytes()
    assert decoding._checked(payload)
    assert decoding._plain_walk(pickle.loads(payload), 99, len(payload)) == -1
    event_list = parse_queue_file(payload).event_list
    assert event_list == shared
    event_list[0]["datalist"][0]["data"] = 0.0
    assert event_list[1]["datalist"][0]["data"] == 52.35
