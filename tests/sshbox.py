"""A real SSH server on 127.0.0.1:22 that plays an on-prem machine for ``ray up`` (tests only).

What it sets up, and takes down again whether the test passed or failed:

* a login ``raydnas-ci`` (an alias of uid 0, so it can read this checkout's venv, which may sit
  under a root-only folder) whose home is a temporary folder, with a key made for the test;
* Debian's ``sshd`` listening on the loopback interface only, key login for that one user only,
  run under ``unshare --pid --mount-proc --kill-child``: everything started over SSH (the Ray
  head, its job drivers and trials) lives in that PID namespace, so ``ray stop`` on the "remote"
  machine cannot see this machine's other Ray processes, and killing ``unshare`` ends them all;
* the machine's Python, as cluster_local.yaml asks of every node: a venv activated in
  ``~/.bashrc`` with Ray and PyTorch on the PATH. To keep the test in seconds, the venv reuses this
  checkout's installed packages through a ``.pth`` file instead of downloading them again; the
  setup commands of the YAML then ``pip install -e`` the synced copy into it, as on a real node.
  ``RAY_TMPDIR`` points into the home so the remote Ray never meets this machine's /tmp/ray.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

USER = "raydnas-ci"
HOST = "127.0.0.1"

SSHD_CONFIG = """\
ListenAddress {host}:22
HostKey {root}/host_key
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {user}
"""

RAY_WRAPPER = """#!{python}
import sys
from ray.scripts.scripts import main
sys.exit(main())
"""


def missing() -> str | None:
    """Why this machine cannot host the box, or None (checked before anything is touched)."""
    if os.geteuid() != 0:
        return "the ray up test needs root (it adds a login and starts sshd)"
    for tool in ("/usr/sbin/sshd", shutil.which("rsync"), shutil.which("unshare"),
                 shutil.which("useradd"), shutil.which("ssh")):
        if not tool or not Path(tool).exists():
            return ("the ray up test needs openssh-server, openssh-client, rsync and util-linux "
                    "(apt-get install -y openssh-server rsync); README, set-up")
    with socket.socket() as s:
        if s.connect_ex((HOST, 22)) == 0:
            return f"port 22 on {HOST} is taken (another sshd?); Ray's SSH runner has no port option"
    return None


def control_dir(cluster_name: str) -> str:
    """The folder of the ssh ControlMaster sockets that Ray's SSH runner opens for a cluster."""
    user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    return f"/tmp/ray_ssh_{user}/{hashlib.sha256(cluster_name.encode()).hexdigest()[:10]}"


def kill_matching(needle: str) -> None:
    """SIGKILL every process of this machine whose command line contains ``needle``."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


class SSHBox:
    """The on-prem "machine": ``with SSHBox(tmp) as box: ...`` (``box.key``, ``box.home``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.home = self.root / "home"
        self.key = self.root / "id_ed25519"
        self.proc: subprocess.Popen | None = None
        self.user_added = False

    # -- set-up -------------------------------------------------------------------------------
    def __enter__(self) -> "SSHBox":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True)
        (self.home / "tmp").mkdir()
        for key in (self.key, self.root / "host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        shutil.copy(f"{self.key}.pub", ssh / "authorized_keys")
        ssh.chmod(0o700)
        subprocess.run(["useradd", "-o", "-u", "0", "-g", "0", "-M", "-d", str(self.home),
                        "-s", "/bin/bash", "-p", "*", USER], check=True,
                       stderr=subprocess.DEVNULL)
        self.user_added = True
        self._python()
        (self.root / "sshd_config").write_text(
            SSHD_CONFIG.format(host=HOST, root=self.root, user=USER))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--mount-proc", "--kill-child", "/usr/sbin/sshd", "-D",
             "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")],
            start_new_session=True)
        deadline = time.monotonic() + 20
        while self.ssh("true").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "sshd.log").read_text() if (self.root / "sshd.log").exists() else ""
                raise RuntimeError(f"sshd on {HOST}:22 did not come up: {log[-500:]}")
            time.sleep(0.2)

    def _python(self) -> None:
        env = self.home / "env"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
        site = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
        # last in sys.path order, so the synced copy installed later wins over this checkout
        (site / "zz_raydnas_ci_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        py = env / "bin" / "python"
        for name, text in {"ray": RAY_WRAPPER.format(python=py),
                           "pip": f"#!/bin/sh\nexec {py} -m pip \"$@\"\n"}.items():
            (env / "bin" / name).write_text(text)
            (env / "bin" / name).chmod(0o755)
        (self.home / ".bashrc").write_text(
            f". {env}/bin/activate\nexport RAY_TMPDIR={self.home}/tmp RAY_USAGE_STATS_ENABLED=0\n")

    # -- use ----------------------------------------------------------------------------------
    def ssh(self, command: str) -> subprocess.CompletedProcess:
        """Run ``command`` on the box as its user, the way Ray's runner does (a login shell)."""
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
             "-o", "LogLevel=ERROR", f"{USER}@{HOST}", f"bash --login -c '{command}'"],
            capture_output=True, text=True, timeout=60)

    def processes(self) -> list[str]:
        """Command lines of the processes in the box's PID namespace, its sshd excluded."""
        r = self.ssh("ps -eo args=")
        return [line for line in r.stdout.splitlines()
                if line and not line.startswith(("sshd", "ps ", "bash --login"))]

    # -- take-down ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop sshd and everything in its namespace, remove the login (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # --kill-child: unshare's exit SIGKILLs the namespace's init
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.user_added:
            subprocess.run(["userdel", "-f", USER], stderr=subprocess.DEVNULL)
            self.user_added = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()
