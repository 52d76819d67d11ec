"""Failures a user must see clearly: wrong password, a certificate for
another host, an untrusted CA. Each is one clear error line, no credentials
go out on an unverified connection, and --once exits 1."""
import hashlib
import re
import subprocess
import unittest

import fixture as fx


def error_lines(log):
    return [l for l in log.splitlines() if " error " in l]


class ErrorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = fx.Env()
        cls.env.dovecot.put([fx.make_message(1)])

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def setUp(self):
        self.log_start = len(self.env.dovecot.log())

    def dovecot_log(self):
        """Dovecot's log since this test began."""
        return self.env.dovecot.log()[self.log_start:]

    def use_cert(self, cert):
        d = self.env.dovecot
        d.stop()
        d.cert = cert
        d.write_conf()
        d.start()
        self.addCleanup(self.restore)

    def restore(self):
        d = self.env.dovecot
        if d.cert != "server":
            d.stop()
            d.cert = "server"
            d.write_conf()
            d.start()

    def assert_no_login_attempt(self, f):
        self.assertIsNone(re.search(r"C: a\d+ (LOGIN|AUTHENTICATE)", f.log()),
                          "no credentials sent")
        self.assertNotIn("Login: user=<alice>", self.dovecot_log())
        self.assertNotIn("auth failed", self.dovecot_log())

    def test_wrong_password_is_one_clear_error(self):
        f = self.env.idlefetch(tls="implicit", name="badpw",
                               password="wrong-secret")
        self.assertEqual(f.once(), 1)
        errs = error_lines(f.log())
        self.assertEqual(len(errs), 1, f.log())
        self.assertIn("login rejected for user alice", errs[0])
        self.assertNotIn("wrong-secret", f.log())
        self.assertEqual(f.md.count(), 0)

    def test_wrong_password_in_daemon_mode_is_not_retried_in_a_tight_loop(self):
        f = self.env.idlefetch(tls="implicit", name="badpw-daemon",
                               password="wrong-secret").start()
        self.assertTrue(fx.wait_until(lambda: "login rejected" in f.log(), 10))
        import time
        time.sleep(3)
        self.assertEqual(f.stop(), 0)
        self.assertEqual(len(error_lines(f.log())), 1, f.log())
        self.assertEqual(self.dovecot_log().count("auth failed"), 1)
        m = re.search(r"reconnecting in ([0-9.]+) s", f.log())
        self.assertGreaterEqual(float(m.group(1)), 150, "slow retry")

    def test_certificate_for_another_host_is_refused(self):
        self.use_cert("wrong_host")
        for tls in ("implicit", "starttls"):
            f = self.env.idlefetch(tls=tls, name=f"wronghost-{tls}")
            self.assertEqual(f.once("-v"), 1)
            errs = error_lines(f.log())
            self.assertEqual(len(errs), 1, f.log())
            self.assertIn("certificate verification failed", errs[0])
            self.assertIn("mismatch", errs[0])
            self.assert_no_login_attempt(f)

    def test_untrusted_ca_is_refused(self):
        self.use_cert("untrusted")
        for tls in ("implicit", "starttls"):
            f = self.env.idlefetch(tls=tls, name=f"untrusted-{tls}")
            self.assertEqual(f.once("-v"), 1)
            errs = error_lines(f.log())
            self.assertEqual(len(errs), 1, f.log())
            self.assertIn("certificate verification failed", errs[0])
            self.assert_no_login_attempt(f)

    def test_system_store_does_not_trust_a_private_ca(self):
        f = self.env.idlefetch(tls="implicit", name="nocafile", ca=False)
        self.assertEqual(f.once("-v"), 1)
        self.assertIn("certificate verification failed", f.log())
        self.assert_no_login_attempt(f)

    def pins(self, crt):
        """sha256: pins of a certificate and of its public key."""
        der = subprocess.run(["openssl", "x509", "-in", crt, "-outform",
                              "der"], capture_output=True, check=True).stdout
        pub = subprocess.run(["openssl", "x509", "-in", crt, "-pubkey",
                              "-noout"], capture_output=True,
                             check=True).stdout
        spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform",
                               "der"], input=pub, capture_output=True,
                              check=True).stdout
        return ("sha256:" + hashlib.sha256(der).hexdigest(),
                "sha256:" + ":".join(f"{b:02X}" for b in
                                     hashlib.sha256(spki).digest()))

    def test_pinned_self_signed_server_is_accepted_and_a_wrong_pin_refused(self):
        """The test CA is in no trust store (ca=False): the pin alone, of
        the certificate or of its key, makes it trusted, for a name the
        certificate does not carry either. A wrong pin is refused before
        any credential goes out."""
        self.use_cert("wrong_host")
        cert_pin, key_pin = self.pins(self.env.dovecot.certs.wrong_host[0])
        wrong = cert_pin[:-2] + ("00" if cert_pin[-2:] != "00" else "11")
        hexes = cert_pin[7:]
        shown = "sha256:" + ":".join(hexes[i:i + 2] for i in range(0, 64, 2))
        for tls in ("implicit", "starttls"):
            f = self.env.idlefetch(tls=tls, name=f"wrongpin-{tls}", ca=False,
                                   extra=f"tls_fingerprint = {wrong}\n")
            self.assertEqual(f.once(), 1)
            errs = error_lines(f.log())
            self.assertEqual(len(errs), 1, f.log())
            self.assertIn("does not match tls_fingerprint: it is " + shown,
                          errs[0])
            self.assert_no_login_attempt(f)
            self.assertEqual(f.md.count(), 0)
        for i, pin in enumerate((cert_pin, key_pin)):
            f = self.env.idlefetch(tls="implicit", name=f"pinned{i}",
                                   ca=False,
                                   extra=f"tls_fingerprint = {pin}\n")
            self.assertEqual(f.once(), 0, f.log())
            self.assertEqual(f.md.count(), self.env.dovecot.count())
            self.assertGreater(f.md.count(), 0)

    def test_one_failing_account_does_not_stop_the_others(self):
        good = self.env.idlefetch(tls="implicit", name="good")
        bad_md = good.maildir_path + "-bad"
        with open(good.conf, "a") as c:
            c.write(f"""
[account bad]
host = 127.0.0.1
port = {self.env.dovecot.imaps_port}
username = alice
password = nope
maildir = {bad_md}
ca_file = {self.env.certs.ca}
""")
        self.assertEqual(good.once(), 1, "some account failed")
        self.assertEqual(good.md.count(), 1, "the good account still synced")
        self.assertIn("account=bad", "".join(error_lines(good.log())))
        self.assertNotIn("account=good", "".join(error_lines(good.log())))
        self.assertEqual(good.once("--account", "good"), 0)

    def test_unreachable_port_is_a_clear_error(self):
        f = self.env.idlefetch(tls="implicit", name="refused",
                               port=fx.free_port())
        self.assertEqual(f.once(), 1)
        errs = error_lines(f.log())
        self.assertEqual(len(errs), 1)
        self.assertIn("connection refused", errs[0])



class FdLimitTest(unittest.TestCase):
    """Many accounts against the common 1,024 soft limit: the daemon takes
    its soft open-file limit up to the hard one, and says so at start-up
    when even that is too few."""

    def setUp(self):
        self.env = fx.Env()
        self.env.dovecot.put([fx.make_message(1)])

    def tearDown(self):
        self.env.close()

    def many(self, n):
        return "".join(fx.account_section(
            f"more{i}", self.env.dovecot, "INBOX",
            f"{self.env.root}/md{i}") for i in range(n))

    def limits(self, pid):
        with open(f"/proc/{pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        return [int(x) for x in line.split()[3:5]]

    def test_soft_limit_is_raised_to_the_hard_limit(self):
        f = self.env.idlefetch(name="raise", extra=self.many(60),
                               wrap=("prlimit", "--nofile=100:4096"))
        f.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 20), f.log())
        self.assertEqual(self.limits(f.proc.pid), [4096, 4096])
        self.assertNotIn("open files", f.log())
        self.assertEqual(f.stop(), 0)

    def test_a_hard_limit_too_low_is_named_at_start(self):
        f = self.env.idlefetch(name="low", extra=self.many(60),
                               wrap=("prlimit", "--nofile=100:100"))
        f.start()
        self.assertTrue(fx.wait_until(lambda: "open files" in f.log(), 10),
                        f.log())
        self.assertIn("61 connection(s) need about 155 open files, but the "
                      "limit is 100", f.log())
        f.stop()


if __name__ == "__main__":
    unittest.main()
