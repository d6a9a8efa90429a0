"""A plugin author's path, outside the checkout: in a fresh venv with only the core's wheel (no
pytest: the plugin's test extra brings it), ``datastore new-plugin muon``, then the next step it
prints, ``pip install -e './muon[test]' && pytest ./muon``, pass at once,
``datastore plugins`` lists it, and ``datastore serve``, ``simulate`` and ``writer`` store its
events. The commands are the console snippets of docs/plugin-guide.md, run as written and their
output compared.
"""

import os
import re
import signal
import socket
import subprocess
import time
import venv
from pathlib import Path

import pytest
import tables

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = re.compile(r"^```console\n(.*?)^```", re.S | re.M)


class Author:
    """A fresh venv with the core installed from its wheel, and an empty working folder."""

    def __init__(self, root: Path, wheels: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        venv.create(root / "venv", with_pip=True)
        self.bin = root / "venv" / "bin"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("PYTEST")}
        self.env = {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
                    "PIP_FIND_LINKS": " ".join(filter(None, [str(wheels), env.get("PIP_FIND_LINKS")]))}
        self.run("pip install --quiet hisparc-datastore")

    def run(self, command: str, timeout: float = 900) -> str:
        done = subprocess.run(command, shell=True, cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"$ {command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout


def console_snippets() -> list[list[tuple[str, list[str]]]]:
    """The guide's console blocks: each a list of (command, the output lines shown)."""
    blocks = []
    for text in CONSOLE.findall((ROOT / "docs/plugin-guide.md").read_text(encoding="utf-8")):
        steps: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def shown_in(expected: list[str], output: str) -> str | None:
    """Why ``output`` is not what the guide shows (``...``: any lines; a line ending in
    ``...``: any line that begins so), or None."""
    lines = output.splitlines()
    at = 0
    skipping = False
    for want in expected:
        if want == "...":
            skipping = True
            continue
        while at < len(lines):
            got = lines[at]
            at += 1
            if got == want or (want.endswith("...") and got.startswith(want[:-3])):
                break
            if not skipping:
                return f"expected {want!r}, got {got!r}"
        else:
            return f"expected {want!r}; it is not in:\n{output[-3000:]}"
        skipping = False
    return None


def test_the_output_comparison_can_fail():
    assert shown_in(["a", "...", "d"], "a\nb\nc\nd") is None
    assert shown_in(["a", "5 passed..."], "a\n5 passed in 3 s") is None
    assert shown_in(["a", "c"], "a\nb\nc") is not None
    assert shown_in(["x"], "a") is not None


@pytest.fixture(scope="module")
def author(wheels, tmp_path_factory) -> Author:
    return Author(tmp_path_factory.mktemp("author"), wheels)


def test_the_guide_walkthrough_runs_as_written(author):
    blocks = console_snippets()
    assert [command for steps in blocks for command, _ in steps][:3] == [
        "datastore new-plugin muon", "pip install -e './muon[test]'", "pytest -q ./muon"]
    # pytest is the venv's own, brought by the extra, not one found elsewhere on PATH
    assert not (author.bin / "pytest").exists()
    for steps in blocks:
        for command, expected in steps:
            output = author.run(command)
            problem = shown_in(expected, output)
            assert problem is None, f"$ {command}: {problem}"
    # outside the checkout: the core is the wheel's, the plugin the new folder's
    where = author.run("python -c 'import hisparc_datastore, datastore_muon as m; "
                       "print(hisparc_datastore.__file__); print(m.__file__)'").split()
    assert str(author.root / "venv") in where[0] and str(ROOT) not in where[0]
    assert where[1] == str(author.work / "muon/datastore_muon/__init__.py")
    assert (author.bin / "pytest").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_datastore_serve_simulate_and_writer_store_its_events(author):
    if not (author.work / "muon").exists():
        author.run("datastore new-plugin muon && pip install --quiet -e ./muon")
    author.run("datastore simulate served --prepare --stations 2")
    port = free_port()
    serve = subprocess.Popen([author.bin / "datastore", "serve", "served/config.ini", "--bind",
                              f"127.0.0.1:{port}"], cwd=author.work, env=author.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert serve.poll() is None, serve.stderr.read().decode()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "datastore serve did not listen in 120 s"
                time.sleep(0.1)
        posted = author.run(f"datastore simulate served --post http://127.0.0.1:{port}/ --stations 2 "
                            "--hours 1 --start 2026-03-01T12:00:00")
        assert "2 delivered, 0 given up" in posted
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(120)
    author.run("datastore writer served/config.ini --once --quiet")
    assert not list((author.work / "served/quarantine").iterdir())
    with tables.open_file(author.work / "served/2026/3/2026_3_1.h5") as h5:
        for cluster, station in (("amsterdam", 501), ("utrecht", 502)):
            group = h5.get_node(f"/hisparc/cluster_{cluster}/station_{station}")
            rows = group.muon.read()
            assert list(rows["event_id"]) == list(range(1, 61))
            assert ((rows["rate"] >= 10) & (rows["rate"] <= 20)).all()
            assert ((rows["count"] >= 600) & (rows["count"] <= 1200)).all()
            assert {bytes(group.blobs[i]) for i in rows["message"]} == {b"ok"}


def test_the_printed_next_step_runs_as_printed_for_an_absolute_directory(author):
    folder = author.root / "elsewhere" / "radon"
    folder.parent.mkdir()
    printed = author.run(f"datastore new-plugin radon --directory {folder}").splitlines()[-1]
    assert printed.startswith("next: pip install -e '/") and ".//" not in printed
    tested = author.run(printed.removeprefix("next: ").replace("pytest ", "pytest -q ", 1))
    assert "5 passed" in tested
    author.run("pip uninstall --quiet --yes hisparc-datastore-radon")  # the other tests see muon alone
