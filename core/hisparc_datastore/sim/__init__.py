"""Simulated stations, for the demo, the benchmarks and the tests: no service imports it.

``simulate``       fills a queue with the installed plugins' simulated uploads
``stationclient``  posts uploads to a receiver the way the station software does
``demo``           ``make demo``: stations to day files through a real receiver
``summary``        ``datastore summary``: what the day files hold, per station and table
"""
