"""Sharding: replica I of N fetches the accounts rendezvous hashing gives
it; replicas share a state directory, and an account moves from one to
another only when the first lets go of its lock."""
import os
import re
import signal
import subprocess
import unittest

import fixture as fx

ACCOUNTS = [f"user{i}" for i in range(8)]


def fnv1a(name):
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def mix(x):
    m = 0xFFFFFFFFFFFFFFFF
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & m
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & m
    x ^= x >> 31
    return x


def shard_of(name, n):
    """The same rendezvous hashing, written again from its definition."""
    h = fnv1a(name)
    scores = [mix(h ^ mix((0x9e3779b97f4a7c15 * (j + 1)) & 0xFFFFFFFFFFFFFFFF))
              for j in range(n)]
    return scores.index(max(scores))


class ShardTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.dir = os.path.join(self.env.root, "shards")
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "idlefetch.conf")
        self.write_conf()
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.env.close()

    def write_conf(self, shard="", accounts=ACCOUNTS):
        d = self.env.dovecot
        with open(self.conf, "w") as f:
            f.write(f"[global]\nstate_dir = {self.dir}/state\n{shard}")
            for a in accounts:
                f.write(fx.account_section(a, d, "INBOX", self.md(a).path))
                f.write("poll_interval = 600\n")
        os.chmod(self.conf, 0o600)

    def md(self, account):
        return fx.Maildir(os.path.join(self.dir, "mail", account))

    def run_idlefetch(self, *args, env=None, wrap=()):
        return subprocess.run([*wrap, fx.IDLEFETCH, "--config", self.conf,
                               *args], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, **(env or {})))

    def start(self, *args, name):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        p = subprocess.Popen([fx.IDLEFETCH, "--config", self.conf, *args],
                             stdout=log, stderr=log)
        log.close()
        self.procs.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log"),
                  errors="replace") as f:
            return f.read()

    def test_replicas_split_the_accounts_between_them(self):
        self.env.dovecot.lmtp(fx.make_message(1))
        expected = {j: sorted(a for a in ACCOUNTS if shard_of(a, 3) == j)
                    for j in range(3)}
        self.assertTrue(all(expected.values()),
                        f"each replica takes some of 8: {expected}")
        for j in range(3):
            out = self.run_idlefetch("--check-config", "--shard", f"{j}/3")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(f"shard = {j}/3\n; this replica takes: "
                          f"{', '.join(expected[j])} "
                          f"({len(expected[j])} of 8)", out.stdout)
        for j in range(3):
            r = self.run_idlefetch("--once", "--shard", f"{j}/3")
            self.assertEqual(r.returncode, 0, r.stderr)
            got = sorted(a for a in ACCOUNTS if self.md(a).count() == 1)
            want = sorted(sum((expected[k] for k in range(j + 1)), []))
            self.assertEqual(got, want, f"after replica {j}")
        # Status of one replica judges only the accounts it takes.
        r = subprocess.run([fx.IDLEFETCH, "status", "--config", self.conf,
                            "--shard", "0/3"], capture_output=True, text=True)
        for a in ACCOUNTS:
            self.assertEqual(f"{a}:" in r.stdout, a in expected[0], r.stdout)

    def test_an_account_moves_only_when_the_other_replica_lets_go(self):
        one = self.start("-v", name="one")              # every account
        self.assertTrue(fx.wait_until(
            lambda: self.log("one").count("conn IDLE_START -> IDLE") == 8,
            30), self.log("one"))
        # Scaling out: replica 0 of 2 starts while the old one still runs.
        two = self.start("--shard", "0/2", name="two")
        mine = [a for a in ACCOUNTS if shard_of(a, 2) == 0]
        self.assertTrue(fx.wait_until(
            lambda: self.log("two").count("taking it over once that one "
                                          "lets go") == len(mine), 15),
            self.log("two"))
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(
            lambda: all(self.md(a).count() == 1 for a in ACCOUNTS), 15))
        self.assertNotIn("delivered", self.log("two"))
        # The old replica stops: the new one takes its share within
        # seconds, and fetches what arrived in between, once.
        one.send_signal(signal.SIGTERM)
        self.assertEqual(one.wait(30), 0)
        self.env.dovecot.lmtp(fx.make_message(2))
        self.assertTrue(fx.wait_until(
            lambda: all(self.md(a).count() == 2 for a in mine), 20),
            self.log("two"))
        self.assertEqual(self.log("two").count("let go of this account"),
                         len(mine))
        for a in ACCOUNTS:
            self.assertEqual(self.md(a).count(), 2 if a in mine else 1, a)
            self.assertEqual(len(set(self.md(a).contents())),
                             self.md(a).count())
        two.send_signal(signal.SIGTERM)
        self.assertEqual(two.wait(30), 0)

    def test_idle_account_holds_one_descriptor_its_connection(self):
        """Sockets grow with the accounts, nothing else does: 10,000
        accounts fit under a 20,000 open-file limit."""
        def fds(pid):
            """Sockets, descriptors of the shared lock files, the rest."""
            socks, locks, other = 0, 0, []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except FileNotFoundError:
                    continue
                if target.startswith("socket:"):
                    socks += 1
                elif "/.accounts.lock." in target:
                    locks += 1
                else:
                    other.append(target)
            return socks, sorted(other), locks

        seen = {}
        for n in (4, 24):
            names = [f"fd{n}-{i}" for i in range(n)]
            self.write_conf(accounts=names)
            p = self.start("-v", name=f"fd{n}")
            self.assertTrue(fx.wait_until(
                lambda: len(set(re.findall(
                    r'account=(\S+) .*IDLE_START -> IDLE',
                    self.log(f"fd{n}")))) == n, 60), self.log(f"fd{n}"))
            # A status file being rewritten holds a descriptor a moment.
            self.assertTrue(fx.wait_until(
                lambda: fds(p.pid)[0] == n and
                fds(p.pid)[1] == fds(p.pid)[1], 10), fds(p.pid))
            seen[n] = fds(p.pid)
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(30), 0)
        self.assertEqual(seen[4][0], 4)
        self.assertEqual(seen[24][0], 24)
        self.assertEqual(len(seen[24][1]), len(seen[4][1]),
                         f"descriptors other than the connections: {seen}")
        self.assertLessEqual(len(seen[24][1]), 16, seen)
        # Sixteen lock files, each opened twice, whatever the accounts.
        self.assertLessEqual(seen[24][2], 32, seen)

    def test_shard_auto_reads_the_pod_name(self):
        if subprocess.run(["unshare", "-u", "true"]).returncode != 0:
            self.skipTest("unshare -u (a UTS namespace) is not available")
        self.write_conf("shard = auto\n")

        def check(hostname, shards):
            return self.run_idlefetch(
                "--check-config", env={"IDLEFETCH_SHARDS": shards},
                wrap=["unshare", "-u", "sh", "-c",
                      f'hostname "{hostname}" && exec "$0" "$@"'])
        r = check("idlefetch-2", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shard = 2/3\n", r.stdout)
        r = check("mailhost", "3")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"idlefetch.conf:3: key 'shard': shard = "
                         r"auto takes .* '?mailhost'? does not")
        r = check("idlefetch-3", "3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("replica 3, but IDLEFETCH_SHARDS says there are 3",
                      r.stderr)
        r = self.run_idlefetch("--check-config", "--shard", "3/3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--shard: '3/3' is not auto or I/N", r.stderr)


if __name__ == "__main__":
    unittest.main()
