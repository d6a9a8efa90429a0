"""Metrics and logs stay bounded whatever text stations send (issue 19, item 5): the quarantine
metric is labelled by a fixed set of kinds, the station's text goes only into the reason
files, and the warnings of one upload are one summarised log line."""

import datetime
import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import REASON_SUFFIX
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for
from hisparc_datastore.writer import metrics as writermetrics
from hisparc_datastore.writer.reasons import KINDS, kind_of
from hisparc_datastore.writer.service import Writer

DAY = datetime.datetime(2024, 5, 6, 7, 0, 0)
SERIES = re.compile(r'^datastore_writer_quarantined_events_total\{reason="([^"]*)"\} (\d+)$', re.M)


def unknown_types(station_id: int, count: int) -> Upload:
    """``count`` events, each of an upload code no plugin declares, each code distinct."""
    return Upload(station_id, "Utrecht", [
        {"header": {"eventtype_uploadcode": f"X{station_id}-{i}", "datetime": DAY}, "datalist": []}
        for i in range(count)])


def test_distinct_upload_codes_make_no_new_metric_series(tmp_path):
    others = [None, {"header": {"eventtype_uploadcode": "SIN"}}, event("SIN", DAY, {"MAS_CH1_LOW": "x"})]
    uploads = [unknown_types(501 + n, 2000) for n in range(5)]
    queue_uploads(tmp_path, [*uploads, Upload(510, "Utrecht", others)])
    writer = Writer(settings_for(tmp_path), load_registry())
    writer.run(once=True)
    series = dict(SERIES.findall(writermetrics.render(writer)))
    # Five uploads of 2,000 distinct codes each were 10,000 series; now one per kind, each
    # there from the start.
    assert set(series) == set(KINDS)
    counted = {kind: n for kind, n in series.items() if n != "0"}
    assert counted == {"unknown_event_type": "10000", "not_an_event": "1", "no_datetime": "1",
                      "not_a_number": "1"}
    # The station's text is in the reason files, for the operator.
    reasons = "".join(p.read_text() for p in (tmp_path / "quarantine").glob("*" + REASON_SUFFIX))
    assert "unknown event type 'X503-999'" in reasons  # the first 1,000 by name, the rest counted


@given(st.text(max_size=200))
def test_any_reason_text_has_one_of_the_fixed_kinds(text):
    assert kind_of(text) in KINDS
    assert kind_of(f"unknown event type {text!r}: no installed plugin declares it") == "unknown_event_type"


def test_the_reasons_the_writer_makes_have_their_own_kinds(tmp_path):
    huge = "y" * 1000
    OLD = datetime.datetime(1999, 1, 1)  # noqa: N806 - before settings_for's minimum_year 2000
    odd = Upload(501, "Utrecht", [
        None,
        {"header": {"eventtype_uploadcode": "NOPE", "datetime": DAY}, "datalist": []},
        {"header": {"eventtype_uploadcode": "SIN"}, "datalist": []},
        {"header": {"eventtype_uploadcode": "SIN", "datetime": OLD}, "datalist": []},
        {"header": {"eventtype_uploadcode": "CIC", "datetime": DAY, "nanoseconds": "1"}, "datalist": []},
        {"header": {"eventtype_uploadcode": "SIN", "datetime": DAY}, "datalist": huge},
        {"header": {"eventtype_uploadcode": "SIN", "datetime": DAY}, "datalist": [huge]},
        event("SIN", DAY, {"MAS_CH1_LOW": huge}),
        event("SIN", DAY, {"MAS_CH1_LOW": 2**70}),
    ])
    queue_uploads(tmp_path, [odd])
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert dict(tally.quarantined_events) == {
        "not_an_event": 1, "unknown_event_type": 1, "no_datetime": 1, "before_minimum_year": 1,
        "bad_nanoseconds": 1, "bad_datalist": 1, "bad_data_item": 1, "not_a_number": 1,
        "value_does_not_fit": 1}


def test_thousands_of_unknown_data_codes_are_one_log_line(tmp_path, caplog):
    codes = [{"data_uploadcode": f"CODE{i}", "data": i} for i in range(30_000)]
    odd = Upload(501, "Utrecht", [{"header": {"eventtype_uploadcode": "SIN", "datetime": DAY},
                                   "datalist": [*codes, {"data_uploadcode": "MAS_CH1_LOW", "data": 4}]}])
    queue_uploads(tmp_path, [odd])
    with caplog.at_level(logging.WARNING):
        tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 1
    warned = [r.getMessage() for r in caplog.records if "unknown data code" in r.getMessage()]
    assert len(warned) == 1 and "ignored 30000 unknown data code(s)" in warned[0], warned[:3]
    assert warned[0].endswith("and 29995 more") and len(warned[0]) < 500
    assert len(caplog.text) < 5000  # the upload wrote 4.8 MB of log


def test_an_upload_spanning_many_days_with_unknown_codes_is_one_log_line(tmp_path, caplog):
    events = [event("SIN", DAY + datetime.timedelta(days=i), {"MAS_CH1_LOW": 1, f"ODD{i}": 2})
              for i in range(20)]
    queue_uploads(tmp_path, [Upload(501, "Utrecht", events)])
    with caplog.at_level(logging.WARNING):
        tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 20
    warned = [r.getMessage() for r in caplog.records if "unknown data code" in r.getMessage()]
    assert len(warned) == 1 and "ignored 20 unknown data code(s)" in warned[0], warned
