import datetime
import os
import pickle

import numpy as np
import pytest

from hisparc_datastore.codec.decoding import (
    DecodeError,
    ForbiddenPickle,
    Upload,
    loads,
    parse_event_list,
    parse_queue_file,
)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_python2_and_python3_uploads_decode_to_the_same_events(testdata):
    py2 = parse_event_list((testdata / "uploads/py2event").read_bytes())
    py3 = parse_event_list((testdata / "uploads/py3event").read_bytes())
    assert py2 == py3
    header = py2[0]["header"]
    assert header["eventtype_uploadcode"] == "CIC"
    assert header["datetime"] == datetime.datetime(2017, 2, 22, 13, 24, 57, 656000)
    assert header["nanoseconds"] == 731509026
    assert isinstance(py2[0]["datalist"][0]["data_uploadcode"], str)


def test_queue_files_of_both_pythons_decode_identically(testdata):
    for code in ("CIC", "SIN", "WTR", "CFG"):
        py2 = parse_queue_file((testdata / f"queue/writer_py2_{code}").read_bytes())
        py3 = parse_queue_file((testdata / f"queue/writer_py3_{code}").read_bytes())
        assert py2 == py3
        assert py2.station_id == 99 and py2.cluster == "Amsterdam"
        assert py2.event_list[0]["header"]["eventtype_uploadcode"] == code


def test_a_pickle_calling_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([_Exploit(marker)], protocol=0)
    with pytest.raises(ForbiddenPickle, match="posix.system|os.system"):
        loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_any_other_global_is_refused_in_every_protocol(protocol):
    payload = pickle.dumps({"f": datetime.date(2017, 1, 1)}, protocol=protocol)
    with pytest.raises(ForbiddenPickle, match="datetime.date"):
        loads(payload)


@pytest.mark.parametrize("protocol", [0, 2, 3, 5])
def test_datetime_and_bytes_load_in_every_protocol(protocol):
    value = [datetime.datetime(2021, 3, 4, 5, 6, 7), b"\x00\xff"]
    assert loads(pickle.dumps(value, protocol=protocol)) == value


@pytest.mark.parametrize("protocol", [0, 2, 3, 5])
@pytest.mark.parametrize(
    "value", [np.int32(-4), np.uint16(65535), np.float32(1004.365), np.float64(2.5), np.bool_(True)]
)
def test_numpy_scalars_become_plain_python_numbers(protocol, value):
    loaded = loads(pickle.dumps([value], protocol=protocol))[0]
    assert type(loaded) in (int, float, bool)
    assert loaded == value.item()


def test_the_real_pysparc_upload_with_numpy_scalars_decodes(testdata):
    events = parse_event_list((testdata / "uploads/py3event").read_bytes())
    values = {item["data_uploadcode"]: item["data"] for item in events[0]["datalist"]}
    assert values["PH1"] == 4 and type(values["PH1"]) is int
    assert values["IN1"] == 0


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_arrays_and_structured_dtypes_are_refused(protocol):
    with pytest.raises(ForbiddenPickle):
        loads(pickle.dumps(np.arange(3), protocol=protocol))
    with pytest.raises(ForbiddenPickle):
        loads(pickle.dumps(np.zeros(1, dtype=[("a", "i4")])[0], protocol=protocol))


def test_codecs_encode_is_honoured_only_as_latin1_bytes():
    # _codecs.encode('x', 'rot13') would return a str: any other use is refused.
    payload = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
    with pytest.raises(ForbiddenPickle, match="_codecs.encode"):
        loads(payload)


@pytest.mark.parametrize("payload", [b"", b"garbage", pickle.dumps([1, 2, 3])[:-3]])
def test_garbled_pickles_raise_decode_error(payload):
    with pytest.raises(DecodeError, match="cannot unpickle"):
        loads(payload)


@pytest.mark.parametrize(
    "content, message",
    [
        ([1, 2], "not a dict"),
        ({"station_id": 1, "cluster": "x"}, "lacks event_list"),
        ({"station_id": "1", "cluster": "x", "event_list": []}, "not an integer"),
        ({"station_id": True, "cluster": "x", "event_list": []}, "not an integer"),
        ({"station_id": 1, "cluster": "", "event_list": []}, "refused: empty"),
        ({"station_id": 1, "cluster": "Utrecht e.o.", "event_list": []}, "ends in '.'"),
        ({"station_id": 1, "cluster": "x", "event_list": {}}, "not a list"),
    ],
)
def test_malformed_queue_files_are_named(content, message):
    with pytest.raises(DecodeError, match=message):
        parse_queue_file(pickle.dumps(content))


def test_upload_round_trips_through_queue_bytes(moment):
    upload = Upload(7, "Aarhus", [{"header": {"datetime": moment}, "datalist": []}])
    assert parse_queue_file(upload.to_queue_bytes()) == upload
