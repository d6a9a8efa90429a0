"""Cluster names: what PyTables can list and name is accepted wherever a station list is
read; anything else is refused with the reason (clusters.py tells which and why)."""

import datetime
import functools
import http.server
import logging
import threading
import xmlrpc.client

import pytest
import tables

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import DecodeError, Upload, parse_queue_file
from hisparc_datastore.config import load_settings
from hisparc_datastore.sim.summary import station_contents
from hisparc_datastore.stations.configserver import ConfigService
from hisparc_datastore.stations.stationlist import parse_station_list
from hisparc_datastore.stations.sync import StationListRefused, check_station_list, install_station_list
from hisparc_datastore.storage.clusters import cluster_problem
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.testing.helpers import event, store

DAY = datetime.datetime(2021, 5, 4, 3, 2, 1)

# Real HiSPARC clusters, and names with what a person might type: all listable by PyTables.
ACCEPTED = ["Amsterdam", "Utrecht", "Leiden", "Groningen", "Enschede", "Eindhoven", "Aarhus", "Bristol",
            "Karlsruhe", "Science Park", "Utrecht e.o", "Nijmegen-Oost", "Zaanstad 2", "501",
            "Zürich", "Århus", "東京", "a.b", "(test)", "o'clock", "x" * 100, ".hidden", "a..b", "_v_x"]
REFUSED = {".": "ends in '.'", "Utrecht e.o.": "ends in '.'", "Amsterdam.": "ends in '.'",
           "..": "ends in '.'", "a/b": "'/'", "/": "'/'", "a\x00b": "NUL", "a\tb": "control character",
           "x" * 101: "over 100"}


@pytest.mark.parametrize("name", ACCEPTED)
def test_listable_names_are_accepted(name):
    assert cluster_problem(name) is None
    assert check_station_list(f"501,{name},pw\n", "list") == 1
    assert parse_station_list(f"501,{name},pw\n")[501].cluster == name
    assert parse_queue_file(Upload(501, name, []).to_queue_bytes()).cluster == name


@pytest.mark.parametrize("name, reason", REFUSED.items())
def test_unlistable_names_are_refused_with_the_reason(name, reason, caplog):
    assert reason in cluster_problem(name)
    refusal = f"list line 2: station 502: cluster .* is refused, .*{reason}"
    with pytest.raises(StationListRefused, match=refusal):
        check_station_list(f"501,amsterdam,a\n502,{name},b\n", "list")
    with caplog.at_level(logging.ERROR):
        stations = parse_station_list(f"501,amsterdam,a\n502,{name},b\n", "list")
    assert sorted(stations) == [501]  # the other stations stay
    assert "list line 2: station 502: cluster" in caplog.text and reason in caplog.text
    with pytest.raises(DecodeError, match="refused"):
        parse_queue_file(Upload(502, name, []).to_queue_bytes())


@pytest.mark.filterwarnings("ignore::tables.NaturalNameWarning")
def test_the_trailing_dot_is_what_hides_groups_from_list_nodes(tmp_path):
    """The fact the check rests on, shown with PyTables itself: should a PyTables release
    list such groups, this fails and the check can be relaxed."""
    path = tmp_path / "dot.h5"
    with tables.open_file(path, "w") as h5:
        hisparc = h5.create_group("/", "hisparc")
        for name in ("cluster_amsterdam", "cluster_utrecht e.o.", "cluster_zaanstad"):
            h5.create_group(h5.create_group(hisparc, name), "station_1")
    with tables.open_file(path) as h5:
        listed = [group._v_name for group in h5.list_nodes("/hisparc")]
    assert "cluster_zaanstad" not in listed


# PyTables warns that such group names allow no attribute access; readers list and name them.
@pytest.mark.filterwarnings("ignore::tables.NaturalNameWarning")
def test_every_accepted_cluster_is_read_back_as_publicdb_reads_it(tmp_path):
    names = ACCEPTED
    text = "".join(f"{500 + i},{name},pw{i}\n" for i, name in enumerate(names))
    install_station_list(tmp_path / "stations.csv", text, "publicdb")
    stations = parse_station_list((tmp_path / "stations.csv").read_text())
    assert [station.cluster for station in stations.values()] == names
    uploads = [Upload(station.number, station.cluster,
                      [event("SIN", DAY, {"MAS_CH1_LOW": station.number, "MAS_CH1_HIGH": 1})])
               for station in stations.values()]
    tally = store(tmp_path / "data", uploads)
    assert tally.events == len(names)

    found = {}
    with tables.open_file(day_file_path(tmp_path / "data", DAY.date())) as h5:
        for cluster in h5.list_nodes("/hisparc"):  # publicdb's way
            for station in h5.list_nodes(cluster):
                found[station._v_name] = int(h5.get_node(station, "singles").col("mas_ch1_low")[0])
        walked = {group._v_pathname for group in h5.walk_nodes("/hisparc", "Group")}
        summary = station_contents(h5)  # what `datastore summary` prints
    assert found == {f"station_{n}": n for n in stations}
    expected = {f"/hisparc/cluster_{s.cluster.lower()}/station_{n}" for n, s in stations.items()}
    assert walked >= expected
    assert set(summary) == expected


def test_fetch_stations_refuses_a_dot_cluster_and_keeps_the_list(tmp_path, capsys):
    served = tmp_path / "publicdb"
    served.mkdir()
    published = served / "stations.csv"  # fetched over loopback HTTP as from publicdb
    published.write_text("99,amsterdam,pw\n501,Utrecht e.o.,pw\n")
    (tmp_path / "stations.csv").write_text("99,amsterdam,old\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "config.ini"
        config.write_text(f"[General]\nlog=\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n"
                          f"station_list_url=http://127.0.0.1:{server.server_address[1]}/stations.csv\n")
        fetch_and_check(config, published, tmp_path, capsys)
    finally:
        server.shutdown()
        server.server_close()


def fetch_and_check(config, published, tmp_path, capsys):
    assert main(["fetch-stations", str(config)]) == 1
    assert "station 501: cluster 'Utrecht e.o.' is refused, ends in '.'" in capsys.readouterr().err
    assert (tmp_path / "stations.csv").read_text() == "99,amsterdam,old\n"
    # publicdb's push over XML-RPC: the same check, the reason in the fault publicdb raises
    with pytest.raises(xmlrpc.client.Fault, match="cluster 'Utrecht e.o.' is refused, ends in '.'"):
        ConfigService(load_settings(config)).reload_datastore()
    assert (tmp_path / "stations.csv").read_text() == "99,amsterdam,old\n"
    published.write_text("99,amsterdam,pw\n501,Utrecht e.o,pw\n")
    assert main(["fetch-stations", str(config)]) == 0
    assert "501,Utrecht e.o,pw" in (tmp_path / "stations.csv").read_text()
