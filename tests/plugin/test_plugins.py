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
