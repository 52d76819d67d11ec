"""The Debian package under a real systemd: a Debian 12 virtual machine
(vm.py) boots, the .deb is installed in it with dpkg as an operator would,
and the units run against the test Dovecot on the host. Each check is what
an operator would look at: systemctl's view of the unit, the journal, the
Maildirs under /srv/mail, and the server's own log of logins.

The checks share one boot and run in the order of their names; each leaves
the service running for the next. IDLEFETCH_DEB names the .deb."""
import os
import re
import shutil
import tempfile
import time
import unittest

import fixture as fx
import vm as vmlib

DEB = os.environ.get("IDLEFETCH_DEB", "")
# A shortened watchdog and restart delay, as a test drop-in may set them.
WATCHDOG_S = 6
TIMERS = f"""[Service]
WatchdogSec={WATCHDOG_S}s
RestartSec=1s
"""
# The credentials, as README.md shows them.
CREDENTIALS = """[Service]
LoadCredential=alice:/etc/idlefetch/alice.password
LoadCredential=bob:/etc/idlefetch/bob.password
"""


def account(name, user, folders="INBOX", maildir_root="/srv/mail"):
    return f"""
[account {name}]
host = {vmlib.SERVER_NAME}
port = 993
tls = implicit
ca_file = /etc/idlefetch/test-ca.crt
username = {user}
password_file = ${{CREDENTIALS_DIRECTORY}}/{user}
folders = {folders}
maildir = {maildir_root}/{user}/Maildir
"""


def config(accounts, glob=""):
    # What the shipped file holds in [global], and the test's key.
    return ("[global]\nstate_dir = /var/lib/idlefetch\nlog = stderr\n"
            + glob + "".join(accounts))


MAIN_CONF = config([account("work", "alice"), account("lists", "bob")])
# After the reload: bob's account has a second folder.
RELOADED_CONF = MAIN_CONF.replace(
    "/bob\nfolders = INBOX\n", "/bob\nfolders = INBOX, Lists\n")
assert RELOADED_CONF != MAIN_CONF


def heredoc(path, text, mode="644"):
    return (f"install -m {mode} /dev/stdin {path} <<'VMTEST_EOF'\n"
            f"{text}VMTEST_EOF\n")


@unittest.skipUnless(DEB, "IDLEFETCH_DEB is not set (scripts/vmtest sets it)")
class ServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="idlefetch-vm-")
        cls.vm = None
        cls.dovecot = None
        cls.sent = {}  # user: Message-IDs sent, in order
        try:
            cls.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls):
        t0 = time.monotonic()
        image = vmlib.Image(vmlib.deb_depends(DEB)).ensure()
        cls.figure("image ready", time.monotonic() - t0)
        os.chmod(cls.root, 0o755)
        certs = fx.Certs(os.path.join(cls.root, "certs"))
        # The guest reaches the server by the name and address of guestfwd.
        certs.vm = certs._leaf("vm", certs.ca, certs.ca_key,
                               f"DNS:{vmlib.SERVER_NAME},"
                               f"IP:{vmlib.SERVER_IP}")
        cls.dovecot = fx.Dovecot(cls.root, certs, cert="vm").start()
        files = {}
        for name, path in (("agent.sh", os.path.join(vmlib.HERE, "agent.sh")),
                           ("idlefetch.deb", DEB), ("ca.crt", certs.ca)):
            with open(path, "rb") as f:
                files[name] = f.read()
        cls.vm = vmlib.VM(image, files, {993: cls.dovecot.imaps_port},
                          cls.root)
        cls.figure("boot to the agent", cls.vm.boot())
        t = time.monotonic()
        cls.vm.sh("dpkg -i /run/vmtest/idlefetch.deb", timeout=120)
        cls.figure("dpkg -i", time.monotonic() - t)

    @classmethod
    def tearDownClass(cls):
        keep = bool(os.environ.get("KEEP_TEST_DIR"))
        if cls.vm is not None:
            cls.vm.close(keep=keep)
        if cls.dovecot is not None:
            cls.dovecot.stop()
        if keep:
            print("kept", cls.root)
        else:
            shutil.rmtree(cls.root, ignore_errors=True)

    @staticmethod
    def figure(what, seconds):
        print(f"\nvm: {what}: {seconds:.1f} s", flush=True)

    # ---- helpers ---------------------------------------------------------

    def send(self, user, n, tag=""):
        """Delivers n messages to user's INBOX on the server (LMTP, as mail
        arrives); returns their Message-IDs."""
        ids = []
        for i in range(n):
            body = fx.make_message(i, subject=f"{tag} {i} for {user}")
            body = body.replace(f"To: {fx.USER}@".encode(),
                                f"To: {user}@".encode())
            self.dovecot.lmtp(body, rcpt=user)
            ids.append(fx.message_id(body))
        self.sent.setdefault(user, []).extend(ids)
        return ids

    def maildir_ids(self, user, root="/srv/mail"):
        """The Message-IDs in the guest's Maildir of user, one per file."""
        out = self.vm.out(
            f"d={root}/{user}/Maildir; for f in $d/new/* $d/cur/*; do "
            f"[ -f \"$f\" ] && sed -n 's/^Message-ID: *//Ip;/^$/q' \"$f\"; "
            f"done; true")
        return sorted(out.split())

    def wait_delivered(self, user, timeout=40, root="/srv/mail"):
        """Waits until the guest's Maildir of user holds exactly what was
        sent to it."""
        want = sorted(self.sent.get(user, []))
        end = time.monotonic() + timeout
        while True:
            got = self.maildir_ids(user, root)
            if got == want or time.monotonic() > end:
                break
            time.sleep(0.5)
        self.assertEqual(got, want, f"{user}'s Maildir in the guest")

    def show(self, unit, prop):
        return self.vm.out(f"systemctl show -p {prop} --value {unit}").strip()

    def logins(self, user):
        return len(re.findall(rf"imap-login: Info: Login: user=<{user}>",
                              self.dovecot.log()))

    def logouts(self, user):
        return len(re.findall(rf"imap\({user}\)<\d+><[^>]*>: Info: "
                              rf"Disconnected: Logged out",
                              self.dovecot.log()))

    def unit_log(self, unit):
        return self.vm.out(f"systemctl status --no-pager {unit}; "
                           f"journalctl --no-pager -n 40 -u {unit}; true")

    def journal(self, unit, *args):
        """The daemon's own lines (not systemd's about the unit)."""
        return self.vm.out(f"journalctl --no-pager -o cat "
                           f"_SYSTEMD_UNIT={unit} {' '.join(args)}")

    # ---- checks ----------------------------------------------------------

    def test_1_start_reaches_ready_shows_status_and_delivers(self):
        """The operator's set-up from README.md: Maildirs under /srv/mail,
        passwords as credentials, the configuration filled in; systemctl
        start returns once READY=1 came, the unit is active (running),
        StatusText shows the accounts, and the mail is in the Maildirs."""
        self.send("alice", 3, "first")
        self.send("bob", 2, "first")
        v = self.vm
        v.sh("install -d /srv/mail && install -d -o idlefetch -g idlefetch "
             "-m 700 /srv/mail/alice /srv/mail/bob && "
             "install -m 644 /run/vmtest/ca.crt /etc/idlefetch/test-ca.crt && "
             "printf %s pass | install -m 600 /dev/stdin "
             "/etc/idlefetch/alice.password && "
             "printf %s pass | install -m 600 /dev/stdin "
             "/etc/idlefetch/bob.password && "
             "mkdir -p /etc/systemd/system/idlefetch.service.d\n"
             + heredoc("/etc/systemd/system/idlefetch.service.d/"
                       "credentials.conf", CREDENTIALS)
             + heredoc("/etc/systemd/system/idlefetch.service.d/"
                       "test-timers.conf", TIMERS)
             + heredoc("/etc/idlefetch/idlefetch.conf", MAIN_CONF)
             + "systemctl daemon-reload")
        t = time.monotonic()
        rc, out = v.sh("systemctl start idlefetch", timeout=90, check=False)
        self.figure("systemctl start (to READY=1)", time.monotonic() - t)
        self.assertEqual(rc, 0, out + v.out(
            "systemctl status idlefetch; journalctl -u idlefetch -n 30"))
        self.assertEqual(self.show("idlefetch", "ActiveState"), "active")
        self.assertEqual(self.show("idlefetch", "SubState"), "running")
        status = v.out("systemctl status --no-pager idlefetch")
        self.assertIn("active (running)", status)
        self.assertRegex(status, r"Status: \"2 accounts, 2 folders: ")
        print(status, flush=True)
        self.wait_delivered("alice")
        self.wait_delivered("bob")
        # Both folders settle in IDLE.
        v.wait("systemctl show -p StatusText --value idlefetch | "
               "grep -x '2 accounts, 2 folders: 2 idling'", 30)
        # Owned by the daemon's user, in the mode its UMask gives.
        self.assertEqual(v.out("stat -c '%U %a' /srv/mail/alice/Maildir/new"
                               ).strip(), "idlefetch 700")
        mem = int(self.show("idlefetch", "MemoryCurrent"))
        print(f"vm: idlefetch.service memory: {mem / 1e6:.1f} MB", flush=True)

    def test_2_password_comes_from_the_credential_only(self):
        """The configuration holds no password: the accounts logged in
        with the credentials, which the daemon's user cannot read at their
        source, and which systemd handed to this unit alone."""
        v = self.vm
        conf = v.out("cat /etc/idlefetch/idlefetch.conf")
        self.assertNotRegex(conf, r"(?m)^\s*password\s*=")
        self.assertNotIn(fx.PASSWORD + "\n", conf)
        rc, _ = v.sh("runuser -u idlefetch -- cat /etc/idlefetch/alice.password",
                     check=False)
        self.assertNotEqual(rc, 0)
        creds = v.out("ls /run/credentials/idlefetch.service/")
        self.assertEqual(creds.split(), ["alice", "bob"])
        self.assertGreaterEqual(self.logins("alice"), 1)
        self.assertGreaterEqual(self.logins("bob"), 1)
        self.assertEqual(self.dovecot.log().count("auth failed"), 0)

    def test_3_reload_reconnects_only_the_changed_account(self):
        """systemctl reload after bob's account gained a folder: bob logs
        in again with the new folder, alice's connection is untouched (no
        second login on the server) and still delivers."""
        v = self.vm
        alice, bob = self.logins("alice"), self.logins("bob")
        self.dovecot.doveadm("mailbox", "create", "-u", "bob", "Lists")
        v.sh(heredoc("/etc/idlefetch/idlefetch.conf", RELOADED_CONF))
        rc, out = v.sh("systemctl reload idlefetch", check=False)
        self.assertEqual(rc, 0, out + self.unit_log("idlefetch"))
        v.wait("systemctl show -p StatusText --value idlefetch | "
               "grep -x '2 accounts, 3 folders: 3 idling'", 40)
        self.assertIn("SIGHUP: configuration reloaded: 1 account(s) "
                      "unchanged, 1 restarted",
                      self.journal("idlefetch.service"))
        self.send("alice", 2, "after reload")
        self.wait_delivered("alice")
        self.assertEqual(self.logins("alice"), alice,
                         "alice's connection was not kept")
        self.assertGreater(self.logins("bob"), bob)
        self.assertEqual(self.show("idlefetch", "ActiveState"), "active")

    def test_4_watchdog_restarts_a_stuck_loop_losing_nothing(self):
        """With debug_stall_signal (read at start: systemctl restart),
        SIGUSR2 blocks the event loop: the watchdog pings stop, systemd
        kills the daemon and starts it again (Restart=on-failure), and the
        mail that came meanwhile is delivered once, the earlier mail not
        again."""
        v = self.vm
        conf = RELOADED_CONF.replace("log = stderr\n",
                                     "log = stderr\ndebug_stall_signal = yes\n")
        v.sh(heredoc("/etc/idlefetch/idlefetch.conf", conf))
        rc, out = v.sh("systemctl restart idlefetch", timeout=90, check=False)
        self.assertEqual(rc, 0, out + self.unit_log("idlefetch"))
        v.wait("systemctl show -p StatusText --value idlefetch | "
               "grep -x '2 accounts, 3 folders: 3 idling'", 40)
        restarts = int(self.show("idlefetch", "NRestarts"))
        pid = self.show("idlefetch", "MainPID")
        t = time.monotonic()
        v.sh("systemctl kill -s SIGUSR2 --kill-whom=main idlefetch")
        self.send("alice", 2, "during stall")
        self.send("bob", 1, "during stall")
        v.wait(f"[ \"$(systemctl show -p NRestarts --value idlefetch)\" = "
               f"{restarts + 1} ] && systemctl is-active idlefetch",
               WATCHDOG_S * 2 + 30)
        self.figure("SIGUSR2 to a restarted daemon", time.monotonic() - t)
        self.assertNotEqual(self.show("idlefetch", "MainPID"), pid)
        unit_log = v.out("journalctl --no-pager -o cat -u idlefetch")
        self.assertIn("Watchdog timeout", unit_log)
        self.assertIn("debug_stall_signal", unit_log)
        self.wait_delivered("alice")
        self.wait_delivered("bob")
        v.wait("systemctl show -p StatusText --value idlefetch | "
               "grep -x '2 accounts, 3 folders: 3 idling'", 40)

    def test_5_journal_priorities_follow_the_levels(self):
        """journald stores each line with its level's priority (the
        sd-daemon prefix, stripped from the text): journalctl -p warning
        shows the warnings and not the info lines."""
        unit = "idlefetch.service"
        warnings = self.journal(unit, "-p", "warning")
        self.assertIn("debug_stall_signal", warnings)
        self.assertNotRegex(warnings, r"(?m)^\S+ info ")
        self.assertRegex(warnings, r"(?m)^\S+ warn ")
        infos = self.journal(unit, "-p", "info..info")
        self.assertRegex(infos, r"(?m)^\S+ info .*starting")
        self.assertNotRegex(infos, r"(?m)^\S+ (warn|error) ")
        self.assertNotRegex(self.journal(unit), r"(?m)^<\d>")

    def test_6_instance_runs_with_its_own_configuration_and_state(self):
        """idlefetch@second reads /etc/idlefetch/second.conf, which names no
        state_dir: its state is kept in its own StateDirectory, apart from
        idlefetch.service's, and both run at once. Its second account's
        Maildir is outside what the sandbox opens (README: /srv/mail and
        /var/mail): that account fails with an error, unwritten, and the
        other goes on."""
        v = self.vm
        self.send("carol", 2, "instance")
        self.send("dave", 1, "outside")
        self.sent["dave"] = []  # it must not arrive
        conf = ("[global]\nlog = stderr\n" + account("home", "carol")
                + account("outside", "dave", maildir_root="/opt/mail"))
        v.sh("install -d -o idlefetch -g idlefetch -m 700 /srv/mail/carol "
             "/opt/mail /opt/mail/dave && "
             "printf %s pass | install -m 600 /dev/stdin "
             "/etc/idlefetch/carol.password && "
             "printf %s pass | install -m 600 /dev/stdin "
             "/etc/idlefetch/dave.password && "
             "mkdir -p /etc/systemd/system/idlefetch@second.service.d\n"
             + heredoc("/etc/systemd/system/idlefetch@second.service.d/"
                       "credentials.conf", "[Service]\nLoadCredential="
                       "carol:/etc/idlefetch/carol.password\nLoadCredential="
                       "dave:/etc/idlefetch/dave.password\n")
             + heredoc("/etc/idlefetch/second.conf", conf)
             + "systemctl daemon-reload")
        rc, out = v.sh("systemctl start idlefetch@second", timeout=90,
                       check=False)
        self.assertEqual(rc, 0, out + v.out(
            "systemctl status idlefetch@second; "
            "journalctl -u idlefetch@second -n 30"))
        self.wait_delivered("carol")
        v.wait("systemctl show -p StatusText --value idlefetch@second | "
               "grep -E '^2 accounts, 2 folders: 1 idling, 1 '", 30)
        errors = self.journal("idlefetch@second.service", "-p", "err")
        self.assertRegex(errors, r"(?m)^\S+ error account=outside .*"
                                 r"/opt/mail/dave")
        self.assertNotRegex(errors, r"(?m)^\S+ (warn|info) ")
        print("vm: idlefetch@second: " + self.show("idlefetch@second",
                                                   "StatusText")
              + "\nvm: journalctl -p err: " + errors.strip().splitlines()[0],
              flush=True)
        self.wait_delivered("dave", timeout=0, root="/opt/mail")
        state = self.show("idlefetch@second", "StateDirectory")
        self.assertNotEqual(state, "idlefetch")
        sdir = "/var/lib/" + state
        self.assertRegex(v.out(f"ls {sdir}/home"), r"\.state")
        rc, _ = v.sh("ls -d /var/lib/idlefetch/home", check=False)
        self.assertNotEqual(rc, 0, "the instance wrote into the main "
                            "unit's state directory")
        # The main unit goes on; its accounts' state is its own.
        self.assertEqual(self.show("idlefetch", "ActiveState"), "active")
        self.assertRegex(v.out("ls /var/lib/idlefetch/work"), r"\.state")
        self.assertEqual(v.out(f"stat -c '%U %a' {sdir}").strip(),
                         "idlefetch 700")

    def test_7_stop_logs_out_and_exits_in_time(self):
        """systemctl stop: the daemon logs out of every connection and
        exits 0 well within TimeoutStopSec; nothing is left running."""
        v = self.vm
        before = {u: self.logouts(u) for u in ("alice", "bob", "carol")}
        limit = self.show("idlefetch", "TimeoutStopUSec")
        t = time.monotonic()
        v.sh("systemctl stop idlefetch idlefetch@second", timeout=60)
        took = time.monotonic() - t
        self.figure("systemctl stop (two units)", took)
        self.assertLess(took, 30, f"TimeoutStopUSec={limit}")
        for unit in ("idlefetch", "idlefetch@second"):
            self.assertEqual(self.show(unit, "ActiveState"), "inactive")
            self.assertEqual(self.show(unit, "Result"), "success")
            self.assertEqual(self.show(unit, "ExecMainStatus"), "0")
            self.assertIn("exiting with status 0",
                          self.journal(f"{unit}.service"))
        fx.wait_until(lambda: all(self.logouts(u) > before[u]
                                  for u in before), 10)
        # alice has one connection (INBOX), bob one (NOTIFY: both folders).
        for u in before:
            self.assertGreater(self.logouts(u), before[u],
                               f"{u} did not log out")


if __name__ == "__main__":
    unittest.main()
