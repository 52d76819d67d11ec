"""A scripted IMAP server on loopback for behaviour Dovecot will not show:
hostile sizes, reordered or missing responses, dropped connections, fake
EXISTS. It speaks just enough IMAP for idlefetch, and each test bends it
through hooks."""
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest


class Mailbox:
    def __init__(self, messages=(), uidvalidity=1):
        self.uidvalidity = uidvalidity
        self.msgs = {}  # uid -> bytes (CRLF line ends)
        self.next_uid = 1
        for m in messages:
            self.add(m)

    def add(self, body):
        uid = self.next_uid
        self.next_uid += 1
        self.msgs[uid] = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return uid

    def uids(self):
        return sorted(self.msgs)


def header_fields(msg, names):
    """The header lines of msg (CRLF) whose names are in names, folded
    lines with them, in the message's order, then the empty line: what
    BODY[HEADER.FIELDS (...)] returns."""
    head = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    out, keep = [], False
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line + b"\r\n")
            continue
        keep = line.split(b":", 1)[0].strip().upper().decode(
            "latin-1") in names
        if keep:
            out.append(line + b"\r\n")
    return b"".join(out) + b"\r\n"


def parse_set(s, maxuid):
    out = set()
    for part in s.split(","):
        if ":" in part:
            a, b = part.split(":")
            a = maxuid if a == "*" else int(a)
            b = maxuid if b == "*" else int(b)
            out.update(range(min(a, b), max(a, b) + 1))
        else:
            out.add(maxuid if part == "*" else int(part))
    return out


class Server:
    """caps: capability string after login (and before, unless
    greeting_caps is given). hooks: name -> callable, see Conn."""

    def __init__(self, mailbox, caps="IMAP4rev1 IDLE UIDPLUS AUTH=PLAIN",
                 greeting=None, hooks=None, tls_cert=None, host="127.0.0.1"):
        self.mailbox = mailbox
        self.tls = None
        if tls_cert:
            import ssl
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls_cert)
        self.caps = caps
        self.greeting = greeting
        self.hooks = hooks or {}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.folders = ["INBOX"]  # what LIST answers with (delimiter ".")
        self.strict_select = False  # True: SELECT refuses other folders
        self.commands = []      # every command line received, in order
        self.connections = 0
        self.idling = []        # live connections currently in IDLE
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=Conn(self, s).run, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()
        self.thread.join(2)

    def notify_exists(self):
        """Sends '* N EXISTS' to every idling connection; returns the time."""
        t = time.monotonic()
        with self.lock:
            for c in list(self.idling):
                c.send(f"* {len(self.mailbox.msgs)} EXISTS\r\n".encode())
        return t


class Conn:
    def __init__(self, server, sock):
        self.srv = server
        self.sock = sock
        # Like a real server: no Nagle delay on small responses, so latency
        # figures measure idlefetch, not this script.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sock.settimeout(30)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def readline(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def hook(self, name, *args):
        h = self.srv.hooks.get(name)
        return h(self, *args) if h else None

    def run(self):
        try:
            self._run()
        except (EOFError, OSError):
            pass
        finally:
            with self.srv.lock:
                if self in self.srv.idling:
                    self.srv.idling.remove(self)
            self.sock.close()

    def _run(self):
        mb = self.srv.mailbox
        greeting = self.srv.greeting
        if greeting is None:
            greeting = f"* OK [CAPABILITY {self.srv.caps}] scripted ready"
        if greeting:  # "": the after_greeting hook sends its own
            self.send(greeting.encode() + b"\r\n")
        if self.hook("after_greeting"):
            return
        while True:
            line = self.readline()
            self.srv.commands.append(line)
            tag, _, rest = line.partition(" ")
            cmd = rest.split(" ")[0].upper()
            if self.hook("command", tag, rest):
                continue
            if cmd == "CAPABILITY":
                self.send(f"* CAPABILITY {self.srv.caps}\r\n{tag} OK done\r\n".encode())
            elif cmd in ("LOGIN", "AUTHENTICATE"):
                if cmd == "AUTHENTICATE" and len(rest.split(" ")) == 2:
                    self.send(b"+ \r\n")
                    self.srv.commands.append(self.readline())
                self.send(f"{tag} OK logged in\r\n".encode())
            elif cmd in ("SELECT", "EXAMINE") and self.srv.strict_select and \
                    rest.split(" ", 1)[1].strip('"') not in self.srv.folders:
                self.send(f"{tag} NO Mailbox doesn't exist\r\n".encode())
            elif cmd in ("SELECT", "EXAMINE"):
                self.send(f"* {len(mb.msgs)} EXISTS\r\n* OK [UIDVALIDITY "
                          f"{mb.uidvalidity}] ok\r\n* OK [UIDNEXT {mb.next_uid}] "
                          f"ok\r\n{tag} OK [READ-ONLY] done\r\n".encode())
            elif cmd == "UID" and rest.split(" ")[1].upper() == "FETCH":
                self.uid_fetch(tag, rest)
            elif cmd == "IDLE":
                self.send(b"+ idling\r\n")
                with self.srv.lock:
                    self.srv.idling.append(self)
                done = self.readline()
                with self.srv.lock:
                    self.srv.idling.remove(self)
                self.srv.commands.append(done)
                self.send(f"{tag} OK idle done\r\n".encode())
            elif cmd == "LOGOUT":
                self.send(f"* BYE bye\r\n{tag} OK bye\r\n".encode())
                return
            elif cmd == "STARTTLS" and self.srv.tls:
                extra = self.hook("starttls", tag) or b""
                self.send(f"{tag} OK begin TLS\r\n".encode() + extra)
                self.buf = b""
                self.sock = self.srv.tls.wrap_socket(self.sock, server_side=True)
            elif cmd == "LIST":
                import fnmatch
                pat = rest.split(" ", 2)[2].strip().strip('"')
                for name in self.srv.folders:
                    if fnmatch.fnmatchcase(name, pat.replace("%", "*")):
                        self.send(f'* LIST (\\HasNoChildren) "." "{name}"\r\n'
                                  .encode())
                self.send(f"{tag} OK list done\r\n".encode())
            elif cmd == "NOOP":
                self.send(f"{tag} OK noop\r\n".encode())
            else:
                self.send(f"{tag} BAD unknown\r\n".encode())

    def uid_fetch(self, tag, rest):
        mb = self.srv.mailbox
        m = re.match(r"UID FETCH (\S+) \((.*)\)", rest, re.I)
        uids = mb.uids()
        wanted = [u for u in sorted(parse_set(m.group(1), uids[-1] if uids else 0))
                  if u in mb.msgs]
        body = "BODY.PEEK[]" in m.group(2).upper()
        fields = re.search(r"HEADER\.FIELDS \(([^)]*)\)", m.group(2), re.I)
        names = fields.group(1).upper().split() if fields else []
        out = []
        for u in wanted:
            seq = uids.index(u) + 1
            msg = mb.msgs[u]
            hdr = b""
            if fields:
                h = header_fields(msg, names)
                hdr = (f" BODY[HEADER.FIELDS ({' '.join(names)})] "
                       f"{{{len(h)}}}\r\n".encode() + h)
            if body:
                r = self.hook("body", u, msg)
                if r is not None:
                    out.append(r)
                    continue
                out.append(f"* {seq} FETCH (UID {u} RFC822.SIZE {len(msg)}"
                           .encode() + hdr +
                           f" BODY[] {{{len(msg)}}}\r\n".encode() + msg
                           + b")\r\n")
            else:
                out.append(f"* {seq} FETCH (UID {u} RFC822.SIZE {len(msg)}"
                           .encode() + hdr + b")\r\n")
        done = f"{tag} OK fetch done\r\n".encode()
        if self.hook("fetch_reply", tag, out, done, body):
            return
        self.send(b"".join(out) + done)


class ScriptedCase(unittest.TestCase):
    """A test against scripted servers (no Dovecot): each test gets its own
    directory, servers and idlefetch runs, all cleaned up after it.
    fetcher_name names the account (and its state directory)."""
    fetcher_name = "s"

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="idlefetch-scripted-")
        self.servers, self.fetchers = [], []

    def tearDown(self):
        for f in self.fetchers:
            f.stop(signal.SIGKILL)
        for s in self.servers:
            s.stop()
        if not os.environ.get("KEEP_TEST_DIR"):
            shutil.rmtree(self.root, ignore_errors=True)

    def server(self, mailbox, **kw):
        s = Server(mailbox, **kw)
        self.servers.append(s)
        return s

    def fetcher(self, srv, name=None, tls="none", **kw):
        import fixture as fx

        class NoDovecot:
            certs = None
        f = fx.Idlefetch(self.root, NoDovecot(), tls=tls,
                         name=name or self.fetcher_name, ca=False,
                         port=srv.port, **kw)
        self.fetchers.append(f)
        return f
