"""A TCP proxy on loopback between idlefetch and a server that injects the
faults of a real network on command:

  cut()                 close every open connection now (a FIN each way)
  blackhole()           keep them open but drop every byte both ways, as a
                        NAT that forgot them does
  throttle(rate)        pass the server's bytes at `rate` bytes a second
  segments(1)           pass every byte in a TCP segment of its own
  reset_in_literal(n)   once the server has sent n bytes of a literal of
                        at least n bytes, reset the connection (RST); with
                        sticky=True the next connection gets it, once
  clear()               pass everything again

A fault applies to the connections open when it is set; connections made
after it pass normally (the path is back), unless sticky=True."""
import re
import select
import socket
import struct
import threading
import time

LITERAL = re.compile(rb"\{(\d+)\}\r\n")


class Conn:
    def __init__(self, proxy, client, server):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.mode = proxy.default_mode()
        self.closed = False
        self.lit_left = 0  # bytes of a literal still to come from the server
        self.lit_seen = 0  # ...of which sent so far
        self.tail = b""  # the end of what came before, to find "{n}\r\n"
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self, reset=False):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.server):
            try:
                if reset:
                    # SO_LINGER 0: close() sends an RST, not a FIN.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass

    def send(self, dst, data, from_server):
        kind, arg = self.mode
        if kind == "blackhole":
            return
        if from_server and kind == "reset":
            self.reset_after(data, arg)  # it sends what it lets through
            return
        if kind == "segments":
            for i in range(len(data)):
                dst.sendall(data[i:i + 1])
                time.sleep(0.0005)  # a segment each, not coalesced
            return
        if kind == "throttle" and from_server:
            for i in range(0, len(data), max(1, arg // 10)):
                chunk = data[i:i + max(1, arg // 10)]
                dst.sendall(chunk)
                time.sleep(len(chunk) / arg)
            return
        dst.sendall(data)

    def reset_after(self, data, n):
        """Sends data up to n bytes into a literal of n bytes or more, then
        resets. True if it reset."""
        i = 0
        while i < len(data):
            if self.lit_left > 0:
                take = min(self.lit_left, len(data) - i, n - self.lit_seen)
                self.client.sendall(data[i:i + take])
                self.lit_left -= take
                self.lit_seen += take
                i += take
                if self.lit_seen >= n:
                    self.proxy.resets += 1
                    self.proxy.sticky = None  # once: the path is back
                    self.close(reset=True)
                    return True
                continue
            m = LITERAL.search(self.tail + data[i:])
            if m is None:
                self.client.sendall(data[i:])
                self.tail = (self.tail + data[i:])[-32:]
                return False
            end = m.end() - len(self.tail) + i
            self.client.sendall(data[i:end])
            self.tail = b""
            i = end
            size = int(m.group(1))
            if size >= n:
                self.lit_left, self.lit_seen = size, 0
            else:
                # A small literal: pass it whole.
                self.client.sendall(data[i:i + size])
                i += size  # (one split across reads is rare; passed anyway)
        return False

    def pump(self):
        socks = [self.client, self.server]
        try:
            while not self.closed and not self.proxy.stopping:
                r, _, _ = select.select(socks, [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        self.close()
                        return
                    if s is self.server:
                        self.proxy.bytes_down += len(data)
                        self.send(self.client, data, True)
                    else:
                        self.send(self.server, data, False)
        except OSError:
            self.close()


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.accepted = 0
        self.resets = 0
        self.bytes_down = 0
        self.stopping = False
        self.sticky = None  # a fault that new connections get too
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def default_mode(self):
        return self.sticky or ("pass", 0)

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.lsock], [], [], 0.1)
            if not r:
                continue
            try:
                c, _ = self.lsock.accept()
                s = socket.create_connection(self.target, timeout=10)
            except OSError:
                continue
            s.settimeout(None)
            conn = Conn(self, c, s)
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=conn.pump, daemon=True).start()

    def _set(self, mode, sticky):
        with self.lock:
            self.sticky = mode if sticky else None
            for c in self.conns:
                if not c.closed:
                    c.mode = mode

    def open_count(self):
        with self.lock:
            return sum(not c.closed for c in self.conns)

    def cut(self):
        with self.lock:
            for c in self.conns:
                c.close()

    def blackhole(self, sticky=False):
        self._set(("blackhole", 0), sticky)

    def throttle(self, rate, sticky=False):
        self._set(("throttle", rate), sticky)

    def segments(self, sticky=False):
        self._set(("segments", 1), sticky)

    def reset_in_literal(self, n, sticky=False):
        self._set(("reset", n), sticky)

    def clear(self):
        self._set(("pass", 0), False)

    def stop(self):
        self.stopping = True
        self.cut()
        self.thread.join(timeout=5)
        self.lsock.close()
