"""The built-in station simulator (demo, benchmarks): every installed plugin contributes,
and everything it makes is stored."""

import datetime

import tables

from hisparc_datastore import cli
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import simulate, simulated_uploads, stations
from hisparc_datastore.sim.summary import day_files, station_contents
from hisparc_datastore.testing.helpers import settings_for
from hisparc_datastore.writer.service import Writer

START = datetime.datetime(2024, 12, 31, 23, 50, 0)


def test_uploads_are_batches_of_a_hundred_in_arrival_order():
    uploads = simulated_uploads(stations(3), START, 600, seed=4)
    assert all(len(u.event_list) <= 100 for u in uploads)
    assert sum(len(u.event_list) == 100 for u in uploads) >= len(uploads) - 3
    last = [max(e["header"]["datetime"] for e in u.event_list) for u in uploads]
    assert last == sorted(last)
    assert uploads == simulated_uploads(stations(3), START, 600, seed=4)  # reproducible


def test_simulated_day_spanning_data_is_stored_in_all_fourteen_tables(tmp_path, capsys):
    result = simulate(tmp_path, 2, 3600, START, seed=2, minimum_year=2020)
    tally = Writer(settings_for(tmp_path, minimum_year=2020), load_registry()).run(once=True)
    assert tally.events == result.events
    assert tally.quarantined_files == 0 and not tally.quarantined_events

    files = day_files(tmp_path)
    assert [f.name for f in files] == ["2024_12_31.h5", "2025_1_1.h5"]
    tables_seen = set()
    rows = 0
    for path in files:
        with tables.open_file(path) as h5:
            for nodes in station_contents(h5).values():
                tables_seen |= set(nodes) - {"blobs"}
                rows += sum(n for name, n in nodes.items() if name != "blobs")
    assert rows == result.events
    assert tables_seen == {t.table_name for t in load_registry()}
    assert len(tables_seen) == 14

    assert cli.main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "/hisparc/cluster_amsterdam/station_501:" in out
    assert "lightning_status" in out


def test_what_it_says_it_simulated_is_what_the_installed_plugins_made(tmp_path, capsys, monkeypatch):
    import datastore_hisparc
    from hisparc_datastore.codec.decoding import parse_queue_file
    from hisparc_datastore.sim import simulate as module

    def queued(folder):
        codes = {}
        for path in (folder / "incoming").iterdir():
            for event in parse_queue_file(path.read_bytes()).event_list:
                code = event["header"]["eventtype_uploadcode"]
                codes[code] = codes.get(code, 0) + 1
        return codes

    argv = ["simulate", "--stations", "2", "--hours", "0.2", "--start", "2024-12-31T23:50:00"]
    assert cli.main([*argv[:1], str(tmp_path / "all"), *argv[1:]]) == 0
    everything = capsys.readouterr().out
    codes = queued(tmp_path / "all")
    assert {"WTR", "LIT", "CIC"} <= set(codes)
    assert f"{sum(codes.values())} events ({', '.join(f'{c} {n}' for c, n in sorted(codes.items()))})" \
        in everything

    # only the HiSPARC plugin installed: no weather or lightning is claimed
    real = module.get_plugin_manager
    monkeypatch.setattr(module, "get_plugin_manager",
                        lambda extra=(): real([datastore_hisparc, *extra], load_installed=False))
    assert cli.main([*argv[:1], str(tmp_path / "hisparc"), *argv[1:]]) == 0
    out = capsys.readouterr().out
    codes = queued(tmp_path / "hisparc")
    assert set(codes) == {"CFG", "CIC", "CMP", "SAT", "SIN"}
    assert f"({', '.join(f'{c} {n}' for c, n in sorted(codes.items()))})" in out
    assert "weather" not in out and "lightning" not in out and "WTR" not in out
