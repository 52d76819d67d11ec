"""The Debian package, installed into a fresh Debian 12 root (mmdebstrap,
chroot): the user, the directories, the conffile and the units are there,
the shipped configuration checks once an account is filled in (with the
password from a systemd credential), and the installed binary, run as the
package's user, fetches from the test Dovecot on loopback.

IDLEFETCH_DEB names the .deb. The base root is cached as a tarball in
$IDLEFETCH_CACHE (default /var/cache/idlefetch-test)."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import fixture as fx

DEB = os.environ.get("IDLEFETCH_DEB", "")
CACHE = os.environ.get("IDLEFETCH_CACHE", "/var/cache/idlefetch-test")
BASE = os.path.join(CACHE, "bookworm-amd64-apt.tar")
MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main"]


def base_tarball():
    if not os.path.exists(BASE):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run(["mmdebstrap", "--quiet", "--variant=apt",
                        "--format=tar",
                        "bookworm", BASE + ".part", *MIRRORS], check=True,
                       timeout=900)
        os.rename(BASE + ".part", BASE)
    return BASE


@unittest.skipUnless(DEB, "IDLEFETCH_DEB is not set (scripts/package sets it)")
class InstalledPackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = fx.Env()
        cls.mounts = []
        try:
            cls.install()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def install(cls):
        cls.root = os.path.join(cls.env.root, "debian")
        os.makedirs(cls.root)
        subprocess.run(["tar", "-C", cls.root, "-xf", base_tarball()],
                       check=True)
        for src, dst, how in (("/proc", "proc", ["-t", "proc"]),
                              ("/dev", "dev", ["--rbind"]),
                              ("/sys", "sys", ["--rbind"])):
            target = os.path.join(cls.root, dst)
            subprocess.run(["mount", *how, src, target], check=True)
            cls.mounts.append(target)
        shutil.copy("/etc/resolv.conf", os.path.join(cls.root, "etc"))
        shutil.copy(DEB, os.path.join(cls.root, "tmp", "idlefetch.deb"))
        cls.sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
               "apt-get install -y -qq --no-install-recommends "
               "/tmp/idlefetch.deb >/tmp/install.log 2>&1 || "
               "{ cat /tmp/install.log; exit 1; }")

    @classmethod
    def tearDownClass(cls):
        for m in reversed(cls.mounts):
            subprocess.run(["umount", "-R", "-l", m])
        cls.env.close()

    @classmethod
    def sh(cls, script, check=True, env=None):
        p = subprocess.run(["chroot", cls.root, "/bin/sh", "-c", script],
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, **(env or {})))
        if check and p.returncode != 0:
            raise AssertionError(f"{script}: exit {p.returncode}\n"
                                 f"{p.stdout}{p.stderr}")
        return p

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def test_user_directories_conffile_units_and_man_pages(self):
        pw = self.sh("getent passwd idlefetch").stdout.strip().split(":")
        self.assertEqual(pw[5], "/var/lib/idlefetch")
        self.assertEqual(pw[6], "/usr/sbin/nologin")
        uid = int(pw[2])
        self.assertLess(uid, 1000, "a system user")
        st = os.stat(self.path("/var/lib/idlefetch"))
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (uid, 0o700))
        conffiles = self.sh("dpkg-query -W -f='${Conffiles}' idlefetch").stdout
        self.assertIn("/etc/idlefetch/idlefetch.conf", conffiles)
        for f in ("/lib/systemd/system/idlefetch.service",
                  "/lib/systemd/system/idlefetch@.service",
                  "/usr/share/man/man8/idlefetch.8.gz",
                  "/usr/share/man/man5/idlefetch.conf.5.gz"):
            self.assertTrue(os.path.exists(self.path(f)), f)
        self.assertEqual(self.sh("systemctl is-enabled idlefetch.service",
                                 check=False).stdout.strip(), "enabled")
        out = self.sh("idlefetch --version").stdout
        self.assertRegex(out, r"^idlefetch \d+\.\d+\.\d+$")

    def test_parser_is_built_in_and_loads_no_gnutls_sasl_or_db(self):
        """libetpan's RFC 5322 parser is linked from its static archive:
        the package depends on no libetpan, names the libetpan source in
        Built-Using and its licence in the copyright file, and the
        installed binary loads none of libetpan.so's libraries."""
        def field(name):
            return subprocess.run(["dpkg-deb", "-f", DEB, name],
                                  capture_output=True, text=True,
                                  check=True).stdout.strip()
        self.assertNotIn("libetpan", field("Depends"))
        built = subprocess.run(
            ["dpkg-query", "-W", "-f=${source:Package} (= ${source:Version})",
             "libetpan-dev"], capture_output=True, text=True,
            check=True).stdout
        self.assertEqual(field("Built-Using"), built)
        with open(self.path("/usr/share/doc/idlefetch/copyright")) as f:
            self.assertIn("libetpan", f.read())
        ldd = self.sh("ldd /usr/bin/idlefetch").stdout
        for lib in ("libetpan", "libgnutls", "libsasl2", "libdb-",
                    "libp11-kit", "libnettle"):
            self.assertNotIn(lib, ldd)
        self.assertIn("libssl.so.3", ldd)

    def fill_in(self, text, values):
        """Uncomments the shipped [account work] block and sets values."""
        out = []
        for line in text.splitlines():
            m = re.match(r"^;(\[account work\]|(\w+) = .*)$", line)
            if m and (m.group(2) is None or m.group(2) in values):
                line = m.group(1)
                if m.group(2):
                    line = f"{m.group(2)} = {values[m.group(2)]}"
            out.append(line)
        return "\n".join(out) + "\n"

    def test_shipped_conffile_checks_with_a_filled_in_account(self):
        with open(self.path("/etc/idlefetch/idlefetch.conf")) as f:
            shipped = f.read()
        # As shipped: no account yet, a clear configuration error.
        p = self.sh("idlefetch --check-config", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no [account NAME] section", p.stderr)
        conf = self.fill_in(shipped, {
            "host": "imap.example.org", "username": "alice",
            "password_file": "${CREDENTIALS_DIRECTORY}/work",
            "maildir": "/srv/mail/alice/Maildir", "folders": "INBOX, Lists/dev"})
        with open(self.path("/etc/idlefetch/test.conf"), "w") as f:
            f.write(conf)
        os.makedirs(self.path("/run/credentials/idlefetch.service"),
                    exist_ok=True)
        with open(self.path("/run/credentials/idlefetch.service/work"),
                  "w") as f:
            f.write("s3cret\n")
        # As systemd makes a credential: readable by the service only.
        os.chmod(self.path("/run/credentials/idlefetch.service/work"), 0o400)
        p = self.sh("CREDENTIALS_DIRECTORY=/run/credentials/idlefetch.service "
                    "idlefetch --check-config --config /etc/idlefetch/test.conf")
        self.assertIn("host = imap.example.org", p.stdout)
        self.assertIn("folders = INBOX, Lists/dev", p.stdout)
        self.assertNotIn("s3cret", p.stdout + p.stderr)

    def test_installed_binary_fetches_as_the_package_user(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(5)])
        shutil.copy(d.certs.ca, self.path("/etc/idlefetch/test-ca.crt"))
        with open(self.path("/etc/idlefetch/live.conf"), "w") as f:
            f.write("[global]\nuser = idlefetch\n"
                    "state_dir = /var/lib/idlefetch\n\n"
                    f"[account live]\nhost = 127.0.0.1\nport = {d.imaps_port}\n"
                    "ca_file = /etc/idlefetch/test-ca.crt\n"
                    f"username = {fx.USER}\npassword = {fx.PASSWORD}\n"
                    "maildir = /srv/mail/alice/Maildir\n")
        os.chmod(self.path("/etc/idlefetch/live.conf"), 0o600)
        p = self.sh("idlefetch --once --config /etc/idlefetch/live.conf")
        self.assertIn("running as user idlefetch", p.stderr)
        new = self.path("/srv/mail/alice/Maildir/new")
        self.assertEqual(len(os.listdir(new)), 5, p.stderr)
        uid = int(self.sh("id -u idlefetch").stdout)
        for name in os.listdir(new):
            self.assertEqual(os.stat(os.path.join(new, name)).st_uid, uid)
        self.assertTrue(os.path.exists(
            self.path("/var/lib/idlefetch/live/INBOX.state")))


if __name__ == "__main__":
    unittest.main()
