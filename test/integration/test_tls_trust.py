"""Trust from the system's store (no ca_file), as a user of a public
provider has it: on Debian, /etc/ssl/certs holds every CA under its
subject hash beside the bundle file. idlefetch finds a server's CA there
when the handshake needs it, refuses a server whose CA is not there, and
costs no more memory for it than a ca_file with one CA.

The test CA stands for a public one: SSL_CERT_DIR names a copy of the
machine's hashed directory with the test CA added; SSL_CERT_FILE is unset,
as on a Debian system, so the bundle OpenSSL knows is the machine's own,
which does not hold the test CA."""
import os
import subprocess
import unittest

import fixture as fx

SYSTEM_DIR = "/etc/ssl/certs"


def hashed_dir(path, ca=None):
    """A copy of the machine's hashed directory; with ca under its hash."""
    os.makedirs(path)
    for name in os.listdir(SYSTEM_DIR):
        os.symlink(os.path.join(SYSTEM_DIR, name), os.path.join(path, name))
    if ca is not None:
        h = subprocess.run(["openssl", "x509", "-noout", "-subject_hash",
                            "-in", ca], capture_output=True, text=True,
                           check=True).stdout.strip()
        n = 0
        while os.path.lexists(os.path.join(path, f"{h}.{n}")):
            n += 1
        os.symlink(ca, os.path.join(path, f"{h}.{n}"))
    return path


def anonymous_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


class SystemTrustTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = fx.Env()
        cls.env.dovecot.put([fx.make_message(1)])
        root = cls.env.root
        cls.with_ca = hashed_dir(os.path.join(root, "certs-with-ca"),
                                 cls.env.dovecot.certs.ca)
        cls.without_ca = hashed_dir(os.path.join(root, "certs-without"))
        cls.saved = {k: os.environ.pop(k, None)
                     for k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    @classmethod
    def tearDownClass(cls):
        for k, v in cls.saved.items():
            if v is not None:
                os.environ[k] = v
        cls.env.close()

    def daemon(self, name, **kw):
        return self.env.idlefetch(name=name, **kw)

    def test_ca_in_the_hashed_directory_is_trusted_for_push(self):
        """No ca_file: the CA is found in the directory; the backlog and a
        message pushed while idle each land once; and the process holds
        no more anonymous memory than one trusting a one-CA ca_file."""
        f = self.daemon("system", ca=False)
        g = self.daemon("cafile")
        f.start(env={"SSL_CERT_DIR": self.with_ca})
        g.start(env={"SSL_CERT_DIR": self.without_ca})
        try:
            self.assertTrue(f.idle(), f.log())
            self.assertTrue(g.idle(), g.log())
            self.assertEqual(f.md.count(), 1)
            self.env.dovecot.lmtp(fx.make_message(2))
            self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 30),
                            f.log())
            self.assertTrue(fx.wait_until(lambda: g.md.count() == 2, 30),
                            g.log())
            # The parsed bundle took 0.8 MiB more; allow for the noise of
            # two processes' heaps.
            extra = anonymous_kb(f.proc.pid) - anonymous_kb(g.proc.pid)
            self.assertLess(extra, 400,
                            f"trusting the system's store costs {extra} "
                            "KiB more than a ca_file")
        finally:
            self.assertEqual(f.stop(), 0)
            self.assertEqual(g.stop(), 0)
        self.assertEqual(f.md.count(), 2)
        self.assertNotIn(" error ", f.log())

    def test_ca_missing_from_the_hashed_directory_is_refused(self):
        """The same directory without the test CA: the server is refused
        before any credential goes out, and nothing is delivered."""
        log_start = len(self.env.dovecot.log())
        f = self.daemon("refused", ca=False)
        os.environ["SSL_CERT_DIR"] = self.without_ca
        try:
            rc = f.once("-v")
        finally:
            del os.environ["SSL_CERT_DIR"]
        self.assertEqual(rc, 1, f.log())
        self.assertIn("certificate verification failed: unable to get "
                      "local issuer certificate", f.log())
        self.assertEqual(f.md.count(), 0)
        self.assertNotIn("Login:", self.env.dovecot.log()[log_start:])
        self.assertNotIn("auth failed", self.env.dovecot.log()[log_start:])


if __name__ == "__main__":
    unittest.main()
