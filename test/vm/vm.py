"""A Debian 12 virtual machine under qemu (TCG, no KVM) with a real systemd,
for testing the installed package as an operator runs it.

The root file system is made once with mmdebstrap (systemd, udev, dbus, a
kernel, systemd-networkd doing DHCP, and the runtime libraries the .deb
depends on) into an ext4 image with mkfs.ext4 -d, and cached in
$IDLEFETCH_CACHE/vm-HASH (default /var/cache/idlefetch-test), keyed by the
package list and the recipe below. Each boot runs on a throwaway snapshot
of it (qemu's snapshot=on), so the cached image never changes.

The guest talks to the host through two serial ports and nothing else:
ttyS0 is its console (kept in a file), ttyS1 carries the test's commands
to agent.sh, which runs in the guest as a systemd service; and user-mode
networking with restrict=on, where the only reachable address,
10.0.2.100:993, is forwarded by one socat per connection to a port on the
host's loopback (the test Dovecot)."""
import base64
import ctypes
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time

CACHE = os.environ.get("IDLEFETCH_CACHE", "/var/cache/idlefetch-test")
MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"]
BASE_PACKAGES = ["systemd", "systemd-sysv", "udev", "dbus",
                 "linux-image-amd64"]
# The address the guest reaches the test servers at (guestfwd).
SERVER_IP = "10.0.2.100"
SERVER_NAME = "imap.test"
HERE = os.path.dirname(os.path.abspath(__file__))

# Files written into the root; they are part of the cache key.
NETWORK = """[Match]
Name=e*

[Network]
DHCP=ipv4
"""
HOSTS = f"""127.0.0.1 localhost
127.0.1.1 vmtest
{SERVER_IP} {SERVER_NAME}
"""
# The agent unpacks the payload disk (a tar archive written straight onto
# the block device, no file system) and serves ttyS1. It starts as soon as
# the root is writable, so that the test's first steps overlap the rest of
# the boot.
AGENT_UNIT = """[Unit]
Description=test agent on ttyS1
DefaultDependencies=no
Requires=dev-vdb.device
After=dev-vdb.device dev-ttyS1.device local-fs.target systemd-journald.socket

[Service]
ExecStart=/bin/sh -c 'mkdir -p /run/vmtest && tar -xf /dev/vdb -C /run/vmtest && exec /bin/sh /run/vmtest/agent.sh'

[Install]
WantedBy=sysinit.target
"""
RECIPE = {
    "etc/hostname": "vmtest\n",
    "etc/hosts": HOSTS,
    "etc/systemd/network/20-wired.network": NETWORK,
    "etc/systemd/system/vmtest-agent.service": AGENT_UNIT,
    # A fixed machine id: an empty one would make the first boot run
    # preset-all and enable whatever the presets say.
    "etc/machine-id": "5d1c0e1b0f0a4e5f9b6a2c3d4e5f6a7b\n",
    # Nothing needs the journal after the guest is gone: no flush to disk.
    "etc/systemd/journald.conf.d/vmtest.conf": "[Journal]\nStorage=volatile\n",
}
# Written before the packages are installed: an initrd with only what
# mounts the root (the default, "most", takes minutes to make and seconds
# to unpack under TCG).
SETUP = {
    "etc/initramfs-tools/conf.d/vmtest": "MODULES=list\n",
    "usr/share/initramfs-tools/modules.d/vmtest":
        "virtio_pci\nvirtio_blk\next4\n",
}
ENABLE = ["systemd-networkd.service", "vmtest-agent.service"]
# What a throwaway guest never needs and a slow one would spend its boot on.
MASK = ["e2scrub_reap.service", "e2scrub_all.timer", "fstrim.timer",
        "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
        "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service"]
KERNEL_ARGS = ("console=ttyS0 root=/dev/vda rw quiet loglevel=4 "
               "systemd.show_status=0 net.ifnames=0 panic=-1 mitigations=off")


def deb_depends(deb):
    """The package names a .deb depends on (first of each alternative)."""
    out = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], check=True,
                         capture_output=True, text=True).stdout
    names = []
    for dep in out.split(","):
        name = dep.split("|")[0].split("(")[0].strip().split(":")[0]
        if name:
            names.append(name)
    return names


def image_key(packages):
    h = hashlib.sha256()
    h.update("\n".join(sorted(set(packages))).encode())
    for files in (SETUP, RECIPE):
        for k in sorted(files):
            h.update(f"\0{k}\0{files[k]}".encode())
    h.update(" ".join(ENABLE + MASK + MIRRORS).encode())
    return h.hexdigest()[:16]


class Image:
    """kernel, initrd and root of the cached image for packages."""

    def __init__(self, packages):
        self.packages = sorted(set(BASE_PACKAGES + packages))
        self.dir = os.path.join(CACHE, "vm-" + image_key(self.packages))
        self.kernel = os.path.join(self.dir, "vmlinuz")
        self.initrd = os.path.join(self.dir, "initrd.img")
        self.root = os.path.join(self.dir, "root.img")

    def ensure(self, log=print):
        if os.path.exists(os.path.join(self.dir, "done")):
            return self
        os.makedirs(CACHE, exist_ok=True)
        part = self.dir + ".part"
        shutil.rmtree(part, ignore_errors=True)
        os.makedirs(part)
        t0 = time.monotonic()
        tree = os.path.join(part, "tree")
        log(f"vm: building the image ({' '.join(self.packages)})")
        hooks = []
        for rel, text in SETUP.items():
            hooks.append("--setup-hook=mkdir -p \"$1/%s\" && printf '%%s' "
                         "'%s' >\"$1/%s\"" % (os.path.dirname(rel), text, rel))
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                        "--include=" + ",".join(self.packages), *hooks,
                        "bookworm", tree, *MIRRORS], check=True,
                       timeout=1800)
        self._customize(tree)
        boot = os.path.join(tree, "boot")
        kernels = [f for f in os.listdir(boot) if f.startswith("vmlinuz-")]
        if len(kernels) != 1:
            raise RuntimeError(f"vm: expected one kernel in /boot, found "
                               f"{kernels}")
        version = kernels[0][len("vmlinuz-"):]
        shutil.copy(os.path.join(boot, kernels[0]),
                    os.path.join(part, "vmlinuz"))
        shutil.copy(os.path.join(boot, "initrd.img-" + version),
                    os.path.join(part, "initrd.img"))
        used = int(subprocess.run(["du", "-sxb", tree], check=True,
                                  capture_output=True,
                                  text=True).stdout.split()[0])
        size = (used * 3 // 2 + (256 << 20)) // (1 << 20)
        img = os.path.join(part, "root.img")
        subprocess.run(["truncate", "-s", f"{size}M", img], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", tree,
                        img], check=True, timeout=600)
        shutil.rmtree(tree)
        with open(os.path.join(part, "done"), "w") as f:
            f.write("\n".join(self.packages) + "\n")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.rename(part, self.dir)
        # Images of older package lists are of no more use.
        for name in os.listdir(CACHE):
            p = os.path.join(CACHE, name)
            if (name.startswith("vm-") and p != self.dir and
                    os.path.exists(os.path.join(p, "done"))):
                shutil.rmtree(p, ignore_errors=True)
        log(f"vm: image built in {time.monotonic() - t0:.0f} s, "
            f"{size} MB: {self.dir}")
        return self

    @staticmethod
    def _customize(tree):
        for rel, text in RECIPE.items():
            path = os.path.join(tree, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        subprocess.run(["systemctl", "--root", tree, "enable", *ENABLE],
                       check=True, capture_output=True)
        subprocess.run(["systemctl", "--root", tree, "mask", *MASK],
                       check=True, capture_output=True)


def _die_with_parent():
    # qemu must not outlive the test, whatever ends it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class GuestError(AssertionError):
    pass


class VM:
    """One boot of image with the files (name: bytes) on its payload disk
    (/run/vmtest in the guest); forwards maps a guest port on SERVER_IP to
    a host loopback port."""

    def __init__(self, image, files, forwards, workdir, memory=512):
        self.image = image
        self.dir = tempfile.mkdtemp(prefix="vm-", dir=workdir)
        self.console = os.path.join(self.dir, "console.log")
        self.payload = os.path.join(self.dir, "payload.tar")
        with tarfile.open(self.payload, "w", format=tarfile.GNU_FORMAT) as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                info.mtime = int(time.time())
                t.addfile(info, io.BytesIO(data))
        self.forwards = forwards
        self.memory = memory
        self.proc = None
        self.sock = None
        self.buf = b""
        self.seq = 0

    def argv(self, agent_sock):
        net = "user,id=n0,restrict=on" + "".join(
            f",guestfwd=tcp:{SERVER_IP}:{gport}-cmd:"
            f"socat - TCP:127.0.0.1:{hport}"
            for gport, hport in self.forwards.items())
        return ["qemu-system-x86_64", "-nodefaults", "-no-user-config",
                "-display", "none", "-monitor", "none", "-no-reboot",
                "-accel", "tcg", "-m", str(self.memory), "-smp", "2",
                "-kernel", self.image.kernel, "-initrd", self.image.initrd,
                "-append", KERNEL_ARGS,
                "-drive", f"file={self.image.root},format=raw,if=virtio,"
                          "snapshot=on,cache=unsafe",
                "-drive", f"file={self.payload},format=raw,if=virtio,"
                          "readonly=on",
                "-netdev", net, "-device", "virtio-net-pci,netdev=n0",
                "-device", "virtio-rng-pci",
                "-serial", f"file:{self.console}",
                "-chardev", f"socket,id=agent,path={agent_sock}",
                "-serial", "chardev:agent"]

    def boot(self, timeout=300):
        """Starts qemu and waits for the agent's greeting; returns the
        seconds it took."""
        t0 = time.monotonic()
        path = os.path.join(self.dir, "agent.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(1)
        lsock.settimeout(30)
        with open(os.path.join(self.dir, "qemu.log"), "wb") as log:
            self.proc = subprocess.Popen(self.argv(path),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        try:
            self.sock, _ = lsock.accept()
        except socket.timeout:
            raise GuestError("qemu did not connect its serial port: "
                             + self._qemu_output())
        finally:
            lsock.close()
        self._line_until(b"AGENT READY", t0 + timeout)
        return time.monotonic() - t0

    def _qemu_output(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        with open(os.path.join(self.dir, "qemu.log"), errors="replace") as f:
            return f.read()

    def _readline(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError("vm: timed out waiting for the guest\n"
                                 + self.console_tail())
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise GuestError("vm: the guest's serial port closed\n"
                                 + self.console_tail())
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def _line_until(self, want, deadline):
        while True:
            line = self._readline(deadline)
            if line.startswith(want):
                return line

    def sh(self, script, timeout=60, check=True):
        """Runs script with /bin/sh as root in the guest; returns
        (exit status, output with stderr)."""
        self.seq += 1
        n = self.seq
        data = base64.b64encode(script.encode()).decode()
        self.sock.sendall(f"{n} {timeout} {data}\n".encode())
        deadline = time.monotonic() + timeout + 15
        self._line_until(f"BEGIN {n}".encode(), deadline)
        out = base64.b64decode(self._readline(deadline)).decode(
            errors="replace")
        end = self._readline(deadline).decode().split()
        if end[:2] != ["END", str(n)]:
            raise GuestError(f"vm: bad reply {end!r}")
        rc = int(end[2])
        if check and rc != 0:
            raise GuestError(f"guest: exit {rc}: {script}\n{out}")
        return rc, out

    def out(self, script, timeout=60):
        return self.sh(script, timeout)[1]

    def wait(self, script, timeout, step=0.5):
        """Runs script until it exits 0; returns its output, or raises
        with its last output once timeout seconds have passed."""
        end = time.monotonic() + timeout
        while True:
            rc, out = self.sh(script, timeout=max(5, int(timeout)),
                              check=False)
            if rc == 0:
                return out
            if time.monotonic() >= end:
                raise GuestError(f"guest: still failing after {timeout} s: "
                                 f"{script}\n{out}")
            time.sleep(step)

    def console_tail(self, n=40):
        try:
            with open(self.console, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""

    def close(self, keep=False):
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
