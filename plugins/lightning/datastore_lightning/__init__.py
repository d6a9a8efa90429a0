"""hisparc-datastore plugin for the lightning detectors attached to some HiSPARC stations.

The deployed writer mapped LIT_*_ANGLE, LCG_SQUELCH_SETTING and
LST_SEVERE_ALARM to columns that do not exist and so lost every LIT, LCG and
LST message; here they fill the columns the seed defines.
"""

from hisparc_datastore import EventType, boolean_checks, hookimpl, text_blob

from . import descriptions as d
from .simulate import simulate_station

LIGHTNING = EventType(
    upload_code="LIT",
    table_name="lightning",
    table_title="HiSPARC lightning data",
    description=d.LightningEvent,
    columns={
        "LIT_CORR_DIST": "corr_distance",
        "LIT_UNCORR_DIST": "uncorr_distance",
        "LIT_UNCORR_ANGLE": "uncorr_angle",
        "LIT_CORR_ANGLE": "corr_angle",
    },
)

LIGHTNING_ERRORS = EventType(
    upload_code="LER",
    table_name="lightning_errors",
    table_title="HiSPARC lightning error messages",
    description=d.LightningError,
    columns={"LER_ERRMSG": "messages"},
    blobs={"LER_ERRMSG": text_blob},
)

_CONFIG_COLUMNS = {f"LCG_{column.upper()}": column for column in d.LightningConfig.columns
                   if column not in ("event_id", "timestamp", "squelch_seting")}

LIGHTNING_CONFIG = EventType(
    upload_code="LCG",
    table_name="lightning_config",
    table_title="HiSPARC lightning configuration messages",
    description=d.LightningConfig,
    # a flag is 0 or 1: numpy would store any other number as True
    checks=boolean_checks(d.LightningConfig),
    columns={**_CONFIG_COLUMNS, "LCG_SQUELCH_SETTING": "squelch_seting"},
    blobs={"LCG_HELP_URL": text_blob, "LCG_DATABASE_NAME": text_blob},
)

LIGHTNING_STATUS = EventType(
    upload_code="LST",
    table_name="lightning_status",
    table_title="HiSPARC lightning status messages",
    description=d.LightningStatus,
    checks=boolean_checks(d.LightningStatus),
    columns={
        "LST_CLOSE_RATE": "close_rate",
        "LST_TOTAL_RATE": "total_rate",
        "LST_CLOSE_ALARM": "close_alarm",
        "LST_SEVERE_ALARM": "sever_alarm",
        "LST_CURR_HEADING": "current_heading",
    },
)

LIGHTNING_NOISE = EventType(
    upload_code="LNS",
    table_name="lightning_noise",
    table_title="HiSPARC lightning noise messages",
    description=d.LightningNoise,
    columns={},
)

EVENT_TYPES = (LIGHTNING, LIGHTNING_ERRORS, LIGHTNING_CONFIG, LIGHTNING_STATUS, LIGHTNING_NOISE)


@hookimpl
def datastore_event_types():
    return list(EVENT_TYPES)


@hookimpl
def datastore_simulate_events(station, start, seconds, rng):
    if station.has_lightning:
        return simulate_station(station, start, seconds, rng)
    return []
