"""Test fixtures for idlefetch: a throwaway Dovecot on loopback with its own
CA and certificates, an idlefetch runner, and Maildir helpers.

Everything lives in one temporary directory; nothing system-wide is touched
beyond the installed packages."""
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

IDLEFETCH = os.environ.get("IDLEFETCH_BIN", "idlefetch")
USER = "alice"
PASSWORD = "pass"

DEFAULT_CAPS = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
                "THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE "
                "UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
                "ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE")


def free_port():
    """A free loopback port below the kernel's ephemeral range: a port
    from that range can be taken as the source port of any outgoing
    connection (idlefetch's, a proxy's) before the server binds it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    while True:
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_until(pred, timeout, step=0.05):
    """Polls pred until it is true or timeout seconds pass; returns its value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


def gone(pid):
    """Whether pid has ended: no process, or a zombie not yet reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def rss_kb(pid):
    """The resident memory of a process in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kw)


class Certs:
    """A CA with a server certificate for localhost/127.0.0.1, a second
    certificate for another name, and an unrelated CA."""

    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.ca, self.ca_key = self._ca("ca", "idlefetch test CA")
        self.other_ca, self.other_ca_key = self._ca("otherca", "untrusted CA")
        self.server = self._leaf("server", self.ca, self.ca_key,
                                 "DNS:localhost,IP:127.0.0.1")
        self.wrong_host = self._leaf("wronghost", self.ca, self.ca_key,
                                     "DNS:mail.example.net")
        self.untrusted = self._leaf("untrusted", self.other_ca,
                                    self.other_ca_key,
                                    "DNS:localhost,IP:127.0.0.1")

    def _ca(self, name, cn):
        crt, key = f"{self.d}/{name}.crt", f"{self.d}/{name}.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
             "-days", "2", "-subj", f"/CN={cn}"])
        return crt, key

    def _leaf(self, name, ca, ca_key, san):
        crt, key, csr = (f"{self.d}/{name}.crt", f"{self.d}/{name}.key",
                         f"{self.d}/{name}.csr")
        ext = f"{self.d}/{name}.ext"
        with open(ext, "w") as f:
            f.write(f"subjectAltName = {san}\n")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext])
        return crt, key


class Dovecot:
    """A Dovecot with IMAP (143-style, STARTTLS offered), IMAPS and LMTP on
    free loopback ports. caps replaces the post-login capability list."""

    def __init__(self, root, certs, caps=DEFAULT_CAPS, cert="server",
                 extra="", userip=200):
        self.root = root
        self.certs = certs
        self.d = os.path.join(root, "dovecot")
        os.makedirs(self.d, exist_ok=True)
        os.chmod(root, 0o755)
        os.chmod(self.d, 0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.lmtp_port = free_port()
        self.caps = caps
        self.cert = cert
        self.extra = extra
        self.userip = userip
        self.conf = os.path.join(self.d, "dovecot.conf")
        self.mail = os.path.join(self.d, "mail")
        os.makedirs(self.mail, exist_ok=True)
        shutil.chown(self.mail, "dovecot", "dovecot")
        self.write_conf()

    def write_conf(self):
        crt, key = getattr(self.certs, self.cert)
        d = self.d
        with open(self.conf, "w") as f:
            f.write(f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{crt}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{self.mail}/%u/Maildir
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 1
mail_max_userip_connections = {self.userip}
imap_capability = {self.caps}
auth_verbose = yes
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={self.mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@localhost
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Archive {{
    auto = create
  }}
}}
{self.extra}
""")

    def start(self):
        # Dovecot daemonises and its children keep inherited pipes open.
        for attempt in range(3):
            p = subprocess.run(["dovecot", "-c", self.conf],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if p.returncode == 0:
                break
            # A port taken meanwhile (by another suite's server): the
            # first start may move to others; a restart must keep them.
            if getattr(self, "started", False) or attempt == 2:
                raise RuntimeError(f"dovecot did not start (exit "
                                   f"{p.returncode}): " + self.log())
            self.imap_port, self.imaps_port, self.lmtp_port = (
                free_port(), free_port(), free_port())
            self.write_conf()
        self.started = True
        for port in (self.imap_port, self.imaps_port, self.lmtp_port):
            ok = wait_until(lambda: self._accepts(port), 15)
            if not ok:
                raise RuntimeError(f"dovecot did not listen on {port}: "
                                   + self.log())
        # stop() finds every process through the master's pid file.
        wait_until(lambda: self._master() is not None, 15)
        return self

    def _master(self):
        try:
            with open(f"{self.d}/run/master.pid") as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _children(self):
        master = self._master()
        if master is None:
            return []
        kids = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                kids.append(int(pid))
        return kids

    def stop(self, graceful=False):
        """Stops Dovecot and every process it started: an imap or
        imap-login process left behind would keep clients connected.
        graceful: as an administrator does (its clients get a BYE);
        else killed at once, which is quicker."""
        early = self._children()
        if graceful:
            subprocess.run(["doveadm", "-c", self.conf, "stop"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            wait_until(lambda: self._master() is None, 15)
        # A clean shutdown waits seconds for its children; nothing of a
        # throwaway Dovecot needs one. Its mail is on disk as written.
        # The master leads its process group, children forked a moment
        # ago included.
        master = self._master()
        kids = early + self._children()
        if master:
            try:
                os.killpg(master, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids + ([master] if master else []):
            wait_until(lambda: gone(pid), 15, step=0.01)
        try:
            os.unlink(f"{self.d}/run/master.pid")
        except FileNotFoundError:
            pass
        wait_until(lambda: not self._accepts(self.imap_port), 15, step=0.01)

    @staticmethod
    def _accepts(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self):
        try:
            with open(f"{self.d}/dovecot.log", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def maildir(self, folder="INBOX"):
        base = f"{self.mail}/{USER}/Maildir"
        return base if folder == "INBOX" else f"{base}/.{folder.replace('/', '.')}"

    def put(self, messages, seen=False, folder="INBOX"):
        """Writes messages (bytes) straight into the user's Maildir and
        builds Dovecot's index, in the given order (UIDs follow it)."""
        md = self.maildir(folder)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(f"{md}/{sub}", exist_ok=True)
        base = int(time.time())
        for i, body in enumerate(messages):
            seq = getattr(self, "_seq", 0) + 1
            self._seq = seq
            name = f"{base}.M{seq}P{os.getpid()}.test"
            path = f"{md}/cur/{name}:2,S" if seen else f"{md}/new/{name}"
            with open(path, "wb") as f:
                f.write(body)
        run(["chown", "-R", "dovecot:dovecot", f"{self.mail}/{USER}"])
        self.doveadm("mailbox", "status", "-u", USER, "messages", folder)

    def doveadm(self, *args):
        return run(["doveadm", "-c", self.conf] + list(args)).stdout.decode()

    def flags(self, folder="INBOX"):
        """{uid: flags} as Dovecot sees them."""
        out = self.doveadm("fetch", "-u", USER, "uid flags", "mailbox", folder,
                           "all")
        res, uid = {}, None
        for line in out.splitlines():
            if line.startswith("uid: "):
                uid = int(line[5:])
            elif line.startswith("flags:"):
                res[uid] = line[6:].strip()
        return res

    def message_ids(self, folder="INBOX"):
        out = self.doveadm("fetch", "-u", USER, "hdr.message-id", "mailbox",
                           folder, "all")
        return [l.split(":", 1)[1].strip() for l in out.splitlines()
                if l.startswith("hdr.message-id:")]

    def count(self, folder="INBOX"):
        out = self.doveadm("mailbox", "status", "-u", USER, "messages", folder)
        return int(out.strip().split("=")[1])

    def save(self, body, folder):
        """Delivers into any folder (doveadm save), as a filter would."""
        subprocess.run(["doveadm", "-c", self.conf, "save", "-u", USER, "-m",
                        folder], input=body, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def connections_refused(self):
        """Logins Dovecot refused for too many connections of the user."""
        return self.log().count("Maximum number of connections")

    def lmtp(self, body, rcpt=USER):
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as c:
            c.sendmail("sender@example.org", [rcpt], body)


def make_message(i, size=0, subject=None):
    """A message with LF line ends (as Dovecot stores it); size pads the body."""
    subject = subject or f"test message {i}"
    head = (f"From: sender@example.org\nTo: {USER}@localhost\n"
            f"Subject: {subject}\nMessage-ID: <m{i}.{time.time_ns()}@test>\n"
            f"\n").encode()
    body = f"Body of message {i}.\n".encode()
    if size > len(head) + len(body):
        line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 2)[:71] + b"\n"
        need = size - len(head) - len(body)
        body += line * (need // len(line)) + b"x" * (need % len(line) - 1 if need % len(line) else 0) + (b"\n" if need % len(line) else b"")
    return head + body


def permanent(flags):
    """{uid: flags} without the session flag \\Recent, which any SELECT
    may clear."""
    return {u: " ".join(x for x in f.split() if x != "\\Recent")
            for u, f in flags.items()}


def message_id(body):
    for line in body.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
        if not line:
            return None
    return None


class Maildir:
    def __init__(self, path):
        self.path = path

    def message_ids(self):
        return [message_id(b) for b in self.contents()]

    def files(self, sub="new"):
        try:
            return sorted(os.listdir(os.path.join(self.path, sub)))
        except FileNotFoundError:
            return []

    def contents(self, sub="new"):
        out = []
        for n in self.files(sub):
            with open(os.path.join(self.path, sub, n), "rb") as f:
                out.append(f.read())
        return out

    def count(self):
        return len(self.files("new"))


def account_section(name, dovecot, folders, maildir):
    """A further [account] of the test user on dovecot over implicit TLS,
    to append to an idlefetch configuration."""
    return (f"\n[account {name}]\nhost = 127.0.0.1\n"
            f"port = {dovecot.imaps_port}\ntls = implicit\n"
            f"ca_file = {dovecot.certs.ca}\nusername = {USER}\n"
            f"password = {PASSWORD}\nfolders = {folders}\n"
            f"maildir = {maildir}\n")


class Idlefetch:
    """Runs idlefetch against a config it writes. Logs go to a file."""

    def __init__(self, root, dovecot, tls="implicit", name="acct",
                 folders="INBOX", after="keep", extra="", certs=None,
                 ca=True, password=PASSWORD, maildir=None, port=None,
                 host="127.0.0.1", wrap=(), deliver=None, glob=""):
        """wrap: a command prefix idlefetch runs under (ip netns exec NS).
        deliver: lines that replace the maildir line (deliver = ...);
        glob: more lines for [global]."""
        self.root = root
        self.name = name
        self.wrap = list(wrap)
        self.dir = os.path.join(root, f"idlefetch-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.maildir_path = maildir or os.path.join(self.dir, "Maildir")
        self.state_dir = os.path.join(self.dir, "state")
        if port is None:
            port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
        ca_line = f"ca_file = {dovecot.certs.ca}\n" if ca else ""
        self.conf = os.path.join(self.dir, "idlefetch.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[global]
state_dir = {self.state_dir}
{glob}
[account {name}]
host = {host}
port = {port}
tls = {tls}
username = {USER}
{"" if password is None else f"password = {password}"}
folders = {folders}
{deliver or f"maildir = {self.maildir_path}"}
after = {after}
{ca_line}{extra}
""")
        # It may hold a password: idlefetch refuses it readable by others.
        os.chmod(self.conf, 0o600)
        self.proc = None
        self.logfile = os.path.join(self.dir, "idlefetch.log")
        self.md = Maildir(self.maildir_path)

    def once(self, *args, timeout=300):
        with open(self.logfile, "ab") as log:
            p = subprocess.run([*self.wrap, IDLEFETCH, "--config", self.conf,
                                "--once", *args], stdout=log, stderr=log,
                               timeout=timeout)
        return p.returncode

    def start(self, *args, env=None):
        """env: variables added to idlefetch's environment."""
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen([*self.wrap, IDLEFETCH, "--config", self.conf,
                                      *args],
                                     stdout=log, stderr=log,
                                     env=dict(os.environ, **(env or {})))
        log.close()
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def log(self):
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def idle(self, timeout=60):
        """Whether the account's status file says IDLE within timeout s."""
        def says_idle():
            try:
                with open(f"{self.state_dir}/{self.name}/status") as st:
                    return "\tIDLE\t" in st.read()
            except OSError:
                return False
        return wait_until(says_idle, timeout)

    def connections(self, port):
        """Established TCP connections of the running idlefetch to port."""
        out = subprocess.run(["ss", "-tnpH", "state", "established",
                              f"( dport = :{port} )"], capture_output=True,
                             text=True).stdout
        return sum(f"pid={self.proc.pid}," in l for l in out.splitlines())


class Env:
    """One temporary directory with certificates and a Dovecot."""

    def __init__(self, **dovecot_kw):
        self.root = tempfile.mkdtemp(prefix="idlefetch-test-")
        os.chmod(self.root, 0o755)
        self.certs = Certs(os.path.join(self.root, "certs"))
        self.dovecot = Dovecot(self.root, self.certs, **dovecot_kw).start()
        self.fetchers = []

    def idlefetch(self, **kw):
        f = Idlefetch(self.root, self.dovecot, **kw)
        self.fetchers.append(f)
        return f

    def close(self):
        for f in self.fetchers:
            f.stop(signal.SIGKILL)
        self.dovecot.stop()
        if os.environ.get("KEEP_TEST_DIR"):
            print("kept", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
