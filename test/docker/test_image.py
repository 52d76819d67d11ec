"""The container image: its configuration (non-root user, health check,
volumes, nothing of the build stage), a run against the test Dovecot on
loopback (mail lands in the mounted Maildir, `idlefetch status` inside says
healthy, PID 1 stops on SIGTERM within 2 s), and the Kubernetes and
compose examples, whose settings are checked by the image's own binary.

The image holds no shell and no program but idlefetch, so nothing here
runs a command inside it except idlefetch itself: the host's env and
chroot start it, and its files are read from the mounted root.

The image is run with `podman run` where the machine allows it. Where the
OCI runtime cannot start containers (this machine's sandbox refuses
setrlimit), it is run the way a runtime would: the image's root file
system (buildah mount), a new PID and mount namespace, the image's user,
environment and entrypoint, the volumes bind-mounted."""
import json
import os
import re
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import unittest

import yaml

import fixture as fx

IMAGE = os.environ.get("IDLEFETCH_IMAGE", "localhost/idlefetch:test")
STORE = ["--storage-driver", "vfs"]
HERE = os.path.dirname(os.path.abspath(__file__))
DOCKER = os.path.join(HERE, "..", "..", "docker")
# The image was 87 MB on debian:bookworm-slim.
MAX_IMAGE_BYTES = 20 * 1000 * 1000


def cmd(*args, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True,
                          check=check, timeout=300, **kw)


def image_config():
    out = cmd("buildah", *STORE, "inspect", "--type", "image", IMAGE).stdout
    return json.loads(out)["Docker"]["config"]


def podman_runs():
    """None when podman can run the image, else the reason it cannot."""
    p = cmd("podman", *STORE, "run", "--rm", "--network", "host",
            "--cgroups", "disabled", IMAGE, "--version", check=False)
    return None if p.returncode == 0 else p.stderr.strip().splitlines()[-1]


def image_root():
    """(container, path): a container of the image and its root file
    system, mounted; buildah rm container when done."""
    ctr = cmd("buildah", *STORE, "from", IMAGE).stdout.strip()
    return ctr, cmd("buildah", *STORE, "mount", ctr).stdout.strip()


def in_root(root, argv, env=None, user=None):
    """argv run in root as a runtime starts it: no shell, only the given
    environment; the host's env and chroot start it."""
    spec = [f"--userspec={user}"] if user else []
    return ["env", "-i", *[f"{k}={v}" for k, v in (env or {}).items()],
            shutil.which("chroot"), *spec, root, *argv]


def image_env(env):
    """env over the image's own variables, as a runtime gives them."""
    out = dict(e.split("=", 1) for e in image_config().get("Env") or [])
    out.update(env)
    return out


class Container:
    """One run of the image with env (a dict), volumes (host: path; a
    file mounts as a file, as a runtime mounts /etc/resolv.conf) and
    args after the entrypoint."""

    def __init__(self, env, volumes, logfile, args=()):
        self.env, self.volumes, self.logfile = env, volumes, logfile
        self.args = list(args)
        self.name = f"idlefetch-test-{os.getpid()}-{time.monotonic_ns()}"
        self.cfg = image_config()
        self.podman = podman_runs() is None
        self.proc = None

    def _env(self, extra=None):
        env = dict(e.split("=", 1) for e in self.cfg.get("Env") or [])
        env.update(self.env)
        env.update(extra or {})
        return env

    def start(self):
        log = open(self.logfile, "ab")
        if self.podman:
            args = ["podman", *STORE, "run", "--name", self.name,
                    "--network", "host", "--cgroups", "disabled"]
            for e in self.env.items():
                args += ["-e", "=".join(e)]
            for h, c in self.volumes.items():
                args += ["-v", f"{h}:{c}"]
            self.proc = subprocess.Popen(args + [IMAGE] + self.args,
                                         stdout=log, stderr=log)
            log.close()
            return self
        self.ctr = cmd("buildah", *STORE, "from", "--name", self.name,
                       IMAGE).stdout.strip()
        self.root = cmd("buildah", *STORE, "mount", self.ctr).stdout.strip()
        # The runtime makes the mount points (the image has none).
        script = ["set -e", f"mkdir -p '{self.root}/dev' '{self.root}/proc'"]
        for h, c in self.volumes.items():
            if os.path.isdir(h):
                script += [f"mkdir -p '{self.root}{c}'"]
            else:
                script += [f"mkdir -p '{self.root}{os.path.dirname(c)}'",
                           f"touch '{self.root}{c}'"]
            script += [f"mount --bind '{h}' '{self.root}{c}'"]
        script += [f"mount --rbind /dev '{self.root}/dev'",
                   f"mount -t proc proc '{self.root}/proc'",
                   "exec " + " ".join(f"'{a}'" for a in self._as_user(
                       self.cfg["Entrypoint"] + (self.args or
                                                 self.cfg.get("Cmd") or [])))]
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--propagation",
             "private", "--", "sh", "-c", "\n".join(script)],
            stdout=log, stderr=log)
        log.close()
        return self

    def _as_user(self, argv, extra_env=None):
        return in_root(self.root, argv, self._env(extra_env),
                       self.cfg["User"])

    def init_pid(self):
        """The host pid of the container's PID 1."""
        if self.podman:
            return int(cmd("podman", *STORE, "inspect", "--format",
                           "{{.State.Pid}}", self.name).stdout)
        def child():
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/"
                          "children") as f:
                    return int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                return None
        return fx.wait_until(child, 10)

    def exec(self, *argv):
        if self.podman:
            return cmd("podman", *STORE, "exec", self.name, *argv,
                       check=False)
        return cmd("nsenter", "-t", str(self.init_pid()), "-m", "-p", "--",
                   *self._as_user(list(argv)), check=False)

    def remove(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.podman:
            cmd("podman", *STORE, "rm", "-f", self.name, check=False)
        else:
            cmd("buildah", *STORE, "umount", self.ctr, check=False)
            cmd("buildah", *STORE, "rm", self.ctr, check=False)


class Resolver:
    """A DNS server on a loopback address (port 53, as resolv.conf
    allows no other) that answers one name's A query with 127.0.0.1,
    every other question with no address; it counts the A queries."""

    def __init__(self, name):
        self.name, self.asked = name.lower(), 0
        for _ in range(20):
            self.addr = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.addr, 53))
                break
            except OSError:
                self.sock.close()
        else:
            raise OSError("no free loopback address for port 53")
        self.sock.settimeout(0.2)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.done.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            labels, i = [], 12
            while i < len(q) and q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
                i += 1 + q[i]
            qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
            end = i + 5
            hit = ".".join(labels).lower() == self.name and qtype == 1
            self.asked += hit
            head = struct.pack("!HHHHHH", struct.unpack("!H", q[:2])[0],
                               0x8180, 1, int(hit), 0, 0)
            answer = (struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4)
                      + socket.inet_aton("127.0.0.1")) if hit else b""
            self.sock.sendto(head + q[12:end] + answer, peer)

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


class ImageTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.ctrs = []

    def tearDown(self):
        for c in self.ctrs:
            c.remove()
        self.env.close()

    def volume(self, name):
        """A host directory owned by the image's user, as a volume is."""
        d = os.path.join(self.env.root, name)
        os.makedirs(d, exist_ok=True)
        uid, gid = (int(x) for x in image_config()["User"].split(":"))
        os.chown(d, uid, gid)
        os.chmod(d, 0o700)
        return d

    def test_image_is_non_root_with_health_check_and_no_build_tools(self):
        cfg = image_config()
        self.assertEqual(cfg["User"], "10001:10001")
        self.assertEqual(cfg["Entrypoint"], ["idlefetch"])
        self.assertEqual(cfg["Healthcheck"]["Test"],
                         ["CMD", "idlefetch", "status"])
        self.assertEqual(set(cfg["Volumes"]), {"/mail", "/var/lib/idlefetch"})

    def test_image_holds_the_binary_its_libraries_and_no_shell(self):
        size = int(cmd("podman", *STORE, "image", "inspect", "--format",
                       "{{.Size}}", IMAGE).stdout)
        print(f"\nimage size: {size / 1e6:.1f} MB")
        self.assertLessEqual(size, MAX_IMAGE_BYTES)
        ctr, root = image_root()
        try:
            files = set()
            for d, _, names in os.walk(root):
                for n in names:
                    if not os.path.islink(os.path.join(d, n)):
                        files.add(os.path.relpath(os.path.join(d, n), root))
            for sh in ("bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox",
                       "usr/bin/env", "usr/bin/apt-get", "usr/bin/dpkg"):
                self.assertFalse(os.path.lexists(os.path.join(root, sh)), sh)
            self.assertEqual(os.listdir(os.path.join(root, "usr/bin")),
                             ["idlefetch"])
            # Exactly the libraries the binary needs, and its loader.
            dyn = cmd("readelf", "-d", "-l",
                      os.path.join(root, "usr/bin/idlefetch")).stdout
            needed = set(l.split("[")[1].rstrip("]") for l in
                         dyn.splitlines() if "(NEEDED)" in l)
            interp = dyn.split("interpreter: ")[1].split("]")[0]
            self.assertTrue(os.path.exists(root + interp), interp)
            libs = {os.path.basename(f) for f in files if ".so" in f}
            self.assertEqual(libs, needed | {os.path.basename(interp)})
            self.assertFalse([n for n in needed if "etpan" in n], needed)
            # The CAs also under their hashed names: a handshake reads only
            # the ones a chain needs (tls.c), not the whole bundle.
            hashed = {f for f in files
                      if re.fullmatch(r"etc/ssl/certs/[0-9a-f]{8}\.[0-9]+", f)}
            self.assertGreater(len(hashed), 100)
            for f in hashed:
                with open(os.path.join(root, f)) as c:
                    self.assertIn("BEGIN CERTIFICATE", c.read(), f)
            rest = {f for f in files if ".so" not in f
                    and not f.startswith("usr/share/doc/")} - hashed
            self.assertEqual(rest, {"usr/bin/idlefetch", "etc/passwd",
                                    "etc/group", "etc/nsswitch.conf",
                                    "etc/ssl/certs/ca-certificates.crt"})
            # OpenSSL's default CA file (set_default_verify_paths).
            with open(os.path.join(root, "etc/ssl/certs/"
                                   "ca-certificates.crt")) as f:
                self.assertIn("BEGIN CERTIFICATE", f.read())
            self.assertEqual(os.readlink(os.path.join(
                root, "usr/lib/ssl/cert.pem")),
                "/etc/ssl/certs/ca-certificates.crt")
            p = cmd(*in_root(root, ["idlefetch", "--version"],
                             {"PATH": "/usr/bin"}, "10001:10001"),
                    check=False)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            cmd("buildah", *STORE, "rm", ctr, check=False)

    def test_mail_lands_status_is_healthy_and_sigterm_stops_it(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(5)])
        mail, state = self.volume("mail"), self.volume("state")
        secrets = os.path.join(self.env.root, "secrets")
        os.makedirs(secrets)
        with open(os.path.join(secrets, "password"), "w") as f:
            f.write(fx.PASSWORD + "\n")
        # Readable by the image's user (10001) through its group only, as
        # Kubernetes' fsGroup gives it: idlefetch refuses a password file
        # every user can read.
        os.chown(os.path.join(secrets, "password"), 0, 10001)
        os.chmod(os.path.join(secrets, "password"), 0o440)
        shutil.copy(d.certs.ca, os.path.join(secrets, "ca.crt"))
        env = {"IDLEFETCH_ACCOUNT": "alice", "IDLEFETCH_HOST": "127.0.0.1",
               "IDLEFETCH_PORT": str(d.imaps_port),
               "IDLEFETCH_CA_FILE": "/run/secrets/mail/ca.crt",
               "IDLEFETCH_USERNAME": fx.USER,
               "IDLEFETCH_PASSWORD_FILE": "/run/secrets/mail/password"}
        c = Container(env, {mail: "/mail", state: "/var/lib/idlefetch",
                            secrets: "/run/secrets/mail"},
                      os.path.join(self.env.root, "container.log"))
        self.ctrs.append(c)
        if not c.podman:
            print(f"\n(podman cannot run containers here: {podman_runs()}; "
                  "running the image's root in new namespaces)")
        c.start()
        md = fx.Maildir(mail)

        def log():
            with open(c.logfile, errors="replace") as f:
                return f.read()
        self.assertTrue(fx.wait_until(lambda: md.count() == 5, 30), log())
        d.lmtp(fx.make_message(7))  # pushed while it idles
        self.assertTrue(fx.wait_until(lambda: md.count() == 6, 15), log())
        pid = c.init_pid()
        with open(f"/proc/{pid}/status") as f:
            st = {l.split()[0]: l.split()[1:] for l in f}
        self.assertEqual(st["NSpid:"][-1], "1", "idlefetch is PID 1")
        self.assertEqual(st["Uid:"][0], "10001")
        self.assertTrue(fx.wait_until(
            lambda: " up " in c.exec("idlefetch", "status").stdout, 10))
        p = c.exec("idlefetch", "status")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("healthy: 1 folder(s)", p.stdout, p.stdout + p.stderr)
        self.assertIn("INBOX", p.stdout)
        self.assertIn(" up ", p.stdout)

        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        rc = c.proc.wait(10)
        took = time.monotonic() - t0
        print(f"\nSIGTERM to exit: {took:.2f} s")
        self.assertEqual(rc, 0, log())
        self.assertLess(took, 2.0)
        self.assertIn("exiting with status 0", log())


    def test_host_name_resolves_and_user_is_known_without_a_shell(self):
        """host = a name: glibc's own files and dns services resolve it
        through the resolv.conf the runtime mounts; user = the image's
        user is found in its /etc/passwd."""
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(3)])
        mail, state = self.volume("mail"), self.volume("state")
        dns = Resolver("imap.example.org")
        self.addCleanup(dns.close)
        resolv = os.path.join(self.env.root, "resolv.conf")
        with open(resolv, "w") as f:
            f.write(f"nameserver {dns.addr}\noptions timeout:1 attempts:2\n")
        env = {"IDLEFETCH_ACCOUNT": "alice",
               "IDLEFETCH_HOST": "imap.example.org",
               "IDLEFETCH_PORT": str(d.imap_port), "IDLEFETCH_TLS": "none",
               "IDLEFETCH_USERNAME": fx.USER,
               "IDLEFETCH_PASSWORD": fx.PASSWORD,
               "IDLEFETCH_USER": "idlefetch"}
        c = Container(env, {mail: "/mail", state: "/var/lib/idlefetch",
                            resolv: "/etc/resolv.conf"},
                      os.path.join(self.env.root, "once.log"), ["--once"])
        self.ctrs.append(c)
        c.start()
        rc = c.proc.wait(60)
        with open(c.logfile, errors="replace") as f:
            log = f.read()
        self.assertEqual(rc, 0, log)
        self.assertEqual(fx.Maildir(mail).count(), 3, log)
        self.assertGreater(dns.asked, 0, "no A query reached the resolver")

    def test_password_command_needing_a_shell_is_refused_in_the_image(self):
        """The image has no /bin/sh: a password_command with shell syntax
        is a configuration error naming the key, not a hang."""
        ctr, root = image_root()
        try:
            env = image_env({"IDLEFETCH_HOST": "imap.example.org",
                             "IDLEFETCH_USERNAME": "alice",
                             "IDLEFETCH_PASSWORD_COMMAND":
                                 "cat /run/secrets/pw | head -1"})
            p = cmd(*in_root(root, ["idlefetch", "--check-config"], env,
                             "10001:10001"), check=False)
            self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
            self.assertIn("IDLEFETCH_PASSWORD_COMMAND", p.stderr)
            self.assertIn("no such file or directory", p.stderr)
        finally:
            cmd("buildah", *STORE, "rm", ctr, check=False)


class ManifestTest(unittest.TestCase):
    def load(self, name):
        with open(os.path.join(DOCKER, name)) as f:
            return list(yaml.safe_load_all(f))

    def check_env_with_image(self, env, secret_path):
        """The image's binary accepts the manifest's settings."""
        ctr = cmd("buildah", *STORE, "from", IMAGE).stdout.strip()
        try:
            root = cmd("buildah", *STORE, "mount", ctr).stdout.strip()
            os.makedirs(root + os.path.dirname(secret_path), exist_ok=True)
            with open(root + secret_path, "w") as f:
                f.write("secret\n")
            # As the manifests ask: readable by idlefetch alone.
            os.chmod(root + secret_path, 0o600)
            p = cmd(*in_root(root, ["idlefetch", "--check-config"],
                             image_env(env)), check=False)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertNotIn("secret", p.stdout)
            return p.stdout
        finally:
            cmd("buildah", *STORE, "rm", ctr, check=False)

    def test_kubernetes_sidecar(self):
        (dep,) = self.load("k8s-sidecar.yaml")
        self.assertEqual(dep["kind"], "Deployment")
        spec = dep["spec"]["template"]["spec"]
        ctrs = {c["name"]: c for c in spec["containers"]}
        f = ctrs["idlefetch"]
        self.assertEqual(f["livenessProbe"]["exec"]["command"],
                         ["idlefetch", "status"])
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in f["volumeMounts"]}
        env = {e["name"]: e["value"] for e in f["env"]}
        # The Maildir is shared with the application container.
        app_mounts = {m["name"] for c in spec["containers"]
                      if c["name"] != "idlefetch" for m in c["volumeMounts"]}
        self.assertIn("maildir", app_mounts)
        self.assertEqual(mounts["maildir"], env["IDLEFETCH_MAILDIR"])
        self.assertEqual(mounts["state"], env["IDLEFETCH_STATE_DIR"])
        # The password is a file from a Secret, never a variable.
        self.assertIn("secret", vols["credentials"])
        self.assertNotIn("IDLEFETCH_PASSWORD", env)
        self.assertTrue(env["IDLEFETCH_PASSWORD_FILE"].startswith(
            mounts["credentials"] + "/"))
        self.assertEqual(spec["securityContext"]["runAsUser"], 10001)
        self.assertIn("memory", f["resources"]["limits"])
        out = self.check_env_with_image(env, env["IDLEFETCH_PASSWORD_FILE"])
        self.assertIn("[account alice]", out)

    def test_kubernetes_statefulset_shards(self):
        cm, sts = self.load("k8s-statefulset.yaml")
        self.assertEqual(sts["kind"], "StatefulSet")
        spec = sts["spec"]["template"]["spec"]
        (f,) = spec["containers"]
        env = {e["name"]: e["value"] for e in f["env"]}
        # As many shards as replicas, or accounts are fetched by none.
        self.assertEqual(int(env["IDLEFETCH_SHARDS"]), sts["spec"]["replicas"])
        mounts = {m["name"]: m["mountPath"] for m in f["volumeMounts"]}
        self.assertEqual(mounts["config"], "/etc/idlefetch")
        conf = cm["data"]["idlefetch.conf"]
        self.assertIn("shard = auto", conf)
        # Each pod's binary, under its pod name, takes its share; all
        # shares together are every account, once.
        ctr = cmd("buildah", *STORE, "from", IMAGE).stdout.strip()
        try:
            root = cmd("buildah", *STORE, "mount", ctr).stdout.strip()
            os.makedirs(root + "/etc/idlefetch", exist_ok=True)
            with open(root + "/etc/idlefetch/idlefetch.conf", "w") as fp:
                fp.write(conf)
            os.makedirs(root + "/run/secrets/mail", exist_ok=True)
            for name in ("alice", "bob"):
                with open(root + f"/run/secrets/mail/{name}", "w") as fp:
                    fp.write("secret\n")
                os.chmod(root + f"/run/secrets/mail/{name}", 0o600)
            taken = []
            run = " ".join(f"'{a}'" for a in in_root(
                root, ["idlefetch", "--check-config"], image_env(
                    {"IDLEFETCH_SHARDS": env["IDLEFETCH_SHARDS"]})))
            for i in range(sts["spec"]["replicas"]):
                p = cmd("unshare", "-u", "sh", "-c",
                        f"hostname {sts['metadata']['name']}-{i} && "
                        f"exec {run}", check=False)
                self.assertEqual(p.returncode, 0, p.stderr)
                line = next(l for l in p.stdout.splitlines()
                            if l.startswith("; this replica takes:"))
                names = line.split(":", 1)[1].split("(")[0]
                taken += [n.strip() for n in names.split(",")
                          if n.strip() and n.strip() != "nothing"]
            self.assertEqual(sorted(taken), ["alice", "bob"])
        finally:
            cmd("buildah", *STORE, "rm", ctr, check=False)

    def test_compose(self):
        (doc,) = self.load("compose.yaml")
        svc = doc["services"]["idlefetch"]
        self.assertEqual(svc["build"]["dockerfile"], "docker/Dockerfile")
        env = dict(svc["environment"])
        self.assertEqual(env["IDLEFETCH_PASSWORD_FILE"],
                         "/run/secrets/" + svc["secrets"][0])
        app = {v.split(":")[0] for v in doc["services"]["app"]["volumes"]}
        self.assertIn("maildir", app)
        env.setdefault("IDLEFETCH_MAILDIR", "/mail")
        out = self.check_env_with_image(env, env["IDLEFETCH_PASSWORD_FILE"])
        self.assertIn("folders = INBOX, Lists/dev", out)


if __name__ == "__main__":
    unittest.main()
