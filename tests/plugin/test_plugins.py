import pytest
import tables

from hisparc_datastore import EventType, base64_blob, hookimpl, text_blob
from hisparc_datastore.plugin.registry import PluginConflict, load_registry


class Reading(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    level = tables.Float32Col(pos=2)
    counts = tables.Int16Col(shape=3, dflt=-1, pos=3)
    note = tables.Int32Col(dflt=-1, pos=4)


class Timed(Reading):
    nanoseconds = tables.UInt32Col(pos=5)
    ext_timestamp = tables.UInt64Col(pos=6)


def make(**overrides) -> EventType:
    fields = dict(upload_code="XYZ", table_name="readings", table_title="Readings",
                  description=Reading, columns={"LEVEL": "level", "CNT1": "counts", "CNT3": "counts",
                                                "NOTE": "note"},
                  blobs={"NOTE": text_blob})
    fields.update(overrides)
    return EventType(**fields)


def test_array_codes_fill_the_element_their_digit_names():
    slots = make().slots
    assert (slots["CNT1"].column, slots["CNT1"].index) == ("counts", 0)
    assert (slots["CNT3"].column, slots["CNT3"].index) == ("counts", 2)
    assert slots["LEVEL"].index is None and slots["LEVEL"].blob is None
    assert slots["NOTE"].blob is text_blob


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(upload_code="xy"), "upload code 'xy'"),
        (dict(table_name="Bad Name"), "table_name"),
        (dict(columns={"LEVEL": "lvl"}, blobs={}), "data code LEVEL names unknown column 'lvl'"),
        (dict(columns={"CNT4": "counts"}, blobs={}), "CNT4 fills array column 'counts' of length 3"),
        (dict(columns={"COUNTS": "counts"}, blobs={}), "does not end in a digit 1..3"),
        (dict(columns={"T": "timestamp"}, blobs={}), "may not fill 'timestamp'"),
        (dict(blobs={"TR1": base64_blob}), r"blob codes \['TR1'\] map to no column"),
        (dict(columns={"LEVEL": "level"}, blobs={"LEVEL": text_blob}), "blob code LEVEL needs an integer"),
        (dict(extended_time=True), "description has no 'nanoseconds' column"),
    ],
)
def test_a_malformed_declaration_is_refused_with_the_code_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_extended_time_needs_and_accepts_the_time_columns():
    assert make(description=Timed, extended_time=True).extended_time


def test_the_table_dtype_follows_the_column_positions():
    assert make().dtype.names == ("event_id", "timestamp", "level", "counts", "note")
    assert make().dtype["counts"].shape == (3,)


class RadonPlugin:
    __name__ = "radon-test-plugin"

    def __init__(self, *event_types):
        self.event_types = list(event_types)

    @hookimpl
    def datastore_event_types(self):
        return self.event_types


def test_an_extra_plugin_adds_its_event_types():
    registry = load_registry([RadonPlugin(make())])
    assert registry.get("XYZ").table_name == "readings"
    assert registry.owners["XYZ"] == "radon-test-plugin"


def test_two_plugins_claiming_one_upload_code_stop_start_up_naming_both():
    class Other(RadonPlugin):
        __name__ = "other-plugin"

    with pytest.raises(PluginConflict, match="XYZ is declared by both radon-test-plugin and other-plugin"):
        load_registry([RadonPlugin(make()), Other(make(table_name="others"))])


def test_a_plugin_claiming_an_installed_code_names_the_installed_distribution():
    with pytest.raises(PluginConflict, match=r"CIC is declared by both hisparc-datastore-hisparc [\d.]+ and "
                                             r"radon-test-plugin"):
        load_registry([RadonPlugin(make(upload_code="CIC", table_name="cic_again"))])


def test_two_plugins_claiming_one_table_stop_start_up():
    with pytest.raises(PluginConflict, match="table 'readings' is declared by both"):
        load_registry([RadonPlugin(make(), make(upload_code="XYW"))])


def test_the_core_names_no_event_type():
    # The framework must stay detector-agnostic: no upload code or table
    # name of a detector family appears in the core's source.
    from pathlib import Path

    import hisparc_datastore

    core = Path(hisparc_datastore.__file__).parent
    source = "\n".join(p.read_text() for p in core.rglob("*.py"))
    for word in ('"CIC"', "'CIC'", '"SIN"', '"WTR"', '"LIT"', '"events"', '"singles"', '"weather"'):
        assert word not in source, word


@pytest.mark.parametrize("name", ["Bad Name", "readings\n", "1st", "_hidden", "", "ümlaut"])
def test_a_bad_table_name_is_one_line_naming_the_event_type(name):
    with pytest.raises(ValueError) as refused:
        make(table_name=name)
    assert str(refused.value) == (f"event type XYZ: table_name {name!r} is not lower-case letters, "
                                  "digits and _, beginning with a letter")


@pytest.mark.parametrize("name", ["r", "readings", "radon_2", "blobs2", "blob"])
def test_a_good_table_name_is_accepted(name):
    assert make(table_name=name).table_name == name


def test_a_table_named_as_the_cores_blobs_stops_start_up_naming_the_plugin():
    with pytest.raises(PluginConflict, match=r"^radon-test-plugin: event type XYZ names its table 'blobs', "
                                             r"a node the core keeps in every station group"):
        load_registry([RadonPlugin(make(table_name="blobs"))])
    assert load_registry([RadonPlugin(make(table_name="blobs_radon"))]).get("XYZ").table_name == "blobs_radon"


BROKEN = {
    "bad-table-name": ('table_name="Radon Table"',
                       "plugin hisparc-datastore-radon 0.3 (radon = datastore_radon) cannot be loaded: "
                       "event type RDN: table_name 'Radon Table' is not lower-case letters"),
    "core-table": ('table_name="blobs"',
                   "hisparc-datastore-radon 0.3: event type RDN names its table 'blobs', a node the core"),
    "fine": ('table_name="radon"', None),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_an_installed_plugin_that_cannot_be_used_is_one_line_naming_it(tmp_path, case):
    """Found through a real entry point, as pip would install it, and run as a command."""
    import subprocess
    import sys

    table, message = BROKEN[case]
    (tmp_path / "datastore_radon.py").write_text(
        "import tables\nfrom hisparc_datastore import EventType, hookimpl\n\n"
        "class Radon(tables.IsDescription):\n"
        "    event_id = tables.UInt32Col(pos=0)\n    timestamp = tables.Time32Col(pos=1)\n"
        "    activity = tables.Float32Col(pos=2)\n\n"
        f"RADON = EventType(upload_code='RDN', {table}, table_title='Radon', description=Radon,\n"
        "                  columns={'RDN_ACTIVITY': 'activity'})\n\n"
        "@hookimpl\ndef datastore_event_types():\n    return [RADON]\n")
    info = tmp_path / "hisparc_datastore_radon-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hisparc-datastore-radon\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[hisparc_datastore]\nradon = datastore_radon\n")
    done = subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", "plugins"], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    if message is None:
        assert done.returncode == 0, done.stderr
        assert "hisparc-datastore-radon 0.3\n  RDN  radon" in done.stdout
        return
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"datastore plugins: {message}"), done.stderr
