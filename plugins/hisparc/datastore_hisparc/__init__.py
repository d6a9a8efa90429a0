"""hisparc-datastore plugin for HiSPARC scintillator stations."""

from hisparc_datastore import EventType, base64_blob, hookimpl

from . import descriptions as d


def _numbered(prefix: str, column: str, n: int = 4) -> dict[str, str]:
    return {f"{prefix}{i}": column for i in range(1, n + 1)}


EVENTS = EventType(
    upload_code="CIC",
    table_name="events",
    table_title="HiSPARC event data",
    description=d.HisparcEvent,
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

_SINGLES_CODES = [f"{dev}_CH{ch}_{level}" for dev in ("MAS", "SLV") for ch in (1, 2)
                  for level in ("LOW", "HIGH")]

SINGLES = EventType(
    upload_code="SIN",
    table_name="singles",
    table_title="HiSPARC single messages",
    description=d.HisparcSingle,
    columns={code: code.lower() for code in _SINGLES_CODES},
)


@hookimpl
def datastore_event_types():
    return [EVENTS, SINGLES]
