"""``datastore simulate --post``: the simulated stations send through a real receiver with
the station protocol and retry like the station software; ``make demo``'s driver."""

import http.server
import subprocess
import sys
import threading

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import load_settings
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.sim import demo
from hisparc_datastore.sim.simulate import prepare, simulated_uploads, stations
from hisparc_datastore.sim.stationclient import Stations
from hisparc_datastore.writer.service import Writer


def test_posted_uploads_go_through_the_receiver_into_the_day_files(tmp_path, capsys, moment):
    config, _ = prepare(tmp_path, 3, seed=1, minimum_year=2016)
    settings = load_settings(tmp_path / "config.ini")
    expected = simulated_uploads(stations(3), moment, 360, seed=1)
    with ServerThread(build_app(settings)) as receiver:
        code = main(["simulate", str(tmp_path), "--stations", "3", "--hours", "0.1",
                     "--start", moment.isoformat(), "--post", receiver.url, "--concurrency", "3"])
        assert code == 0
        assert receiver.app.metrics.count("100") == len(expected)
    out = capsys.readouterr().out
    assert f"{len(expected)} delivered, 0 given up" in out
    assert f"return codes: 100 x {len(expected)}" in out
    assert len(list((tmp_path / "incoming").iterdir())) == len(expected)
    tally = Writer(settings, load_registry()).run(once=True)
    assert tally.events == sum(len(u.event_list) for u in expected)
    assert tally.quarantined_files == 0 and not tally.quarantined_events


class Flaky:
    """A receiver stand-in on loopback answering from a script, then always the last code."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.bodies = answers, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                owner.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                code = owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]
                self.send_response(200)
                self.send_header("Content-Length", str(len(code)))
                self.end_headers()
                self.wfile.write(code.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_refused_upload_is_retried_with_doubling_back_off_until_100(moment):
    flaky = Flaky(["205", "205", "205", "100"])
    waits = []
    try:
        upload = Upload(501, "amsterdam", [{"header": {"eventtype_uploadcode": "SIN", "datetime": moment}}])
        result = Stations(flaky.url, {501: "pw"}, sleep=waits.append).send([upload])
    finally:
        flaky.close()
    assert waits == [1.0, 2.0, 4.0]
    assert result.replies == {"205": 3, "100": 1} and result.delivered == 1 and result.complete
    assert len(set(flaky.bodies)) == 1 and b"station_id=501&password=pw&data=" in flaky.bodies[0]


def test_retrying_is_bounded_and_a_stuck_station_sends_nothing_after(moment):
    flaky = Flaky(["203"])
    now, waits = [0.0], []

    def sleep(seconds):  # a clock that only the back-off moves
        waits.append(seconds)
        now[0] += seconds

    try:
        uploads = [Upload(501, "amsterdam", [{"header": {"eventtype_uploadcode": "SIN", "datetime": moment}}])
                   for _ in range(3)]
        result = Stations(flaky.url, {501: "wrong"}, give_up_after=2.5, sleep=sleep,
                          clock=lambda: now[0]).send(uploads)
    finally:
        flaky.close()
    assert waits == [1.0]  # a second wait of 2 s would end past 2.5 s
    assert result.replies == {"203": 2}  # the later uploads were never sent: a station sends in order
    assert result.delivered == 0 and result.undelivered == 3 and not result.complete


def test_the_demo_goes_through_the_receiver(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hisparc_datastore.sim.demo", str(tmp_path / "demo"),
                           "--stations", "2", "--hours", "0.05"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--post http://127.0.0.1:" in done.stdout
    assert "0 given up" in done.stdout and "return codes: 100 x " in done.stdout
    assert "receiver answered (from its http://127.0.0.1:" in done.stdout
    assert "receiver stopped with exit code 0" in done.stdout
    assert "/hisparc/cluster_amsterdam/station_501:" in done.stdout  # the summary
    assert list((tmp_path / "demo/incoming").iterdir()) == []


def test_the_demo_stops_the_receiver_when_a_step_fails(tmp_path, monkeypatch, capsys):
    started = []
    real_start, real_run = demo.start_receiver, demo.run

    def start(*args):
        started.append(real_start(*args))
        return started[-1]

    def run(*args):
        if "--post" in args:
            raise demo.DemoFailed("a step failed")
        real_run(*args)

    monkeypatch.setattr(demo, "start_receiver", start)
    monkeypatch.setattr(demo, "run", run)
    assert demo.main([str(tmp_path), "--stations", "1", "--hours", "0.01"]) == 1
    [(process, _)] = started
    assert process.poll() == 0  # stopped by SIGTERM, cleanly
    assert "demo failed: a step failed" in capsys.readouterr().err
