"""The states a power cut can leave on disk, built from a recording of what processes did.

A process is run under ``strace`` (:func:`strace_command`); :func:`parse_trace`
turns the record into file-system operations on the paths under one root
directory, and :class:`Model` replays them and builds, for a crash after any
prefix of them, the states the disk may hold afterwards. Why strace: it
records the real, unmodified processes (the receiver's threads, the writer
and its preparer child, SQLite and HDF5 inside them) with the data of every
write, needs nothing built or installed, and its record is plain text one can
read when a state fails. An ``LD_PRELOAD`` shim would miss the raw system
calls that libraries make themselves; a FUSE layer would change the timing
and the locking semantics the processes rely on.

The model (after ALICE, Pillai et al., OSDI 2014), for a crash after
operation ``k``:

- **File data.** What was written to a file before its last ``fsync`` or
  ``fdatasync`` is on disk. What was written (or truncated) after it may be
  all lost, all kept, or torn: the operations kept in order up to one that
  is cut at a 512-byte sector boundary.
- **Directory operations** (create, mkdir, rename, link, unlink, rmdir)
  persist atomically and in the order they were made: the disk holds a
  prefix of them. The prefix holds at least every operation made before an
  ``fsync`` of the directory it changed (for a rename, either directory);
  nothing later is certain. A file's own ``fsync`` makes its data durable,
  not its name.
- SQLite's ``-shm`` file is shared memory, not durable state: it is left
  out (SQLite rebuilds it from the WAL). The WAL itself is a file like any
  other; SQLite rejects a torn frame by its checksum.
- File times are not part of the model beyond order: a materialised file
  gets the wall-clock time of its last recorded write, so "oldest first"
  stays the order it was.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

SECTOR = 512
#: The system calls :func:`parse_trace` understands: everything that changes a file or a
#: name, makes it durable, or tells which file an fd is.
TRACED = ("open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync,syncfs,"
          "rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,link,linkat,truncate,"
          "ftruncate,fallocate,close,dup,dup2,dup3,fcntl,lseek,clone,clone3,fork,vfork,utimensat,"
          "sendfile,copy_file_range,ioctl")
CLONE_FILES = "CLONE_FILES"


def strace_command(output: str | os.PathLike) -> list[str]:
    """The prefix that records a command's file-system calls into ``output``: every thread and
    child (-f), fds named by path (-y), microsecond times, every byte written (in hex)."""
    return ["strace", "-f", "-y", "-ttt", "-xx", "-s", str(1 << 26), "-e", f"trace={TRACED}",
            "-o", str(output)]


@attrs.frozen
class Op:
    """One recorded operation on the modelled tree; ``kind`` says which fields matter.

    kinds: ``write`` (path, offset (None: at the fd's position), data, append), ``copy``
    (path, offset, and ``size`` bytes from ``source_offset`` of the file at target, as the page
    cache held it: sendfile), ``clone`` (path becomes a copy of target: FICLONE), ``truncate``
    (path, size), ``create`` / ``mkdir`` / ``unlink`` / ``rmdir`` (path), ``rename`` / ``link``
    (path, target), ``fsync`` (path), ``open`` (path, fd, trunc), ``close`` / ``seek`` (fd),
    ``mark`` (data: a line a process logged, to tell when something was answered).
    """

    kind: str
    path: str = ""
    target: str = ""
    offset: int | None = None
    data: bytes = b""
    fd: int = -1
    table: int = 0  # which fd table (process) the fd belongs to
    time: float = 0.0
    flag: bool = False  # open: O_TRUNC; write: O_APPEND
    source_offset: int = 0  # copy: where in target the bytes come from
    size: int = 0  # copy: how many


_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<((?:\\x[0-9a-f]{2})*)>)?")


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a call (brackets and strings respected)."""
    args, depth, start, in_str, i = [], 0, 0, False, 0
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{(<":
            depth += 1
        elif c in "]})>":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    if text[start:].strip():
        args.append(text[start:].strip())
    return args


class _Parser:
    """Turns strace lines into :class:`Op` records under ``root``; ``log`` is the file whose
    written lines become ``mark`` operations."""

    def __init__(self, root: Path, cwd: Path, log: Path | None) -> None:
        self.root = str(root)
        self.cwd = str(cwd)
        self.log = str(log) if log else None
        self.tables: dict[int, int] = {}  # tid -> fd table id
        self.fds: dict[int, dict[int, list]] = {}  # table -> fd -> [path, position]
        self.pending: dict[int, str] = {}  # tid -> the unfinished start of a call
        self.ops: list[Op] = []
        self._next_table = 0

    def table(self, tid: int) -> int:
        if tid not in self.tables:
            self.tables[tid] = self._next_table
            self.fds[self._next_table] = {}
            self._next_table += 1
        return self.tables[tid]

    def feed(self, line: str) -> None:
        match = _LINE.match(line)
        if match is None:
            return
        tid, moment, body = int(match.group(1)), float(match.group(2)), match.group(3)
        if body.endswith("<unfinished ...>"):
            self.pending[tid] = body[: -len("<unfinished ...>")].rstrip()
            return
        resumed = re.match(r"^<\.\.\. \w+ resumed>(.*)$", body)
        if resumed:
            start = self.pending.pop(tid, None)
            if start is None:
                return
            rest = resumed.group(1)
            body = start + (rest if rest.startswith((")", ",")) or not rest else ", " + rest.lstrip())
        self.call(tid, moment, body)

    def _path(self, text: str, dirfd: str | None = None, tid: int = 0) -> str | None:
        raw = _HEX.fullmatch(text.strip())
        if raw is None:
            return None
        path = _unhex(raw.group(1)).decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = self.cwd
            if dirfd is not None:
                fd = _FD.match(dirfd)
                if fd and fd.group(2) is not None:
                    base = _unhex(fd.group(2)).decode("utf-8", "surrogateescape")
            path = os.path.join(base, path)
        return os.path.normpath(path)

    def _inside(self, path: str | None) -> bool:
        return path is not None and (path == self.root or path.startswith(self.root + "/"))

    def _fd(self, text: str, tid: int) -> tuple[int, str | None]:
        match = _FD.match(text.strip())
        if match is None or match.group(1) == "AT_FDCWD":
            return -1, None
        fd = int(match.group(1))
        entry = self.fds[self.table(tid)].get(fd)
        if entry is not None:
            return fd, entry[0]
        if match.group(2) is not None:  # opened before the trace began: trust the annotation
            return fd, os.path.normpath(_unhex(match.group(2)).decode("utf-8", "surrogateescape"))
        return fd, None

    def call(self, tid: int, moment: float, body: str) -> None:
        match = re.match(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$", body, re.S)
        if match is None:
            return
        name, args_text, result = match.group(1), match.group(2), match.group(3)
        if result == "?" or int(result) < 0:
            return
        ret = int(result)
        args = _split_args(args_text)
        table = self.table(tid)
        emit = self.ops.append

        def op(kind: str, **fields) -> None:
            emit(Op(kind, time=moment, table=table, **fields))

        if name in ("clone", "clone3", "fork", "vfork"):
            child = ret
            if child > 0:
                # The child may have run (and opened files) before this line was written.
                early = self.fds.get(self.tables[child], {}) if child in self.tables else {}
                if CLONE_FILES in args_text:
                    self.tables[child] = table
                    self.fds[table].update(early)
                else:
                    self.tables[child] = new = self._next_table
                    self._next_table += 1
                    self.fds[new] = {**self.fds[table], **early}
            return
        if name in ("open", "openat", "creat"):
            if name == "openat":
                path, flags = self._path(args[1], args[0], tid), args[2] if len(args) > 2 else ""
            else:
                path = self._path(args[0], None, tid)
                flags = "O_CREAT|O_WRONLY|O_TRUNC" if name == "creat" else (args[1] if len(args) > 1 else "")
            if not (self._inside(path) or path == self.log):
                return
            self.fds[table][ret] = [path, 0, "O_APPEND" in flags]
            if path == self.log:
                return
            op("open", path=path, fd=ret, flag="O_TRUNC" in flags, data=flags.encode())
            return
        if name in ("dup", "dup2", "dup3") or (name == "fcntl" and "F_DUPFD" in args_text):
            old = _FD.match(args[0])
            if old and old.group(1) != "AT_FDCWD":
                entry = self.fds[table].get(int(old.group(1)))
                if entry is not None:
                    self.fds[table][ret] = entry  # a shared description: one position
            return
        if name == "close":
            fd, _ = self._fd(args[0], tid)
            self.fds[table].pop(fd, None)
            return
        if name == "lseek":
            fd, path = self._fd(args[0], tid)
            entry = self.fds[table].get(fd)
            if entry is not None:
                entry[1] = ret
            return
        if name in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
            fd, path = self._fd(args[0], tid)
            if path == self.log and self.log is not None:
                op("mark", data=self._data(name, args))
                return
            if not self._inside(path):
                return
            data = self._data(name, args)[:ret]
            entry = self.fds[table].get(fd)
            if name in ("pwrite64", "pwritev", "pwritev2"):
                offset = int(args[-1] if name != "pwritev2" else args[-2])
                op("write", path=path, offset=offset, data=data)
            elif entry is not None and entry[2]:
                op("write", path=path, offset=None, data=data, flag=True)
            else:
                position = entry[1] if entry is not None else 0
                op("write", path=path, offset=position, data=data)
                if entry is not None:
                    entry[1] = position + len(data)
            return
        if name == "sendfile":
            # shutil.copyfile's way on Linux: the bytes never pass through the process, so
            # the model takes them from the source file as it stands at this point.
            fd, path = self._fd(args[0], tid)
            _, source = self._fd(args[1], tid)
            if not self._inside(path) or ret == 0:
                return
            start = re.match(r"\[(\d+)\]", args[2])
            if start is None or not self._inside(source):
                raise ValueError(f"sendfile without an offset or from outside the model: {body}")
            entry = self.fds[table].get(fd)
            position = entry[1] if entry is not None else 0
            op("copy", path=path, target=source, offset=position, source_offset=int(start.group(1)), size=ret)
            if entry is not None:
                entry[1] = position + ret
            return
        if name == "ioctl":
            if "FICLONE" in args_text and ret == 0:
                _, path = self._fd(args[0], tid)
                _, source = self._fd(args[2], tid)
                if self._inside(path):
                    op("clone", path=path, target=source)
            return
        if name == "copy_file_range":
            _, path = self._fd(args[2], tid)
            if self._inside(path):
                raise ValueError(f"copy_file_range not modelled: {body}")
            return
        if name in ("fsync", "fdatasync"):
            _, path = self._fd(args[0], tid)
            if self._inside(path):
                op("fsync", path=path)
            return
        if name in ("sync", "syncfs"):
            op("sync", path=self.root)
            return
        if name in ("ftruncate", "truncate", "fallocate"):
            if name == "truncate":
                path = self._path(args[0], None, tid)
            else:
                _, path = self._fd(args[0], tid)
            if not self._inside(path):
                return
            if name == "fallocate":
                if "FALLOC_FL_KEEP_SIZE" not in args[1] and args[1].strip() not in ("0",):
                    raise ValueError(f"fallocate mode not modelled: {body}")
                if args[1].strip() == "0":
                    op("extend", path=path, offset=int(args[2]) + int(args[3]))
                return
            op("truncate", path=path, offset=int(args[1]))
            return
        if name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                source, target = self._path(args[0], None, tid), self._path(args[1], None, tid)
            else:
                source, target = self._path(args[1], args[0], tid), self._path(args[3], args[2], tid)
                if name == "renameat2" and "RENAME_EXCHANGE" in args_text:
                    raise ValueError(f"RENAME_EXCHANGE not modelled: {body}")
            if self._inside(source) or self._inside(target):
                op("rename", path=source, target=target)
            return
        if name in ("link", "linkat"):
            if name == "link":
                source, target = self._path(args[0], None, tid), self._path(args[1], None, tid)
            else:
                source, target = self._path(args[1], args[0], tid), self._path(args[3], args[2], tid)
            if self._inside(target):
                op("link", path=source, target=target)
            return
        if name in ("unlink", "unlinkat", "rmdir"):
            path = self._path(args[1], args[0], tid) if name == "unlinkat" else self._path(args[0], None, tid)
            if self._inside(path):
                is_dir = name == "rmdir" or "AT_REMOVEDIR" in args_text
                op("rmdir" if is_dir else "unlink", path=path)
            return
        if name in ("mkdir", "mkdirat"):
            path = self._path(args[1], args[0], tid) if name == "mkdirat" else self._path(args[0], None, tid)
            if self._inside(path):
                op("mkdir", path=path)
            return
        if name == "utimensat":
            return  # times follow the writes (see the module's docstring)

    @staticmethod
    def _data(name: str, args: list[str]) -> bytes:
        if name in ("write", "pwrite64"):
            raw = _HEX.fullmatch(args[1])
            return _unhex(raw.group(1)) if raw else b""
        return b"".join(_unhex(part) for part in re.findall(r'iov_base="((?:\\x[0-9a-f]{2})*)"', args[1]))


def parse_trace(lines: Iterable[str], root: str | os.PathLike, cwd: str | os.PathLike,
                log: str | os.PathLike | None = None) -> list[Op]:
    """The operations on ``root`` recorded in one strace output (see :func:`strace_command`)."""
    parser = _Parser(Path(root), Path(cwd), Path(log) if log else None)
    for line in lines:
        parser.feed(line.rstrip("\n"))
    return parser.ops


@attrs.define
class _Inode:
    is_dir: bool
    durable: bytes = b""  # the contents as of the last fsync
    pending: list = attrs.Factory(list)  # ("w", offset, data) / ("t", size) since then
    data: bytearray = attrs.Factory(bytearray)  # the contents now (the page cache)
    mtime: float = 0.0


def _apply(content: bytearray, change: tuple) -> None:
    if change[0] == "t":
        size = change[1]
        if size < len(content):
            del content[size:]
        else:
            content.extend(bytes(size - len(content)))
        return
    _, offset, data = change
    if offset > len(content):
        content.extend(bytes(offset - len(content)))
    content[offset:offset + len(data)] = data


@attrs.frozen
class CrashState:
    """One state the disk may hold after a crash after operation ``after``: every path under
    the root with its contents (None for a directory) and modification time."""

    after: int
    variant: str
    files: dict
    times: dict

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            content = self.files[path]
            h.update(path.encode() + b"\0" + (b"D" if content is None else hashlib.sha256(content).digest()))
        return h.hexdigest()

    def materialise(self, root: str | os.PathLike) -> Path:
        """Write the state under ``root`` (which must not exist yet)."""
        root = Path(root)
        root.mkdir(parents=True)
        for path in sorted(self.files, key=lambda p: p.count("/")):
            target = root / path
            content = self.files[path]
            if content is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                when = self.times.get(path)
                if when:
                    os.utime(target, (when, when))
        return root


def _is_volatile(path: str) -> bool:
    return path.endswith("-shm")  # SQLite's shared memory: rebuilt from the WAL on open


class Model:
    """A file system replaying :class:`Op` records on the tree at ``root``, starting from its
    contents now, or from those of a copy at ``snapshot`` (taken as wholly durable). Paths in
    states are relative to ``root``."""

    def __init__(self, root: str | os.PathLike, snapshot: str | os.PathLike | None = None) -> None:
        self.root = os.path.normpath(str(root))
        self.inodes: list[_Inode] = []
        self.names: dict[str, int] = {}  # path (relative) -> inode, now
        self.initial: dict[str, int] = {}
        # ("create" | "mkdir" | "unlink" | "rmdir", path, inode) or ("rename" | "link", a, b)
        self.dirops: list[tuple] = []
        self.certain = 0  # how many of dirops are certainly on disk
        self.done = 0
        start = os.path.normpath(str(snapshot)) if snapshot is not None else self.root
        for directory, _, files in os.walk(start):
            rel = os.path.relpath(directory, start)
            if rel != ".":
                self._add(rel, _Inode(True))
            for name in files:
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, start)
                if _is_volatile(relative):
                    continue
                data = Path(path).read_bytes()
                self._add(relative, _Inode(False, data, [], bytearray(data), os.stat(path).st_mtime))
        self.initial = dict(self.names)

    def _add(self, path: str, inode: _Inode) -> int:
        self.inodes.append(inode)
        self.names[path] = len(self.inodes) - 1
        return len(self.inodes) - 1

    def _rel(self, path: str) -> str | None:
        if path is None or not (path == self.root or path.startswith(self.root + "/")):
            return None
        return os.path.relpath(path, self.root)

    def apply(self, op: Op) -> None:
        """Replay one operation (as the running processes saw it: the page cache)."""
        self.done += 1
        rel = self._rel(op.path) if op.path else None
        if op.kind in ("mark", "close", "seek"):
            return
        if rel is not None and _is_volatile(rel):
            return
        if op.kind == "open":
            if rel == "." or b"O_DIRECTORY" in op.data:
                return
            if rel not in self.names:
                self._dirop(("create", rel, self._add(rel, _Inode(False, mtime=self._time(op)))))
            elif op.flag:
                self._change(self.names[rel], ("t", 0), op)
            return
        if op.kind == "mkdir":
            self._dirop(("mkdir", rel, self._add(rel, _Inode(True))))
            return
        if op.kind in ("write", "truncate", "extend", "copy", "clone"):
            ino = self.names.get(rel)
            if ino is None:
                return  # an fd of a file unlinked meanwhile: its data can never be seen
            if op.kind == "write":
                offset = len(self.inodes[ino].data) if op.offset is None else op.offset
                self._change(ino, ("w", offset, op.data), op)
            elif op.kind in ("copy", "clone"):
                source = self.names.get(self._rel(op.target))
                if source is None:
                    raise ValueError(f"a copy from a file the model does not hold: {op}")
                data = bytes(self.inodes[source].data)
                if op.kind == "clone":
                    self._change(ino, ("t", 0), op)
                    self._change(ino, ("w", 0, data), op)
                else:
                    self._change(ino, ("w", op.offset, data[op.source_offset:op.source_offset + op.size]), op)
            elif op.kind == "extend":
                if op.offset > len(self.inodes[ino].data):
                    self._change(ino, ("t", op.offset), op)
            else:
                self._change(ino, ("t", op.offset), op)
            return
        if op.kind == "fsync":
            ino = self.names.get(rel) if rel != "." else None
            if rel == "." or (ino is not None and self.inodes[ino].is_dir):
                self._sync_dir(rel)
            elif ino is not None:
                inode = self.inodes[ino]
                inode.durable, inode.pending = bytes(inode.data), []
            return
        if op.kind == "sync":
            for inode in self.inodes:
                if not inode.is_dir:
                    inode.durable, inode.pending = bytes(inode.data), []
            self.certain = len(self.dirops)
            return
        if op.kind == "rename":
            source, target = self._rel(op.path), self._rel(op.target)
            if source is None or source not in self.names:
                raise ValueError(f"rename from outside the model or of an unknown file: {op}")
            moved = {p: i for p, i in self.names.items() if p == source or p.startswith(source + "/")}
            for path in moved:
                del self.names[path]
            if target is not None:
                for path in [p for p in self.names if p == target]:
                    del self.names[path]
                for path, ino in moved.items():
                    self.names[target + path[len(source):]] = ino
            self._dirop(("rename", source, target))
            return
        if op.kind == "link":
            source, target = self._rel(op.path), self._rel(op.target)
            self.names[target] = self.names[source]
            self._dirop(("link", source, target))
            return
        if op.kind in ("unlink", "rmdir"):
            if rel in self.names:
                del self.names[rel]
                self._dirop((op.kind, rel, -1))
            return
        raise ValueError(f"operation not modelled: {op}")

    @staticmethod
    def _time(op: Op) -> float:
        return op.time

    def _change(self, ino: int, change: tuple, op: Op) -> None:
        inode = self.inodes[ino]
        _apply(inode.data, change)
        inode.pending.append(change)
        inode.mtime = self._time(op)

    def _dirop(self, entry: tuple) -> None:
        self.dirops.append(entry)

    def _sync_dir(self, rel: str) -> None:
        """An fsync of directory ``rel``: every directory operation so far that changed it is
        on disk, and (in order) every one before those."""
        for index in range(len(self.dirops) - 1, self.certain - 1, -1):
            kind, a, b = self.dirops[index]
            parents = {os.path.dirname(a)}
            if kind in ("rename", "link") and b is not None:
                parents.add(os.path.dirname(b))
            if rel in {("." if p == "" else p) for p in parents}:
                self.certain = index + 1
                return

    def state(self, cut: int, choose) -> CrashState:
        """The state with the first ``cut`` directory operations on disk and each file's data
        as ``choose(inode_index, inode)`` decides (bytes)."""
        names = dict(self.initial)
        for kind, a, b in self.dirops[:cut]:
            if kind in ("create", "mkdir"):
                names[a] = b
            elif kind in ("unlink", "rmdir"):
                names.pop(a, None)
            elif kind == "link":
                if a in names:
                    names[b] = names[a]
            elif kind == "rename":
                moved = {p: i for p, i in names.items() if p == a or p.startswith(a + "/")}
                for path in moved:
                    del names[path]
                if b is not None:
                    for path, ino in moved.items():
                        names[b + path[len(a):]] = ino
        files, times = {}, {}
        for path, ino in names.items():
            inode = self.inodes[ino]
            files[path] = None if inode.is_dir else choose(ino, inode)
            if not inode.is_dir:
                times[path] = inode.mtime
        return CrashState(self.done, "", files, times)


def lost(ino: int, inode: _Inode) -> bytes:
    return inode.durable


def kept(ino: int, inode: _Inode) -> bytes:
    return bytes(inode.data)


def torn(rng: random.Random):
    """A chooser that keeps, of each file's unsynced changes, those before a random one, and of
    that one (a write) the sectors before a random sector boundary inside it."""

    def choose(ino: int, inode: _Inode) -> bytes:
        if not inode.pending:
            return inode.durable
        content = bytearray(inode.durable)
        stop = rng.randrange(len(inode.pending))
        for change in inode.pending[:stop]:
            _apply(content, change)
        last = inode.pending[stop]
        if last[0] == "w":
            _, offset, data = last
            end = offset + len(data)
            boundaries = [b for b in range((offset // SECTOR + 1) * SECTOR, end, SECTOR)]
            if boundaries:
                cut = rng.choice(boundaries)
                _apply(content, ("w", offset, data[:cut - offset]))
        return bytes(content)

    return choose


def mixed(rng: random.Random):
    """Each file independently lost, kept or torn."""
    tear = torn(rng)

    def choose(ino: int, inode: _Inode) -> bytes:
        return rng.choice((lost, kept, tear))(ino, inode)

    return choose


def crash_states(model: Model, ops: list[Op], points: set[int], rng: random.Random,
                 variants_per_point: int = 3) -> Iterator[CrashState]:
    """Replay ``ops`` into ``model`` and, after each operation whose index is in ``points``,
    yield up to ``variants_per_point`` states (a crash right there), distinct from every
    state yielded before."""
    seen: set[str] = set()
    for index, op in enumerate(ops):
        model.apply(op)
        if index not in points:
            continue
        everything = len(model.dirops)
        variants = [
            ("all lost", model.certain, lost),
            ("all kept", everything, kept),
            ("names certain, data kept", model.certain, kept),
            ("names all, data lost", everything, lost),
            ("names all, data torn", everything, torn(rng)),
            ("random", rng.randint(model.certain, everything), mixed(rng)),
        ]
        order = variants[:2] + rng.sample(variants[2:], len(variants) - 2)
        made = 0
        for name, cut, choose in order:
            if made >= variants_per_point:
                break
            state = model.state(cut, choose)
            digest = state.digest()
            if digest in seen:
                continue
            seen.add(digest)
            made += 1
            yield attrs.evolve(state, after=index + 1, variant=name)


def interesting_points(ops: list[Op]) -> list[int]:
    """Indices after which a crash tells something: each directory operation, each fsync and
    the write just before one, and each logged line."""
    points = set()
    for index, op in enumerate(ops):
        if op.kind in ("create", "mkdir", "rename", "link", "unlink", "rmdir", "fsync", "mark", "open",
                       "truncate"):
            points.add(index)
            if op.kind == "fsync" and index:
                points.add(index - 1)
    return sorted(points)
