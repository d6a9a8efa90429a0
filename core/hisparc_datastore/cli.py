"""The ``datastore`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, load_settings
from .lock import WriterAlreadyRunning
from .plugins import PluginConflict, load_registry

log = logging.getLogger("hisparc_datastore")


def cmd_writer(args: argparse.Namespace) -> int:
    from .logsetup import configure_logging
    from .writer import Writer

    settings = load_settings(args.config)
    configure_logging(settings, also_stderr=not args.quiet)
    registry = load_registry()
    if not len(registry):
        raise ConfigError("no detector plugins are installed: nothing could be stored")
    tally = Writer(settings, registry).run(once=args.once)
    if args.once:
        print(f"stored {tally.events} events from {tally.uploads} uploads"
              + "".join(f", {code} {n}" for code, n in sorted(tally.stored.items()))
              + f"; quarantined {sum(tally.quarantined_events.values())} events"
              + f" and {tally.quarantined_files} files")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    by_owner: dict[str, list] = {}
    for event_type in registry:
        by_owner.setdefault(registry.owners[event_type.upload_code], []).append(event_type)
    if not by_owner:
        print("no detector plugins installed")
    for owner, event_types in sorted(by_owner.items()):
        print(owner)
        for event_type in event_types:
            print(f"  {event_type.upload_code}  {event_type.table_name:<18} {event_type.table_title}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from .queue import Queue

    queue = Queue(load_settings(args.config).data_dir)
    entries = queue.quarantined()
    for name, reason in entries:
        first, _, rest = reason.partition("\n")
        more = f" (+{rest.count(chr(10)) + 1} more lines)" if rest else ""
        print(f"{name}: {first}{more}")
    print(f"{len(entries)} quarantined file(s) in {queue.quarantine}")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    from .queue import Queue

    queue = Queue(load_settings(args.config).data_dir)
    for name in args.names:
        print(f"{name} -> {queue.requeue(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datastore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("writer", help="store queued uploads into the day files")
    p.add_argument("config", help="the datastore config.ini")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--quiet", action="store_true", help="log only to the configured log file")
    p.set_defaults(func=cmd_writer)

    p = sub.add_parser("plugins", help="list installed detector plugins and their tables")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("quarantine", help="list quarantined files and why")
    p.add_argument("config")
    p.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("requeue", help="put quarantined or suspicious files back into incoming/")
    p.add_argument("config")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_requeue)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PluginConflict, WriterAlreadyRunning, FileNotFoundError) as exc:
        print(f"datastore {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
