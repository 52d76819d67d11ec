"""Courier-IMAP and Cyrus IMAP as test fixtures, beside the Dovecot one.

Both conflict with dovecot-imapd as Debian packages (they all provide
imap-server), so they run from packages unpacked with `dpkg -x` into the
cache directory. Their compiled-in paths (/etc/courier, /usr/lib/cyrus,
/run/...) are made real inside a private mount namespace: /usr and /etc are
overlays of the unpacked tree over the system's, /run is a fresh tmpfs. The
server listens on loopback in the shared network namespace, so idlefetch and
the test talk to it as to any server. Nothing outside the test's temporary
directory and the cache is written.

The interface matches fixture.Dovecot where the tests need it: imap_port,
imaps_port, certs, start/stop/restart, put, deliver, count, message_ids,
flags, create."""
import fcntl
import glob
import imaplib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import fixture as fx

CACHE = os.environ.get("IDLEFETCH_CACHE", "/var/cache/idlefetch-test")

PACKAGES = {
    "courier": ["courier-imap", "courier-base", "courier-authlib",
                "courier-authlib-userdb", "courier-authdaemon", "gamin"],
    "cyrus": ["cyrus-common", "cyrus-imapd"],
}

MAIL_UID = 5000


def cannot_run():
    """Why these fixtures cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace with overlays"
    if not shutil.which("unshare"):
        return "unshare(1) is missing"
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            return "the kernel has no overlay file system"
    return None


def unpacked(name):
    """The directory holding the named server's packages, unpacked with
    dpkg -x; downloaded with apt-get the first time."""
    top = os.path.join(CACHE, "servers")
    os.makedirs(top, exist_ok=True)
    d = os.path.join(top, name)
    stamp = os.path.join(d, ".complete")
    with open(os.path.join(top, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(stamp):
            return d
        shutil.rmtree(d, ignore_errors=True)
        dl = d + ".download"
        shutil.rmtree(dl, ignore_errors=True)
        os.makedirs(dl)
        cmd = ["apt-get", "download", "-q"] + PACKAGES[name]
        if subprocess.run(cmd, cwd=dl, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            fx.run(["apt-get", "update", "-qq"])
            fx.run(cmd, cwd=dl)
        os.makedirs(d)
        for deb in sorted(glob.glob(f"{dl}/*.deb")):
            fx.run(["dpkg", "-x", deb, d])
        with open(stamp, "w") as f:
            f.write("\n".join(sorted(os.listdir(dl))) + "\n")
        shutil.rmtree(dl)
        return d


class NamespacedServer:
    """A server started by a shell script inside `unshare -m`. The script
    mounts the overlays, prepares the server and execs it in the
    foreground; stop() kills the whole process group."""

    name = None

    def __init__(self, root, certs):
        self.root = root
        self.certs = certs
        self.pkg = unpacked(self.name)
        self.d = os.path.join(root, self.name)
        os.makedirs(self.d, exist_ok=True)
        os.chmod(root, 0o755)
        os.chmod(self.d, 0o755)
        self.imap_port = fx.free_port()
        self.imaps_port = fx.free_port()
        self.proc = None
        self.logfile = os.path.join(self.d, "server.log")
        self.first_start = True

    def mounts(self):
        d, pkg = self.d, self.pkg
        for sub in ("etc-up", "etc-work"):
            os.makedirs(f"{d}/{sub}", exist_ok=True)
        return f"""set -eu
mount -t overlay overlay -o lowerdir={pkg}/usr:/usr /usr
mount -t overlay overlay -o lowerdir={pkg}/etc:/etc,upperdir={d}/etc-up,workdir={d}/etc-work /etc
mount -t tmpfs tmpfs /run
"""

    def script(self):
        raise NotImplementedError

    def start(self):
        path = os.path.join(self.d, "start.sh")
        with open(path, "w") as f:
            f.write(self.mounts() + self.script())
        log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", path],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        if not fx.wait_until(lambda: self._greets(self.imap_port), 20, 0.1):
            self.stop()
            raise RuntimeError(f"{self.name} did not answer on "
                               f"{self.imap_port}: " + self.log())
        if self.first_start:
            self.first_start = False
            self.after_first_start()
        return self

    def after_first_start(self):
        pass

    @staticmethod
    def _greets(port):
        try:
            c = imaplib.IMAP4("127.0.0.1", port, timeout=2)
        except OSError:
            return False
        try:
            c.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
        return True

    def stop(self):
        """Stops the server and every connection process it forked."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None
        # Forked children die with the group; wait for the port to free.
        fx.wait_until(lambda: not fx.Dovecot._accepts(self.imap_port), 15)

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # What a user of the server sees, through IMAP as the test user.

    def client(self):
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        c.login(fx.USER, fx.PASSWORD)
        return c

    def _fetch(self, folder, item):
        c = self.client()
        try:
            typ, _ = c.select(self.mailbox(folder), readonly=True)
            if typ != "OK":
                raise RuntimeError(f"cannot examine {folder}")
            typ, data = c.uid("FETCH", "1:*", f"(UID {item})")
            out = {}
            for part in data:
                if part is None:
                    continue
                if isinstance(part, tuple):
                    head, payload = part
                    uid = int(head.split(b"UID ")[1].split()[0])
                    out[uid] = payload
                elif b"UID " in part:
                    uid = int(part.split(b"UID ")[1].split()[0].rstrip(b")"))
                    out.setdefault(uid, part)
            return out
        finally:
            c.logout()

    def message_ids(self, folder="INBOX"):
        got = self._fetch(folder, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        return [fx.message_id(v.replace(b"\r\n", b"\n")) for _, v in
                sorted(got.items())]

    def count(self, folder="INBOX"):
        c = self.client()
        try:
            typ, data = c.status(self.mailbox(folder), "(MESSAGES)")
            return int(data[0].split(b"MESSAGES ")[1].split(b")")[0])
        finally:
            c.logout()

    def flags(self, folder="INBOX"):
        """{uid: flags}, as fixture.Dovecot.flags gives them."""
        got = self._fetch(folder, "FLAGS")
        res = {}
        for uid, line in got.items():
            inner = line.split(b"FLAGS (")[1].split(b")")[0]
            res[uid] = inner.decode()
        return res

    def create(self, folder):
        c = self.client()
        try:
            typ, data = c.create(self.mailbox(folder))
            if typ != "OK":
                raise RuntimeError(f"CREATE {folder}: {data}")
        finally:
            c.logout()

    def subscribe(self, folder):
        c = self.client()
        try:
            typ, data = c.subscribe(self.mailbox(folder))
            if typ != "OK":
                raise RuntimeError(f"SUBSCRIBE {folder}: {data}")
        finally:
            c.logout()

    def append(self, body, folder="INBOX"):
        c = self.client()
        try:
            typ, data = c.append(self.mailbox(folder), None, None,
                                 body.replace(b"\n", b"\r\n"))
            if typ != "OK":
                raise RuntimeError(f"APPEND {folder}: {data}")
        finally:
            c.logout()

    def mailbox(self, folder):
        """The server's name for a folder given as INBOX or a plain name."""
        return folder if folder == "INBOX" else f"INBOX.{folder}"


class Courier(NamespacedServer):
    """Courier-IMAP 5 with courier-authlib's userdb, IMAP_ENHANCEDIDLE on
    (gamin), STARTTLS through couriertls. Only STARTTLS is served: Courier's
    implicit-TLS service is a separate couriertcpd wrapper the tests do not
    need."""

    name = "courier"

    def __init__(self, root, certs):
        super().__init__(root, certs)
        self.home = os.path.join(self.d, "home", fx.USER)
        self.maildir_root = os.path.join(self.home, "Maildir")
        self.pem = os.path.join(self.d, "imapd.pem")
        crt, key = certs.server
        with open(self.pem, "w") as out:
            for p in (key, crt):
                with open(p) as f:
                    out.write(f.read())
        os.chmod(self.pem, 0o600)
        self.imaps_port = None
        self._seq = 0

    def script(self):
        d, u = self.d, fx.USER
        caps = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE IDLE"
        return f"""
grep -q '^ifmail:' /etc/passwd || echo 'ifmail:x:{MAIL_UID}:{MAIL_UID}::{self.home}:/usr/sbin/nologin' >> /etc/passwd
grep -q '^ifmail:' /etc/group || echo 'ifmail:x:{MAIL_UID}:' >> /etc/group
grep -q '^courier:' /etc/passwd || echo 'courier:x:{MAIL_UID + 2}:{MAIL_UID + 2}::/nonexistent:/usr/sbin/nologin' >> /etc/passwd
grep -q '^courier:' /etc/group || echo 'courier:x:{MAIL_UID + 2}:' >> /etc/group
chown courier {self.pem}
mkdir -p /run/courier/authdaemon
cat > /etc/courier/authdaemonrc <<'EOF'
authmodulelist="authuserdb"
daemons=2
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=0
DEFAULTOPTIONS=""
LOGGEROPTS=""
EOF
printf '%s\\tuid={MAIL_UID}|gid={MAIL_UID}|home=%s|mail=%s|systempw=%s\\n' \
  {u} {self.home} {self.maildir_root} "$(openssl passwd -6 {fx.PASSWORD})" \
  > /etc/courier/userdb
chmod 600 /etc/courier/userdb
makeuserdb
if [ ! -d {self.maildir_root} ]; then
  mkdir -p {self.home}
  maildirmake.courier {self.maildir_root}
  chown -R {MAIL_UID}:{MAIL_UID} {d}/home
fi
/usr/lib/courier/courier-authlib/authdaemond &
for i in $(seq 100); do [ -S /run/courier/authdaemon/socket ] && break; sleep 0.05; done
exec env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin \
  IMAP_CAPABILITY="{caps}" IMAP_CAPABILITY_TLS="{caps} AUTH=PLAIN" \
  IMAP_STARTTLS=YES IMAP_TLS_REQUIRED=0 COURIERTLS=/usr/bin/couriertls \
  TLS_CERTFILE={self.pem} TLS_VERIFYPEER=NONE \
  IMAP_ENHANCEDIDLE=1 IMAP_IDLE_TIMEOUT=60 IMAP_USELOCKS=1 IMAP_UMASK=022 \
  IMAP_KEYWORDS=1 IMAP_ACL=1 IMAP_MAILBOX_SANITY_CHECK=1 \
  IMAP_TRASHFOLDERNAME=Trash IMAP_EMPTYTRASH=Trash:7 \
  IMAP_MOVE_EXPUNGE_TO_TRASH=0 IMAP_CHECK_ALL_FOLDERS=0 \
  /usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 \
  -nodnslookup -noidentlookup {self.imap_port} \
  /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir
"""

    def maildir(self, folder="INBOX"):
        return (self.maildir_root if folder == "INBOX"
                else f"{self.maildir_root}/.{folder}")

    def put(self, messages, folder="INBOX", first=False):
        """Writes messages into the Maildir as a local delivery agent does,
        in order. first: name them so that they sort before every file
        already there (Courier numbers new files in name order)."""
        md = self.maildir(folder)
        for body in messages:
            self._seq += 1
            stem = "0000000001" if first else str(int(time.time()))
            name = f"{stem}.M{self._seq:06d}P{os.getpid()}.test"
            tmp = f"{md}/tmp/{name}"
            with open(tmp, "wb") as f:
                f.write(body)
            os.chown(tmp, MAIL_UID, MAIL_UID)
            os.rename(tmp, f"{md}/new/{name}")

    def deliver(self, body, folder="INBOX"):
        self.put([body], folder)


class Cyrus(NamespacedServer):
    """Cyrus IMAP 3.6 with Debian's namespace settings (INBOX.Sub, "."),
    idled for prompt IDLE, implicit TLS and STARTTLS. Authentication is
    SASL's alwaystrue check: any password is accepted."""

    name = "cyrus"

    def script(self):
        d = self.d
        crt, key = self.certs.server
        return f"""
grep -q '^cyrus:' /etc/passwd || echo 'cyrus:x:{MAIL_UID + 1}:8::{d}/conf:/usr/sbin/nologin' >> /etc/passwd
mkdir -p /run/cyrus/socket /run/cyrus/proc /run/cyrus/lock {d}/conf {d}/spool {d}/sieve
install -m 0644 {crt} {d}/server.crt
install -m 0600 {key} {d}/server.key
cat > /etc/imapd.conf <<'EOF'
configdirectory: {d}/conf
proc_path: /run/cyrus/proc
mboxname_lockpath: /run/cyrus/lock
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/sieve
altnamespace: no
unixhierarchysep: no
hashimapspool: true
autocreate_quota: 0
admins: admin
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
idlesocket: /run/cyrus/socket/idle
notifysocket: /run/cyrus/socket/notify
lmtpsocket: /run/cyrus/socket/lmtp
event_notifier: idle
tls_server_cert: {d}/server.crt
tls_server_key: {d}/server.key
EOF
cat > {d}/cyrus.conf <<'EOF'
START {{
  recover cmd="ctl_cyrusdb -r"
}}
SERVICES {{
  imap cmd="imapd" listen="127.0.0.1:{self.imap_port}" prefork=0
  imaps cmd="imapd -s" listen="127.0.0.1:{self.imaps_port}" prefork=0
}}
DAEMON {{
  idled cmd="idled"
}}
EOF
chown -R cyrus:8 {d}/conf {d}/spool {d}/sieve {d}/server.key /run/cyrus
/usr/lib/cyrus/bin/makedirs >/dev/null
exec /usr/lib/cyrus/bin/master -C /etc/imapd.conf -M {d}/cyrus.conf -D
"""

    def after_first_start(self):
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        c.login("admin", "x")
        typ, data = c.create(f"user.{fx.USER}")
        c.logout()
        if typ != "OK":
            raise RuntimeError(f"cyrus: cannot create the user: {data}")

    def put(self, messages, folder="INBOX"):
        for body in messages:
            self.append(body, folder)

    def deliver(self, body, folder="INBOX"):
        self.append(body, folder)


class ServerEnv(fx.Env):
    """fixture.Env with Courier or Cyrus in Dovecot's place."""

    def __init__(self, cls):
        self.root = tempfile.mkdtemp(prefix=f"idlefetch-{cls.name}-")
        os.chmod(self.root, 0o755)
        self.certs = fx.Certs(os.path.join(self.root, "certs"))
        self.dovecot = cls(self.root, self.certs).start()
        self.fetchers = []
