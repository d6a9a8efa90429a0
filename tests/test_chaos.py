"""A short run of the crash harness (make chaos runs the full one): the writer killed 8 times,
the receiver 14 (every named step of a request once, and at random instants); every blob of
every station read on its own and compared with the reference's and with what was sent."""

import re
import subprocess
import sys
from pathlib import Path

CHAOS = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path):
    # generous: a busy 2-core machine; the harness itself waits for readiness, never for time
    result = subprocess.run([sys.executable, str(CHAOS), "--kills", "8", "--receiver-kills", "14",
                             "--stations", "2", "--seconds", "1800", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"kills: (\d+), lost: (\d+), duplicated: (\d+), unreadable files: (\d+), "
                      r"unreadable blobs: (\d+), blobs differing: (\d+)", result.stdout)
    assert match, result.stdout
    assert match.groups() == ("8", "0", "0", "0", "0", "0")
    # both runs: every blob an event refers to, as sent; the blobs arrays as the reference's
    sent = re.findall(r"blobs sent: (\d+), differing: 0; blobs array rows differing from the "
                      r"reference: 0\)", result.stdout)
    assert len(sent) == 2 and int(sent[0]) > 1000, result.stdout
    assert "CFG CIC" in result.stdout  # the uploads hold several event types
    # queue files as the deployed receiver writes them, two CFG events sharing one datalist
    shared = re.search(r"sharing one datalist, written with Python's pickle: (\d+)", result.stdout)
    assert shared and int(shared.group(1)) >= 1, result.stdout
    assert "quarantined: 0\n" in result.stdout
    match = re.search(r"receiver kills: (\d+), lost: (\d+), duplicated: (\d+), tmp leftovers: (\d+), "
                      r"unreadable blobs: (\d+), blobs differing: (\d+)", result.stdout)
    assert match, result.stdout
    assert match.groups() == ("14", "0", "0", "0", "0", "0")
    steps = re.search(r"killed at a named step of a request: (\d+); uploads answered 100: (\d+)",
                      result.stdout)
    assert steps, result.stdout
    assert int(steps.group(1)) >= 1 and int(steps.group(2)) == 64  # every upload of 2 stations
    assert "answered 205 (kept waiting): 0;" in result.stdout  # no claim of a dead receiver stalls
