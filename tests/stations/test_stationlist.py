"""One rule for the station list, read leniently by the receiver and strictly by fetch-stations
and config-server: a list one of them takes is one the other takes the same way."""

import logging
import re

import pytest

from hisparc_datastore.stations.stationlist import StationListRefused, parse_station_list
from hisparc_datastore.stations.sync import check_station_list

COMMENTED = "# publicdb export\n501,amsterdam,a\n\n  # a station left out for now\n502,utrecht,b c\n"


def test_comment_and_blank_lines_are_no_stations_in_either_mode():
    lenient = parse_station_list(COMMENTED, "list")
    assert parse_station_list(COMMENTED, "list", strict=True) == lenient
    assert {n: (s.cluster, s.password) for n, s in lenient.items()} == {501: ("amsterdam", "a"),
                                                                         502: ("utrecht", "b c")}
    assert check_station_list(COMMENTED, "list") == 2


@pytest.mark.parametrize("line, problem", [
    ("503,leiden", "line 2: expected number,cluster,password, found 2 field(s)"),
    ("five,leiden,x", "line 2: station number 'five' is not a number"),
    ("503, ,x", "line 2: station 503 has no cluster"),
    ("503,leiden,", "line 2: station 503 has no password"),
])
def test_a_line_that_is_no_station_is_skipped_by_the_receiver_and_refused_when_installing(
        caplog, line, problem):
    text = f"501,amsterdam,a\n{line}\n502,utrecht,b\n"
    with caplog.at_level(logging.ERROR):
        assert sorted(parse_station_list(text, "list")) == [501, 502]
    assert f"list {problem}; line skipped" in caplog.text
    with pytest.raises(StationListRefused, match=f"^list {re.escape(problem)}"):
        parse_station_list(text, "list", strict=True)


def test_a_station_listed_twice_is_the_later_line_leniently_and_refused_strictly(caplog):
    text = "501,amsterdam,a\n501,utrecht,b\n"
    with caplog.at_level(logging.WARNING):
        assert parse_station_list(text, "list")[501].cluster == "utrecht"
    assert "list line 2: station 501 listed again; the later line wins" in caplog.text
    with pytest.raises(StationListRefused, match="line 2: station 501 is listed twice"):
        parse_station_list(text, "list", strict=True)


def test_a_list_of_comments_only_is_refused_strictly_and_empty_leniently():
    assert parse_station_list("# nothing yet\n", "list") == {}
    with pytest.raises(StationListRefused, match="list: no stations"):
        parse_station_list("# nothing yet\n", "list", strict=True)
