"""A simulated weather station: a reading every five seconds, a configuration at
start, and an error message now and then."""

from __future__ import annotations

import datetime
import math
import random

from hisparc_datastore import SimulatedStation, station_event

READING_INTERVAL = 5  # seconds


def reading(moment: datetime.datetime, rng: random.Random) -> dict:
    hour = moment.hour + moment.minute / 60
    outside = 8.0 + 5.0 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.gauss(0, 0.2)
    return station_event("WTR", moment, {
        "WTR_TEMP_INSIDE": round(21.0 + rng.gauss(0, 0.1), 2),
        "WTR_TEMP_OUTSIDE": round(outside, 2),
        "WTR_HUMIDITY_INSIDE": rng.randint(25, 40),
        "WTR_HUMIDITY_OUTSIDE": rng.randint(60, 95),
        "WTR_BAROMETER": round(1004.0 + rng.gauss(0, 0.5), 3),
        "WTR_WIND_DIR": rng.randrange(360),
        "WTR_WIND_SPEED": rng.randint(0, 12),
        "WTR_SOLAR_RAD": max(0, int(400 * math.sin((hour - 6) / 12 * math.pi))),
        "WTR_UV": -999,  # the station software's "no UV sensor"
        "WTR_ET": 0.0,
        "WTR_RAIN_RATE": 0.0,
        "WTR_HEAT_INDEX": int(outside),
        "WTR_DEW_POINT": round(outside - 3.0, 2),
        "WTR_WIND_CHILL": round(outside - 1.0, 2),
    })


def configuration(station: SimulatedStation, moment: datetime.datetime) -> dict:
    return station_event("WCG", moment, {
        "WCG_COM_PORT": 3, "WCG_BAUD_RATE": 19200, "WCG_STATION_ID": station.number,
        "WCG_DATABASE_NAME": "weather", "WCG_HELP_URL": "https://www.hisparc.nl/weather",
        "WCG_DAQ_MODE": True, "WCG_LATITUDE": 52.0, "WCG_LONGITUDE": 4.9, "WCG_ALTITUDE": 56.2,
        "WCG_TEMPERATURE_INSIDE": True, "WCG_TEMPERATURE_OUTSIDE": True,
        "WCG_HUMIDITY_INSIDE": True, "WCG_HUMIDITY_OUTSIDE": True, "WCG_BAROMETER": True,
        "WCG_WIND_DIRECTION": True, "WCG_WIND_SPEED": True, "WCG_SOLAR_RADIATION": True,
        "WCG_UV_INDEX": False, "WCG_OFFSET_BAR_SEA_LEVEL": 7.5,
    })


def simulate_station(station: SimulatedStation, start: datetime.datetime, seconds: int,
                     rng: random.Random) -> list[dict]:
    events = [configuration(station, start)]
    for second in range(0, seconds, READING_INTERVAL):
        moment = start + datetime.timedelta(seconds=second)
        events.append(reading(moment, rng))
        if second % 3600 == 1800:
            events.append(station_event("WER", moment,
                                        {"WER_ERRMSG": "Console: checksum error, reading skipped"}))
    return events
