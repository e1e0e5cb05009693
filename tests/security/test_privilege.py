"""Privilege attacks (reference §2.2, 24-35) from inside a user's run on a real worker and engine.

One run (``probe``) tries every escalation below as the sandbox's user and reports what the
kernel answered, one ``fact <name> <json>`` line each; the tests read those facts. The worker's
environment holds real server secrets (tests/security/conftest.py: ``SERVER_SECRETS`` plus its
real SECRET_KEY, DATABASE_URL and REDIS_URL), and another project holds a secret, so any leak
into the sandbox would show.
"""

from __future__ import annotations

import json
import secrets

import pytest
from django.conf import settings

from apps.runs.models import Run
from apps.runs.selectors import log_lines
from tests.conftest import database_url_for
from tests.security.conftest import SERVER_SECRETS, Attacks, parse_facts, py

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]

PROBE = r"""
import ctypes, errno, json, os, platform, stat, subprocess

libc = ctypes.CDLL(None, use_errno=True)


def fact(name, value):
    # One write per line (print() writes the newline separately when unbuffered).
    os.write(1, f"fact {name} {json.dumps(value)}\n".encode())


def sh(command):
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    return [done.returncode, (done.stdout + done.stderr).strip()[-400:]]


def attempt(action):
    try:
        result = action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return ["ok", result]


def syscall(number, *args):
    if libc.syscall(number, *args) >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def read(path, size=64):
    with open(path, "rb") as fh:
        return len(fh.read(size))


def write(path, data):
    with open(path, "w") as fh:
        fh.write(data)
    return True


status = dict(
    line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line
)
fact("status", {key: status[key].strip() for key in (
    "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")})
fact("ids", [os.getuid(), os.geteuid(), os.getgid(), os.getegid()])

# setuid: binaries, su/sudo, setuid(0)
fact("setuid_binaries", sh("find / -xdev -perm /6000 -type f 2>/dev/null | sort"))
fact("su", sh("echo root | su -c 'id -u' root"))
fact("sudo", sh("sudo -n id -u"))
fact("setuid0", attempt(lambda: os.setuid(0)))

# namespaces, mounts and dangerous syscalls (x86_64 / aarch64 numbers)
fact("mount", sh("mount -t tmpfs none /tmp"))
fact("unshare_user", sh("unshare -U -r id -u"))
fact("unshare_mount", sh("unshare -m id -u"))
numbers = {"x86_64": (321, 101, 250), "aarch64": (280, 117, 219)}[platform.machine()]
fact("bpf", syscall(numbers[0], 0, 0, 0))
fact("ptrace_init", syscall(numbers[1], 16, 1, 0, 0))  # PTRACE_ATTACH to PID 1
fact("keyctl", syscall(numbers[2], 0, -3, 0, 0, 0))  # KEYCTL_GET_KEYRING_ID, session keyring
fact("kill_init", attempt(lambda: os.kill(1, 9)))

# the Docker socket, anywhere
fact("sockets", sh(
    "find / \\( -path /proc -o -path /sys \\) -prune -o "
    "\\( -type s -o -name 'docker.sock' -o -name 'containerd.sock' \\) -print 2>/dev/null"))

# /proc and /sys
for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
             "/proc/latency_stats", "/proc/acpi", "/proc/scsi"):
    reader = (lambda: os.listdir(path)) if os.path.isdir(path) else (lambda: read(path))
    fact("proc:" + path, attempt(reader))
fact("sysrq", attempt(lambda: write("/proc/sysrq-trigger", "h")))
fact("proc_sys", attempt(lambda: write("/proc/sys/kernel/hostname", "owned")))
fact("sys_write", attempt(lambda: write("/sys/kernel/mm/ksm/run", "1")))
fact("sys_create", attempt(lambda: write("/sys/owned", "1")))
fact("mounts", {parts[1]: [parts[2], parts[3].split(",")[0]]
                for parts in (line.split() for line in open("/proc/mounts"))
                if parts[1] in ("/", "/sys", "/proc/sys", "/tmp", "/workspace", "/sys/fs/cgroup")})

# /dev
fact("dev", sorted(os.listdir("/dev")))
fact("block_devices", sh("find / -xdev -type b 2>/dev/null; find /dev -type b 2>/dev/null"))
fact("open_sda", attempt(lambda: read("/dev/sda")))
fact("mknod", attempt(lambda: os.mknod("/workspace/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))))

# read-only root, noexec /tmp (directly and through the dynamic loader)
fact("root_write", {path: attempt(lambda: write(path, "x"))
                    for path in ("/etc/owned", "/usr/bin/owned", "/owned", "/home/owned")})
fact("tmp_exec", sh("cp /bin/true /tmp/t && /tmp/t"))
fact("tmp_exec_loader", sh("ls /lib64/ld-linux-*.so.* /lib/ld-linux-*.so.* 2>/dev/null | head -1 "
                           "| { read loader && \"$loader\" /tmp/t; }"))

# environments: this process, init, and every process it may read
fact("env", dict(os.environ))
environs = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        environs[pid] = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except OSError as exc:
        environs[pid] = errno.errorcode.get(exc.errno, "?")
fact("environs", environs)
print("probe done", flush=True)
"""

OTHER_SECRET = f"other-project-{secrets.token_hex(12)}"
OWN_SECRET = f"own-unreferenced-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def probe(attack_worker, django_db_blocker) -> dict:
    """The facts one hostile run gathered (it ran through the users' code path)."""
    with django_db_blocker.unblock():
        attacks = Attacks(worker=attack_worker)
        attacks.project(secrets={"DEPLOY_TOKEN": OTHER_SECRET})  # another project of the team
        run = attacks.launch(py(PROBE), secrets={"UNUSED_TOKEN": OWN_SECRET})
        (run,) = attacks.wait(run, timeout=120)
        lines = [line.text for line in log_lines(run=run, first=1, last=10**6)]
        attacks.verify()
        run_status = (run.status, run.end_reason, run.error_message)
        Run.objects.filter(pk__in=attacks.launched).delete()
    assert run_status[0] == Run.Status.SUCCEEDED, (run_status, lines[-20:])
    assert lines[-1] == "probe done", lines[-20:]
    facts = parse_facts(lines)
    return facts


def test_no_capabilities_and_no_new_privileges(probe):
    status = probe["status"]
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[key] == "0000000000000000", (key, status[key])
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert probe["ids"] == [1000, 1000, 1000, 1000]


def test_setuid_binaries_su_and_sudo_gain_nothing(probe):
    # Whatever setuid binaries the image ships (su, mount...), no_new_privs voids their bit.
    code, output = probe["su"]
    assert code != 0 and "0" not in output.split(), output
    code, output = probe["sudo"]
    assert code != 0 and "0" not in output.split(), output
    assert probe["setuid0"] == "EPERM"


def test_mount_unshare_bpf_ptrace_keyctl_and_init_are_refused(probe):
    for name in ("mount", "unshare_user", "unshare_mount"):
        code, output = probe[name]
        assert code != 0 and "0" not in output.split(), (name, output)
    assert probe["bpf"] == "EPERM"
    assert probe["keyctl"] == "EPERM"
    # PID 1 runs as another uid than commands (apps/sandboxes/docker.py INIT_USER): without
    # that, a command could attach to the sandbox's init or kill it.
    assert probe["ptrace_init"] == "EPERM"
    assert probe["kill_init"] == "EPERM"


def test_no_docker_socket_anywhere(probe):
    _, found = probe["sockets"]
    assert "docker.sock" not in found and "containerd" not in found, found
    assert "DOCKER_HOST" not in probe["env"]


def test_proc_is_masked_and_sys_read_only(probe):
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"):
        # Masked: /dev/null over it (reads nothing) or not readable at all.
        value = probe[f"proc:{path}"]
        assert value in (["ok", 0], "EACCES", "EPERM", "ENOENT"), (path, value)
    for path in ("/proc/acpi", "/proc/scsi"):
        assert probe[f"proc:{path}"] in (["ok", []], "EACCES", "ENOENT"), path
    assert probe["sysrq"] in ("EROFS", "EACCES", "EPERM", "ENOENT")
    assert probe["proc_sys"] in ("EROFS", "EACCES", "EPERM")
    assert probe["sys_write"] in ("EROFS", "EACCES", "EPERM", "ENOENT")
    assert probe["sys_create"] in ("EROFS", "EACCES")
    mounts = probe["mounts"]
    assert mounts["/sys"] == ["sysfs", "ro"] and mounts["/proc/sys"][1] == "ro", mounts


def test_dev_is_minimal_without_block_devices(probe):
    allowed = {"core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr"}
    allowed |= {"stdin", "stdout", "tty", "urandom", "zero", "console"}
    assert set(probe["dev"]) <= allowed, sorted(set(probe["dev"]) - allowed)
    assert probe["block_devices"] == [0, ""]
    assert probe["open_sda"] == "ENOENT"
    assert probe["mknod"] == "EPERM"


def test_root_is_read_only_and_tmp_noexec(probe):
    assert set(probe["root_write"].values()) <= {"EROFS", "EACCES"}, probe["root_write"]
    assert probe["mounts"]["/"][1] == "ro"
    assert probe["mounts"]["/tmp"][0] == "tmpfs"
    code, output = probe["tmp_exec"]
    assert code != 0 and "Permission denied" in output, output
    code, output = probe["tmp_exec_loader"]
    assert code != 0, output  # the loader cannot map it executable either


def test_no_server_or_other_project_secrets_in_the_sandbox(probe):
    from django.db import connection

    leaked_values = {
        **SERVER_SECRETS,
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url_for(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "other project's secret": OTHER_SECRET,
        "unreferenced project secret": OWN_SECRET,
    }
    environments = {"env": json.dumps(probe["env"]), **probe["environs"]}
    assert "1" in probe["environs"], "init's environment was checked too"
    for where, text in environments.items():
        for name, value in leaked_values.items():
            assert value not in text, f"{name} is visible in {where}"
    names = set(probe["env"])
    forbidden = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_QUEUE", "SANDBOX_OWNER"}
    forbidden |= set(SERVER_SECRETS) | {
        "ANTHROPIC_BASE_URL",
        "E2B_API_URL",
        "DJANGO_SETTINGS_MODULE",
    }
    assert not names & forbidden, names & forbidden
