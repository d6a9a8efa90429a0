"""Docs true to the code: every `datastore ...` command that README.md and docs/*.md show
parses as the command line takes it, and the file names they promise are the ones made."""

import re
import shlex
from pathlib import Path

import pytest

from hisparc_datastore.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SPAN = re.compile(r"`((?:/srv/datastore/venv/bin/)?datastore [a-z][^`]*)`")
_PROMPT = re.compile(r"^\s*[$#] ((?:/srv/datastore/venv/bin/)?datastore [a-z].*?)\s*(?:#.*)?$")


def commands() -> list[tuple[str, str]]:
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    found = []
    for path in DOCS:
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            for match in [*_SPAN.finditer(line), *filter(None, [_PROMPT.match(line)])]:
                words = match.group(1).split()
                # `datastore serve` alone names the command in prose; with arguments it is one
                # to type (at a prompt, `datastore plugins` is one too).
                typed = len(words) > 2 or match.re is _PROMPT
                if len(words) > 1 and words[1] in subcommands and typed:
                    found.append((f"{path.name}:{lineno}", match.group(1)))
    return found


COMMANDS = commands()


def test_the_docs_show_commands_of_every_kind():
    shown = {command.split()[1] for _, command in COMMANDS}
    assert {"serve", "writer", "status", "config-server", "fetch-stations", "plugins", "quarantine",
            "requeue", "rebuild", "simulate", "summary"} <= shown


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_parses(where, command):
    # [--option VALUE] is the docs' notation for an optional part; NAME... one or more
    words = shlex.split(command.replace("[", "").replace("]", "").replace("...", "").replace("…", ""))
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{command}` is not a valid command line")


def test_the_previous_station_list_is_named_as_it_is_made(tmp_path):
    from hisparc_datastore.stations.sync import install_station_list

    path = tmp_path / "station_list.csv"
    path.write_text("501,amsterdam,a\n")
    install_station_list(path, "501,amsterdam,b\n", "test")
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["station_list.csv", "station_list.csv.previous"]
    text = "\n".join(p.read_text() for p in DOCS)
    assert "station_list.csv.previous" in text
    assert "`station_list.previous`" not in text


def test_the_docs_say_a_lowered_minimum_year_needs_a_writer_restart():
    text = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    assert "lower `minimum_year`, restart the writer, then requeue" in text


def test_the_offline_recipe_says_the_build_host_python_must_match():
    text = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    assert "same Python version" in text and "--python-version" in text


def readme_python() -> str:
    """The README's one Python snippet, "Opening a day file"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Opening a day file"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]


def channel_values(event: dict) -> dict[str, object]:
    return {item["data_uploadcode"]: item["data"] for item in event["datalist"]}


def test_the_readme_snippet_reads_events_and_a_trace_from_the_quick_starts_day_file(tmp_path, capsys):
    import base64
    import calendar
    import datetime
    import zlib

    from hisparc_datastore import cli
    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.sim.simulate import simulated_uploads, stations
    from hisparc_datastore.testing import settings_for
    from hisparc_datastore.writer import Writer

    # the quick start, queued directly rather than posted: the day file is the same
    quick = tmp_path / "quick"
    assert cli.main(["simulate", str(quick), "--stations", "3", "--hours", "0.5"]) == 0
    Writer(settings_for(quick, minimum_year=2020), load_registry()).run(once=True)
    capsys.readouterr()

    code = readme_python()
    assert '"/tmp/quick/2026/11/2026_11_24.h5"' in code
    namespace: dict = {}
    exec(compile(code.replace("/tmp/quick/", f"{quick}/"), "README.md", "exec"), namespace)

    sent = [event for upload in simulated_uploads(stations(3), datetime.datetime(2026, 11, 24, 23, 30), 1800)
            if upload.station_id == 501 for event in upload.event_list
            if event["header"]["eventtype_uploadcode"] == "CIC"]
    values = channel_values(sent[0])
    first = namespace["first"]
    assert len(namespace["events"]) == len(sent) > 100
    assert first["timestamp"] == calendar.timegm(sent[0]["header"]["datetime"].utctimetuple())
    assert first["nanoseconds"] == sent[0]["header"]["nanoseconds"]
    assert list(first["pulseheights"]) == [values[f"PH{n}"] for n in range(1, 5)]
    assert namespace["samples"] == zlib.decompress(base64.b64decode(values["TR1"])).decode().split(",")
    assert len(namespace["samples"]) > 100
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{first['timestamp']} {first['nanoseconds']} ")
    assert printed[1].startswith(f"{len(namespace['samples'])} samples of channel 1: ")
