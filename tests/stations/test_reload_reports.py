"""What a station-list reload tells the operator (issue 25, points 3 and 7): fetch-stations
tells an unreachable publicdb from a refused list and names the stations added, removed or
changed; the config-server's own /metrics give the list's age and the last reload's result."""

import threading
import time
import urllib.request
import xmlrpc.client

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.config import load_settings
from hisparc_datastore.stations.configserver import make_config_server
from hisparc_datastore.testing.serveprocess import free_port

from .test_config_server import OLD, PublicDB, write_config


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=60) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_fetch_stations_names_the_stations_added_removed_and_changed(tmp_path, capsys):
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        (tmp_path / "stations.csv").write_text(OLD + "502,utrecht,s502\n503,utrecht,s503\n")
        publicdb.body = b"99,amsterdam,new_password\n501,utrecht,s501\n503,utrecht,s503\n"
        assert main(["fetch-stations", str(config)]) == 0
        out = capsys.readouterr().out
        assert out.strip() == (f"{tmp_path / 'stations.csv'}: replaced, 3 station(s) "
                               "(added 501; removed 502; changed 99)")
        assert "new_password" not in out  # which of cluster or password changed is not told
        log = (tmp_path / "log/datastore.log").read_text()
        assert "(added 501; removed 502; changed 99)" in log

        # the same list again: unchanged, nothing named
        assert main(["fetch-stations", str(config)]) == 0
        assert capsys.readouterr().out.strip() == f"{tmp_path / 'stations.csv'}: unchanged, 3 station(s)"

        # an error page: refused on its merits
        publicdb.body, publicdb.content_type = b"<html>error</html>", "text/html"
        assert main(["fetch-stations", str(config)]) == 1
        assert capsys.readouterr().err.startswith("datastore fetch-stations: refused, ")


def test_fetch_stations_says_unreachable_when_publicdb_cannot_be_reached(tmp_path, capsys):
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}/config/datastore")
    assert main(["fetch-stations", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"datastore fetch-stations: unreachable, {tmp_path / 'stations.csv'} kept: ")
    assert "Connection refused" in err and "refused," not in err
    assert "publicdb unreachable" in (tmp_path / "log/datastore.log").read_text()
    assert (tmp_path / "stations.csv").read_text() == OLD


def test_the_config_server_exposes_its_reloads_and_the_lists_age(tmp_path):
    with PublicDB() as publicdb:
        settings = load_settings(write_config(tmp_path, publicdb.url))
        server = make_config_server(settings)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            fresh = scrape(f"{base}/metrics")
            prefix = "datastore_config_server"
            for result in ("replaced", "unchanged", "refused", "unreachable"):
                assert fresh[f'{prefix}_reloads_total{{result="{result}"}}'] == 0  # there from the start
                assert fresh[f'{prefix}_last_reload_result{{result="{result}"}}'] == 0
            assert fresh[f"{prefix}_station_list_stations"] == 1
            assert fresh[f"{prefix}_station_list_modified_timestamp_seconds"] == pytest.approx(
                (tmp_path / "stations.csv").stat().st_mtime, abs=0.01)
            assert any(k.startswith(f"{prefix}_build_info{{version=") for k in fresh)
            assert any(k.startswith(f'{prefix}_plugin_info{{plugin="hisparc-datastore-hisparc"')
                       for k in fresh)

            proxy = xmlrpc.client.ServerProxy(f"{base}/RPC2")
            before = time.time()
            assert proxy.reload_datastore() is True
            publicdb.body, publicdb.content_type = b"<html>login</html>", "text/html"
            with pytest.raises(xmlrpc.client.Fault):
                proxy.reload_datastore()
            metrics = scrape(f"{base}/metrics")
            assert metrics[f'{prefix}_reloads_total{{result="replaced"}}'] == 1
            assert metrics[f'{prefix}_reloads_total{{result="refused"}}'] == 1
            assert metrics[f'{prefix}_last_reload_result{{result="refused"}}'] == 1
            assert metrics[f'{prefix}_last_reload_result{{result="replaced"}}'] == 0
            assert metrics[f"{prefix}_station_list_stations"] == 2
            assert before <= metrics[f"{prefix}_last_reload_timestamp_seconds"] <= time.time()
        finally:
            server.shutdown()
            server.server_close()
        # publicdb gone: unreachable, told apart from refused
        server = make_config_server(settings)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(xmlrpc.client.Fault):
            xmlrpc.client.ServerProxy(f"http://127.0.0.1:{server.server_address[1]}/RPC2").reload_datastore()
        metrics = scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
        assert metrics['datastore_config_server_last_reload_result{result="unreachable"}'] == 1
    finally:
        server.shutdown()
        server.server_close()
