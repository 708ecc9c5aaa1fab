"""Race-free path confinement: every file a tool touches is opened beneath the run's root in one step.

Checking a path and then opening it is a race: between the two a directory can be swapped for a
symlink that leads out of the root. So nothing here checks-then-opens. The root is opened once as a
directory descriptor and every path is resolved *by the kernel, relative to that descriptor*:

    openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)     Linux 5.6+
    else: component by component, openat(dir_fd, part, O_NOFOLLOW); a symlink met on the way is
          read (readlinkat) and its target resolved the same way, relative to where it stands

Either way `..` can never climb above the root, absolute symlinks are refused, and a symlink that
stays inside the root works. Files with more than one hard link are refused: another name of the
same file may live outside the root. Callers get descriptors, never a path to reopen.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from orchestrator.tools.base import ToolInputError

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
SYS_OPENAT2 = 437  # the same number on x86-64 and arm64
MAX_SYMLINKS = 40
O_PATH = getattr(os, "O_PATH", 0o10000000)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


class Root:
    """The run's root, open as a directory descriptor. Use as a context manager."""

    def __init__(self, path: Path, method: str = "auto") -> None:
        self.path = Path(os.path.realpath(path))
        self.method = method  # "auto", "openat2" or "walk" (the fallback, testable on any kernel)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> "Root":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def relative(self, raw: str) -> str:
        """The model's path as a normalised path relative to the root ("." for the root itself).

        Lexical only (symlinks are the kernel's business at open time); `..` that would climb out
        and absolute paths elsewhere are refused here already, with a message the model can act on.
        """
        if not isinstance(raw, str) or not raw.strip():
            raise ToolInputError("path must be a non-empty string")
        if "\x00" in raw:
            raise ToolInputError("path must not contain NUL bytes")
        path = PurePosixPath(os.path.expanduser(raw) if raw.startswith("~") else raw)
        if path.is_absolute():
            normal = PurePosixPath(os.path.normpath(path))
            if normal != PurePosixPath(self.path) and PurePosixPath(self.path) not in normal.parents:
                raise ToolInputError(f"{raw!r} is outside the project root; tools can only use paths inside "
                                     f"{self.path}")
            path = normal.relative_to(self.path)
        parts: list[str] = []
        for part in path.parts:
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise ToolInputError(f"{raw!r} is outside the project root; tools can only use paths inside "
                                         f"{self.path}")
                parts.pop()
            else:
                parts.append(part)
        return "/".join(parts) or "."

    def open(self, relative: str, flags: int, mode: int = 0o666) -> int:
        """A descriptor for `relative` (from `relative()`), opened beneath the root. OSError as the kernel
        says; EXDEV / ELOOP when the path would leave the root."""
        flags |= os.O_CLOEXEC
        if self.method != "walk" and _openat2_available():
            how = _OpenHow(flags=flags, mode=mode if flags & os.O_CREAT else 0,
                           resolve=RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
            fd = _libc.syscall(SYS_OPENAT2, self.fd, os.fsencode(relative), ctypes.byref(how), ctypes.sizeof(how))
            if fd < 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), relative)
            return fd
        if self.method == "openat2":
            raise OSError(errno.ENOSYS, "openat2 is not available on this kernel", relative)
        return self._walk(relative, flags, mode)

    def _walk(self, relative: str, flags: int, mode: int) -> int:
        pending = [part for part in relative.split("/") if part not in ("", ".")]
        stack = [os.dup(self.fd)]
        links = 0
        try:
            while pending:
                part = pending.pop(0)
                if part == "..":
                    if len(stack) == 1:
                        raise OSError(errno.EXDEV, "the path leaves the project root", relative)
                    os.close(stack.pop())
                    continue
                last = not pending
                try:
                    fd = os.open(part, (flags if last else os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) | os.O_NOFOLLOW,
                                 mode, dir_fd=stack[-1])
                except OSError as error:
                    # O_NOFOLLOW on a symlink: ELOOP (ENOTDIR with O_DIRECTORY on some paths). Resolve it by hand.
                    if (error.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST)
                            or not _is_symlink(stack[-1], part)):
                        raise
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "too many symbolic links", relative) from None
                    target = os.readlink(part, dir_fd=stack[-1])
                    if target.startswith("/"):
                        raise OSError(errno.EXDEV, "an absolute symlink leaves the project root", relative) from None
                    pending = [piece for piece in target.split("/") if piece not in ("", ".")] + pending
                    continue
                if last:
                    return fd
                stack.append(fd)
            return os.dup(stack[-1]) if flags & os.O_DIRECTORY or flags & O_PATH else \
                os.open(".", flags, dir_fd=stack[-1])
        finally:
            for fd in stack:
                os.close(fd)

    def parent(self, relative: str, create: bool = False) -> tuple[int, str]:
        """(descriptor of the parent directory, final name) for `relative`, creating missing parent
        directories beneath the root when `create`. The caller closes the descriptor."""
        if relative == ".":
            raise ToolInputError("that is the project root itself")
        head, _, name = relative.rpartition("/")
        if name == "..":
            raise ToolInputError("the path must name a file")
        if not head:
            return os.dup(self.fd), name
        directory_flags = os.O_RDONLY | os.O_DIRECTORY
        try:
            return self.open(head, directory_flags), name
        except FileNotFoundError:
            if not create:
                raise
        done: list[str] = []
        for part in head.split("/"):
            done.append(part)
            try:
                fd = self.open("/".join(done[:-1]) or ".", directory_flags)
            except OSError:
                raise
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            finally:
                os.close(fd)
        return self.open(head, directory_flags), name


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _openat2_available() -> bool:
    global _openat2_works
    if _openat2_works is None:
        how = _OpenHow(flags=os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, mode=0, resolve=RESOLVE_BENEATH)
        fd = _libc.syscall(SYS_OPENAT2, -100, b".", ctypes.byref(how), ctypes.sizeof(how))  # AT_FDCWD
        _openat2_works = fd >= 0
        if fd >= 0:
            os.close(fd)
    return _openat2_works


def explain(error: OSError, raw: str) -> ToolInputError:
    """A message the model can act on, for an OSError from opening `raw` beneath the root."""
    if error.errno in (errno.EXDEV, errno.ELOOP):
        return ToolInputError(f"{raw!r} leads outside the project root (through '..' or a symlink); tools can only "
                              "use paths inside it")
    if error.errno == errno.ENOENT:
        return ToolInputError(f"{raw!r} does not exist")
    if error.errno == errno.ENOTDIR:
        return ToolInputError(f"a part of {raw!r} is not a directory")
    if error.errno == errno.EISDIR:
        return ToolInputError(f"{raw!r} is a directory")
    return ToolInputError(f"{raw!r}: {error.strerror}")


@contextmanager
def opened(root: Root, raw: str, flags: int, mode: int = 0o666) -> Iterator[tuple[int, os.stat_result, str]]:
    """(fd, its stat, the normalised relative path) for the model's path `raw`; closed on exit."""
    relative = root.relative(raw)
    try:
        fd = root.open(relative, flags, mode)
    except OSError as error:
        raise explain(error, raw) from None
    try:
        yield fd, os.fstat(fd), relative
    finally:
        os.close(fd)


def require_single_link(info: os.stat_result, raw: str) -> None:
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise ToolInputError(f"{raw!r} has {info.st_nlink} hard links; a hard-linked file may also live outside the "
                             "project root, so tools refuse it")


def read_beneath(root_path: Path, relative: str, limit: int = 1024 * 1024) -> str:
    """The text of a regular, singly-linked file beneath `root_path`, opened race-free: what the server
    reads from a project for itself (workflow scripts, agent types), so a symlink or hard link to a
    file outside the project is never read. OSError or ToolInputError say why not."""
    with Root(root_path) as root, opened(root, relative, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY) as (fd, info, _):
        if not stat.S_ISREG(info.st_mode):
            raise ToolInputError(f"{relative!r} is not a regular file")
        require_single_link(info, relative)
        data = os.pread(fd, limit + 1, 0)
    if len(data) > limit:
        raise ToolInputError(f"{relative!r} is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")
