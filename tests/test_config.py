from pathlib import Path

import pytest

from hisparc_datastore.config import ConfigError, load_settings

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
        (DEPLOYED.replace("data_dir=/tmp/datastore\n", ""), r"\[General\] data_dir is required"),
        (DEPLOYED.replace("sleep=5", "sleep=soon"), r"\[Writer\] sleep = 'soon' is not a valid float"),
        (DEPLOYED.replace("loglevel=debug", "loglevel=loud"), r"loglevel = 'loud'"),
        (DEPLOYED + "archive_days=-1\n", "archive_days must be 0"),
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
    with pytest.raises(ConfigError, match=r"\[General\] station_list_url = 'publicdb/config'"):
        load_settings(write(tmp_path, DEPLOYED.replace("[Writer]",
                                                       "station_list_url=publicdb/config\n[Writer]")))
    with pytest.raises(ConfigError, match=r"\[Writer\] max_lag_s must be positive"):
        load_settings(write(tmp_path, DEPLOYED + "max_lag_s=0\n"))
