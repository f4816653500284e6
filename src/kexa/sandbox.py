"""Running untrusted Python: one sandbox for RL code verifiers, evaluation (HumanEval) and the agent's python tool.

    from kexa.sandbox import run_python, run_many
    r = run_python("print(1 + 1)", timeout_s=5, memory_mb=512)
    r.ok, r.stdout, r.reason, r.network      # True, "2\\n", "ok", "netns"
    results = run_many([prog_a, prog_b], timeout_s=5)   # several programs, in parallel processes
    [(passed, result), ...] = run_checks([code + tests])  # passed: exit 0 *and* reached the end (no early exit)

Each run is a fresh process tree (this file, run as a script, is the launcher; it imports only the stdlib):

    host ── Popen(new session, scrubbed env) ── launcher
              unshare(net, mount, pid, ipc, uts  [+ user when the host is not root])
              mounts: / recursively read-only and nosuid, the private work folder read-write
              fork ── init (pid 1 of the new pid namespace): mounts a fresh /proc, waits, reports
                        fork ── program: per-run uid (root host) or no capabilities (user namespace),
                                no_new_privs, rlimits, cwd = work folder, exec `python -I program.py`

What each defence is for:
- network: a fresh network namespace has only a loopback that is down, so every connect fails. Where
  the kernel refuses namespaces (containers without CAP_SYS_ADMIN and without user namespaces) the
  program instead runs under a Python audit hook that refuses socket, ctypes and process-spawning
  events, writes outside its folder and reads of other processes' /proc entries;
  `SandboxResult.network` says which ("netns" or "audit-hook"). The hook is weaker (Python's docs say
  audit hooks are no sandbox), so that fallback is logged loudly.
- files: everything but the work folder is read-only; the host runs as root here, so the program also
  gets its own uid (200000 + launcher pid), which cannot read 0700 folders (e.g. /root) nor other
  processes' /proc/PID/environ. Folders the interpreter lives under that this uid could not traverse are
  overmounted by a tmpfs that holds only the way to the interpreter (`_expose`).
- resources: RLIMIT_CPU (cpu seconds), RLIMIT_AS (memory_mb), RLIMIT_FSIZE (file_mb, stdout/stderr
  included: they are files in a host-only folder), RLIMIT_NPROC (max_procs; counted per uid, hence the
  per-run uid), no core files; a wall-clock timeout kills the whole process group, and killing pid 1 of
  the pid namespace kills every process the program started, even ones that left the group.
- environment: the program sees PATH, HOME/TMPDIR (= its folder) and LANG only; `python -I` ignores
  PYTHON* variables and the user site folder.

`reason` is "ok", "timeout" (wall clock or cpu limit), "memory" (MemoryError under RLIMIT_AS),
"file size", "exit N", "signal NAME", or "sandbox error" (the launcher itself failed; stderr says why).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

# Linux constants (include/uapi/linux/sched.h, mount.h); the same on x86_64 and aarch64.
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 442, 0x8000, 0x1, 0x2
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
UID_BASE = 200000


# ---------------------------------------------------------------------------------------------------------------
# launcher side (runs as `python -I -S sandbox.py SPEC_JSON`: stdlib only, no kexa import)

def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_setattr(libc, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(libc.syscall(SYS_MOUNT_SETATTR, -100, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)),
           f"mount_setattr {path}")


def _mount(libc, source, target: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _closed_folders(path: str) -> list[str]:
    """Folders on the way to `path` that others (an unprivileged uid) may not traverse."""
    parts = path.strip("/").split("/")
    folders = ["/" + "/".join(parts[:i + 1]) for i in range(len(parts) - 1)]
    return [f for f in folders if not os.stat(f).st_mode & 0o001]


def _expose(libc, paths: list[str]) -> None:
    """Let an unprivileged uid reach `paths` (the interpreter): overmount each folder on the way that
    others may not traverse (e.g. /root, 0700) with a tmpfs holding bind mounts of only the needed entries."""
    while True:
        blocked: dict[str, set[str]] = {}
        for path in paths:
            closed = _closed_folders(path)
            if closed:  # the first closed folder; deeper ones show up on the next round, once it is overmounted
                blocked.setdefault(closed[0], set()).add(path[len(closed[0]) + 1:].split("/")[0])
        if not blocked:
            return
        for folder, names in blocked.items():
            fds = {name: os.open(f"{folder}/{name}", os.O_PATH) for name in names}  # grab before hiding them
            _mount(libc, "tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            for name, fd in fds.items():
                target = f"{folder}/{name}"
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(target)
                else:
                    open(target, "w").close()
                _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
                os.close(fd)


def _drop_capabilities(libc) -> None:
    """User-namespace path: the program is uid 0 of its namespace; take every capability away for good."""
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability: ignored
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (x2): all empty
    _check(libc.capset(header, data), "capset")


_AUDIT_BOOT = r"""
import os, runpy, sys
_WORK = os.path.realpath(os.getcwd())
_SELF = str(os.getpid())
_SPAWN = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.fork",
          "os.forkpty", "pty.")
_PATHS = {"os.remove": 1, "os.rename": 2, "os.replace": 2, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1,
          "os.chown": 1, "os.link": 2, "os.symlink": 2, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _inside(path):
    if isinstance(path, int) or path is None:  # a descriptor: it was opened through these checks
        return True
    full = os.path.realpath(os.fsdecode(path))  # symlinks resolved: a link to outside is outside
    return full == _WORK or full.startswith(_WORK + os.sep)

def _refuse(event, args):
    if event.startswith(_SPAWN) or (event == "import" and args[0] in ("_posixsubprocess", "_ctypes")):
        why = f"{event} {args[0]}" if event == "import" else event  # those two modules' C calls raise no event
    elif event in _PATHS and not all(_inside(a) for a in args[:_PATHS[event]] if not isinstance(a, int)):
        why = f"{event} outside the work folder"
    elif event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE)
        if writing and not _inside(path):
            why = f"writing {path!r} outside the work folder"
        elif not isinstance(path, int):
            parts = os.path.realpath(os.fsdecode(path)).split("/")
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != _SELF:
                why = f"reading another process's {path!r}"
            else:
                return
        else:
            return
    else:
        return
    raise PermissionError(f"kexa sandbox: {why} refused (no namespaces; audit-hook fallback)")

sys.dont_write_bytecode = True
sys.addaudithook(_refuse)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _set_limits(spec: dict) -> None:
    cpu = int(spec["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL a second later
    for which, value in ((resource.RLIMIT_AS, spec["memory_mb"] << 20), (resource.RLIMIT_FSIZE, spec["file_mb"] << 20),
                         (resource.RLIMIT_NPROC, spec["max_procs"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def _program(libc, spec: dict, namespaces: bool, run_uid: int | None) -> None:
    """In the child that becomes the program: lose privileges, set limits, exec. Never returns."""
    try:
        os.close(spec["status_fd"])
        if run_uid is not None:
            os.setgroups([])
            os.setgid(run_uid)
            os.setuid(run_uid)  # root -> run_uid clears every capability
        elif namespaces:
            _drop_capabilities(libc)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary can hand privileges back
        _set_limits(spec)
        os.chdir(spec["workdir"])
        argv = [spec["python"], "-I"] + (["-c", _AUDIT_BOOT] if not namespaces else []) + ["program.py"]
        os.execve(spec["python"], argv, spec["env"])
    except BaseException as e:  # noqa: BLE001 - anything here is a sandbox failure, reported as such
        os.write(2, f"kexa sandbox: program setup failed: {e!r}\n".encode())
    os._exit(125)


def _launch(spec: dict) -> None:
    libc = _libc()
    root = os.geteuid() == 0
    status: dict = {"network": "netns", "namespaces": True}
    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (0 if root else CLONE_NEWUSER)
    uid, gid = os.geteuid(), os.getegid()
    try:
        if spec["namespaces"] is False:
            raise OSError("namespaces turned off by the caller")
        _check(libc.unshare(flags), "unshare")
        if not root:  # map our uid to 0 inside, so we may mount; capabilities go before the program runs
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        workdir = spec["workdir"]
        _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
        if root:
            _expose(libc, spec["expose"])
        _mount(libc, workdir, workdir, None, MS_BIND)
        _mount_setattr(libc, "/", AT_RECURSIVE, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
        _mount_setattr(libc, workdir, 0, attr_clr=MOUNT_ATTR_RDONLY)
    except OSError as e:
        if spec["namespaces"] is True:
            raise
        status = {"network": "audit-hook", "namespaces": False, "why": str(e)}
        if root and _closed_folders(os.path.realpath(spec["python"])):  # no mount namespace to _expose it
            raise OSError(f"{spec['python']} lies under {_closed_folders(os.path.realpath(spec['python']))}, which "
                          f"an unprivileged uid cannot enter, and without a mount namespace it cannot be exposed; "
                          f"pass python= an interpreter outside 0700 folders") from e
    run_uid = UID_BASE + os.getpid() % 100000 if root else None
    if run_uid is not None:
        for folder, dirs, files in os.walk(spec["workdir"]):
            for name in [folder] + [os.path.join(folder, n) for n in dirs + files]:
                os.chown(name, run_uid, run_uid)
    status["uid"] = run_uid if run_uid is not None else uid
    status_fd = spec["status_fd"]  # the launcher and init report here, never through the program's streams
    os.write(status_fd, (json.dumps(status) + "\n").encode())

    init = os.fork()
    if init == 0:  # pid 1 of the new pid namespace (or a plain child without namespaces)
        try:
            if status["namespaces"]:
                _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # only this namespace's pids
            program = os.fork()
            if program == 0:
                _program(libc, spec, status["namespaces"], run_uid)
            _, wait_status, usage = os.wait4(program, 0)
            os.write(status_fd, (json.dumps({"wait_status": wait_status, "cpu_s": usage.ru_utime + usage.ru_stime})
                                 + "\n").encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"kexa sandbox: init failed: {e!r}\n".encode())
            os._exit(125)
    os.close(status_fd)
    _, wait_status = os.waitpid(init, 0)
    os._exit(os.waitstatus_to_exitcode(wait_status) if os.WIFEXITED(wait_status) else 125)


if __name__ == "__main__":  # the launcher stops here: it never imports what only the host needs (start-up time)
    try:
        _launch(json.loads(sys.argv[1]))
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"kexa sandbox: launcher failed: {e!r}\n".encode())
        os._exit(125)


# ---------------------------------------------------------------------------------------------------------------
# host side

import dataclasses  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

_warned_fallback = False


@dataclasses.dataclass
class SandboxResult:
    ok: bool                 # exited 0 within every limit
    stdout: str
    stderr: str
    reason: str              # "ok", "timeout", "memory", "file size", "exit N", "signal NAME", "sandbox error"
    returncode: int | None   # exit code, -signal, or None (timeout / sandbox error)
    seconds: float           # wall time of the whole run
    network: str             # how networking was refused: "netns" or "audit-hook"
    uid: int | None = None   # the uid the program ran as (per run when the host is root)


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", "replace")
    return text + ("\n[kexa sandbox: output truncated]" if len(data) > limit else "")


def _reason(wait_status: int | None, cpu_s: float, cpu_limit: float, stderr: str) -> tuple[str, int | None]:
    if wait_status is None:
        return "sandbox error", None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_limit - 0.5):
            return "timeout", -sig  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one
        if sig == signal.SIGXFSZ:
            return "file size", -sig
        return f"signal {signal.Signals(sig).name}", -sig
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 0:
        return "ok", 0
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if last.startswith("MemoryError"):
        return "memory", code
    if last.startswith("OSError: [Errno 27]"):  # EFBIG: a write past RLIMIT_FSIZE
        return "file size", code
    return f"exit {code}", code


def _kill_group(launcher: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGKILL the launcher's process group (launcher, init, program and children that kept the group; killing
    init ends the whole pid namespace) and wait until it is gone, so no sandboxed process outlives the call."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        launcher.poll()  # reap the launcher, or its zombie keeps the group alive
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    launcher.wait()


def run_python(code: str, timeout_s: float = 10.0, memory_mb: int = 1024, *, stdin: str | None = None,
               files: dict[str, str] | None = None, file_mb: int = 16, max_procs: int = 64,
               max_output_bytes: int = 1 << 20, python: str | None = None,
               namespaces: bool | None = None) -> SandboxResult:
    """Run `code` as `program.py` in a fresh sandbox (module docstring). `files` are extra text files put
    beside it; `namespaces`: None = use them where the kernel allows (else the audit-hook fallback),
    True = require them, False = force the fallback (tests)."""
    global _warned_fallback
    if timeout_s <= 0 or memory_mb <= 0 or file_mb <= 0 or max_procs <= 0:
        raise ValueError(f"sandbox limits must be positive: timeout_s={timeout_s} memory_mb={memory_mb} "
                         f"file_mb={file_mb} max_procs={max_procs}")
    python = python or sys.executable
    start = time.perf_counter()
    host_dir = Path(tempfile.mkdtemp(prefix="kexa-sandbox-"))  # 0700: the program's uid cannot look in here
    try:
        workdir = host_dir / "work"
        workdir.mkdir()
        (workdir / "program.py").write_text(code, "utf-8")
        for name, text in (files or {}).items():
            target = (workdir / name).resolve()
            if workdir.resolve() not in target.parents:
                raise ValueError(f"sandbox file {name!r} would land outside the work folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
        os.chmod(host_dir, 0o711)  # the program's uid may pass through to work/, not list the folder
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
               "LANG": "C.UTF-8"}
        expose = sorted({os.path.realpath(python), sys.base_prefix, sys.prefix, sysconfig.get_paths()["stdlib"],
                         sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        spec = {"workdir": str(workdir), "python": python, "env": env, "expose": expose,
                "cpu_s": max(1, int(timeout_s + 0.999)), "memory_mb": memory_mb, "file_mb": file_mb,
                "max_procs": max_procs, "namespaces": namespaces}
        # stdin, stdout and stderr are files in the host-only folder: no pipe to fill and block on, and
        # RLIMIT_FSIZE caps what the program can write to them
        in_path, out_path, err_path = host_dir / "stdin", host_dir / "stdout", host_dir / "stderr"
        in_path.write_text(stdin or "", "utf-8")
        status_r, status_w = os.pipe()
        spec["status_fd"] = status_w
        try:
            with open(in_path, "rb") as inp, open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(spec)],
                    stdin=inp, stdout=out, stderr=err, env=env, cwd=str(host_dir), start_new_session=True,
                    pass_fds=(status_w,))
        finally:
            os.close(status_w)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s + 1.0)  # + the launcher's start-up
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
        with os.fdopen(status_r, "rb") as f:
            lines = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        stdout = _read_capped(out_path, max_output_bytes)
        stderr = _read_capped(err_path, max_output_bytes)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
    iso = lines[0] if lines else {"network": "unknown", "uid": None}
    if iso.get("namespaces") is False and not _warned_fallback:
        _warned_fallback = True
        print(f"kexa sandbox: WARNING: no namespaces ({iso.get('why')}); networking refused by a Python audit "
              f"hook only", file=sys.stderr)
    done = lines[1] if len(lines) > 1 else None
    if timed_out:
        reason, returncode = "timeout", None
    else:
        reason, returncode = _reason(done and done["wait_status"], done["cpu_s"] if done else 0.0, spec["cpu_s"],
                                     stderr)
    return SandboxResult(ok=reason == "ok", stdout=stdout, stderr=stderr, reason=reason, returncode=returncode,
                         seconds=time.perf_counter() - start, network=iso.get("network", "unknown"), uid=iso.get("uid"))


_ECHO_TOKEN = "\nimport sys as _kexa_sys\nprint(_kexa_sys.stdin.readline().strip())\n"


def run_checks(programs: list[str], *, workers: int | None = None, **limits) -> list[tuple[bool, SandboxResult]]:
    """Run test programs (code + its tests); each passes only when it exits 0 having reached its end: a last
    line echoes a random token given on stdin, so code that leaves early with status 0 (`sys.exit(0)`,
    `os._exit(0)` before the tests) does not pass. Returns (passed, result) per program, in order."""
    token = f"kexa-check-{secrets.token_hex(8)}"
    results = run_many([program + _ECHO_TOKEN for program in programs], workers=workers, stdin=token + "\n",
                       **limits)
    return [(r.ok and r.stdout.rstrip().endswith(token), r) for r in results]


def run_many(programs: list[str], *, workers: int | None = None, **limits) -> list[SandboxResult]:
    """`run_python` over several programs (e.g. HumanEval: prompt + completion + tests), `workers` at a time;
    results in input order. Each program still gets its own process tree, folder, uid and limits."""
    workers = workers or max(1, min(len(programs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda code: run_python(code, **limits), programs))

