"""The station list (``number,cluster,password`` per line): parsed, reloaded when it
changes, fetched from publicdb.

``stationlist``   parses the list; ``StationList`` reloads it when the file changes
``sync``          ``datastore fetch-stations``: fetch, check and install the list atomically
``configserver``  ``datastore config-server``: publicdb's reload push over XML-RPC
"""

from hisparc_datastore.stations.stationlist import (
    Station,
    StationList,
    StationListRefused,
    parse_station_list,
)

__all__ = [
    "Station", "StationList", "StationListRefused", "parse_station_list",
]
