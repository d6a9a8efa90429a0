"""hisparc-datastore plugin for HiSPARC scintillator stations: CIC ERR CFG CMP SIN SAT."""

from hisparc_datastore import EventType, base64_blob, boolean_checks, hookimpl, text_blob

from . import descriptions as d
from .simulate import simulate_station


def _numbered(prefix: str, column: str, n: int = 4) -> dict[str, str]:
    return {f"{prefix}{i}": column for i in range(1, n + 1)}


EVENTS = EventType(
    upload_code="CIC",
    table_name="events",
    table_title="HiSPARC event data",
    description=d.HisparcEvent,
    # a flag is 0 or 1: numpy would store any other number as True
    checks=boolean_checks(d.HisparcEvent),
    columns={
        "RED": "data_reduction",
        "EVENTRATE": "event_rate",
        "TRIGPATTERN": "trigger_pattern",
        **_numbered("BL", "baseline"),
        **_numbered("STDDEV", "std_dev"),
        **_numbered("NP", "n_peaks"),
        **_numbered("PH", "pulseheights"),
        **_numbered("IN", "integrals"),
        **_numbered("TR", "traces"),
    },
    blobs={f"TR{i}": base64_blob for i in range(1, 5)},
    extended_time=True,
)

ERRORS = EventType(
    upload_code="ERR",
    table_name="errors",
    table_title="HiSPARC error messages",
    description=d.HisparcError,
    columns={"ERRMSG": "messages"},
    blobs={"ERRMSG": text_blob},
)

# Per-device settings of the configuration message: the code suffix after
# CFG_MAS_ / CFG_SLV_ and the column suffix after mas_ / slv_.
_DEVICE_SETTINGS = {
    "CH1THRLOW": "ch1_thres_low", "CH1THRHIGH": "ch1_thres_high",
    "CH2THRLOW": "ch2_thres_low", "CH2THRHIGH": "ch2_thres_high",
    "CH1INTTIME": "ch1_inttime", "CH2INTTIME": "ch2_inttime",
    "CH1VOLT": "ch1_voltage", "CH2VOLT": "ch2_voltage",
    "CH1CURR": "ch1_current", "CH2CURR": "ch2_current",
    "COMPTHRLOW": "comp_thres_low", "COMPTHRHIGH": "comp_thres_high",
    "MAXVOLT": "max_voltage", "RESET": "reset",
    "CH1GAINPOS": "ch1_gain_pos", "CH1GAINNEG": "ch1_gain_neg",
    "CH2GAINPOS": "ch2_gain_pos", "CH2GAINNEG": "ch2_gain_neg",
    "CH1OFFPOS": "ch1_offset_pos", "CH1OFFNEG": "ch1_offset_neg",
    "CH2OFFPOS": "ch2_offset_pos", "CH2OFFNEG": "ch2_offset_neg",
    "COMMOFF": "common_offset", "INTVOLTAGE": "internal_voltage",
    "CH1ADCGAIN": "ch1_adc_gain", "CH1ADCOFF": "ch1_adc_offset",
    "CH2ADCGAIN": "ch2_adc_gain", "CH2ADCOFF": "ch2_adc_offset",
    "CH1COMPGAIN": "ch1_comp_gain", "CH1COMPOFF": "ch1_comp_offset",
    "CH2COMPGAIN": "ch2_comp_gain", "CH2COMPOFF": "ch2_comp_offset",
}

CONFIG_COLUMNS = {
    "CFG_GPS_LAT": "gps_latitude", "CFG_GPS_LONG": "gps_longitude", "CFG_GPS_ALT": "gps_altitude",
    "CFG_MAS_VERSION": "mas_version", "CFG_SLV_VERSION": "slv_version",
    "CFG_TRIGLOWSIG": "trig_low_signals", "CFG_TRIGHIGHSIG": "trig_high_signals",
    "CFG_TRIGEXT": "trig_external", "CFG_TRIGANDOR": "trig_and_or",
    "CFG_PRECTIME": "precoinctime", "CFG_CTIME": "coinctime", "CFG_POSTCTIME": "postcoinctime",
    "CFG_DETNUM": "detnum", "CFG_PASSWORD": "password", "CFG_SPAREBYTES": "spare_bytes",
    "CFG_USEFILTER": "use_filter", "CFG_USEFILTTHRES": "use_filter_threshold",
    "CFG_REDUCE": "reduce_data", "CFG_BUFFER": "buffer", "CFG_STARTMODE": "startmode",
    "CFG_DELAYSCREEN": "delay_screen", "CFG_DELAYCHECK": "delay_check",
    "CFG_DELAYERROR": "delay_error",
    **{f"CFG_{device}_{code}": f"{device.lower()}_{column}"
       for device in ("MAS", "SLV") for code, column in _DEVICE_SETTINGS.items()},
}

CONFIG = EventType(
    upload_code="CFG",
    table_name="config",
    table_title="HiSPARC configuration messages",
    description=d.HisparcConfiguration,
    checks=boolean_checks(d.HisparcConfiguration),
    columns=CONFIG_COLUMNS,
    blobs={code: text_blob for code in
           ("CFG_MAS_VERSION", "CFG_SLV_VERSION", "CFG_PASSWORD", "CFG_BUFFER")},
)

COMPARATOR = EventType(
    upload_code="CMP",
    table_name="comparator",
    table_title="HiSPARC comparator messages",
    description=d.HisparcComparator,
    columns={"CMP_DEVICE": "device", "CMP_COMPARATOR": "comparator", "CMP_COUNT": "count"},
    extended_time=True,
)

_SINGLES_CODES = [f"{dev}_CH{ch}_{level}" for dev in ("MAS", "SLV") for ch in (1, 2)
                  for level in ("LOW", "HIGH")]

SINGLES = EventType(
    upload_code="SIN",
    table_name="singles",
    table_title="HiSPARC single messages",
    description=d.HisparcSingle,
    columns={code: code.lower() for code in _SINGLES_CODES},
)

SATELLITES = EventType(
    upload_code="SAT",
    table_name="satellites",
    table_title="HiSPARC satellite messages",
    description=d.HisparcSatellite,
    columns={code: code.lower() for code in
             ("MIN_N", "MEAN_N", "MAX_N", "MIN_SIGNAL", "MEAN_SIGNAL", "MAX_SIGNAL")},
)

EVENT_TYPES = (EVENTS, ERRORS, CONFIG, COMPARATOR, SINGLES, SATELLITES)


@hookimpl
def datastore_event_types():
    return list(EVENT_TYPES)


@hookimpl
def datastore_simulate_events(station, start, seconds, rng):
    return simulate_station(station, start, seconds, rng)
