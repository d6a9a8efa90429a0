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
