"""A simulated HiSPARC station: what its DAQ would upload, at realistic rates and sizes.

Rates per station: about 0.6 coincidences (CIC, four traces each) and one
singles message (SIN) per second, a configuration (CFG) at start and at every
UTC midnight, and now and then a comparator, satellite or error message.
"""

from __future__ import annotations

import base64
import datetime
import functools
import random
import zlib

from hisparc_datastore import SimulatedStation, station_event

COINCIDENCES_PER_SECOND = 0.6
TRACE_SAMPLES = 1600  # 4 µs at 2.5 ns per sample
_ONE_SECOND = datetime.timedelta(seconds=1)


@functools.cache
def _trace_pool(size: int = 32) -> tuple[str, ...]:
    """Base64 texts of zlib-compressed traces, about 1 kB each as the DAQ sends them.

    Building a trace costs more than storing it, so a pool is made once and
    drawn from; the datastore never looks inside a trace.
    """
    rng = random.Random(510)
    pool = []
    for _ in range(size):
        baseline = rng.randint(180, 220)
        peak_at = rng.randint(300, 700)
        height = rng.randint(30, 1200)
        samples = []
        for i in range(TRACE_SAMPLES):
            pulse = height * 2.0 ** (-(i - peak_at) / 40) if i >= peak_at else 0
            samples.append(str(int(baseline + pulse + rng.gauss(0, 1.2))))
        text = (",".join(samples) + ",").encode("ascii")
        pool.append(base64.encodebytes(zlib.compress(text)).decode("ascii"))
    return tuple(pool)


def coincidence(moment: datetime.datetime, rng: random.Random) -> dict:
    traces = _trace_pool()
    data = {"RED": 0, "EVENTRATE": round(rng.uniform(0.4, 0.8), 3),
            "TRIGPATTERN": rng.randrange(1 << 16)}
    for i in range(1, 5):
        data[f"BL{i}"] = rng.randint(180, 220)
        data[f"STDDEV{i}"] = rng.randint(1000, 2500)
        data[f"NP{i}"] = rng.randint(0, 3)
        data[f"PH{i}"] = rng.randint(20, 4000)
        data[f"IN{i}"] = rng.randint(500, 60000)
        data[f"TR{i}"] = traces[rng.randrange(len(traces))]
    return station_event("CIC", moment, data, nanoseconds=rng.randrange(1_000_000_000))


def singles(moment: datetime.datetime, rng: random.Random) -> dict:
    data = {}
    for device in ("MAS", "SLV"):
        for channel in (1, 2):
            data[f"{device}_CH{channel}_LOW"] = rng.randint(250, 450)
            data[f"{device}_CH{channel}_HIGH"] = rng.randint(60, 130)
    return station_event("SIN", moment, data)


def configuration(station: SimulatedStation, moment: datetime.datetime) -> dict:
    data = {"CFG_GPS_LAT": 52.0 + station.number / 10000, "CFG_GPS_LONG": 4.9,
            "CFG_GPS_ALT": 56.2, "CFG_MAS_VERSION": "Hardware: 1 FPGA: 12",
            "CFG_SLV_VERSION": "Hardware: 1 FPGA: 12", "CFG_TRIGLOWSIG": 2,
            "CFG_TRIGHIGHSIG": 0, "CFG_TRIGEXT": 0, "CFG_TRIGANDOR": False,
            "CFG_PRECTIME": 1.0, "CFG_CTIME": 1.5, "CFG_POSTCTIME": 3.5, "CFG_DETNUM": 4,
            "CFG_REDUCE": False, "CFG_STARTMODE": False}
    for device in ("MAS", "SLV"):
        for channel in (1, 2):
            data[f"CFG_{device}_CH{channel}THRLOW"] = 30.0
            data[f"CFG_{device}_CH{channel}THRHIGH"] = 70.0
            data[f"CFG_{device}_CH{channel}VOLT"] = 700.0 + 10 * channel
            data[f"CFG_{device}_CH{channel}GAINPOS"] = 128
    return station_event("CFG", moment, data)


def simulate_station(station: SimulatedStation, start: datetime.datetime, seconds: int,
                     rng: random.Random) -> list[dict]:
    events = [configuration(station, start)]
    moment = start
    for second in range(seconds):
        if second and moment.hour == moment.minute == moment.second == 0:
            events.append(configuration(station, moment))
        if rng.random() < COINCIDENCES_PER_SECOND:
            events.append(coincidence(moment, rng))
        events.append(singles(moment, rng))
        if second % 300 == 150:
            events.append(station_event("CMP", moment, {"CMP_DEVICE": rng.randint(0, 1),
                                                 "CMP_COMPARATOR": rng.randint(0, 3),
                                                 "CMP_COUNT": rng.randint(0, 500)},
                                 nanoseconds=rng.randrange(1_000_000_000)))
        if second % 600 == 300:
            events.append(station_event("SAT", moment, {"MIN_N": 4, "MEAN_N": 7.5, "MAX_N": 11,
                                                 "MIN_SIGNAL": 30, "MEAN_SIGNAL": 41.5,
                                                 "MAX_SIGNAL": 50}))
        if second % 1800 == 900:
            events.append(station_event("ERR", moment, {"ERRMSG": "GPS: lost fix, resynchronising"}))
        moment += _ONE_SECOND
    return events
