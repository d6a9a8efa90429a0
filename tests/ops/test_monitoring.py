"""The shipped monitoring (issue 25, point 4) against the real services: the three are
started as processes on deploy/config.ini (its paths and ports moved to a temporary
folder), fed a real upload, a refusal and a reload, and scraped; every metric, label and
label value that the Grafana dashboard and the Prometheus alert rules use must be exposed.
The PromQL expressions are parsed for their selectors, matchers and groupings."""

import configparser
import hashlib
import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from hisparc_datastore.testing.helpers import wait_for
from hisparc_datastore.testing.serveprocess import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DATASTORE = Path(sys.executable).with_name("datastore")
STATIONS = b"99,amsterdam,fake_station\n"

_STRING = r'"(?:[^"\\]|\\.)*"'
_SELECTOR = re.compile(r"\b(datastore_\w+|up)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(rf"(\w+)\s*(=~|!~|!=|=)\s*({_STRING})")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes


def rule_expressions(text: str) -> list[str]:
    """The ``expr:`` values of a rules file (one line each, as datastore-alerts.yml writes them)."""
    found = [match.strip() for match in re.findall(r"^\s+expr:\s*(.+)$", text, re.M)]
    assert found and not any(expr in ("|", ">") for expr in found), "expr: on one line, please"
    return found


def dashboard_targets(dashboard: dict) -> list[tuple[str, str]]:
    return [(target["expr"], target.get("legendFormat", "")) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def parse_exposition(text: str) -> dict[str, list[dict[str, str]]]:
    """Every sample's metric name and labels."""
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.rsplit(" ", 1)[0]
        name, _, rest = head.partition("{")
        labels = {key: json.loads(value) for key, _, value in _MATCHER.findall(rest)}
        samples.setdefault(name, []).append(labels)
    return samples


def problems_of(expr: str, exposed: dict[str, list[dict[str, str]]], jobs: set[str],
                legend: str = "") -> list[str]:
    """What ``expr`` uses that the services do not expose."""
    problems, labels_here = [], set(TARGET_LABELS)
    selectors = _SELECTOR.findall(expr)
    if not selectors:
        problems.append(f"{expr}: uses no metric")
    for name, braces in selectors:
        if name == "up":
            for label, op, value in _MATCHER.findall(braces):
                if label == "job" and op == "=~" and not all(
                        re.fullmatch(json.loads(value), job) for job in jobs):
                    problems.append(f"{expr}: up{{job=~{value}}} misses a job of scrape.yml")
            continue
        if name not in exposed:
            problems.append(f"{expr}: metric {name} is not exposed")
            continue
        present = exposed[name]
        labels_here |= {key for labels in present for key in labels}
        for label, op, value in _MATCHER.findall(braces):
            values = {labels[label] for labels in present if label in labels}
            wanted = json.loads(value)
            if not values and label not in TARGET_LABELS:
                problems.append(f"{expr}: {name} has no label {label}")
            elif op == "=" and wanted not in values:
                problems.append(f"{expr}: {name} has no {label}={wanted!r} (only {sorted(values)})")
            elif op == "=~" and not any(re.fullmatch(wanted, v) for v in values):
                problems.append(f"{expr}: {name} has no {label} matching {wanted!r}")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (word.strip() for word in group.split(","))):
            if label not in labels_here:
                problems.append(f"{expr}: groups by {label}, which none of its metrics has")
    for label in _LEGEND.findall(legend):
        if label not in labels_here:
            problems.append(f"{expr}: legend {{{{{label}}}}} is no label of its metrics")
    return problems


class _PublicDB(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(STATIONS)))
        self.end_headers()
        self.wfile.write(STATIONS)

    def log_message(self, *args):
        pass


def deployed_config(tmp_path: Path, publicdb_url: str) -> tuple[Path, dict[str, int]]:
    """deploy/config.ini with its paths in ``tmp_path`` and free ports."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "config.ini")
    ports = {"receiver": free_port(), "writer": free_port(), "config-server": free_port()}
    for name in ("data", "stations", "log"):
        (tmp_path / name).mkdir()
    (tmp_path / "stations/station_list.csv").write_bytes(STATIONS)
    parser["General"].update(log=f"{tmp_path}/log/datastore.log", data_dir=f"{tmp_path}/data",
                             station_list=f"{tmp_path}/stations/station_list.csv",
                             station_list_url=publicdb_url, minimum_year="2016")
    parser["Writer"].update(metrics_bind=f"127.0.0.1:{ports['writer']}", reserve_mb="0", sleep="0.2")
    parser["Receiver"].update(receiver_bind=f"127.0.0.1:{ports['receiver']}", receiver_reserve_mb="0")
    parser["ConfigServer"]["config_server_bind"] = f"127.0.0.1:{ports['config-server']}"
    config = tmp_path / "config.ini"
    with open(config, "w") as fh:
        parser.write(fh)
    return config, ports


@pytest.fixture(scope="module")
def exposed(tmp_path_factory, shared) -> dict[str, list[dict[str, str]]]:
    """What the three running services expose after an upload, a refusal and a reload."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    publicdb = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PublicDB)
    threading.Thread(target=publicdb.serve_forever, daemon=True).start()
    config, ports = deployed_config(tmp_path, f"http://127.0.0.1:{publicdb.server_address[1]}/config")
    services = [subprocess.Popen([DATASTORE, command, str(config), "--quiet"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
                for command in ("writer", "serve", "config-server")]
    try:
        log = tmp_path / "log/datastore.log"
        for ready in ("writer started", "receiving uploads on", "config server on"):
            assert wait_for(lambda ready=ready: log.exists() and ready in log.read_text(), 120), \
                [s.poll() for s in services]
        receiver = f"http://127.0.0.1:{ports['receiver']}/"
        payload = (shared / "testdata/uploads/py2_s510_100events").read_bytes()
        for password, checksum in (("fake_station", hashlib.md5(payload).hexdigest()),
                                   ("wrong", hashlib.md5(payload).hexdigest())):
            form = {"station_id": "99", "password": password, "data": payload.decode("latin-1"),
                    "checksum": checksum}
            urllib.request.urlopen(receiver, urllib.parse.urlencode(form).encode(), timeout=60).read()
        assert xmlrpc.client.ServerProxy(
            f"http://127.0.0.1:{ports['config-server']}/RPC2").reload_datastore() is True
        assert wait_for(lambda: "batch stored: 1 uploads" in log.read_text(), 120), log.read_text()
        (tmp_path / "data/incoming/waiting-99").write_bytes(b"")  # an upload waits: its age is shown
        samples: dict[str, list[dict[str, str]]] = {}
        for url in (f"{receiver}metrics", f"http://127.0.0.1:{ports['writer']}/metrics",
                    f"http://127.0.0.1:{ports['config-server']}/metrics"):
            with urllib.request.urlopen(url, timeout=60) as reply:
                for name, labels in parse_exposition(reply.read().decode()).items():
                    samples.setdefault(name, []).extend(labels)
        return samples
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(120)
        publicdb.shutdown()
        publicdb.server_close()


def scrape_jobs() -> dict[str, str]:
    """job name -> target of deploy/prometheus/scrape.yml."""
    text = (DEPLOY / "prometheus/scrape.yml").read_text()
    return dict(re.findall(r"job_name:\s*(\S+)\s+scrape_interval: \S+\s+static_configs:\s+"
                           r'- targets: \["([^"]+)"\]', text))


def test_every_metric_and_label_the_alert_rules_use_is_exposed(exposed):
    expressions = rule_expressions((DEPLOY / "prometheus/datastore-alerts.yml").read_text())
    assert len(expressions) >= 8
    problems = [p for expr in expressions for p in problems_of(expr, exposed, set(scrape_jobs()))]
    assert problems == []


def test_every_metric_and_label_the_dashboard_uses_is_exposed(exposed):
    dashboard = json.loads((DEPLOY / "grafana/datastore-dashboard.json").read_text())
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 15
    problems = [p for expr, legend in targets for p in problems_of(expr, exposed, set(scrape_jobs()), legend)]
    assert problems == []


def test_the_checker_finds_what_is_not_exposed(exposed):
    # the other side: a misspelt metric, a label it lacks, a value never seen, a wrong grouping
    assert problems_of("datastore_writer_queue_file", exposed, set()) == [
        "datastore_writer_queue_file: metric datastore_writer_queue_file is not exposed"]
    assert problems_of('datastore_writer_queue_files{dir="incoming"}', exposed, set())
    assert problems_of('datastore_writer_queue_files{folder="incomming"}', exposed, set())
    assert problems_of("sum by (station) (datastore_writer_queue_files)", exposed, set())
    assert problems_of("datastore_writer_queue_files", exposed, set(), "{{station}}")
    assert problems_of('up{job=~"datastore-w.*"}', exposed, {"datastore-receiver"})
    assert problems_of('sum by (folder) (datastore_writer_queue_files{folder="incoming"})', exposed,
                       set(), "{{folder}}") == []


def test_the_scrape_config_names_the_addresses_of_the_deployed_config():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "config.ini")
    assert scrape_jobs() == {"datastore-receiver": parser["Receiver"]["receiver_bind"],
                             "datastore-writer": parser["Writer"]["metrics_bind"],
                             "datastore-config-server": parser["ConfigServer"]["config_server_bind"]}
