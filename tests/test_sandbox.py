"""kexa.sandbox: ordinary runs, limits, and attacks that must each fail safely with the host unaffected."""

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from kexa.sandbox import run_checks, run_many, run_python


def _kernel_allows_namespaces() -> bool:
    """An independent probe (util-linux `unshare`, not our launcher): may this process make a network namespace?"""
    import shutil
    if not shutil.which("unshare"):
        return True  # cannot tell: expect namespaces (a Linux CI runner or this machine)
    flags = ["--net"] if os.getuid() == 0 else ["--user", "--map-root-user", "--net"]
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def _interpreter_for_fallback() -> str:
    """Without a mount namespace a root host's per-run uid must reach the interpreter by itself; the test venv's
    python may sit under /root (0700), then the system python serves (the program needs only the stdlib)."""
    from kexa.sandbox import _closed_folders
    if os.getuid() != 0 or not _closed_folders(os.path.realpath(sys.executable)):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and not _closed_folders(os.path.realpath(candidate)):
            return candidate
    pytest.skip("no interpreter an unprivileged uid can reach")


@pytest.fixture(params=["namespaces", "audit-hook"])
def isolation(request) -> dict:
    """Every attack runs twice: with the namespaces this kernel allows, and forced into the audit-hook fallback."""
    if request.param == "namespaces":
        return {}
    return {"namespaces": False, "python": _interpreter_for_fallback()}


def test_runs_code_with_stdout_stdin_files_and_exit_codes():
    r = run_python("import sys, os\nprint(input() * 2, open('data.txt').read(), sorted(os.environ))\nsys.exit(0)",
                   timeout_s=5, stdin="ab\n", files={"data.txt": "x"})
    assert r.ok and r.reason == "ok" and r.returncode == 0
    assert r.stdout == "abab x ['HOME', 'LANG', 'PATH', 'TMPDIR']\n"
    r = run_python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)", timeout_s=5)
    assert (r.ok, r.reason, r.returncode, r.stdout, r.stderr) == (False, "exit 3", 3, "out\n", "err\n")
    r = run_python("raise ValueError('boom')", timeout_s=5)
    assert r.reason == "exit 1" and "ValueError: boom" in r.stderr


def test_large_stdin_that_is_never_read_does_not_block():
    r = run_python("print('ignored stdin')", timeout_s=5, stdin="x" * (1 << 20))
    assert r.ok and r.stdout == "ignored stdin\n"


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="timeout_s=0"):
        run_python("pass", timeout_s=0)
    with pytest.raises(ValueError, match="outside the work folder"):
        run_python("pass", files={"../escape.txt": "x"})


def test_output_is_capped_and_file_size_limited():
    r = run_python("print('y' * 100000)", timeout_s=5, max_output_bytes=1000)
    assert r.ok and r.stdout.startswith("y" * 1000) and r.stdout.endswith("[kexa sandbox: output truncated]")
    r = run_python("open('big', 'wb').write(b'x' * (4 << 20))", timeout_s=5, file_mb=1)
    assert r.reason == "file size"


def test_attack_socket_cannot_reach_host_or_internet(isolation):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
import socket
for address in [("127.0.0.1", {port}), ("1.1.1.1", 80)]:
    try:
        s = socket.socket()
        s.settimeout(2)
        s.connect(address)
        print("CONNECTED", address)
    except OSError as e:
        print("refused", e.errno)
"""
    r = run_python(code, timeout_s=8, **isolation)
    listener_got = None
    try:
        listener_got = listener.accept()
    except BlockingIOError:
        pass
    finally:
        listener.close()
    assert "CONNECTED" not in r.stdout and r.stdout.count("refused") == 2, r
    assert listener_got is None
    assert r.network == ("audit-hook" if isolation or not _kernel_allows_namespaces() else "netns")


def test_attack_write_outside_its_folder(tmp_path, isolation):
    victim = tmp_path / "victim.txt"
    victim.write_text("safe")
    tmp_path.chmod(0o777)  # even a world-writable host folder must stay untouched
    stray = f"/tmp/kexa-sandbox-attack-{uuid.uuid4().hex}"
    code = f"""
for path in [{str(victim)!r}, {str(tmp_path / 'new.txt')!r}, {stray!r}, "/etc/kexa-attack", "/dev/shm/kexa-attack"]:
    try:
        open(path, "w").write("pwned")
        print("WROTE", path)
    except OSError as e:
        print("denied", e.errno)
open("inside.txt", "w").write("fine")
print(open("inside.txt").read())
"""
    r = run_python(code, timeout_s=5, **isolation)
    assert r.ok and "WROTE" not in r.stdout and r.stdout.count("denied") == 5 and r.stdout.endswith("fine\n"), r
    assert victim.read_text() == "safe" and not (tmp_path / "new.txt").exists() and not os.path.exists(stray)
    assert not os.path.exists("/etc/kexa-attack") and not os.path.exists("/dev/shm/kexa-attack")


def test_attack_fork_bomb_is_contained(isolation):
    start = time.perf_counter()
    r = run_python("import os\nwhile True:\n    os.fork()", timeout_s=5, max_procs=32, **isolation)
    assert not r.ok and time.perf_counter() - start < 10
    assert "Resource temporarily unavailable" in r.stderr or "os.fork refused" in r.stderr or r.reason == "timeout"
    if r.uid != os.getuid():  # per-run uid: nothing of the bomb may survive the run
        time.sleep(0.2)
        assert _processes_of(r.uid) == []
    assert subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout == "7\n"


def test_attack_allocate_10_gb(isolation):
    r = run_python("x = bytearray(10 * 1024 ** 3)\nprint('ALLOCATED')", timeout_s=5, memory_mb=512, **isolation)
    assert (r.ok, r.reason) == (False, "memory") and "ALLOCATED" not in r.stdout


def test_attack_infinite_loop_times_out_and_is_killed(isolation):
    start = time.perf_counter()
    r = run_python("while True:\n    pass", timeout_s=2, **isolation)
    assert (r.ok, r.reason) == (False, "timeout")
    assert time.perf_counter() - start < 6
    if r.uid != os.getuid():
        assert _processes_of(r.uid) == []


def test_attack_read_the_parents_environment(monkeypatch, isolation):
    secret = f"kexa-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("KEXA_TEST_SECRET", secret)
    code = f"""
import os
print(dict(os.environ))
for pid in ["1", {str(os.getpid())!r}, str(os.getppid())] + os.listdir("/proc"):
    try:
        print(open(f"/proc/{{pid}}/environ", "rb").read())
    except OSError as e:
        print("denied", pid, e.errno)
"""
    r = run_python(code, timeout_s=5, **isolation)
    assert r.ok and secret not in r.stdout and secret not in r.stderr
    assert "KEXA_TEST_SECRET" not in r.stdout


def test_fallback_without_namespaces_refuses_network_by_audit_hook():
    python = _interpreter_for_fallback()
    r = run_python("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))", timeout_s=5,
                   namespaces=False, python=python)
    assert r.network == "audit-hook" and not r.ok and "socket" in r.stderr and "refused" in r.stderr, r
    r = run_python("import os\nos.system('true')", timeout_s=5, namespaces=False, python=python)
    assert not r.ok and "os.system" in r.stderr and "refused" in r.stderr
    r = run_python("import _posixsubprocess", timeout_s=5, namespaces=False, python=python)
    assert not r.ok and "_posixsubprocess refused" in r.stderr
    r = run_python("print(sum(range(10)))", timeout_s=5, namespaces=False, python=python)
    assert r.ok and r.stdout == "45\n"


@pytest.mark.skipif(os.getuid() != 0, reason="the case of a root host")
def test_fallback_refuses_an_unreachable_interpreter_with_a_clear_error():
    from kexa.sandbox import _closed_folders
    if not _closed_folders(os.path.realpath(sys.executable)):
        pytest.skip("this interpreter is reachable by every uid")
    r = run_python("print(1)", timeout_s=5, namespaces=False)
    assert r.reason == "sandbox error" and "cannot enter" in r.stderr


def test_run_many_keeps_order_and_isolates_each_program():
    programs = [f"print({i} * {i})" for i in range(4)] + ["raise SystemExit(2)"]
    results = run_many(programs, timeout_s=5, workers=2)
    assert [r.stdout for r in results[:4]] == ["0\n", "1\n", "4\n", "9\n"]
    assert results[4].reason == "exit 2"


NON_ROOT_SCRIPT = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("kexa_sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["kexa_sandbox"] = sandbox  # dataclasses look the module up
spec.loader.exec_module(sandbox)
os.environ["KEXA_TEST_SECRET"] = "non-root-secret"
attack = '''
import os, socket
out = []
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2); out.append("CONNECTED")
except OSError:
    out.append("no-net")
for path in [os.environ["HOME"] + "/../escape.txt", "/tmp/kexa-nonroot-escape.txt"]:
    try:
        open(path, "w").write("x"); out.append("WROTE")
    except OSError:
        out.append("ro")
for pid in os.listdir("/proc"):
    try:
        if b"non-root-secret" in open(f"/proc/{pid}/environ", "rb").read():
            out.append("SECRET")
    except OSError:
        pass
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    remounted = libc.mount(b"none", b"/", None, 32 | 4096, None) == 0  # MS_REMOUNT | MS_BIND, not MS_RDONLY
except PermissionError:  # the audit-hook fallback refuses ctypes
    remounted = False
out.append("REMOUNTED" if remounted else "no-remount")
print(" ".join(out))
'''
results = []
for namespaces in (None, False):  # what this kernel allows (user namespaces), then the audit-hook fallback
    r = sandbox.run_python(attack, timeout_s=5, namespaces=namespaces)
    results.append({"ok": r.ok, "stdout": r.stdout, "stderr": r.stderr[-400:], "network": r.network})
print(json.dumps({"uid": os.getuid(), "results": results}))
"""


@pytest.mark.skipif(os.getuid() != 0 or not os.path.exists("/usr/bin/setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root, setpriv and a system python to act as a non-root host")
def test_non_root_host_gets_the_user_namespace_path():
    """The same module run by an unprivileged host user: a user namespace instead of root's per-run uid, and
    the audit-hook fallback (as on a kernel without unprivileged user namespaces), where the program keeps
    the host's uid and only the hook stands between it and the host's files and /proc."""
    import json
    import shutil
    import tempfile
    import kexa.sandbox as sandbox
    shared = tempfile.mkdtemp(prefix="kexa-nonroot-host-")  # readable by the unprivileged host user
    try:
        os.chmod(shared, 0o755)
        module = shutil.copy(sandbox.__file__, os.path.join(shared, "sandbox.py"))
        os.chmod(module, 0o644)
        proc = subprocess.run(["/usr/bin/setpriv", "--reuid=60123", "--regid=60123", "--clear-groups",
                               "/usr/bin/python3", "-c", NON_ROOT_SCRIPT, module], capture_output=True, text=True,
                              timeout=60, cwd="/tmp", env={"PATH": "/usr/bin:/bin"})
    finally:
        shutil.rmtree(shared)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["uid"] == 60123
    userns = subprocess.run(["/usr/bin/setpriv", "--reuid=60123", "--regid=60123", "--clear-groups", "unshare",
                             "--user", "--map-root-user", "--net", "true"], capture_output=True).returncode == 0
    assert [r["network"] for r in report["results"]] == ["netns" if userns else "audit-hook", "audit-hook"], report
    for r in report["results"]:
        assert r["stdout"].split() == ["no-net", "ro", "ro", "no-remount"], r
    assert not os.path.exists("/tmp/kexa-nonroot-escape.txt")


def test_run_checks_needs_the_program_to_reach_its_end():
    checks = run_checks(["assert 1 + 1 == 2", "assert 1 + 1 == 3", "import sys\nsys.exit(0)\nassert False",
                         "import os\nprint('noise')\nos._exit(0)"], timeout_s=5)
    assert [passed for passed, _ in checks] == [True, False, False, False]
    assert [r.ok for _, r in checks] == [True, False, True, True]  # exit 0 alone is not a pass
