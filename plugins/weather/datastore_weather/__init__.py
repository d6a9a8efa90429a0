"""hisparc-datastore plugin for the weather stations attached to some HiSPARC stations."""

from hisparc_datastore import EventType, boolean_checks, hookimpl, text_blob

from . import descriptions as d
from .simulate import simulate_station

WEATHER = EventType(
    upload_code="WTR",
    table_name="weather",
    table_title="HiSPARC weather data",
    description=d.WeatherEvent,
    columns={
        "WTR_TEMP_INSIDE": "temp_inside",
        "WTR_TEMP_OUTSIDE": "temp_outside",
        "WTR_HUMIDITY_INSIDE": "humidity_inside",
        "WTR_HUMIDITY_OUTSIDE": "humidity_outside",
        "WTR_BAROMETER": "barometer",
        "WTR_WIND_DIR": "wind_dir",
        "WTR_WIND_SPEED": "wind_speed",
        "WTR_SOLAR_RAD": "solar_rad",
        "WTR_UV": "uv",
        "WTR_ET": "evapotranspiration",
        "WTR_RAIN_RATE": "rain_rate",
        "WTR_HEAT_INDEX": "heat_index",
        "WTR_DEW_POINT": "dew_point",
        "WTR_WIND_CHILL": "wind_chill",
    },
)

WEATHER_ERRORS = EventType(
    upload_code="WER",
    table_name="weather_errors",
    table_title="HiSPARC weather error messages",
    description=d.WeatherError,
    columns={"WER_ERRMSG": "messages"},
    blobs={"WER_ERRMSG": text_blob},
)

# Every configuration column is sent as WCG_ + its name in upper case.
WEATHER_CONFIG = EventType(
    upload_code="WCG",
    table_name="weather_config",
    table_title="HiSPARC weather configuration messages",
    description=d.WeatherConfig,
    # a flag is 0 or 1: numpy would store any other number as True
    checks=boolean_checks(d.WeatherConfig),
    columns={f"WCG_{column.upper()}": column for column in d.WeatherConfig.columns
             if column not in ("event_id", "timestamp")},
    blobs={"WCG_HELP_URL": text_blob, "WCG_DATABASE_NAME": text_blob},
)

EVENT_TYPES = (WEATHER, WEATHER_ERRORS, WEATHER_CONFIG)


@hookimpl
def datastore_event_types():
    return list(EVENT_TYPES)


@hookimpl
def datastore_simulate_events(station, start, seconds, rng):
    if station.has_weather:
        return simulate_station(station, start, seconds, rng)
    return []
