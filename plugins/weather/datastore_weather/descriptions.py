"""Table descriptions of the weather station tables, exactly as the seed defines them."""

import tables


class WeatherEvent(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    temp_inside = tables.Float32Col(pos=2)
    temp_outside = tables.Float32Col(pos=3)
    humidity_inside = tables.Int16Col(pos=4)
    humidity_outside = tables.Int16Col(pos=5)
    barometer = tables.Float32Col(pos=6)
    wind_dir = tables.Int16Col(pos=7)
    wind_speed = tables.Int16Col(pos=8)
    solar_rad = tables.Int16Col(pos=9)
    uv = tables.Int16Col(pos=10)
    evapotranspiration = tables.Float32Col(pos=11)
    rain_rate = tables.Float32Col(pos=12)
    heat_index = tables.Int16Col(pos=13)
    dew_point = tables.Float32Col(pos=14)
    wind_chill = tables.Float32Col(pos=15)


class WeatherError(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    messages = tables.Int32Col(dflt=-1, pos=2)


class WeatherConfig(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    com_port = tables.UInt8Col(pos=2)
    baud_rate = tables.Int16Col(pos=3)
    station_id = tables.UInt32Col(pos=4)
    database_name = tables.Int32Col(dflt=-1, pos=5)
    help_url = tables.Int32Col(dflt=-1, pos=6)
    daq_mode = tables.BoolCol(pos=7)
    latitude = tables.Float64Col(pos=8)
    longitude = tables.Float64Col(pos=9)
    altitude = tables.Float64Col(pos=10)
    temperature_inside = tables.BoolCol(pos=11)
    temperature_outside = tables.BoolCol(pos=12)
    humidity_inside = tables.BoolCol(pos=13)
    humidity_outside = tables.BoolCol(pos=14)
    barometer = tables.BoolCol(pos=15)
    wind_direction = tables.BoolCol(pos=16)
    wind_speed = tables.BoolCol(pos=17)
    solar_radiation = tables.BoolCol(pos=18)
    uv_index = tables.BoolCol(pos=19)
    evapotranspiration = tables.BoolCol(pos=20)
    rain_rate = tables.BoolCol(pos=21)
    heat_index = tables.BoolCol(pos=22)
    dew_point = tables.BoolCol(pos=23)
    wind_chill = tables.BoolCol(pos=24)
    offset_inside_temperature = tables.Float32Col(pos=25)
    offset_outside_temperature = tables.Float32Col(pos=26)
    offset_inside_humidity = tables.Int16Col(pos=27)
    offset_outside_humidity = tables.Int16Col(pos=28)
    offset_wind_direction = tables.Int16Col(pos=29)
    offset_station_altitude = tables.Float32Col(pos=30)
    offset_bar_sea_level = tables.Float32Col(pos=31)
