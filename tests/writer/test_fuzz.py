"""Thousands of malformed queue files: the writer never stops, every bad file ends in
quarantine with its reason, and every good event is stored."""

import datetime
import os
import pickle
import random

import hypothesis.strategies as st
import tables
from hypothesis import HealthCheck, given, settings

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import REASON_SUFFIX
from hisparc_datastore.sim.summary import day_files
from hisparc_datastore.testing.helpers import event, settings_for
from hisparc_datastore.writer.service import Writer

DAY = datetime.datetime(2024, 5, 6, 7, 0, 0)


class Shell:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fuzz-was-here",))


class Evaluator:
    def __reduce__(self):
        return (eval, ("1+1",))


def good_event(rng, i):
    moment = DAY + datetime.timedelta(seconds=i)
    if rng.random() < 0.5:
        return event("SIN", moment, {"MAS_CH1_LOW": rng.randint(0, 1000), "SLV_CH2_HIGH": rng.randint(0, 99)})
    return event("CIC", moment, {"PH1": rng.randint(0, 4000), "TR2": "eJwzAAAAMgAy", "RED": False},
                 nanoseconds=rng.randrange(10**9))


def bad_event(rng, i):
    """An event the writer must refuse, and so quarantine."""
    moment = DAY + datetime.timedelta(seconds=i)
    return rng.choice([
        lambda: "not an event",
        lambda: {"datalist": []},
        lambda: {"header": "CIC", "datalist": []},
        lambda: event("XYZ", moment, {"A": 1}),
        lambda: event("SIN", datetime.datetime(1970, 1, 1, 0, 0, i % 60), {"MAS_CH1_LOW": 1}),
        lambda: {"header": {"eventtype_uploadcode": "SIN", "datetime": "2024-05-06 07:00:00"},
                 "datalist": []},
        lambda: {"header": {"eventtype_uploadcode": "SIN", "datetime": moment}, "datalist": "MAS"},
        lambda: {"header": {"eventtype_uploadcode": "SIN", "datetime": moment}, "datalist": [5]},
        lambda: event("SIN", moment, {"MAS_CH1_LOW": "345"}),
        lambda: event("SIN", moment, {"MAS_CH1_LOW": 2**70}),
        lambda: event("SIN", moment, {"MAS_CH1_LOW": float("nan")}),
        lambda: event("SIN", moment, {"MAS_CH1_LOW": None}),
        lambda: event("CIC", moment, {"PH1": 40000}, nanoseconds=1),
        lambda: event("CIC", moment, {"PH1": 1}, nanoseconds=-5),
        lambda: event("CIC", moment, {"PH1": 1}, nanoseconds=10**9),
        lambda: event("CIC", moment, {"TR1": 12345}, nanoseconds=1),
        lambda: event("CIC", moment, {"TR1": "!!not base64!!x"}, nanoseconds=1),
    ])()


def bad_file(rng, good_payload):
    """Bytes no writer can take as a queue file."""
    return rng.choice([
        lambda: good_payload[: rng.randrange(1, len(good_payload) - 1)],
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))),
        lambda: pickle.dumps([1, 2, 3]),
        lambda: pickle.dumps({"station_id": 501, "cluster": "Utrecht"}),
        lambda: pickle.dumps({"station_id": "501", "cluster": "Utrecht", "event_list": []}),
        lambda: pickle.dumps({"station_id": 501, "cluster": 7, "event_list": []}),
        lambda: pickle.dumps({"station_id": 501, "cluster": "Utrecht", "event_list": "events"}),
        lambda: pickle.dumps(Shell()),
        lambda: pickle.dumps({"station_id": 501, "cluster": "Utrecht", "event_list": [Evaluator()]}),
        lambda: pickle.dumps({"station_id": 501, "cluster": "Utrecht",
                              "event_list": [{"header": datetime.date(2024, 1, 1)}]}),
        lambda: pickle.dumps({"station_id": 501, "cluster": "Utrecht", "event_list": [set()]}),
        # a container where the shape has a value: nested deeper than station data is
        lambda: Upload(501, "Utrecht", [event("SIN", DAY, {"MAS_CH1_LOW": [1, 2]})]).to_queue_bytes(),
        lambda: b"",
    ])()


def write_corpus(data_dir, rng, files):
    """Queue ``files`` uploads: good, bad as a whole, or good with bad events mixed in.

    Returns (good events sent, names of files that must end in quarantine)."""
    incoming = data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    good_events, must_quarantine, second = 0, set(), 0
    for n in range(files):
        name = f"{n:05d}"
        kind = rng.random()
        events = []
        for _ in range(rng.randint(1, 6)):
            second += 1
            events.append(good_event(rng, second))
        payload = Upload(501 + n % 3, "Utrecht", events).to_queue_bytes()
        if kind < 0.4:
            payload = bad_file(rng, payload)
            must_quarantine.add(name)
        elif kind < 0.7:
            second += 1
            events.insert(rng.randrange(len(events) + 1), bad_event(rng, second))
            payload = Upload(501 + n % 3, "Utrecht", events).to_queue_bytes()
            good_events += len(events) - 1
            must_quarantine.add(name + ".events")
        else:
            good_events += len(events)
        (incoming / name).write_bytes(payload)
        os.utime(incoming / name, ns=(n * 10**9, n * 10**9))
    return good_events, must_quarantine


def stored_rows(data_dir):
    total = 0
    for path in day_files(data_dir):
        with tables.open_file(path) as h5:
            total += sum(node.nrows for node in h5.walk_nodes("/hisparc", classname="Table"))
    return total


def check(data_dir, good_events, must_quarantine):
    tally = Writer(settings_for(data_dir, minimum_year=2020), load_registry()).run(once=True)
    quarantine = data_dir / "quarantine"
    kept = {p.name for p in quarantine.iterdir() if not p.name.endswith(REASON_SUFFIX)}
    # a bad file is kept whole, or, if it unpickles, as its refused events
    assert {name.removesuffix(".events") for name in kept} == {
        name.removesuffix(".events") for name in must_quarantine}, (
        sorted(kept ^ must_quarantine)[:10])
    for name in kept:
        assert (quarantine / (name + REASON_SUFFIX)).read_text().strip()
    assert stored_rows(data_dir) == good_events == tally.events
    assert list((data_dir / "incoming").iterdir()) == []
    assert list((data_dir / "partial").iterdir()) == []
    assert not os.path.exists("/tmp/fuzz-was-here")


def test_two_thousand_malformed_queue_files(tmp_path):
    rng = random.Random(20261125)
    good_events, must_quarantine = write_corpus(tmp_path, rng, 2000)
    assert 700 < len([n for n in must_quarantine if "." not in n]) < 900
    check(tmp_path, good_events, must_quarantine)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), files=st.integers(1, 60))
def test_any_mix_of_malformed_queue_files(tmp_path_factory, seed, files):
    data_dir = tmp_path_factory.mktemp("fuzz")
    good_events, must_quarantine = write_corpus(data_dir, random.Random(seed), files)
    check(data_dir, good_events, must_quarantine)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=400))
def test_arbitrary_bytes_never_stop_the_writer(tmp_path_factory, junk):
    data_dir = tmp_path_factory.mktemp("junk")
    (data_dir / "incoming").mkdir()
    (data_dir / "incoming" / "junk").write_bytes(junk)
    tally = Writer(settings_for(data_dir), load_registry()).run(once=True)
    assert tally.quarantined_files + tally.uploads == 1
    assert list((data_dir / "incoming").iterdir()) == list((data_dir / "partial").iterdir()) == []
