/*
 * transport: TCP with libuv, resolution on the threadpool, TCP keepalive so
 * that a peer that vanished behind NAT is noticed, and TLS through the tls
 * module's memory BIOs. Lifetime: libuv may still hold requests after the
 * owner lets go, so transport_free() only marks the object and the last
 * completion frees it; no owner callback runs after transport_free().
 *
 * Memory: an idle connection keeps its TCP handle and TLS state only. The
 * requests of resolution and connection, the list of addresses and the
 * timer of a deferred error live only as long as they are used, since ten
 * thousand idle connections would keep 4 MiB of them for nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/tls.h"
#include "idlefetch/transport.h"
#include "idlefetch/util.h"

#define KEEPALIVE_SECS 60

struct transport {
	uv_loop_t *loop;
	transport_cb *cb;
	void *ud;
	uv_getaddrinfo_t *gai; /* while resolving */
	uv_tcp_t tcp;
	struct addrinfo *ai, *next_ai; /* until connected */
	struct tls *tls;
	int pending; /* libuv operations not yet completed */
	bool tcp_open;
	bool resolving;
	bool connected;
	bool handshaking;
	bool paused;
	bool freed;
	bool failed;
	uv_timer_t *defer; /* reports an error uv_write gave at once */
	int defer_err;
};

/*
 * What is read from the socket and what OpenSSL decrypts is handed on
 * before the callback returns, so every connection of the (single-threaded)
 * loop shares one buffer of each instead of keeping 128 KiB apiece; with
 * a thousand idle connections that is the difference between 125 MiB and
 * nothing. A read that starts inside another's callback (a paused
 * connection resumed from there) takes a buffer of its own.
 */
#define IOBUF 65536
static char shared_rbuf[IOBUF];
static char shared_pbuf[IOBUF];
static bool pbuf_busy;

struct write_req {
	uv_write_t req;
	struct transport *t;
	char *buf;
};

static void try_connect(struct transport *t);

static void
release(struct transport *t)
{
	if (--t->pending == 0 && t->freed) {
		if (t->ai)
			uv_freeaddrinfo(t->ai);
		tls_free(t->tls);
		free(t);
	}
}

/* Reports an error once; later errors on the same connection are noise. */
static void
fail(struct transport *t, int err, const char *why)
{
	if (t->freed || t->failed)
		return;
	t->failed = true;
	t->cb(t->ud, TRANSPORT_ERROR, NULL, 0, err, why);
}

/* fail() with what went wrong and libuv's words for err. */
static void
fail_uv(struct transport *t, int err, const char *what)
{
	char why[200];

	snprintf(why, sizeof(why), "%s: %s", what, uv_strerror(err));
	fail(t, err, why);
}

struct transport *
transport_new(uv_loop_t *loop, transport_cb *cb, void *ud)
{
	struct transport *t = xcalloc(1, sizeof(*t));

	t->loop = loop;
	t->cb = cb;
	t->ud = ud;
	t->pending = 1; /* the owner's reference */
	return t;
}

static void
close_cb(uv_handle_t *h)
{
	struct transport *t = h->data;

	t->tcp_open = false;
	if (!t->freed && !t->connected && t->next_ai)
		try_connect(t);
	release(t);
}

static void
write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct transport *t = w->t;

	free(w->buf);
	free(w);
	if (status < 0 && status != UV_ECANCELED)
		fail_uv(t, status, "write failed");
	release(t);
}

static void
defer_closed_cb(uv_handle_t *h)
{
	struct transport *t = h->data;

	free(h);
	release(t);
}

static void
defer_cb(uv_timer_t *timer)
{
	struct transport *t = timer->data;

	uv_close((uv_handle_t *)timer, defer_closed_cb);
	fail_uv(t, t->defer_err, "write failed"); /* a no-op once freed */
}

/*
 * uv_write failed before queueing anything: the owner is in the middle of
 * a call into us and must not be called back from it, so the error comes
 * as TRANSPORT_ERROR from the next loop turn, as transport.h promises.
 */
static void
defer_error(struct transport *t, int err)
{
	if (t->defer != NULL)
		return; /* one report is enough; the timer is never reused */
	t->defer = xmalloc(sizeof(*t->defer));
	t->defer_err = err;
	uv_timer_init(t->loop, t->defer);
	t->defer->data = t;
	t->pending++;
	uv_timer_start(t->defer, defer_cb, 0, 0);
}

/* Sends buf (takes ownership). */
static int
send_raw(struct transport *t, char *buf, size_t n)
{
	struct write_req *w;
	uv_buf_t b;
	int r;

	if (!t->tcp_open || t->failed) {
		free(buf);
		return UV_ENOTCONN;
	}
	w = xmalloc(sizeof(*w));
	w->t = t;
	w->buf = buf;
	b = uv_buf_init(buf, (unsigned)n);
	r = uv_write(&w->req, (uv_stream_t *)&t->tcp, &b, 1, write_cb);
	if (r < 0) {
		free(buf);
		free(w);
		defer_error(t, r);
		return r;
	}
	t->pending++;
	return 0;
}

static int
flush_tls(struct transport *t)
{
	char *out;
	size_t n = tls_take(t->tls, &out);

	return n ? send_raw(t, out, n) : 0;
}

static void
alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	(void)hint;
	*buf = uv_buf_init(shared_rbuf, sizeof(shared_rbuf));
}

/* Decrypted data, handshake progress; false once the owner let go. */
static bool
read_tls(struct transport *t)
{
	char why[400], *pbuf;
	bool nested, done = false;
	ssize_t n;
	int r;

	if (t->handshaking) {
		r = tls_handshake(t->tls, why, sizeof(why));
		if (flush_tls(t) < 0 && r >= 0) {
			/* The handshake went on, but its bytes cannot be sent. */
			snprintf(why, sizeof(why),
			    "TLS handshake failed: cannot send to the server");
			r = IDLEFETCH_ETLS;
		}
		if (r == 1)
			return true;
		if (r < 0) {
			fail(t, r, why);
			return false;
		}
		t->handshaking = false;
		t->cb(t->ud, TRANSPORT_TLS_READY, NULL, 0, 0, NULL);
		if (t->freed || t->failed)
			return false;
	}
	nested = pbuf_busy;
	pbuf = nested ? xmalloc(IOBUF) : shared_pbuf;
	pbuf_busy = true;
	for (;;) {
		n = tls_read(t->tls, pbuf, IOBUF);
		if (n == 0)
			break;
		if (n < 0) {
			fail(t, (int)n,
			    n == UV_EOF ? "server closed the connection" :
					  "TLS error while reading");
			goto stop;
		}
		t->cb(t->ud, TRANSPORT_DATA, pbuf, (size_t)n, 0, NULL);
		if (t->freed || t->failed || t->paused)
			goto stop;
	}
	done = true;
stop:
	if (nested)
		free(pbuf);
	else
		pbuf_busy = false;
	if (done)
		flush_tls(t);
	return done;
}

static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct transport *t = s->data;
	char why[128];

	if (t->freed || t->failed)
		return;
	if (nread < 0) {
		snprintf(why, sizeof(why), "%s",
		    nread == UV_EOF ? "server closed the connection" :
				      uv_strerror((int)nread));
		fail(t, (int)nread, why);
		return;
	}
	if (nread == 0)
		return;
	if (t->tls == NULL) {
		t->cb(t->ud, TRANSPORT_DATA, buf->base, (size_t)nread, 0, NULL);
		return;
	}
	tls_feed(t->tls, buf->base, (size_t)nread);
	read_tls(t);
}

static void
connect_cb(uv_connect_t *req, int status)
{
	struct transport *t = req->data;

	free(req);
	if (t->freed || status == UV_ECANCELED) {
		release(t);
		return;
	}
	if (status < 0) {
		if (t->next_ai) {
			/* Another address is left: retry once this handle is closed. */
			uv_close((uv_handle_t *)&t->tcp, close_cb);
			release(t);
			return;
		}
		fail_uv(t, status, "connect failed");
		release(t);
		return;
	}
	t->connected = true;
	/* No other address will be tried. */
	uv_freeaddrinfo(t->ai);
	t->ai = t->next_ai = NULL;
	uv_tcp_nodelay(&t->tcp, 1);
	uv_tcp_keepalive(&t->tcp, 1, KEEPALIVE_SECS);
	status = uv_read_start((uv_stream_t *)&t->tcp, alloc_cb, read_cb);
	if (status < 0) {
		fail_uv(t, status, "cannot read");
		release(t);
		return;
	}
	t->cb(t->ud, TRANSPORT_CONNECTED, NULL, 0, 0, NULL);
	release(t);
}

static void
try_connect(struct transport *t)
{
	struct addrinfo *ai = t->next_ai;
	uv_connect_t *req = xmalloc(sizeof(*req));
	int r;

	t->next_ai = ai->ai_next;
	uv_tcp_init(t->loop, &t->tcp);
	t->tcp.data = t;
	t->tcp_open = true;
	t->pending++;
	req->data = t;
	r = uv_tcp_connect(req, &t->tcp, ai->ai_addr, connect_cb);
	if (r == 0) {
		t->pending++;
		return;
	}
	free(req);
	if (t->next_ai) {
		uv_close((uv_handle_t *)&t->tcp, close_cb);
		return;
	}
	fail_uv(t, r, "connect failed");
}

static void
gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct transport *t = req->data;

	free(req);
	t->gai = NULL;
	t->resolving = false;
	if (t->freed || status < 0) {
		if (res)
			uv_freeaddrinfo(res);
		if (!t->freed)
			fail_uv(t, status, "cannot resolve host");
		release(t);
		return;
	}
	t->ai = res;
	t->next_ai = res;
	try_connect(t);
	release(t);
}

int
transport_connect(struct transport *t, const char *host, unsigned port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_ADDRCONFIG };
	char service[8];
	int r;

	snprintf(service, sizeof(service), "%u", port);
	t->gai = xmalloc(sizeof(*t->gai));
	t->gai->data = t;
	r = uv_getaddrinfo(t->loop, t->gai, gai_cb, host, service, &hints);
	if (r < 0) {
		free(t->gai);
		t->gai = NULL;
		return r;
	}
	t->resolving = true;
	t->pending++;
	return 0;
}

int
transport_start_tls(struct transport *t, SSL_CTX *ctx, const char *host)
{
	char why[400];
	int r;

	t->tls = tls_new(ctx, host);
	t->handshaking = true;
	r = tls_handshake(t->tls, why, sizeof(why));
	if (r < 0)
		return r;
	return flush_tls(t);
}

int
transport_write(struct transport *t, const char *p, size_t n)
{
	int r;

	if (t->tls == NULL)
		return send_raw(t, xstrndup(p, n), n);
	r = tls_write(t->tls, p, n);
	if (r < 0)
		return r;
	return flush_tls(t);
}

void
transport_pause(struct transport *t, bool pause)
{
	int r;

	if (t->paused == pause || !t->connected || !t->tcp_open)
		return;
	t->paused = pause;
	if (pause) {
		uv_read_stop((uv_stream_t *)&t->tcp);
		return;
	}
	r = uv_read_start((uv_stream_t *)&t->tcp, alloc_cb, read_cb);
	if (r < 0) {
		fail(t, r, "cannot read from the connection");
		return;
	}
	/* Plaintext may already be decrypted and waiting inside OpenSSL. */
	if (t->tls && !t->handshaking)
		read_tls(t);
}

bool
transport_is_tls(const struct transport *t)
{
	return t->tls != NULL && !t->handshaking;
}

void
transport_free(struct transport *t)
{
	if (t == NULL)
		return;
	t->freed = true;
	if (t->resolving)
		uv_cancel((uv_req_t *)t->gai);
	if (t->tcp_open && !uv_is_closing((uv_handle_t *)&t->tcp))
		uv_close((uv_handle_t *)&t->tcp, close_cb);
	release(t);
}
