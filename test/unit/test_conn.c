/*
 * Unit tests for conn: the connection that production uses, driven over
 * loopback against a server played inside the test (a listening socket on
 * the same libuv loop, answering each client line from a per-test script).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/util.h"

/* ---- the scripted server ------------------------------------------------- */

struct srv;
/* A client line (tag and the rest, CRLF cut off). */
typedef void srv_line_cb(struct srv *v, const char *tag, const char *rest);

struct srv {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_tcp_t client;
	bool has_client;
	unsigned port;
	const char *greeting; /* NULL: says nothing */
	srv_line_cb *on_line;
	char buf[8192];
	size_t len;
	char idle_tag[16]; /* the IDLE being waited on */
	char lines[16][256]; /* what the client sent, in order */
	size_t nlines;
};

static void
srv_send(struct srv *v, const char *fmt, ...)
{
	uv_buf_t b;
	char *text;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&text, fmt, ap);
	va_end(ap);
	assert_true(r >= 0);
	b = uv_buf_init(text, (unsigned)strlen(text));
	/* Loopback takes a few lines at once: written whole, or the test fails. */
	assert_int_equal(uv_try_write((uv_stream_t *)&v->client, &b, 1),
	    (int)b.len);
	free(text);
}

static void
srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct srv *v = h->data;

	(void)hint;
	*b = uv_buf_init(v->buf + v->len, (unsigned)(sizeof(v->buf) - v->len));
}

static void
srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct srv *v = st->data;
	char *eol;

	(void)b;
	if (n <= 0)
		return;
	v->len += (size_t)n;
	while ((eol = memchr(v->buf, '\n', v->len)) != NULL) {
		size_t k = (size_t)(eol - v->buf) + 1;
		char line[512], *sp;

		snprintf(line, sizeof(line), "%.*s", (int)(k - 2), v->buf);
		memmove(v->buf, v->buf + k, v->len - k);
		v->len -= k;
		if (v->nlines < 16)
			snprintf(v->lines[v->nlines++], 256, "%.255s", line);
		sp = strchr(line, ' ');
		if (sp == NULL) { /* DONE, or a SASL response */
			v->on_line(v, "", line);
			continue;
		}
		*sp = '\0';
		v->on_line(v, line, sp + 1);
	}
}

static void
srv_accept(uv_stream_t *l, int status)
{
	struct srv *v = l->data;

	assert_int_equal(status, 0);
	uv_tcp_init(v->loop, &v->client);
	v->client.data = v;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&v->client), 0);
	v->has_client = true;
	uv_read_start((uv_stream_t *)&v->client, srv_alloc, srv_read);
	if (v->greeting)
		srv_send(v, "%s\r\n", v->greeting);
}

static void
srv_start(struct srv *v, uv_loop_t *loop, const char *greeting,
    srv_line_cb *on_line)
{
	struct sockaddr_in sa;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(v, 0, sizeof(*v));
	v->loop = loop;
	v->greeting = greeting;
	v->on_line = on_line;
	uv_tcp_init(loop, &v->listener);
	v->listener.data = v;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	assert_int_equal(uv_tcp_bind(&v->listener, (struct sockaddr *)&sa, 0),
	    0);
	assert_int_equal(uv_listen((uv_stream_t *)&v->listener, 4, srv_accept),
	    0);
	uv_tcp_getsockname(&v->listener, (struct sockaddr *)&ss, &len);
	v->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The server hangs up (after a BYE, say). */
static void
srv_hangup(struct srv *v)
{
	if (v->has_client) {
		uv_read_stop((uv_stream_t *)&v->client);
		uv_close((uv_handle_t *)&v->client, NULL);
		v->has_client = false;
	}
}

/* ---- the connection's owner ------------------------------------------------- */

struct owner {
	struct conn *c;
	unsigned ready, failed, untagged, idle_done, exists;
	int err;
	char why[512];
	char done_text[4][64]; /* tagged replies, in the order they came */
	size_t ndone;
	unsigned fetch_lines; /* untagged FETCH routed to the command */
	uint32_t fetch_uid;
	bool end_idle_on_exists;
};

static void
o_ready(void *ud)
{
	((struct owner *)ud)->ready++;
}

static void
o_failed(void *ud, int err, bool final, const char *why)
{
	struct owner *o = ud;

	(void)final;
	o->failed++;
	o->err = err;
	snprintf(o->why, sizeof(o->why), "%s", why);
}

static void
o_untagged(void *ud, const struct proto_resp *r)
{
	struct owner *o = ud;

	o->untagged++;
	if (r->has & HAS_EXISTS) {
		o->exists = r->exists;
		if (o->end_idle_on_exists)
			conn_idle_done(o->c);
	}
}

static void
o_nothing(void *ud)
{
	(void)ud;
}

static const struct conn_ops owner_ops = {
	.ready = o_ready,
	.failed = o_failed,
	.untagged = o_untagged,
	.read = o_nothing,
	.changed = o_nothing,
};

static void
cmd_done(void *ud, const struct proto_resp *r)
{
	struct owner *o = ud;

	if (r == NULL || o->ndone == 4)
		return;
	snprintf(o->done_text[o->ndone++], 64, "%.63s", r->text);
}

static void
cmd_fetch(void *ud, const struct proto_resp *r)
{
	struct owner *o = ud;

	o->fetch_lines++;
	if (r->has & HAS_UID)
		o->fetch_uid = r->uid;
}

static void
idle_cb(void *ud, const struct proto_resp *r)
{
	struct owner *o = ud;

	if (r != NULL)
		o->idle_done++;
}

/* ---- the harness -------------------------------------------------------------- */

struct t {
	uv_loop_t loop;
	struct srv v;
	struct account a;
	struct owner o;
	struct conn *c;
};

static void
t_start(struct t *t, const char *greeting, srv_line_cb *on_line,
    enum tls_mode tls, unsigned timeout)
{
	memset(t, 0, sizeof(*t));
	uv_loop_init(&t->loop);
	srv_start(&t->v, &t->loop, greeting, on_line);
	t->a.name = "acct";
	t->a.host = "127.0.0.1";
	t->a.port = t->v.port;
	t->a.tls = tls;
	t->a.username = "alice";
	t->a.password = "secret pw";
	t->a.timeout = timeout;
	t->a.auth = AUTH_PASSWORD;
	t->c = conn_new(&t->loop, &(struct conn_opts){ .acct = &t->a,
		.ops = &owner_ops, .ud = &t->o });
	t->o.c = t->c;
	assert_int_equal(conn_open(t->c), 0);
}

static bool
until_ready(const struct owner *o)
{
	return o->ready > 0 || o->failed > 0;
}

static bool
until_failed(const struct owner *o)
{
	return o->failed > 0;
}

/* Runs the loop until done(o) holds, for at most 5 s of loop time. */
static void
t_run(struct t *t, bool (*done)(const struct owner *))
{
	uint64_t end = uv_now(&t->loop) + 5000;

	while (!done(&t->o) && uv_now(&t->loop) < end)
		uv_run(&t->loop, UV_RUN_ONCE);
	assert_true(done(&t->o));
}

static void
close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void
t_end(struct t *t)
{
	conn_free(t->c);
	uv_walk(&t->loop, close_walk, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
}

/* ---- server scripts ------------------------------------------------------------- */

/* A plain server: PLAIN after "+", IDLE, NOOP, FETCH, LOGOUT. */
static void
plain_server(struct srv *v, const char *tag, const char *rest)
{
	if (strcmp(rest, "AUTHENTICATE PLAIN") == 0) {
		snprintf(v->idle_tag, sizeof(v->idle_tag), "%s", tag);
		srv_send(v, "+ \r\n");
	} else if (tag[0] == '\0' && v->idle_tag[0] && strcmp(rest, "DONE")) {
		/* The SASL response. */
		srv_send(v, "%s OK [CAPABILITY IMAP4rev1 IDLE] in\r\n",
		    v->idle_tag);
		v->idle_tag[0] = '\0';
	} else if (strncmp(rest, "LOGIN ", 6) == 0) {
		srv_send(v, "%s OK in\r\n", tag);
	} else if (strcmp(rest, "CAPABILITY") == 0) {
		srv_send(v, "* CAPABILITY IMAP4rev1 IDLE\r\n%s OK done\r\n",
		    tag);
	} else if (strcmp(rest, "IDLE") == 0) {
		snprintf(v->idle_tag, sizeof(v->idle_tag), "%s", tag);
		srv_send(v, "+ idling\r\n* 3 EXISTS\r\n");
	} else if (strcmp(rest, "DONE") == 0) {
		srv_send(v, "%s OK IDLE terminated\r\n", v->idle_tag);
		v->idle_tag[0] = '\0';
	} else if (strcmp(rest, "LOGOUT") == 0) {
		srv_send(v, "* BYE bye\r\n%s OK out\r\n", tag);
	}
}

static void
test_plain_login_over_sasl_continuation(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", plain_server,
	    TLS_MODE_NONE, 5);
	t_run(&t, until_ready);
	assert_int_equal(t.o.ready, 1);
	assert_int_equal(t.o.failed, 0);
	assert_int_equal(conn_state(t.c), CONN_READY);
	assert_true(conn_caps(t.c) & CAP_IDLE);
	/* The response went after "+", never in the command line. */
	assert_string_equal(t.v.lines[0], "a1 AUTHENTICATE PLAIN");
	assert_non_null(strstr(t.v.lines[1], "AGFsaWNl"));
	t_end(&t);
}

static void
test_greeting_without_caps_asks_then_logs_in(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK hi", plain_server, TLS_MODE_NONE, 5);
	t_run(&t, until_ready);
	assert_int_equal(t.o.ready, 1);
	assert_string_equal(t.v.lines[0], "a1 CAPABILITY");
	assert_string_equal(t.v.lines[1], "a2 LOGIN \"alice\" \"secret pw\"");
	/* LOGIN's OK had no capabilities: asked once more. */
	assert_string_equal(t.v.lines[2], "a3 CAPABILITY");
	t_end(&t);
}

static void
test_preauth_is_refused(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* PREAUTH [CAPABILITY IMAP4rev1] welcome", plain_server,
	    TLS_MODE_NONE, 5);
	t_run(&t, until_failed);
	assert_int_equal(t.o.ready, 0);
	assert_int_equal(t.o.err, IDLEFETCH_EPROTO);
	assert_non_null(strstr(t.o.why, "PREAUTH"));
	assert_int_equal(conn_state(t.c), CONN_CLOSED);
	assert_int_equal(t.v.nlines, 0); /* no credentials went out */
	t_end(&t);
}

static void
test_bye_greeting_is_a_refusal(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* BYE too many connections", plain_server, TLS_MODE_NONE,
	    5);
	t_run(&t, until_failed);
	assert_non_null(strstr(t.o.why, "server refused the connection: too "
					 "many connections"));
	t_end(&t);
}

static void
refuse_starttls(struct srv *v, const char *tag, const char *rest)
{
	if (strcmp(rest, "STARTTLS") == 0)
		srv_send(v, "%s NO not today\r\n", tag);
	else
		srv_send(v, "%s BAD what\r\n", tag);
}

static void
test_starttls_refused_sends_no_credentials(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi",
	    refuse_starttls, TLS_MODE_STARTTLS, 5);
	t_run(&t, until_failed);
	assert_int_equal(t.o.err, IDLEFETCH_ETLS);
	assert_non_null(strstr(t.o.why, "STARTTLS refused: not today"));
	assert_int_equal(t.v.nlines, 1);
	t_end(&t);
}

static void
refuse_login(struct srv *v, const char *tag, const char *rest)
{
	(void)rest;
	srv_send(v, "%s NO [AUTHENTICATIONFAILED] wrong\r\n", tag);
}

static void
test_login_refused_is_an_auth_error(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1] hi", refuse_login,
	    TLS_MODE_NONE, 5);
	t_run(&t, until_failed);
	assert_int_equal(t.o.err, IDLEFETCH_EAUTH);
	assert_non_null(strstr(t.o.why, "login rejected for user alice"));
	t_end(&t);
}

static bool
until_idle_done(const struct owner *o)
{
	return o->idle_done > 0 || o->failed > 0;
}

static void
test_idle_ends_on_exists(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE] hi",
	    plain_server, TLS_MODE_NONE, 5);
	t_run(&t, until_ready);
	t.o.end_idle_on_exists = true;
	conn_idle(t.c, 60000, idle_cb, &t.o);
	assert_int_equal(conn_state(t.c), CONN_IDLE_START);
	t_run(&t, until_idle_done);
	assert_int_equal(t.o.failed, 0);
	assert_int_equal(t.o.exists, 3); /* the owner was told */
	assert_int_equal(conn_state(t.c), CONN_READY);
	assert_string_equal(t.v.lines[t.v.nlines - 1], "DONE");
	t_end(&t);
}

static void
bye_on_idle(struct srv *v, const char *tag, const char *rest)
{
	if (strcmp(rest, "IDLE") == 0) {
		srv_send(v, "+ idling\r\n* BYE shutting down\r\n");
		srv_hangup(v);
		return;
	}
	plain_server(v, tag, rest);
}

static void
test_bye_while_idle_is_named(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE] hi",
	    bye_on_idle, TLS_MODE_NONE, 5);
	t_run(&t, until_ready);
	conn_idle(t.c, 60000, idle_cb, &t.o);
	t_run(&t, until_failed);
	assert_int_equal(t.o.idle_done, 0);
	assert_non_null(strstr(t.o.why,
	    "server closed the connection: shutting down"));
	assert_int_equal(conn_state(t.c), CONN_CLOSED);
	t_end(&t);
}

static void
silent_after_login(struct srv *v, const char *tag, const char *rest)
{
	if (strncmp(rest, "LOGIN", 5) == 0)
		srv_send(v, "%s OK [CAPABILITY IMAP4rev1] in\r\n", tag);
}

static void
test_unanswered_command_times_out(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1] hi", silent_after_login,
	    TLS_MODE_NONE, 1);
	t_run(&t, until_ready);
	conn_cmd(t.c, 0, cmd_done, NULL, &t.o, "NOOP");
	t_run(&t, until_failed);
	assert_int_equal(t.o.err, -ETIMEDOUT);
	assert_non_null(strstr(t.o.why, "no answer from the server for 1 s"));
	assert_int_equal(t.o.ndone, 0); /* cancelled: no reply text */
	t_end(&t);
}

static void
test_silent_greeting_times_out(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, NULL, silent_after_login, TLS_MODE_NONE, 1);
	t_run(&t, until_failed);
	assert_int_equal(t.o.err, -ETIMEDOUT);
	assert_non_null(strstr(t.o.why, "timed out in GREETING"));
	t_end(&t);
}

/* Answers the second command first, with a FETCH for the first. */
static void
out_of_order(struct srv *v, const char *tag, const char *rest)
{
	static char first[16];

	if (strncmp(rest, "LOGIN", 5) == 0) {
		srv_send(v, "%s OK [CAPABILITY IMAP4rev1] in\r\n", tag);
	} else if (strncmp(rest, "UID FETCH", 9) == 0) {
		snprintf(first, sizeof(first), "%s", tag);
	} else if (strcmp(rest, "NOOP") == 0) {
		srv_send(v, "* 1 FETCH (UID 7)\r\n* 9 EXISTS\r\n"
			    "%s OK noop done\r\n%s OK fetch done\r\n",
		    tag, first);
	}
}

static bool
until_two_done(const struct owner *o)
{
	return o->ndone == 2 || o->failed > 0;
}

static void
test_replies_and_fetches_reach_their_command(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "* OK [CAPABILITY IMAP4rev1] hi", out_of_order,
	    TLS_MODE_NONE, 5);
	t_run(&t, until_ready);
	conn_cmd(t.c, HAS_FETCH, cmd_done, cmd_fetch, &t.o,
	    "UID FETCH 1:* (UID)");
	conn_cmd(t.c, 0, cmd_done, NULL, &t.o, "NOOP");
	assert_int_equal(conn_pending(t.c), 2);
	t_run(&t, until_two_done);
	assert_int_equal(t.o.failed, 0);
	/* Each tagged reply by its tag, whatever the order. */
	assert_string_equal(t.o.done_text[0], "noop done");
	assert_string_equal(t.o.done_text[1], "fetch done");
	/* The FETCH to the command that asked, EXISTS to the owner. */
	assert_int_equal(t.o.fetch_lines, 1);
	assert_int_equal(t.o.fetch_uid, 7);
	assert_int_equal(t.o.exists, 9);
	assert_int_equal(conn_pending(t.c), 0);
	t_end(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_login_over_sasl_continuation),
		cmocka_unit_test(test_greeting_without_caps_asks_then_logs_in),
		cmocka_unit_test(test_preauth_is_refused),
		cmocka_unit_test(test_bye_greeting_is_a_refusal),
		cmocka_unit_test(test_starttls_refused_sends_no_credentials),
		cmocka_unit_test(test_login_refused_is_an_auth_error),
		cmocka_unit_test(test_idle_ends_on_exists),
		cmocka_unit_test(test_bye_while_idle_is_named),
		cmocka_unit_test(test_unanswered_command_times_out),
		cmocka_unit_test(test_silent_greeting_times_out),
		cmocka_unit_test(test_replies_and_fetches_reach_their_command),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
