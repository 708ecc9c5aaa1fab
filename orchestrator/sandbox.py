"""The sandbox every process an agent starts runs in (run_command, the worktree git calls, and later
terminals, checks and external agents).

A project owner can change their project, never the server: whatever the model asks to run is
hostile input, so it runs in a bubblewrap (`bwrap`) sandbox built like this:

    sh -c 'echo $$ > <pids cgroup>/cgroup.procs; exec "$@"'     (when a pids cgroup can be made)
      prlimit --nproc --data --cpu --fsize --nofile               (resource limits, inherited)
        bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup
              --unshare-net (unless the server allows the network and the project asks for it)
              --die-with-parent --new-session --cap-drop ALL --clearenv --setenv <from scratch>
              --ro-bind  /usr /bin /lib* /etc                           (the system, read-only)
              --tmpfs / --ro-bind /dev/null over what in /etc only its owner may read (shadow, ssl/private…)
              --ro-bind  existing directories of the tool PATH
              --bind     <run root> <run root>                          (the only writable place)
              --tmpfs /tmp  --proc /proc  --dev /dev                     (private, own namespace)
              --tmpfs / --ro-bind /dev/null over every hidden path inside a bound directory
              --chdir <cwd> -- argv

Nothing of the server is in view: not its data directory, not its configuration file, not the
worker's `/proc` (the sandbox has its own PID namespace), not Postgres' or Redis' sockets (no
`/var`, no `/run`, a private `/tmp`, no network), not the worker's environment. When the command's
first process exits, bwrap (PID 1 of the namespace) exits and the kernel kills every process left
in the namespace, so nothing outlives the command: `sleep &`, `setsid`, `nohup` and double forks
included. `--die-with-parent` does the same if the worker itself dies.

`BOOCODE_SANDBOX=off` runs commands without bubblewrap (a clean environment and a process group
only). It is for machines without user namespaces and is logged as a warning at every start.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

SYSTEM_DIRECTORIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SANDBOX_UID = 1000
SANDBOX_GID = 1000


class SandboxUnavailableError(ConfigurationError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


@dataclass(frozen=True)
class Limits:
    processes: int = 256
    memory_bytes: int = 4 * 1024 ** 3  # the data segment (heap) of each process
    cpu_seconds: int = 900
    file_bytes: int = 1024 ** 3
    open_files: int = 1024


@dataclass(frozen=True)
class Sandbox:
    mode: str = "bwrap"  # "bwrap" | "off"
    limits: Limits = Limits()
    tool_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    hidden: tuple[Path, ...] = ()  # the server's own files: never in view, even inside a bound directory
    allow_network: bool = False  # the server's word; a project's policy may then ask for the network
    cgroup_root: Path | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Sandbox":
        hidden = [settings.data_dir, settings.models_dir]
        if settings.config_file is not None:
            hidden.append(settings.config_file)
        return cls(mode=settings.sandbox, tool_path=settings.tool_path,
                   hidden=tuple(_real(path) for path in hidden),
                   allow_network=settings.sandbox_allow_network,
                   limits=Limits(processes=settings.sandbox_max_processes,
                                 memory_bytes=settings.sandbox_max_memory_mb * 1024 * 1024,
                                 cpu_seconds=settings.sandbox_max_cpu_seconds,
                                 file_bytes=settings.sandbox_max_file_mb * 1024 * 1024),
                   cgroup_root=find_pids_cgroup() if settings.sandbox == "bwrap" else None)

    def with_cgroups(self) -> "Sandbox":
        """The same sandbox, with a pids cgroup per command where this machine offers one."""
        return dataclasses.replace(self, cgroup_root=find_pids_cgroup())

    def environment(self, root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Built from scratch: nothing of the server's environment reaches a command."""
        return {"PATH": self.tool_path, "HOME": str(root), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb",
                "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/tmp", **(extra or {})}

    def command(self, argv: Sequence[str], root: Path, cwd: Path, *, network: bool = False,
                environment: dict[str, str] | None = None, cgroup: Path | None = None,
                read_only: Sequence[Path] = (), info_fd: int | None = None) -> list[str]:
        """The full argv that runs `argv` in the sandbox with `root` writable and `cwd` as working directory."""
        environment = environment or self.environment(root)
        if self.mode == "off":
            return list(argv)
        limits = self.limits
        wrapped = ["prlimit", f"--nproc={limits.processes}", f"--data={limits.memory_bytes}",
                   f"--cpu={limits.cpu_seconds}", f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}",
                   "--", bubblewrap(), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                   "--unshare-cgroup-try", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
                   "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
        if not (network and self.allow_network):
            wrapped.append("--unshare-net")
        if info_fd is not None:  # bwrap writes {"child-pid": <the namespace's PID 1, as the host sees it>}
            wrapped += ["--info-fd", str(info_fd)]
        for name, value in environment.items():
            wrapped += ["--setenv", name, value]
        bound: list[Path] = []
        for directory in SYSTEM_DIRECTORIES:
            path = Path(directory)
            if path.is_symlink():
                wrapped += ["--symlink", os.readlink(path), directory]
            elif path.is_dir():
                wrapped += ["--ro-bind", directory, directory]
                bound.append(path)
        wrapped += ["--ro-bind", "/etc", "/etc"]
        for private in private_entries("/etc"):  # shadow, ssl/private, service configs: not for every user
            wrapped += ["--tmpfs", private] if os.path.isdir(private) else ["--ro-bind", "/dev/null", private]
        for path in [Path(entry) for entry in self.tool_path.split(":")] + list(read_only):
            if path.is_absolute() and path.is_dir() and not any(_inside(path, system) for system in bound):
                wrapped += ["--ro-bind", str(path), str(path)]
                bound.append(path)
        wrapped += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        wrapped += ["--bind", str(root), str(root)]  # after /tmp's tmpfs, so a root under /tmp stays visible
        bound.append(root)
        for hidden in self.hidden:
            if any(_inside(hidden, directory) for directory in bound):
                if hidden.is_dir():
                    wrapped += ["--tmpfs", str(hidden)]
                elif hidden.exists():
                    wrapped += ["--ro-bind", "/dev/null", str(hidden)]
        wrapped += ["--chdir", str(cwd), "--", *argv]
        if cgroup is not None:
            wrapped = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs"), *wrapped]
        return wrapped

    def start(self, argv: Sequence[str], root: Path, cwd: Path, *, stdout: IO[bytes] | int, stderr: IO[bytes] | int,
              network: bool = False, environment: dict[str, str] | None = None,
              read_only: Sequence[Path] = ()) -> "SandboxedProcess":
        """Start `argv` in the sandbox. FileNotFoundError / PermissionError: the program (mode off) or the
        sandbox itself (bwrap, prlimit) could not be started; a missing program inside the sandbox is
        exit code 127 with bwrap's message on stderr."""
        root = _real(root)
        sandboxed = self.mode == "bwrap"
        cgroup = make_cgroup(self.cgroup_root, self.limits.processes) if sandboxed else None
        info_read, info_write = os.pipe() if sandboxed else (None, None)
        try:
            process = subprocess.Popen(self.command(argv, root, cwd, network=network,
                                                    environment=environment or self.environment(root),
                                                    cgroup=cgroup, read_only=read_only, info_fd=info_write),
                                       cwd=cwd if not sandboxed else "/", env=environment or self.environment(root),
                                       stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
                                       pass_fds=(info_write,) if info_write is not None else ())
        except BaseException:
            remove_cgroup(cgroup)
            for descriptor in (info_read, info_write):
                if descriptor is not None:
                    os.close(descriptor)
            raise
        namespace = None
        if info_read is not None and info_write is not None:
            os.close(info_write)
            namespace = _watch_namespace(info_read)
        return SandboxedProcess(process, cgroup, namespace)

    def run(self, argv: Sequence[str], root: Path, cwd: Path, *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run to the end and capture text output (short helper commands such as git)."""
        process = self.start(argv, root, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.popen.communicate(timeout=timeout)
        finally:
            process.kill()
        return subprocess.CompletedProcess(list(argv), process.popen.returncode,
                                           out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def check(self) -> None:
        """Start-up check: a real sandboxed `true`. Raises SandboxUnavailableError saying how to fix it."""
        if self.mode == "off":
            logger.warning("BOOCODE_SANDBOX=off: commands an agent runs are NOT sandboxed; they can read what the "
                           "worker's user can read. Install bubblewrap and unset BOOCODE_SANDBOX to fix this.")
            return
        if shutil.which("bwrap") is None or shutil.which("prlimit") is None:
            raise SandboxUnavailableError([
                "bubblewrap (bwrap) and prlimit are needed to run agent commands in a sandbox: install them "
                "(Debian/Ubuntu: apt-get install bubblewrap util-linux), or set BOOCODE_SANDBOX=off to run commands "
                "unsandboxed (not for shared servers)"])
        try:
            result = self.run(["true"], Path("/tmp"), Path("/tmp"), timeout=30)
        except (OSError, subprocess.SubprocessError) as error:
            result = subprocess.CompletedProcess([], 1, "", str(error))
        if result.returncode != 0:
            raise SandboxUnavailableError([
                "bubblewrap could not create a sandbox on this machine "
                f"({result.stderr.strip() or 'exit code ' + str(result.returncode)}): "
                "it needs user namespaces (sysctl kernel.unprivileged_userns_clone=1; in Docker, a seccomp profile "
                "that allows them, see deploy/README.md), or set BOOCODE_SANDBOX=off to run commands unsandboxed "
                "(not for shared servers)"])
        if self.cgroup_root is not None:
            remove_leftover_cgroups(self.cgroup_root)
        if self.cgroup_root is None:
            logger.info("no writable pids cgroup: the sandbox's process cap is RLIMIT_NPROC only, which does not "
                        "bind a worker running as root")


class SandboxedProcess:
    """A started sandbox. `kill()` ends it and everything in it; always call it (also after wait)."""

    def __init__(self, popen: subprocess.Popen[bytes], cgroup: Path | None, namespace: int | None = None) -> None:
        self.popen = popen
        self.cgroup = cgroup
        self.namespace = namespace  # a pidfd of the namespace's PID 1: readable once the namespace is empty

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds. Woken by the kernel the moment
        the process exits (a pidfd), not by polling with back-off as Popen.wait(timeout) does."""
        if self.popen.poll() is None:
            try:
                descriptor = os.pidfd_open(self.popen.pid)
            except (AttributeError, OSError):  # no pidfd here: Popen's polling
                try:
                    return self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None
            try:
                poller = select.poll()
                poller.register(descriptor, select.POLLIN)
                if not poller.poll(max(timeout, 0) * 1000):
                    return None
            finally:
                os.close(descriptor)
        return self.popen.wait()

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if self.namespace is not None:
            # bwrap's outer process may exit before the kernel has finished killing what was left in the
            # namespace; PID 1 of a namespace exits only after every other process in it is gone.
            poller = select.poll()
            poller.register(self.namespace, select.POLLIN)
            poller.poll(NAMESPACE_EXIT_MS)
            os.close(self.namespace)
            self.namespace = None
        kill_cgroup(self.cgroup)
        remove_cgroup(self.cgroup)


@functools.lru_cache(maxsize=4)
def private_entries(top: str) -> tuple[str, ...]:
    """What under `top` an ordinary user of this machine may not read (files without the world-read
    bit, directories without world read+search): the sandbox masks these, and shows the rest, which
    any local account can read anyway. Looked up once per process."""
    found = []
    for directory, directories, files in os.walk(top):
        for name in list(directories):
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o005 != 0o005:
                found.append(path)
                directories.remove(name)
        for name in files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and not mode & 0o004:
                found.append(path)
    return tuple(sorted(found))


NAMESPACE_EXIT_MS = 10_000


def _watch_namespace(info: int) -> int | None:
    """A pidfd of the sandbox's PID 1, from bwrap's --info-fd JSON; None if bwrap wrote none (it failed)."""
    data = b""
    try:
        while chunk := os.read(info, 4096):  # bwrap writes the JSON in pieces, then closes its end
            data += chunk
        child = json.loads(data or b"{}").get("child-pid")
        return os.pidfd_open(int(child)) if child else None
    except (OSError, ValueError, AttributeError):
        return None
    finally:
        os.close(info)  # only after EOF: closing early would kill bwrap with SIGPIPE


def bubblewrap() -> str:
    return shutil.which("bwrap") or "bwrap"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


# --- the pids cgroup: a fork bomb cannot outgrow it, and every process in it is known at the end ---

def find_pids_cgroup() -> Path | None:
    """A directory under which this process may make pids cgroups (v1 `pids` or v2 with pids), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/pids") / path.lstrip("/"))
        elif controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
    for base in candidates:
        probe = base / f"boocode-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        usable = (probe / "pids.max").exists()
        probe.rmdir()
        if usable:
            return base
    return None


def make_cgroup(base: Path | None, processes: int) -> Path | None:
    if base is None:
        return None
    path = base / f"boocode-{os.getpid()}-{uuid.uuid4().hex[:12]}"  # named after its maker (see below)
    try:
        path.mkdir()
        (path / "pids.max").write_text(str(processes))
    except OSError:
        remove_cgroup(path)
        return None
    return path


def remove_leftover_cgroups(base: Path) -> None:
    """Remove the cgroups of processes that died mid-command (a killed worker). Only those whose maker
    is gone: a live maker's cgroup may be empty for a moment between its creation and the command
    joining it, and removing it then made that command fail."""
    for leftover in base.glob("boocode-*"):
        maker = leftover.name.split("-")[1]
        if maker.isdigit() and _alive(int(maker)):
            continue
        try:
            leftover.rmdir()  # only an empty one goes: a live command's cgroup is never empty
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_cgroup(path: Path | None) -> None:
    if path is None:
        return
    for _ in range(50):
        try:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def remove_cgroup(path: Path | None) -> None:
    if path is None:
        return
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            kill_cgroup(path)
            os.sched_yield()
