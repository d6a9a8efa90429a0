"""``datastore verify CONFIG [DATE ...]``: read every node and blob of day files back and name
what cannot be read (exit 1), for operators after a crash and for the crash harnesses."""

from __future__ import annotations

import datetime
import os

from hisparc_datastore.config import ConfigError, load_settings
from hisparc_datastore.storage.layout import day_file_path, day_files
from hisparc_datastore.storage.verify import verify_day_file


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a date: write it as YYYY-MM-DD") from None


def verify_command(config: str | os.PathLike, dates: list[str]) -> int:
    settings = load_settings(config)
    if dates:
        paths = [day_file_path(settings.data_dir, _date(text)) for text in dates]
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise ConfigError(f"no day file {', '.join(missing)}")
    else:
        paths = day_files(settings.data_dir)
    damaged = 0
    for path in paths:
        damages = verify_day_file(path)
        damaged += bool(damages)
        print(f"{path}: {'DAMAGED' if damages else 'ok'}", flush=True)
        for damage in damages:
            print(f"  {damage.describe()}")
    print(f"{len(paths)} day files read, {damaged} damaged")
    return 1 if damaged else 0
