"""The ``datastore`` command: every service and tool of the datastore, one subcommand each."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from hisparc_datastore.codec.decoding import DecodeError
from hisparc_datastore.config import (
    ConfigError,
    load_settings,
    require_data_dir,
    setting_problem,
    split_host_port,
)
from hisparc_datastore.ops.progress import Progress
from hisparc_datastore.plugin.registry import PluginError, load_registry
from hisparc_datastore.writer.lock import WriterAlreadyRunning, WriterLock

log = logging.getLogger("hisparc_datastore")

QUARANTINE_LINES = 4  # reason lines `datastore quarantine` shows per file
DESCRIPTION = ("Receive HiSPARC station uploads over HTTP, queue them on disk and store them in one "
               "HDF5 file per UTC day, with a detector plugin for each kind of event.")
EPILOG = "Run 'datastore COMMAND --help' for what a command takes. Most take the path of config.ini."
CONFIG_HELP = "the datastore's config.ini"
# Exit status of a command whose reader went away (`datastore plugins | head -1`), as a
# shell reports a process ended by SIGPIPE: 128 + 13.
EXIT_BROKEN_PIPE = 141


def cmd_writer(args: argparse.Namespace) -> int:
    from hisparc_datastore.ops.check import queue_device_problem
    from hisparc_datastore.ops.logsetup import configure_logging
    from hisparc_datastore.writer.service import GaveUp, Writer

    settings = load_settings(args.config)
    require_data_dir(settings)
    # Claiming and archiving rename and link between the queue folders: across file
    # systems every batch would fail for ever.
    problem = queue_device_problem(settings)
    if problem:
        raise ConfigError(setting_problem(settings.source, "General", "data_dir", settings.data_dir, problem))
    configure_logging(settings, also_stderr=not args.quiet)
    registry = load_registry()
    if not len(registry):
        raise ConfigError("no detector plugins are installed: nothing could be stored")
    with contextlib.ExitStack() as stack:
        # The lock before the metrics port: a second writer is told which writer holds the
        # data_dir, not that the port is in use.
        lock = stack.enter_context(WriterLock(settings.data_dir))
        writer = Writer(settings, registry)
        if settings.metrics_bind:
            stack.enter_context(start_metrics(writer, settings))
        if args.once:
            stack.enter_context(Progress(lambda: f"stored {writer.tally.events} events from "
                                         f"{writer.tally.uploads} uploads"))
        try:
            tally = writer.run(once=args.once, lock=lock)
        except GaveUp as exc:
            log.error("writer --once gave up: %s", exc)
            if args.quiet and settings.log is not None:  # else the log line went to stderr
                print(f"datastore writer: {exc}", file=sys.stderr)
            return 1
    if args.once:
        print(f"stored {tally.events} events from {tally.uploads} uploads"
              + "".join(f", {code} {n}" for code, n in sorted(tally.stored.items()))
              + f"; quarantined {sum(tally.quarantined_events.values())} events"
              + f" and {tally.quarantined_files} files")
    return 0


def start_metrics(writer, settings):
    from hisparc_datastore.writer.metrics import MetricsServer

    host, port = split_host_port(settings.metrics_bind)  # load_settings checked it
    try:
        return MetricsServer(writer, host, port)
    except OSError as exc:
        raise ConfigError(setting_problem(settings.source, "Writer", "metrics_bind", settings.metrics_bind,
                                          f"cannot listen: {exc.strerror or exc}")) from None


def cmd_status(args: argparse.Namespace) -> int:
    from hisparc_datastore.ops.status import status_command

    return status_command(args.config, as_json=args.json, as_nagios=args.nagios)


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
    from hisparc_datastore.queue.folders import Queue

    # Reads only: a missing folder is an empty one, and nothing is created.
    queue = Queue(require_data_dir(load_settings(args.config)), create=False)
    entries = queue.quarantined()
    for name, reason in entries:
        # A refused upload's reason starts with 'station N cluster NAME' and a crash's with the
        # file name: the reason proper is on the lines after, so they are shown too.
        lines = reason.splitlines() or [""]
        print(f"{name}: {lines[0]}")
        for line in lines[1:QUARANTINE_LINES]:
            print(f"    {line}")
        if len(lines) > QUARANTINE_LINES:
            print(f"    (+{len(lines) - QUARANTINE_LINES} more lines in {name}.reason)")
    print(f"{len(entries)} quarantined file(s) in {queue.quarantine}")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    import sqlite3

    from hisparc_datastore.queue.folders import DB_NAME, AlreadyStored, Queue
    from hisparc_datastore.receiver.claims import Dedup

    settings = load_settings(args.config)
    queue = Queue(require_data_dir(settings))
    # The receiver's memory of accepted uploads: a refused upload the station re-sent and
    # had accepted is stored already.
    memory = None
    if settings.duplicate_window_hours > 0 and (settings.data_dir / DB_NAME).exists():
        memory = Dedup(settings.data_dir / DB_NAME, settings.duplicate_window_hours, queue.tmp)
    status = 0
    for name in args.names:
        try:
            print(f"{name} -> {queue.requeue(name, memory)}")
        except AlreadyStored as exc:
            print(str(exc))
        except BlockingIOError as exc:
            print(f"datastore requeue: {exc}", file=sys.stderr)
            status = 1
        except sqlite3.Error as exc:
            # Without the memory it cannot tell whether the station's retry was stored.
            print(f"datastore requeue: {name}: kept, the duplicate memory cannot be read: {exc}",
                  file=sys.stderr)
            status = 1
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    from hisparc_datastore.receiver.server import serve

    return serve(args.config, args.bind, threads=args.threads, also_stderr=not args.quiet)


def cmd_rebuild(args: argparse.Namespace) -> int:
    from hisparc_datastore.writer.rebuild import rebuild_command

    return rebuild_command(args.config, args.date, replace=args.replace)


def cmd_simulate(args: argparse.Namespace) -> int:
    from hisparc_datastore.sim.simulate import simulate_command

    return simulate_command(args.data_dir, stations=args.stations, hours=args.hours,
                            start=args.start, seed=args.seed, post=args.post,
                            prepare_only=args.prepare, concurrency=args.concurrency,
                            give_up_after=args.give_up_after, force=args.force)


def cmd_config_server(args: argparse.Namespace) -> int:
    from hisparc_datastore.stations.configserver import config_server_command

    return config_server_command(args.config, args.bind, also_stderr=not args.quiet)


def cmd_fetch_stations(args: argparse.Namespace) -> int:
    from hisparc_datastore.stations.sync import fetch_stations_command

    return fetch_stations_command(args.config)


def cmd_summary(args: argparse.Namespace) -> int:
    from hisparc_datastore.sim.summary import summary_command

    return summary_command(args.data_dir)


def cmd_verify(args: argparse.Namespace) -> int:
    from hisparc_datastore.ops.verify import verify_command

    return verify_command(args.config, args.dates)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from hisparc_datastore.plugin.scaffold import new_plugin_command

    return new_plugin_command(args.name, code=args.code, distribution=args.distribution,
                              title=args.title, directory=args.directory)


def add_command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` opens with the line the command list shows."""
    return sub.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datastore", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action=VersionAction,
                        help="print the datastore's version and every installed plugin's, then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_command(sub, "writer", help="store queued uploads into the day files")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--quiet", action="store_true", help="log only to the configured log file")
    p.set_defaults(func=cmd_writer)

    p = add_command(sub, "status", help="is ingestion healthy: writer, queue, stations, disk (exit 1 if not)")
    p.add_argument("config", help=CONFIG_HELP)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object")
    form.add_argument("--nagios", action="store_true",
                      help="print one line with perfdata and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
    p.set_defaults(func=cmd_status)

    p = add_command(sub, "check", help="check a configuration and this host: paths, permissions, "
                       "station list, ports, plugins (exit 1 on any problem)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("--serve-bind",
                   help="the receiver's address to check (default: [Receiver] receiver_bind; empty: none)")
    p.add_argument("--config-server-bind",
                   help="config-server's address to check (default: [ConfigServer] config_server_bind "
                        "when station_list_url is set; empty: none)")
    p.set_defaults(func=cmd_check)

    p = add_command(sub, "init", help="create data_dir and its queue folders, then check them")
    p.add_argument("config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_init)

    p = add_command(sub, "plugins", help="list installed detector plugins and their tables")
    p.set_defaults(func=cmd_plugins)

    p = add_command(sub, "quarantine", help="list quarantined files and why")
    p.add_argument("config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_quarantine)

    p = add_command(sub, "requeue", help="put quarantined or suspicious files back into incoming/")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="a file name in quarantine/ or suspicious/, as `datastore quarantine` lists it")
    p.set_defaults(func=cmd_requeue)

    p = add_command(sub, "serve", help="receive station uploads over HTTP and queue them")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("--bind", help="HOST:PORT (default: [Receiver] receiver_bind)")
    p.add_argument("--threads", type=int, default=8,
                   help="requests handled at once (default %(default)s; the deployed uWSGI ran 9 workers)")
    p.add_argument("--quiet", action="store_true", help="log only to the configured log file")
    p.set_defaults(func=cmd_serve)

    p = add_command(sub, "rebuild", help="regenerate a day file from the archived uploads")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("date", help="the UTC day, YYYY-MM-DD")
    p.add_argument("--replace", action="store_true",
                   help="replace the day file with the rebuilt one (default: only compare)")
    p.set_defaults(func=cmd_rebuild)

    p = add_command(sub, "simulate", help="queue uploads from simulated stations (demo, benchmarks)")
    p.add_argument("data_dir", help="a folder for the simulated datastore: its config.ini, station list "
                                    "and queue (made if missing)")
    p.add_argument("--stations", type=int, default=5, help="how many stations (default %(default)s)")
    p.add_argument("--hours", type=float, default=1.0,
                   help="how long each station's data runs (default %(default)s)")
    p.add_argument("--start", default="2026-11-24T23:30:00",
                   help="UTC start, ISO format (default %(default)s: the data spans two days)")
    p.add_argument("--seed", type=int, default=1,
                   help="the same seed simulates the same events and passwords (default %(default)s)")
    p.add_argument("--post", metavar="URL",
                   help="send the uploads to a running receiver over HTTP, as the stations do, "
                        "instead of queueing them directly")
    p.add_argument("--prepare", action="store_true",
                   help="only write config.ini and station_list.csv (to start a receiver on them)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="stations posting at once (default %(default)s)")
    p.add_argument("--give-up-after", type=float, default=600.0, metavar="SECONDS",
                   help="with --post: stop retrying refused uploads after this long (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="queue into a data_dir a writer holds, and replace a config.ini or station list "
                        "that holds something else (refused without it)")
    p.set_defaults(func=cmd_simulate)

    p = add_command(sub, "config-server",
                       help="answer publicdb's reload_datastore() over XML-RPC at /RPC2")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("--bind", help="HOST:PORT (default: [ConfigServer] config_server_bind)")
    p.add_argument("--quiet", action="store_true", help="log only to the configured log file")
    p.set_defaults(func=cmd_config_server)

    p = add_command(sub, "fetch-stations",
                       help="fetch, check and install the station list from station_list_url once")
    p.add_argument("config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_fetch_stations)

    p = add_command(sub, "summary", help="print what the day files hold per station and table")
    p.add_argument("data_dir", help="the data_dir of config.ini, with the day files under YEAR/MONTH/")
    p.set_defaults(func=cmd_summary)

    p = add_command(sub, "verify", help="read every node and blob of day files back; name the damaged "
                                        "(exit 1 if any)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("dates", nargs="*", metavar="DATE", help="YYYY-MM-DD (default: every day file)")
    p.set_defaults(func=cmd_verify)

    p = add_command(sub, "new-plugin", help="write a new detector plugin, ready to install and test")
    p.add_argument("name", help="lower case: the table, the module datastore_NAME and the folder")
    p.add_argument("--code", help="the upload code its stations send (default: NAME's first three "
                                  "letters in upper case)")
    p.add_argument("--distribution", help="the project name (default: hisparc-datastore-NAME)")
    p.add_argument("--title", help="the table's title (default: 'Name detector events')")
    p.add_argument("--directory", help="the new folder to write (default: ./NAME)")
    p.set_defaults(func=cmd_new_plugin)
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    from hisparc_datastore.ops.check import check_command

    return check_command(args.config, args.serve_bind, args.config_server_bind)


def cmd_init(args: argparse.Namespace) -> int:
    from hisparc_datastore.ops.check import init_command

    return init_command(args.config)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hisparc-datastore")
    except PackageNotFoundError:
        return "unknown (not installed)"


def versions() -> str:
    """The core's version and each installed plugin distribution's, one a line. Read from
    the entry points' metadata, not by importing the plugins: a broken one is listed too."""
    from importlib.metadata import entry_points

    plugins = {}
    for entry_point in entry_points(group="hisparc_datastore"):
        dist = entry_point.dist
        plugins[dist.name if dist else entry_point.value] = dist.version if dist else "(version unknown)"
    lines = [f"datastore {version()}"]
    lines += [f"  {name} {plugins[name]}" for name in sorted(plugins)] or ["  no detector plugins installed"]
    return "\n".join(lines)


class VersionAction(argparse.Action):
    """``--version``: like argparse's, with the plugins, which decide what can be stored."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()


def describe(exc: OSError) -> str:
    """A missing or forbidden path as one line: the path, what is wrong, and as whom."""
    from hisparc_datastore.ops.check import user

    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = (exc.strerror or str(exc)).lower()
    if isinstance(exc, PermissionError):
        what += f" (running as {user()})"
    return f"{paths}: {what}" if paths else what


# Paths an operator names or mounts: missing or forbidden, they are a set-up error (exit 2,
# which the systemd units do not restart), never a traceback.
_PATH_ERRORS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone away is seen below, not at exit
        return status
    except BrokenPipeError:
        # The reader took what it wanted (`| head`): no traceback, and nothing more to write.
        # stdout points at /dev/null from here, or the interpreter's last flush would fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ConfigError, DecodeError, PluginError, WriterAlreadyRunning) as exc:
        print(f"datastore {args.command}: {exc}", file=sys.stderr)
        return 2
    except _PATH_ERRORS as exc:
        print(f"datastore {args.command}: {describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
