import re
from pathlib import Path

import attrs
import pytest

from hisparc_datastore.config import REQUIRED, SETTINGS, ConfigError, Settings, load_settings

DEPLOYED = """[General]
log=/tmp/hisparc.log
loglevel=debug
station_list=/tmp/station_list.csv
data_dir=/tmp/datastore

[Writer]
sleep=5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return path


def test_the_deployed_config_works_unchanged_with_defaults_for_new_keys(tmp_path):
    settings = load_settings(write(tmp_path, DEPLOYED))
    assert settings.log == Path("/tmp/hisparc.log")
    assert settings.loglevel == "debug"
    assert settings.station_list == Path("/tmp/station_list.csv")
    assert settings.data_dir == Path("/tmp/datastore")
    assert settings.sleep == 5.0
    assert settings.minimum_year == 2020
    assert settings.archive_days == 14
    assert settings.duplicate_window_hours == 24.0


def test_new_keys_are_read(tmp_path):
    text = DEPLOYED.replace("[Writer]", "minimum_year=2016\n[Writer]") + "archive_days=0\n"
    settings = load_settings(write(tmp_path, text))
    assert settings.minimum_year == 2016
    assert settings.archive_days == 0


@pytest.mark.parametrize(
    "text, message",
    [
        (DEPLOYED.replace("data_dir=/tmp/datastore\n", ""), r"\[General\] data_dir: is required"),
        (DEPLOYED.replace("sleep=5", "sleep=soon"), r"\[Writer\] sleep: 'soon': not a number"),
        (DEPLOYED.replace("loglevel=debug", "loglevel=loud"), r"loglevel: 'loud'"),
        (DEPLOYED + "archive_days=-1\n", "archive_days: '-1': must be at least 0"),
        ("no section header", "File contains no section headers"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration .*nope.ini"):
        load_settings(tmp_path / "nope.ini")


def test_operations_keys_are_read_and_checked(tmp_path):
    settings = load_settings(write(tmp_path, DEPLOYED))
    assert settings.station_list_url is None and settings.metrics_bind is None
    assert settings.max_lag_s == 600.0
    text = DEPLOYED.replace("[Writer]", "station_list_url=http://publicdb/config/datastore\n[Writer]")
    settings = load_settings(write(tmp_path, text + "max_lag_s=120\nmetrics_bind=127.0.0.1:9102\n"))
    assert settings.station_list_url == "http://publicdb/config/datastore"
    assert settings.max_lag_s == 120.0 and settings.metrics_bind == "127.0.0.1:9102"
    with pytest.raises(ConfigError, match=r"\[General\] station_list_url: 'publicdb/config'"):
        load_settings(write(tmp_path, DEPLOYED.replace("[Writer]",
                                                       "station_list_url=publicdb/config\n[Writer]")))
    with pytest.raises(ConfigError, match=r"\[Writer\] max_lag_s: '0': must be more than 0"):
        load_settings(write(tmp_path, DEPLOYED + "max_lag_s=0\n"))


# -- the one settings table -----------------------------------------------------------------------------

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def shown(default) -> str:
    """A default as docs/operations.md writes it."""
    if default is REQUIRED:
        return "required"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def documented_settings() -> dict[tuple[str, str], tuple[str, str]]:
    text = OPERATIONS.read_text()
    table = text[text.index("Every setting, with its default"):].split("\n\n")[1]
    rows = re.findall(r"^\| `\[(\w+)\] (\w+)` \| ([^|]*) \| (.*) \|$", table, re.MULTILINE)
    return {(section, key): (default.strip(), meaning.strip()) for section, key, default, meaning in rows}


def test_the_operations_guide_lists_every_setting_with_the_tables_default_and_help():
    table = {(s.section, s.name): (shown(s.default), s.help) for s in SETTINGS}
    assert len(table) == len(SETTINGS) > 15
    assert documented_settings() == table


def test_the_settings_table_makes_the_settings_and_their_defaults(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[General]\nstation_list=stations.csv\ndata_dir=/srv/data\n")
    settings = load_settings(config)
    assert [field.name for field in attrs.fields(Settings)] == ["source", *(s.name for s in SETTINGS)]
    for setting in SETTINGS:
        if setting.default is not REQUIRED:
            assert getattr(settings, setting.name) == setting.default, setting.name
    assert (settings.station_list, settings.data_dir) == (Path("stations.csv"), Path("/srv/data"))


def test_every_setting_is_read_from_its_section_as_its_type(tmp_path):
    given = {"log": "x.log", "loglevel": "debug", "station_list": "s.csv", "data_dir": "/d",
             "minimum_year": "2001", "max_days_per_upload": "3", "max_events_per_upload": "500",
             "batch_days": "4", "reserve_mb": "0", "station_list_url": "http://127.0.0.1/config",
             "sleep": "0.5",
             "batch_uploads": "7", "batch_bytes": "1000", "archive_days": "0", "gather_s": "2.5",
             "commit_s": "4.5",
             "archive_compress": "yes",
             "fsync": "no",
             "prepare_process": "off", "max_lag_s": "30", "metrics_bind": "127.0.0.1:9100",
             "max_body_bytes": "999", "duplicate_window_hours": "1.5", "request_timeout": "9",
             "max_connections": "20", "trusted_proxies": "127.0.0.1", "publicdb_addresses": "192.0.2.10",
             "hold_files": "10", "hold_mb": "5", "hold_days": "0", "receiver_reserve_mb": "0",
             "quiet_after_s": "60", "receiver_bind": "127.0.0.1:8081", "config_server_bind": "[::1]:8012",
             "log_format": "json"}
    assert set(given) == {s.name for s in SETTINGS}  # a new setting needs a value here too
    sections: dict[str, list[str]] = {}
    for setting in SETTINGS:
        sections.setdefault(setting.section, []).append(f"{setting.name}={given[setting.name]}")
    config = tmp_path / "config.ini"
    config.write_text("".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items()))
    settings = load_settings(config)
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        assert isinstance(value, setting.type), setting.name
    assert (settings.fsync, settings.prepare_process, settings.archive_compress, settings.sleep,
            settings.log) == (False, False, True, 0.5, Path("x.log"))

# -- refusing mistakes (issue 18) ------------------------------------------------------------------


def test_every_key_the_readme_documents_is_accepted_with_a_legitimate_value(tmp_path):
    text = DEPLOYED.replace("[Writer]", "minimum_year=2016\nmax_days_per_upload=400\n"
                            "max_events_per_upload=500\n"
                            "station_list_url=https://data.hisparc.nl/config/datastore\n\n[Writer]")
    text += ("batch_uploads=10\nbatch_bytes=1000000\nbatch_days=7\narchive_days=0\nfsync=no\n"
             "prepare_process=false\nmax_lag_s=120\nmetrics_bind=[::1]:9102\n\n[Receiver]\n"
             "max_body_bytes=100000\nduplicate_window_hours=0\nrequest_timeout=5\nmax_connections=2\n")
    settings = load_settings(write(tmp_path, text))
    assert (settings.minimum_year, settings.batch_days, settings.metrics_bind) == (2016, 7, "[::1]:9102")
    assert (settings.duplicate_window_hours, settings.max_connections, settings.fsync) == (0.0, 2, False)


def test_keys_and_sections_are_case_as_configparser_reads_them(tmp_path):
    # configparser folds key names; section names it keeps. The deployed file has [General].
    settings = load_settings(write(tmp_path, DEPLOYED.replace("data_dir", "Data_Dir")))
    assert settings.data_dir == Path("/tmp/datastore")


@pytest.mark.parametrize(
    "text, message",
    [
        (DEPLOYED.replace("[Writer]", "[Writter]"),
         r"^{path} \[Writter\]: unknown section; did you mean \[Writer\]\?$"),
        (DEPLOYED.replace("[General]", "[general]"),
         r"^{path} \[general\]: unknown section; did you mean \[General\]\?$"),
        (DEPLOYED + "metrics_bnd=127.0.0.1:9102\n",
         r"^{path} \[Writer\] metrics_bnd: unknown key; did you mean \[Writer\] metrics_bind\?$"),
        (DEPLOYED + "minimum_year=2016\n",
         r"^{path} \[Writer\] minimum_year: unknown key; it belongs in \[General\]$"),
        (DEPLOYED + "colour=blue\n", r"^{path} \[Writer\] colour: unknown key$"),
        ("[DEFAULT]\nsleep=5\n" + DEPLOYED, r"^{path} \[DEFAULT\]: unknown section; known: "),
    ],
)
def test_unknown_sections_and_keys_are_refused_naming_the_nearest_known_one(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert re.match(message.format(path=re.escape(str(path))), str(info.value)), str(info.value)


def with_setting(section: str, key: str, value: object) -> str:
    """The deployed config.ini with ``[section] key=value`` added or replacing the deployed one."""
    sections = {"General": {"log": "/tmp/hisparc.log", "loglevel": "debug",
                            "station_list": "/tmp/station_list.csv", "data_dir": "/tmp/datastore"},
                "Writer": {"sleep": "5"}}
    sections.setdefault(section, {})[key] = value
    return "".join(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()) + "\n"
                   for name, keys in sections.items())


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("General", "minimum_year", "20201", r"must be at least 1970 and at most \d{4}"),
        ("General", "minimum_year", "1900", "must be at least 1970"),
        ("General", "data_dir", "datastore", "must be an absolute path"),
        ("General", "max_days_per_upload", "0", "must be at least 1"),
        ("General", "station_list_url", "publicdb/config", "expected an http:// or https:// address"),
        ("General", "loglevel", "loud", "use one of critical, debug, error, info, warning"),
        ("Writer", "metrics_bind", "127.0.0.1", "expected HOST:PORT"),
        ("Writer", "metrics_bind", "127.0.0.1:99999", "port 99999 is out of range: at most 65535"),
        ("Writer", "metrics_bind", "127.0.0.1:8²", "expected HOST:PORT"),
        ("Writer", "sleep", "nan", "must be a finite number"),
        ("Writer", "sleep", "inf", "must be a finite number"),
        ("Writer", "sleep", "0", "must be more than 0"),
        ("Writer", "sleep", "soon", "not a number"),
        ("Writer", "batch_uploads", "2.5", "not a whole number"),
        ("Writer", "fsync", "maybe", "not true or false"),
        ("Writer", "archive_days", "-1", "must be at least 0"),
        ("Writer", "max_lag_s", "-5", "must be more than 0"),
        ("Receiver", "max_connections", "1", "must be at least 2"),
    ],
)
def test_a_bad_value_is_one_line_naming_file_section_key_and_value(tmp_path, section, key, value, message):
    path = write(tmp_path, with_setting(section, key, value))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert re.fullmatch(re.escape(f"{path} [{section}] {key}: {value!r}: ") + message + ".*",
                        str(info.value)), str(info.value)


def test_an_empty_required_value_is_named(tmp_path):
    path = write(tmp_path, with_setting("General", "data_dir", ""))
    with pytest.raises(ConfigError, match=re.escape(f"{path} [General] data_dir: is required")):
        load_settings(path)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.range is not None], ids=lambda s: s.name)
def test_every_number_setting_is_range_checked_both_ways(tmp_path, setting):
    # The default is accepted; just below the lowest value and (where bounded) just above the
    # highest are refused, naming the key.
    def load(value):
        return load_settings(write(tmp_path, with_setting(setting.section, setting.name, value)))

    assert getattr(load(setting.default), setting.name) == setting.default
    bounds = setting.range
    step = 1 if setting.type is int else 0.001
    refused = [bounds.low if bounds.open_low else bounds.low - step]
    if bounds.high is not None:
        refused.append(bounds.high + step)
    for value in refused:
        with pytest.raises(ConfigError, match=re.escape(f"[{setting.section}] {setting.name}: ")):
            load(value)


def test_several_mistakes_are_named_one_per_line(tmp_path):
    path = write(tmp_path, DEPLOYED.replace("sleep=5", "sleep=0\nmetrics_bnd=x\n"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path} [Writer] ") for line in lines)
