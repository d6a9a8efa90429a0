"""The bounded pickle reader: plain station data in, refusals for everything else, at a cost
that grows with the pickle's size. The hostile pickles are built from opcodes, as an
attacker with a station's password would build them, in more shapes than the six files of
shared/testdata/hostile."""

import ast
import datetime
import pickle
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hisparc_datastore.codec import plainpickle
from hisparc_datastore.codec.decoding import (
    EVENT_LIST_DEPTH,
    QUEUE_FILE_DEPTH,
    DecodeError,
    ForbiddenPickle,
    Upload,
    loads,
    parse_event_list,
    parse_queue_file,
)
from hisparc_datastore.testing.helpers import event

HOSTILE = ["billion-laughs-9", "tuple-hash-key-8", "int-hash-collisions-20k", "int-amplify-100kB-x15k",
           "deep-nesting-100k", "sin-value-billion-laughs-9"]
MOMENT = datetime.datetime(2024, 5, 6, 7, 8, 9)


def outcome_of(function, *args):
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001
        return exc


def costs(function, *args):
    """(CPU seconds, peak MB allocated, result or exception) of a call, measured in two calls:
    tracemalloc slows every allocation, so it must not be running while CPU time is taken."""
    started = time.process_time()
    outcome = outcome_of(function, *args)
    cpu = time.process_time() - started
    tracemalloc.start()
    try:
        outcome_of(function, *args)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return cpu, peak, outcome


# -- the six hostile files -------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_upload_and_queue_file_is_refused_cheaply(testdata, name):
    for suffix, parse in ((".upload", parse_event_list), (".queue", parse_queue_file)):
        cpu, peak, outcome = costs(parse, (testdata / "hostile" / (name + suffix)).read_bytes())
        assert isinstance(outcome, ForbiddenPickle), (name, suffix, outcome)
        # Generous bounds: these cost 4 s to 130 s and 0.5 to 4 GB before.
        assert cpu < 3.0, (name, suffix, cpu)
        assert peak < 100, (name, suffix, peak)


# -- their cousins ---------------------------------------------------------------------------

P2 = pickle.PROTO + b"\x02"


def binget(i: int) -> bytes:
    return pickle.BINGET + bytes([i]) if i < 256 else pickle.LONG_BINGET + struct.pack("<I", i)


def binput(i: int) -> bytes:
    return pickle.BINPUT + bytes([i]) if i < 256 else pickle.LONG_BINPUT + struct.pack("<I", i)


def text(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def shared_levels(open_op: bytes, close_op: bytes, fanout: int, depth: int) -> bytes:
    """Containers each holding ``fanout`` memo references to the one below, never POPped:
    level i is built inside level i+1 the first time and referenced from the memo after."""
    body = pickle.NONE
    for level in range(depth):
        body = open_op + body + binput(level) + binget(level) * (fanout - 1) + close_op
    return body


@pytest.mark.parametrize("open_op, close_op, refusal", [
    (pickle.MARK, pickle.LIST, "bound on shared references"),
    (pickle.MARK, pickle.TUPLE, "tuple"),
    (pickle.EMPTY_LIST + pickle.MARK, pickle.APPENDS, "bound on shared references"),
])
@pytest.mark.parametrize("where", ["root", "header value", "data value", "dict key"])
def test_shared_levels_are_refused_at_the_expansion_bound_wherever_they_hide(open_op, close_op, refusal,
                                                                              where):
    bomb = shared_levels(open_op, close_op, fanout=10, depth=9)
    if where == "root":
        payload = P2 + pickle.EMPTY_LIST + pickle.MARK + bomb + pickle.APPENDS + pickle.STOP
    elif where == "header value":
        payload = (P2 + pickle.EMPTY_LIST + pickle.EMPTY_DICT + text("header") + pickle.EMPTY_DICT
                   + text("nanoseconds") + bomb + pickle.SETITEM + pickle.SETITEM + pickle.APPEND
                   + pickle.STOP)
    elif where == "data value":
        payload = (P2 + pickle.EMPTY_LIST + pickle.EMPTY_DICT + text("data") + bomb + pickle.SETITEM
                   + pickle.APPEND + pickle.STOP)
    else:
        payload = P2 + pickle.EMPTY_DICT + bomb + pickle.NONE + pickle.SETITEM + pickle.STOP
    cpu, peak, outcome = costs(loads, payload)
    assert isinstance(outcome, ForbiddenPickle), outcome
    assert refusal in str(outcome), outcome
    assert cpu < 1.0 and peak < 20


def dicts_in_their_subtree(value) -> list[int]:
    """The ids of every list and dict in ``value``, once per path to it."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, dict)):
            found.append(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def shared_shapes():
    """Event lists in which Python's pickler refers to one object again through the memo."""
    item = {"data_uploadcode": "CFG_GPS_LAT", "data": 52.35}
    datalist = [item, {"data_uploadcode": "CFG_MAS_VERSION", "data": "Hardware: 9 FPGA: 10"}]
    header = {"eventtype_uploadcode": "CFG", "datetime": MOMENT, "nanoseconds": 0}
    code = "MAS_CH1_LOW"
    return {
        "datalist item": [event("SIN", MOMENT, {}) | {"datalist": [item, item]}, {
            "header": dict(header), "datalist": [item]}],
        "datalist": [{"header": header | {"nanoseconds": 1}, "datalist": datalist},
                     {"header": dict(header), "datalist": datalist}],
        "header": [{"header": header, "datalist": datalist}, {"header": header, "datalist": []}],
        "string": [event("SIN", MOMENT, {code: 1}), event("SIN", MOMENT, {code: 2})],
        "event": [event("SIN", MOMENT, {code: 1})] * 3,
    }


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("shape", list(shared_shapes()))
def test_shared_references_are_read_as_python_reads_them_but_into_a_tree(shape, protocol):
    event_list = shared_shapes()[shape]
    payload = pickle.dumps(event_list, protocol=protocol)
    assert b"h" in payload or b"g" in payload or b"j" in payload  # a memo reference is in it
    for parse, data in ((parse_event_list, payload),
                        (parse_queue_file, pickle.dumps({"station_id": 501, "cluster": "Utrecht",
                                                         "event_list": event_list}, protocol=protocol))):
        result = parse(data)
        result = result if isinstance(result, list) else result.event_list
        assert result == event_list
        ids = dicts_in_their_subtree(result)
        assert len(ids) == len(set(ids)), "a container is reachable twice"
        # A change through one reference never shows through another.
        first = result[0]["datalist"][0] if result[0]["datalist"] else result[0]["header"]
        first["data"] = "changed"
        assert result[1:] == event_list[1:]


@pytest.mark.parametrize("protocol", range(6))
def test_a_container_inside_itself_is_refused(protocol):
    inside_itself: list = []
    inside_itself.append(inside_itself)
    in_its_value: dict = {"header": {}}
    in_its_value["header"]["up"] = in_its_value
    in_a_list: list = [{"datalist": []}]
    in_a_list[0]["datalist"].append(in_a_list)
    for cyclic in (inside_itself, in_its_value, in_a_list):
        with pytest.raises(ForbiddenPickle, match="inside itself"):
            loads(pickle.dumps(cyclic, protocol=protocol))


def test_a_copy_handed_out_is_never_changed_after():
    # Python's pickler never changes a container after it refers to it again; a hand-made
    # pickle that does would see a copy diverge from what Python's unpickler shares.
    built = P2 + pickle.EMPTY_LIST + pickle.EMPTY_LIST + binput(0) + pickle.APPEND
    with pytest.raises(ForbiddenPickle, match="inside itself"):  # the copy is filled
        loads(built + binget(0) + pickle.NONE + pickle.APPEND + pickle.APPEND + pickle.STOP)
    kept = P2 + pickle.EMPTY_LIST + binput(0) + pickle.EMPTY_LIST + binget(0) + pickle.APPEND
    with pytest.raises(ForbiddenPickle, match="inside itself"):  # the original is filled
        loads(kept + pickle.APPEND + pickle.STOP)
    with pytest.raises(ForbiddenPickle, match="inside itself"):
        loads(P2 + pickle.EMPTY_DICT + binput(0) + text("a") + binget(0) + pickle.SETITEM + pickle.STOP)
    with pytest.raises(ForbiddenPickle, match="inside itself"):
        loads(P2 + pickle.EMPTY_DICT + binput(0) + pickle.MARK + text("a") + binget(0) + pickle.SETITEMS
              + pickle.STOP)


def test_a_shared_datalist_is_read_up_to_the_bound_and_refused_beyond_it():
    datalist = [{"data_uploadcode": f"CFG_MAS_CH{i % 2 + 1}THRLOW", "data": float(i)} for i in range(100)]
    within = [{"header": {"eventtype_uploadcode": "CFG", "datetime": MOMENT}, "datalist": datalist}] * 100
    assert parse_event_list(pickle.dumps(within, protocol=4)) == within
    beyond = within * 40  # 4,000 events, one datalist: every reference copies all of it
    payload = pickle.dumps(beyond, protocol=4)
    cpu, peak, outcome = costs(parse_event_list, payload)
    assert isinstance(outcome, ForbiddenPickle) and "bound on shared references" in str(outcome)
    assert f"{plainpickle.MAX_REFERENCED_FACTOR} times the pickle's size" in str(outcome)
    assert cpu < 1.0 and peak < 20


@pytest.mark.parametrize("key", [
    pickle.BININT1 + b"\x05",
    pickle.BINFLOAT + struct.pack(">d", 1.5),
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.SHORT_BINBYTES + b"\x01k",
    pickle.EMPTY_TUPLE,
    pickle.MARK + pickle.BININT1 + b"\x01" + pickle.TUPLE,
], ids=["int", "float", "None", "bool", "bytes", "empty tuple", "tuple"])
def test_only_text_may_be_a_dict_key(key):
    # An int, float or tuple key can be made to collide or to hash for ever: only str
    # hashes are randomised.
    payload = P2 + pickle.EMPTY_DICT + key + pickle.NONE + pickle.SETITEM + pickle.STOP
    with pytest.raises(ForbiddenPickle, match="dict key"):
        loads(payload)


def test_twenty_thousand_colliding_int_keys_cost_nothing():
    modulus = 2**61 - 1  # hash(k + j * modulus) == hash(k): every key collides
    items = b"".join(pickle.LONG1 + bytes([10]) + (7 + j * modulus).to_bytes(10, "little", signed=True)
                     + pickle.NONE for j in range(20_000))
    payload = P2 + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.STOP
    cpu, _, outcome = costs(loads, payload)
    assert isinstance(outcome, ForbiddenPickle) and cpu < 1.0


@pytest.mark.parametrize("payload, message", [
    (pickle.dumps([{1, 2}], protocol=4), "EMPTY_SET"),
    (pickle.dumps([frozenset([1])], protocol=4), "frozenset|FROZENSET"),
    (pickle.dumps([frozenset([1])], protocol=2), "frozenset"),
    (pickle.dumps([bytearray(b"x")], protocol=5), "BYTEARRAY8"),
    (pickle.dumps([bytearray(b"x")], protocol=2), "bytearray"),
    (pickle.dumps([(1, 2)], protocol=2), "tuple is not plain data"),
    (P2 + pickle.GLOBAL + b"numpy\ndtype\n" + pickle.STOP, "callable numpy.dtype"),
    (P2 + pickle.EMPTY_LIST + pickle.GLOBAL + b"datetime\ndatetime\n" + pickle.APPEND + pickle.STOP,
     "callable datetime.datetime"),
    (P2 + pickle.EMPTY_LIST + pickle.NONE + pickle.DUP + pickle.APPENDS + pickle.STOP, "DUP"),
    (P2 + pickle.EMPTY_LIST + pickle.NONE + pickle.POP + pickle.STOP, "POP"),
], ids=["set", "frozenset p4", "frozenset p2", "bytearray p5", "bytearray p2", "tuple", "dtype",
        "datetime class", "DUP", "POP"])
def test_nothing_but_plain_data_is_built(payload, message):
    with pytest.raises(ForbiddenPickle, match=message):
        loads(payload)


def test_a_numpy_dtype_is_never_returned_and_cannot_be_built_twice():
    dtype = pickle.GLOBAL + b"numpy\ndtype\n" + text("f8") + pickle.NEWFALSE + pickle.NEWTRUE \
        + pickle.TUPLE3 + pickle.REDUCE
    state = (pickle.MARK + pickle.BININT1 + b"\x03" + text("<") + pickle.NONE * 3
             + pickle.BININT1 + b"\x00" + pickle.TUPLE)
    with pytest.raises(ForbiddenPickle, match="numpy dtype"):
        loads(P2 + pickle.EMPTY_LIST + dtype + pickle.APPEND + pickle.STOP)
    with pytest.raises(ForbiddenPickle, match="BUILD"):
        loads(P2 + dtype + state + pickle.BUILD + state + pickle.BUILD + pickle.STOP)


def test_no_upload_changes_how_the_next_is_read():
    # BUILD on the stand-in for numpy's scalar function would, with a stand-in that is a
    # module-level function, set its attributes for the rest of the process.
    scalar = pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n"
    attack = P2 + scalar + pickle.EMPTY_DICT + text("__defaults__") + pickle.NONE + pickle.SETITEM \
        + pickle.BUILD + pickle.STOP
    with pytest.raises(ForbiddenPickle, match="BUILD"):
        loads(attack)
    np = pytest.importorskip("numpy")
    assert loads(pickle.dumps([np.float32(1004.365)], protocol=2)) == [np.float32(1004.365).item()]


@pytest.mark.parametrize("payload", [
    P2 + pickle.LONG1 + bytes([255]) + b"\x01" * 255 + pickle.STOP,
    P2 + pickle.LONG4 + struct.pack("<I", 100_000) + b"\x01" * 100_000 + pickle.STOP,
    b"L" + b"9" * 5000 + b"L\n.",
    b"I" + b"9" * 5000 + b"\n.",
], ids=["LONG1 255 bytes", "LONG4 100 kB", "LONG text 5000 digits", "INT text 5000 digits"])
def test_integers_beyond_128_bits_are_refused(payload):
    cpu, _, outcome = costs(loads, payload)
    assert isinstance(outcome, ForbiddenPickle) and cpu < 1.0


def test_a_large_text_referenced_again_and_again_is_refused():
    # Each reference would be base64-decoded and stored as a blob: 1 MB x 400,000 = 400 GB.
    trace = "A" * 1_000_000
    events = b"".join(pickle.EMPTY_DICT + text("TR1") + binget(0) + pickle.SETITEM + pickle.APPEND
                      for _ in range(400))
    payload = P2 + pickle.EMPTY_LIST + text(trace) + binput(0) + pickle.APPEND \
        + events + pickle.STOP
    cpu, peak, outcome = costs(loads, payload)
    assert isinstance(outcome, ForbiddenPickle) and "bound on shared references" in str(outcome)
    assert cpu < 1.0 and peak < 50


def test_nesting_is_bounded_by_the_shape_of_the_data():
    deep = P2 + pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999 + pickle.STOP
    cpu, _, outcome = costs(loads, deep)
    assert isinstance(outcome, ForbiddenPickle) and "nest deeper" in str(outcome)
    assert cpu < 2.0
    one_too_deep = [event("SIN", MOMENT, {"MAS_CH1_LOW": [1, 2]})]
    with pytest.raises(ForbiddenPickle, match="nest deeper than 4"):
        parse_event_list(pickle.dumps(one_too_deep))
    just_deep_enough = [event("SIN", MOMENT, {"MAS_CH1_LOW": 1})]
    assert parse_event_list(pickle.dumps(just_deep_enough)) == just_deep_enough
    assert parse_queue_file(Upload(501, "Utrecht", just_deep_enough).to_queue_bytes()).event_list \
        == just_deep_enough


@pytest.mark.parametrize("payload", [
    b"", b".", b"]", b"(.", b"]a.", b"}K\x01u.", b"}(K\x01u.", b"\x80\x02X\xff\xff\xff\xff.",
    b"h\x05.", b"S'unterminated\n.", b"\x80\x02\x95", b"\x80\x09]."],
    ids=lambda payload: repr(payload)[:30])
def test_garbled_pickles_raise_decode_error(payload):
    with pytest.raises(DecodeError):
        loads(payload)


# -- what it must keep reading -----------------------------------------------------------------


def test_every_real_station_pickle_decodes_as_pickle_itself_decodes_it(testdata):
    files = [path for folder in ("uploads", "queue") for path in sorted((testdata / folder).iterdir())]
    assert len(files) == 13
    for path in files:
        payload = path.read_bytes()
        depth = QUEUE_FILE_DEPTH if path.parent.name == "queue" else EVENT_LIST_DEPTH
        assert plainpickle.load_plain(payload, depth) == pickle.loads(payload, encoding="latin1"), path


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
    st.text(max_size=20), st.binary(max_size=20),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2100, 1, 1)),
)
keys = st.text(max_size=12)
events = st.fixed_dictionaries({
    "header": st.dictionaries(keys, scalars, max_size=5),
    "datalist": st.lists(st.dictionaries(keys, scalars, max_size=3), max_size=4),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_list=st.lists(events, max_size=5), protocol=st.integers(0, 5))
def test_any_event_list_round_trips_in_every_protocol(event_list, protocol):
    payload = pickle.dumps(event_list, protocol=protocol)
    assert parse_event_list(payload) == event_list
    # A queue file is at most a small multiple of the upload it was made from.
    assert len(Upload(1, "x", event_list).to_queue_bytes()) <= 10 * len(payload) + 200


OPCODES = [pickle.PROTO + b"\x02", pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.MARK, pickle.APPEND,
           pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS, pickle.LIST, pickle.DICT, pickle.TUPLE,
           pickle.TUPLE1, pickle.TUPLE2, pickle.EMPTY_TUPLE, pickle.NONE, pickle.NEWTRUE,
           pickle.BININT1 + b"\x07", pickle.BINPUT + b"\x00", pickle.BINPUT + b"\x01",
           pickle.BINGET + b"\x00", pickle.BINGET + b"\x01", pickle.MEMOIZE, text("header"),
           text("f8"), pickle.REDUCE, pickle.BUILD, pickle.GLOBAL + b"numpy\ndtype\n",
           pickle.GLOBAL + b"datetime\ndatetime\n", pickle.SHORT_BINBYTES + b"\x0a" + b"\x07" * 10,
           pickle.STOP]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(OPCODES), max_size=40))
def test_any_sequence_of_opcodes_gives_plain_data_or_a_decode_error(sequence):
    try:
        result = loads(b"".join(sequence))
    except DecodeError:
        return
    stack = [result]
    while stack:
        value = stack.pop()
        assert type(value) in (list, dict, str, bytes, int, float, bool, type(None), datetime.datetime)
        if isinstance(value, dict):
            assert all(type(key) is str for key in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def test_every_opcode_handler_is_reachable():
    # run() takes the common opcodes inline and hands the others to _DISPATCH: a handler for an
    # opcode run() already takes, or a helper nothing calls, is dead code that can drift from
    # the live one.
    source = Path(plainpickle.__file__).read_text()
    tree = ast.parse(source)
    run = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "run")
    inline = {comparator.value for node in ast.walk(run) if isinstance(node, ast.Compare)
              and isinstance(node.left, ast.Name) and node.left.id == "op"
              for comparator in node.comparators if isinstance(comparator, ast.Constant)}
    assert {0x94, 0x8C, 0x71, 0x2E} <= inline  # MEMOIZE, SHORT_BINUNICODE, BINPUT, STOP
    assert not inline & set(plainpickle._DISPATCH), sorted(map(chr, inline & set(plainpickle._DISPATCH)))
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert defined - used - {"run", "load_plain", "__init__", "op"} == set()
