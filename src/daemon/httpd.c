/*
 * httpd: serves one path over HTTP/1.1 from the caller's loop (no thread),
 * for Prometheus to scrape. A scrape must never slow delivery, and anyone
 * who can reach the port may be hostile, so each client costs a fixed
 * struct (its request buffer inside) plus the one answer being written,
 * and every way a client could hold on to that is capped in time or
 * number (httpd.h). The answer is written with one uv_write of the header
 * and the owner's body; the connection closes once it is written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "idlefetch/httpd.h"
#include "idlefetch/util.h"

struct client {
	struct client *next, *prev;
	struct httpd *h;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wr;
	int open; /* of its two handles, those not yet closed */
	bool closing;
	char *head, *body; /* the answer, until the client is freed */
	size_t len;
	char req[HTTPD_REQUEST_MAX];
};

struct httpd {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	const char *path;
	httpd_get_cb *get;
	void *ud;
	struct client *clients;
	unsigned nclients;
	unsigned handles; /* open: h is freed when none is left and dying */
	bool dying;
	unsigned port;
	uint64_t refused;
};

static void
handle_closed(struct httpd *h)
{
	if (--h->handles == 0 && h->dying)
		free(h);
}

static void
listener_closed(uv_handle_t *hd)
{
	handle_closed(hd->data);
}

static void
client_closed(uv_handle_t *hd)
{
	struct client *c = hd->data;
	struct httpd *h = c->h;

	if (--c->open > 0)
		return;
	free(c->head);
	free(c->body);
	free(c);
	handle_closed(h);
}

static void
client_close(struct client *c)
{
	struct httpd *h = c->h;

	if (c->closing)
		return;
	c->closing = true;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		h->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	h->nclients--;
	uv_close((uv_handle_t *)&c->tcp, client_closed);
	uv_close((uv_handle_t *)&c->timer, client_closed);
}

static void
client_deadline(uv_timer_t *t)
{
	client_close(t->data);
}

static void
written(uv_write_t *w, int status)
{
	(void)status;
	client_close(w->data);
}

/* Sends the answer and closes once it is written (Connection: close). */
static void
answer(struct client *c, const char *status, char *body, size_t len)
{
	uv_buf_t bufs[2];

	uv_read_stop((uv_stream_t *)&c->tcp);
	c->body = body;
	c->head = xasprintf("HTTP/1.1 %s\r\n"
			    "Content-Type: %s\r\n"
			    "Content-Length: %zu\r\n"
			    "Connection: close\r\n"
			    "%s\r\n",
	    status,
	    body != NULL ? "text/plain; version=0.0.4; charset=utf-8" :
			   "text/plain",
	    len, strncmp(status, "405", 3) == 0 ? "Allow: GET\r\n" : "");
	bufs[0] = uv_buf_init(c->head, (unsigned)strlen(c->head));
	bufs[1] = uv_buf_init(body, (unsigned)len);
	/* A client that does not read gets as long again, then is closed. */
	uv_timer_start(&c->timer, client_deadline, HTTPD_DEADLINE_MS, 0);
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, body ? 2 : 1,
		written) < 0)
		client_close(c);
}

/* The request's head is complete: only GET of the one path is served. */
static void
request(struct client *c)
{
	const char *sp, *end, *eol = memchr(c->req, '\n', c->len);
	size_t n, plen = strlen(c->h->path);
	char *body;

	sp = eol ? memchr(c->req, ' ', (size_t)(eol - c->req)) : NULL;
	end = sp ? memchr(sp + 1, ' ', (size_t)(eol - sp - 1)) : NULL;
	if (end == NULL) {
		answer(c, "400 Bad Request", NULL, 0);
		return;
	}
	if (sp - c->req != 3 || memcmp(c->req, "GET", 3) != 0) {
		answer(c, "405 Method Not Allowed", NULL, 0);
		return;
	}
	n = (size_t)(end - sp - 1);
	if ((n == plen || (n > plen && sp[1 + plen] == '?')) &&
	    memcmp(sp + 1, c->h->path, plen) == 0) {
		body = c->h->get(c->h->ud, &n);
		answer(c, "200 OK", body, n);
		return;
	}
	answer(c, "404 Not Found", NULL, 0);
}

static void
client_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
	struct client *c = hd->data;

	(void)hint;
	*buf =
	    uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - c->len));
}

static void
client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct client *c = s->data;

	(void)buf;
	if (n < 0) {
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	if (memmem(c->req, c->len, "\r\n\r\n", 4) != NULL ||
	    memmem(c->req, c->len, "\n\n", 2) != NULL)
		request(c);
	else if (c->len == sizeof(c->req))
		answer(c, "431 Request Header Fields Too Large", NULL, 0);
}

static void
dropped_closed(uv_handle_t *hd)
{
	struct httpd *h = hd->data;

	free(hd);
	handle_closed(h);
}

/* More than HTTPD_CLIENTS: accepted only to be closed, off the backlog. */
static void
drop(struct httpd *h)
{
	uv_tcp_t *t = xcalloc(1, sizeof(*t));

	uv_tcp_init(h->loop, t);
	t->data = h;
	h->handles++;
	h->refused++;
	(void)uv_accept((uv_stream_t *)&h->tcp, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, dropped_closed);
}

static void
on_connection(uv_stream_t *l, int status)
{
	struct httpd *h = l->data;
	struct client *c;

	if (status < 0)
		return;
	if (h->nclients >= HTTPD_CLIENTS) {
		drop(h);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->h = h;
	uv_tcp_init(h->loop, &c->tcp);
	uv_timer_init(h->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->open = 2;
	h->handles++; /* the client's two handles, freed together */
	c->next = h->clients;
	if (h->clients != NULL)
		h->clients->prev = c;
	h->clients = c;
	h->nclients++;
	/* The endpoint never keeps the daemon running. */
	uv_unref((uv_handle_t *)&c->tcp);
	uv_unref((uv_handle_t *)&c->timer);
	if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read) <
		0) {
		client_close(c);
		return;
	}
	uv_timer_start(&c->timer, client_deadline, HTTPD_DEADLINE_MS, 0);
}

int
httpd_new(uv_loop_t *loop, const struct sockaddr *addr, const char *path,
    httpd_get_cb *get, void *ud, struct httpd **out)
{
	struct httpd *h = xcalloc(1, sizeof(*h));
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	int r;

	h->loop = loop;
	h->path = path;
	h->get = get;
	h->ud = ud;
	uv_tcp_init(loop, &h->tcp);
	h->tcp.data = h;
	h->handles = 1;
	uv_unref((uv_handle_t *)&h->tcp);
	r = uv_tcp_bind(&h->tcp, addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&h->tcp, 64, on_connection);
	if (r == 0)
		r = uv_tcp_getsockname(&h->tcp, (struct sockaddr *)&ss, &len);
	if (r < 0) {
		h->dying = true;
		uv_close((uv_handle_t *)&h->tcp, listener_closed);
		return r;
	}
	h->port = ntohs(ss.ss_family == AF_INET6 ?
		((struct sockaddr_in6 *)&ss)->sin6_port :
		((struct sockaddr_in *)&ss)->sin_port);
	*out = h;
	return 0;
}

void
httpd_free(struct httpd *h)
{
	if (h == NULL)
		return;
	h->dying = true;
	while (h->clients != NULL)
		client_close(h->clients);
	uv_close((uv_handle_t *)&h->tcp, listener_closed);
}

unsigned
httpd_port(const struct httpd *h)
{
	return h != NULL ? h->port : 0;
}

uint64_t
httpd_refused(const struct httpd *h)
{
	return h != NULL ? h->refused : 0;
}

int
httpd_parse_address(const char *v, struct sockaddr_storage *ss, char *why,
    size_t len)
{
	char host[64];
	const char *colon = strrchr(v, ':');
	uint64_t port;
	int r;

	memset(ss, 0, sizeof(*ss));
	if (colon == NULL) {
		snprintf(host, sizeof(host), "127.0.0.1");
		colon = v - 1;
	} else if (v[0] == '[' && colon > v + 1 && colon[-1] == ']' &&
	    (size_t)(colon - v - 2) < sizeof(host)) {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - v - 2),
		    v + 1);
	} else if ((size_t)(colon - v) < sizeof(host) && colon > v &&
	    memchr(v, ':', (size_t)(colon - v)) == NULL) {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - v), v);
	} else {
		goto bad;
	}
	if (parse_u64(colon + 1, 1, 65535, &port) < 0)
		goto bad;
	if (strchr(host, ':') != NULL)
		r = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
	else
		r = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
	if (r == 0)
		return 0;
bad:
	snprintf(why, len,
	    "'%s' is not PORT, ADDRESS:PORT or [IPV6]:PORT with a numeric "
	    "address and a port in 1..65535",
	    v);
	return -EINVAL;
}
