/*
 * A small IMAP server played inside a unit test: a listening socket on the
 * test's libuv loop (loopback, a random port) that answers each client line
 * from a model of a few folders, each a list of messages with UIDs. The
 * model keeps what the client sent, and a test bends the server's answers
 * through its fields (refuse a SELECT, leave a UID out of a batch, hang up
 * inside a literal, renumber a folder) or through a hook that sees every
 * line first. The same approach as test_conn.c's server, grown to the
 * commands a folder's sync and the scheduler send.
 */
#ifndef IDLEFETCH_TEST_SRV_H
#define IDLEFETCH_TEST_SRV_H

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "idlefetch/config.h"

#define SRV_FOLDERS 4
#define SRV_MSGS 128
#define SRV_LINES 512

struct srv_msg {
	uint32_t uid;
	unsigned id; /* its Message-ID: <id@test>, kept across renumbering */
	bool deleted;
};

struct srv_folder {
	char name[64];
	uint32_t uidvalidity, uidnext;
	struct srv_msg m[SRV_MSGS];
	size_t n;
	bool refuse; /* SELECT and STATUS say NO */
	bool subscribed;
};

struct srv;
/* Sees each client line first; returns true when it answered it. */
typedef bool srv_hook_cb(struct srv *v, const char *tag, const char *rest);

struct srv {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_tcp_t *client; /* on the heap: freed once closed */
	bool has_client;
	bool client_closing;
	unsigned port;
	char caps[256]; /* without IMAP4rev1 */
	bool notify_no; /* NOTIFY is answered NO */
	struct srv_folder f[SRV_FOLDERS];
	size_t nf;
	struct srv_folder *sel;
	uint32_t omit_uid; /* left out of the next batch that asks for it */
	uint32_t cut_uid; /* the body is cut in half, then a hang-up */
	srv_hook_cb *hook;
	void *ud; /* the test's */
	char buf[65536];
	size_t len;
	char idle_tag[16];
	unsigned logins, selects, listings, batches, statuses, notifies, idles,
	    logouts, accepts, lsubs;
	char lines[SRV_LINES][256]; /* what the client sent, in order */
	size_t nlines;
};

static inline void
srv_send(struct srv *v, const char *fmt, ...)
{
	uv_buf_t b;
	char *text;
	va_list ap;
	int r;

	if (!v->has_client)
		return;
	va_start(ap, fmt);
	r = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (r < 0)
		abort();
	b = uv_buf_init(text, (unsigned)strlen(text));
	/* Loopback takes this at once: written whole, or the test is wrong. */
	if (uv_try_write((uv_stream_t *)v->client, &b, 1) != (int)b.len) {
		fprintf(stderr, "srv: short write\n");
		abort();
	}
	free(text);
}

static inline void
srv_freed(uv_handle_t *h)
{
	free(h);
}

/* The server hangs up. */
static inline void
srv_hangup(struct srv *v)
{
	if (v->has_client) {
		uv_read_stop((uv_stream_t *)v->client);
		uv_close((uv_handle_t *)v->client, srv_freed);
		v->has_client = false;
	}
}

static inline struct srv_folder *
srv_folder(struct srv *v, const char *name)
{
	for (size_t i = 0; i < v->nf; i++)
		if (strcmp(v->f[i].name, name) == 0)
			return &v->f[i];
	return NULL;
}

static inline struct srv_folder *
srv_add_folder(struct srv *v, const char *name, uint32_t uidvalidity)
{
	struct srv_folder *f = &v->f[v->nf++];

	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->uidvalidity = uidvalidity;
	f->uidnext = 1;
	f->subscribed = true;
	return f;
}

/* A new message; its Message-ID is <id@test>. */
static inline void
srv_add_msg(struct srv_folder *f, unsigned id)
{
	f->m[f->n].uid = f->uidnext++;
	f->m[f->n].id = id;
	f->m[f->n++].deleted = false;
}

/* What a message holds on the server (and, CRLF made LF, in the Maildir). */
static inline void
srv_msg_text(const struct srv_msg *m, char *hdr, size_t hl, char *body,
    size_t bl)
{
	snprintf(hdr, hl,
	    "Message-ID: <%u@test>\r\nSubject: message %u\r\n\r\n", m->id,
	    m->id);
	snprintf(body, bl,
	    "Message-ID: <%u@test>\r\nSubject: message %u\r\n\r\n"
	    "This is message %u.\r\n",
	    m->id, m->id, m->id);
}

/* The folder argument of a command: "name" or name; into out. */
static inline const char *
srv_arg(const char *p, char *out, size_t n)
{
	size_t k = 0;

	while (*p == ' ')
		p++;
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++)
			if (k + 1 < n)
				out[k++] = *p;
		if (*p == '"')
			p++;
	} else {
		for (; *p && *p != ' '; p++)
			if (k + 1 < n)
				out[k++] = *p;
	}
	out[k] = '\0';
	return p;
}

/* Whether uid is in a UID set ("1:3,7", "4:*"), max being the highest. */
static inline bool
srv_in_set(const char *set, uint32_t uid, uint32_t max)
{
	const char *p = set;

	while (*p && *p != ' ') {
		unsigned long a, b;
		char *end;

		a = strtoul(p, &end, 10);
		b = a;
		p = end;
		if (*p == ':') {
			p++;
			if (*p == '*') {
				b = max;
				p++;
			} else {
				b = strtoul(p, &end, 10);
				p = end;
			}
		}
		if (a > b) {
			unsigned long t = a;

			a = b;
			b = t;
		}
		if (uid >= a && uid <= b)
			return true;
		if (*p == ',')
			p++;
	}
	return false;
}

static inline uint32_t
srv_max_uid(const struct srv_folder *f)
{
	uint32_t max = 0;

	for (size_t i = 0; i < f->n; i++)
		if (f->m[i].uid > max)
			max = f->m[i].uid;
	return max;
}

/* One message's FETCH response, with its body (or half of it). */
static inline void
srv_send_body(struct srv *v, size_t seq, const struct srv_msg *m, bool cut)
{
	char hdr[256], body[512];

	srv_msg_text(m, hdr, sizeof(hdr), body, sizeof(body));
	if (cut) {
		srv_send(v,
		    "* %zu FETCH (UID %u RFC822.SIZE %zu BODY[HEADER.FIELDS "
		    "(MESSAGE-ID DATE FROM SUBJECT)] {%zu}\r\n%s BODY[] "
		    "{%zu}\r\n%.*s",
		    seq, m->uid, strlen(body), strlen(hdr), hdr, strlen(body),
		    (int)(strlen(body) / 2), body);
		srv_hangup(v);
		return;
	}
	srv_send(v,
	    "* %zu FETCH (UID %u RFC822.SIZE %zu BODY[HEADER.FIELDS "
	    "(MESSAGE-ID DATE FROM SUBJECT)] {%zu}\r\n%s BODY[] {%zu}\r\n%s)\r\n",
	    seq, m->uid, strlen(body), strlen(hdr), hdr, strlen(body), body);
}

/* UID FETCH: a listing (sizes, maybe header fields) or a batch of bodies. */
static inline void
srv_uid_fetch(struct srv *v, const char *tag, const char *args)
{
	struct srv_folder *f = v->sel;
	bool bodies = strstr(args, "BODY.PEEK[]") != NULL;
	bool hdrs = strstr(args, "HEADER.FIELDS") != NULL;
	uint32_t max;
	bool any = false;

	if (f == NULL) {
		srv_send(v, "%s BAD no folder selected\r\n", tag);
		return;
	}
	max = srv_max_uid(f);
	if (bodies)
		v->batches++;
	else
		v->listings++;
	for (size_t i = 0; i < f->n; i++) {
		const struct srv_msg *m = &f->m[i];
		char hdr[256], body[512];

		if (!srv_in_set(args, m->uid, max))
			continue;
		any = true;
		if (bodies && m->uid == v->omit_uid) {
			v->omit_uid = 0;
			continue;
		}
		if (bodies) {
			srv_send_body(v, i + 1, m, m->uid == v->cut_uid);
			if (!v->has_client)
				return;
			continue;
		}
		srv_msg_text(m, hdr, sizeof(hdr), body, sizeof(body));
		if (hdrs)
			srv_send(v,
			    "* %zu FETCH (UID %u RFC822.SIZE %zu BODY[HEADER."
			    "FIELDS (MESSAGE-ID DATE FROM SUBJECT)] {%zu}\r\n"
			    "%s)\r\n",
			    i + 1, m->uid, strlen(body), strlen(hdr), hdr);
		else
			srv_send(v, "* %zu FETCH (UID %u RFC822.SIZE %zu)\r\n",
			    i + 1, m->uid, strlen(body));
	}
	/* "N:*" above every UID still names the last message (RFC 3501). */
	if (!any && !bodies && f->n > 0 && strstr(args, ":*") != NULL)
		srv_send(v, "* %zu FETCH (UID %u RFC822.SIZE 10)\r\n", f->n,
		    f->m[f->n - 1].uid);
	srv_send(v, "%s OK Fetch completed.\r\n", tag);
}

static inline void
srv_select(struct srv *v, const char *tag, const char *args)
{
	char name[64];
	struct srv_folder *f;

	srv_arg(args, name, sizeof(name));
	f = srv_folder(v, name);
	v->selects++;
	v->sel = NULL;
	if (f == NULL || f->refuse) {
		srv_send(v, "%s NO [NONEXISTENT] Mailbox doesn't exist: %s\r\n",
		    tag, name);
		return;
	}
	v->sel = f;
	srv_send(v,
	    "* FLAGS (\\Seen \\Deleted)\r\n* %zu EXISTS\r\n* 0 RECENT\r\n"
	    "* OK [UIDVALIDITY %u] UIDs valid\r\n* OK [UIDNEXT %u] next\r\n"
	    "%s OK [READ-WRITE] Select completed.\r\n",
	    f->n, f->uidvalidity, f->uidnext, tag);
}

/* UID EXPUNGE set: the messages go, each with its "* n EXPUNGE". */
static inline void
srv_expunge(struct srv *v, const char *tag, const char *set)
{
	struct srv_folder *f = v->sel;
	uint32_t max = f ? srv_max_uid(f) : 0;

	for (size_t i = 0; f != NULL && i < f->n;) {
		if (!srv_in_set(set, f->m[i].uid, max)) {
			i++;
			continue;
		}
		srv_send(v, "* %zu EXPUNGE\r\n", i + 1);
		memmove(&f->m[i], &f->m[i + 1],
		    (f->n - i - 1) * sizeof(f->m[0]));
		f->n--;
	}
	srv_send(v, "%s OK Expunge completed.\r\n", tag);
}

static inline void
srv_status(struct srv *v, const char *tag, const char *args)
{
	char name[64];
	struct srv_folder *f;

	srv_arg(args, name, sizeof(name));
	f = srv_folder(v, name);
	v->statuses++;
	if (f == NULL || f->refuse) {
		srv_send(v, "%s NO no such folder\r\n", tag);
		return;
	}
	srv_send(v,
	    "* STATUS \"%s\" (MESSAGES %zu UIDNEXT %u UIDVALIDITY %u)\r\n"
	    "%s OK Status completed.\r\n",
	    f->name, f->n, f->uidnext, f->uidvalidity, tag);
}

static inline void
srv_lsub(struct srv *v, const char *tag, bool lsub)
{
	v->lsubs++;
	for (size_t i = 0; i < v->nf; i++)
		if (v->f[i].subscribed)
			srv_send(v, "* %s (%s) \"/\" \"%s\"\r\n",
			    lsub ? "LSUB" : "LIST", lsub ? "" : "\\Subscribed",
			    v->f[i].name);
	srv_send(v, "%s OK done\r\n", tag);
}

static inline bool
srv_is(const char *rest, const char *cmd)
{
	size_t n = strlen(cmd);

	return strncasecmp(rest, cmd, n) == 0 &&
	    (rest[n] == ' ' || rest[n] == '\0');
}

/* The server's answer to one client line. */
static inline void
srv_answer(struct srv *v, const char *tag, const char *rest)
{
	if (v->hook != NULL && v->hook(v, tag, rest))
		return;
	if (tag[0] == '\0' && strcasecmp(rest, "DONE") == 0) {
		srv_send(v, "%s OK Idle completed.\r\n", v->idle_tag);
		v->idle_tag[0] = '\0';
	} else if (srv_is(rest, "LOGIN")) {
		v->logins++;
		srv_send(v, "%s OK [CAPABILITY IMAP4rev1 %s] Logged in\r\n",
		    tag, v->caps);
	} else if (srv_is(rest, "CAPABILITY")) {
		srv_send(v, "* CAPABILITY IMAP4rev1 %s\r\n%s OK done\r\n",
		    v->caps, tag);
	} else if (srv_is(rest, "SELECT") || srv_is(rest, "EXAMINE")) {
		srv_select(v, tag, strchr(rest, ' '));
	} else if (srv_is(rest, "UID FETCH")) {
		srv_uid_fetch(v, tag, rest + 10);
	} else if (srv_is(rest, "UID STORE")) {
		srv_send(v, "%s OK Store completed.\r\n", tag);
	} else if (srv_is(rest, "UID EXPUNGE")) {
		srv_expunge(v, tag, rest + 12);
	} else if (srv_is(rest, "STATUS")) {
		srv_status(v, tag, rest + 7);
	} else if (srv_is(rest, "NOTIFY")) {
		v->notifies++;
		if (v->notify_no)
			srv_send(v, "%s NO [NOTIFICATIONOVERFLOW] no\r\n", tag);
		else
			srv_send(v, "%s OK NOTIFY completed\r\n", tag);
	} else if (srv_is(rest, "LSUB")) {
		srv_lsub(v, tag, true);
	} else if (strncasecmp(rest, "LIST (SUBSCRIBED)", 17) == 0) {
		srv_lsub(v, tag, false);
	} else if (srv_is(rest, "IDLE")) {
		v->idles++;
		snprintf(v->idle_tag, sizeof(v->idle_tag), "%s", tag);
		srv_send(v, "+ idling\r\n");
	} else if (srv_is(rest, "LOGOUT")) {
		v->logouts++;
		srv_send(v, "* BYE Logging out\r\n%s OK Logout completed.\r\n",
		    tag);
		srv_hangup(v);
	} else {
		/* NOOP, LIST, ENABLE, ID, CLOSE ... */
		srv_send(v, "%s OK done\r\n", tag);
	}
}

static inline void
srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct srv *v = h->data;

	(void)hint;
	*b = uv_buf_init(v->buf + v->len, (unsigned)(sizeof(v->buf) - v->len));
}

static inline void
srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct srv *v = st->data;
	char *eol;

	(void)b;
	if (n < 0) {
		srv_hangup(v);
		return;
	}
	v->len += (size_t)n;
	while (v->has_client && (eol = memchr(v->buf, '\n', v->len)) != NULL) {
		size_t k = (size_t)(eol - v->buf) + 1;
		char line[1024], *sp;

		snprintf(line, sizeof(line), "%.*s", (int)(k >= 2 ? k - 2 : 0),
		    v->buf);
		memmove(v->buf, v->buf + k, v->len - k);
		v->len -= k;
		if (v->nlines < SRV_LINES)
			snprintf(v->lines[v->nlines++], 256, "%.255s", line);
		sp = strchr(line, ' ');
		if (sp == NULL) { /* DONE */
			srv_answer(v, "", line);
			continue;
		}
		*sp = '\0';
		srv_answer(v, line, sp + 1);
	}
	if (!v->has_client)
		v->len = 0;
}

static inline void
srv_accept(uv_stream_t *l, int status)
{
	struct srv *v = l->data;

	if (status != 0)
		abort();
	/* One client at a time: the last one's handle must be closed. */
	if (v->has_client)
		srv_hangup(v);
	v->client = malloc(sizeof(*v->client));
	uv_tcp_init(v->loop, v->client);
	v->client->data = v;
	if (uv_accept(l, (uv_stream_t *)v->client) != 0)
		abort();
	v->has_client = true;
	v->accepts++;
	v->sel = NULL;
	v->len = 0;
	uv_read_start((uv_stream_t *)v->client, srv_alloc, srv_read);
	srv_send(v, "* OK [CAPABILITY IMAP4rev1 %s] ready\r\n", v->caps);
}

static inline void
srv_start(struct srv *v, uv_loop_t *loop, const char *caps)
{
	struct sockaddr_in sa;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(v, 0, sizeof(*v));
	v->loop = loop;
	snprintf(v->caps, sizeof(v->caps), "%s", caps);
	uv_tcp_init(loop, &v->listener);
	v->listener.data = v;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	if (uv_tcp_bind(&v->listener, (struct sockaddr *)&sa, 0) != 0 ||
	    uv_listen((uv_stream_t *)&v->listener, 4, srv_accept) != 0)
		abort();
	uv_tcp_getsockname(&v->listener, (struct sockaddr *)&ss, &len);
	v->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* How many lines the client sent that start with prefix (after the tag). */
static inline unsigned
srv_count(const struct srv *v, const char *prefix)
{
	unsigned k = 0;

	for (size_t i = 0; i < v->nlines; i++) {
		const char *sp = strchr(v->lines[i], ' ');

		if (sp && strncmp(sp + 1, prefix, strlen(prefix)) == 0)
			k++;
	}
	return k;
}

/* An account that logs in to v and delivers into maildir (borrowed). */
static inline void
srv_account(struct account *a, const struct srv *v, char *maildir)
{
	a->name = "acct";
	a->host = "127.0.0.1";
	a->port = v->port;
	a->tls = TLS_MODE_NONE;
	a->username = "alice";
	a->password = "pw";
	a->auth = AUTH_PASSWORD;
	a->timeout = 5;
	a->maildir = maildir;
	a->target.kind = TARGET_MAILDIR;
	a->idle = 1;
}

#endif
