"""A simulated lightning detector: a status every minute, strikes and noise at random,
a configuration at start and an error message now and then."""

from __future__ import annotations

import datetime
import random

from hisparc_datastore import SimulatedStation, station_event


def configuration(station: SimulatedStation, moment: datetime.datetime) -> dict:
    return station_event("LCG", moment, {
        "LCG_COM_PORT": 4, "LCG_BAUD_RATE": 9600, "LCG_STATION_ID": station.number,
        "LCG_DATABASE_NAME": "lightning", "LCG_HELP_URL": "https://www.hisparc.nl/lightning",
        "LCG_DAQ_MODE": True, "LCG_LATITUDE": 52.0, "LCG_LONGITUDE": 4.9, "LCG_ALTITUDE": 56.2,
        "LCG_SQUELCH_SETTING": 2, "LCG_CLOSE_ALARM_DISTANCE": 10, "LCG_SEVERE_ALARM_DISTANCE": 5,
        "LCG_NOISE_BEEP": False, "LCG_MINIMUM_GPS_SPEED": 3, "LCG_ANGLE_CORRECTION": 1.5,
    })


def simulate_station(station: SimulatedStation, start: datetime.datetime, seconds: int,
                     rng: random.Random) -> list[dict]:
    events = [configuration(station, start)]
    for second in range(seconds):
        moment = start + datetime.timedelta(seconds=second)
        if second % 60 == 0:
            events.append(station_event("LST", moment, {
                "LST_CLOSE_RATE": rng.randint(0, 3), "LST_TOTAL_RATE": rng.randint(0, 40),
                "LST_CLOSE_ALARM": False, "LST_SEVERE_ALARM": False,
                "LST_CURR_HEADING": round(rng.uniform(0, 360), 1)}))
        if rng.random() < 1 / 120:
            distance = rng.randint(5, 300)
            angle = round(rng.uniform(0, 360), 1)
            events.append(station_event("LIT", moment, {
                "LIT_CORR_DIST": distance, "LIT_UNCORR_DIST": distance + rng.randint(-3, 3),
                "LIT_UNCORR_ANGLE": angle, "LIT_CORR_ANGLE": round((angle + 1.5) % 360, 1)}))
        if rng.random() < 1 / 600:
            events.append(station_event("LNS", moment, {}))
        if second % 3600 == 2700:
            events.append(station_event("LER", moment, {"LER_ERRMSG": "Detector: antenna saturated"}))
    return events
