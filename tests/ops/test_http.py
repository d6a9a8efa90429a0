"""The Prometheus text both metrics endpoints are written with."""

from hisparc_datastore.ops.http import exposition, metric


def test_a_metric_is_help_type_and_its_samples_in_the_text_format():
    text = exposition(
        metric("x_total", "counter", "Things.", 3),
        metric("y_total", "counter", "By reason.", by=("reason", {'a "b"\\\nc': 1, "plain": 2})),
        metric("z_seconds", "summary", "Time.", parts={"_sum": "1.500000", "_count": 4}),
    )
    assert text == (
        "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n"
        "# HELP y_total By reason.\n# TYPE y_total counter\n"
        # the label's value is the printable text (a backslash, then the two characters \n):
        # a line break a station sent never becomes one in a reader of the label
        'y_total{reason="a \\"b\\"\\\\\\\\nc"} 1\ny_total{reason="plain"} 2\n'
        "# HELP z_seconds Time.\n# TYPE z_seconds summary\nz_seconds_sum 1.500000\nz_seconds_count 4\n"
    )
