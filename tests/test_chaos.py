"""A short run of the crash harness (make chaos runs the full one)."""

import re
import subprocess
import sys
from pathlib import Path

CHAOS = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(CHAOS), "--kills", "8", "--stations", "2",
                             "--seconds", "1800", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"kills: (\d+), lost: (\d+), duplicated: (\d+), unreadable files: (\d+)",
                      result.stdout)
    assert match, result.stdout
    assert match.groups() == ("8", "0", "0", "0")
    assert "CFG CIC" in result.stdout  # the uploads hold several event types
