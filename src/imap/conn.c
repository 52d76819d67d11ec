/*
 * conn: the state machine of one IMAP connection.
 *
 *   CLOSED -> CONNECT -> [TLS] -> GREETING -> [STARTTLS -> TLS] ->
 *   [CAPABILITY] -> [TOKEN] -> AUTH -> [CAPS_AGAIN] -> READY;
 *   READY -> IDLE_START -> [IDLE_CANCEL] -> IDLE -> IDLE_DONE -> READY;
 *   READY | IDLE -> LOGOUT -> CLOSED; any failure -> CLOSED
 *
 * conn_enter() is the one place that changes the state: it logs the change
 * with its reason, arms the state's timer and performs its entry action
 * (sends the command the state waits for). Each command carries its own
 * completion, so a reply needs no switch on what the command was: the tag
 * finds the callback. The answer timeout bounds the wait for each answer
 * (not for the whole of a long one): a tagged reply, a response routed to
 * a command and message bytes restart it; "* OK still here" does not.
 *
 * What the login does (greeting, STARTTLS, capabilities, the login
 * command, OAuth2 tokens and their refusals) is decided by login.c: the
 * connection hands it each answer and does what it is told, so the login
 * is tried without a socket and this stays the one place that changes
 * state and writes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "idlefetch/conn.h"
#include "idlefetch/cmdq.h"
#include "idlefetch/framer.h"
#include "idlefetch/log.h"
#include "idlefetch/login.h"
#include "idlefetch/transport.h"
#include "idlefetch/util.h"

#define LOGOUT_TIMEOUT_MS 3000

struct conn {
	uv_loop_t *loop;
	struct conn_opts o;
	const struct account *a;
	const char *folder; /* for the log */
	const struct conn_sink *sink; /* NULL: none */
	void *sink_ud;
	enum conn_state state;
	uv_timer_t timer;
	struct transport *tr;
	struct framer *fr;
	uint32_t caps;
	struct cmdq *q; /* the commands waiting for their tagged reply */
	char *bye; /* the server's BYE, NULL: none */
	uint32_t retry_ms; /* a busy server asked to wait this long */
	uint64_t progress_at; /* loop time the answer timeout was armed */
	bool paused; /* the owner's disk is behind: not reading */
	struct login *lg; /* what the login decides and keeps */
	/* IDLE and LOGOUT: what the owner asked to be told */
	uint64_t idle_ms;
	conn_done_cb *idle_cb, *logout_cb;
	void *idle_ud, *logout_ud;
};

static const char *state_names[] = { "CLOSED", "CONNECT", "TLS", "GREETING",
	"STARTTLS", "CAPABILITY", "TOKEN", "AUTH", "CAPS_AGAIN", "READY",
	"IDLE_START", "IDLE_CANCEL", "IDLE", "IDLE_DONE", "LOGOUT" };

#define LOG(c, lvl, ...) log_msg((lvl), (c)->a->name, (c)->folder, __VA_ARGS__)

static void conn_enter(struct conn *c, enum conn_state st, const char *why);
static void timer_cb(uv_timer_t *t);

/* ---- failing ----------------------------------------------------------- */

/* Closes, then tells the owner why: the owner decides what comes next. */
static void __attribute__((format(printf, 4, 5)))
fail(struct conn *c, int err, bool final, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	conn_close(c);
	c->o.ops->failed(c->o.ud, err, final, why);
}

/* ---- commands ---------------------------------------------------------- */

static void
arm(struct conn *c, uint64_t ms)
{
	uv_timer_start(&c->timer, timer_cb, ms, 0);
}

/* States whose timer is the answer timeout (READY's: while commands wait). */
static bool
awaits_answer(const struct conn *c)
{
	switch (c->state) {
	case CONN_CLOSED:
	case CONN_TOKEN:
	case CONN_IDLE:
	case CONN_LOGOUT:
		return false;
	case CONN_READY:
		return cmdq_len(c->q) > 0;
	default:
		return true;
	}
}

static void
answer_timer(struct conn *c)
{
	c->progress_at = uv_now(c->loop);
	arm(c, (uint64_t)c->a->timeout * 1000);
}

/*
 * The server moved an answer forward. Message bytes call this for every
 * chunk; the timeout has whole seconds, so re-arming it once a second is
 * as good and cheaper.
 */
static void
progress(struct conn *c)
{
	if (!awaits_answer(c) || uv_now(c->loop) - c->progress_at < 1000)
		return;
	answer_timer(c);
}

/* Writes one line; secret: it holds credentials and is not logged. */
static void
send_line(struct conn *c, unsigned tag, const char *text, bool secret)
{
	char *line = tag ? xasprintf("a%u %s\r\n", tag, text) :
			   xasprintf("%s\r\n", text);
	int r;

	/* A secret line shows its tag and command name only. */
	if (log_enabled(LOGL_DEBUG) && tag)
		LOG(c, LOGL_DEBUG, "C: a%u %.*s%s", tag,
		    secret ? (int)strcspn(text, " ") : (int)strlen(text), text,
		    secret ? " <credentials hidden>" : "");
	else if (log_enabled(LOGL_DEBUG))
		LOG(c, LOGL_DEBUG, "C: %s", secret ? "<credentials hidden>" : text);
	r = transport_write(c->tr, line, strlen(line));
	OPENSSL_cleanse(line, strlen(line));
	free(line);
	if (r < 0)
		LOG(c, LOGL_DEBUG, "write failed: %s", err_str(r));
}

/* Sends a command and keeps it, by its tag, until its reply; the tag. */
static unsigned
vsend(struct conn *c, bool secret, unsigned want, conn_done_cb *done,
    conn_untagged_cb *untagged, void *ud, const char *fmt, va_list ap)
{
	unsigned tag;
	char *text;

	if (vasprintf(&text, fmt, ap) < 0)
		fatal("out of memory");
	tag = cmdq_add(c->q, want, done, untagged, ud);
	/* In READY the first command waiting starts the answer timeout. */
	if (c->state == CONN_READY && cmdq_len(c->q) == 1)
		answer_timer(c);
	send_line(c, tag, text, secret);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	return tag;
}

/* A command of the connection's own: the login's, IDLE, LOGOUT. */
static void __attribute__((format(printf, 4, 5)))
own_cmd(struct conn *c, bool secret, conn_done_cb *done, const char *fmt,
    ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsend(c, secret, 0, done, NULL, c, fmt, ap);
	va_end(ap);
}

unsigned
conn_cmd(struct conn *c, unsigned want, conn_done_cb *done,
    conn_untagged_cb *untagged, void *ud, const char *fmt, ...)
{
	unsigned tag;
	va_list ap;

	if (c->state != CONN_READY)
		fatal("conn_cmd in %s", state_names[c->state]);
	va_start(ap, fmt);
	tag = vsend(c, false, want, done, untagged, ud, fmt, ap);
	va_end(ap);
	return tag;
}

/* ---- login: the login decides, the connection acts --------------------- */

static void login_done(void *ud, const struct proto_resp *r);
static void idle_done(void *ud, const struct proto_resp *r);
static void logout_done(void *ud, const struct proto_resp *r);

/* The login names the states it sends the connection to by its own steps. */
static const enum conn_state step_states[] = {
	[LOGIN_STEP_TLS] = CONN_TLS,
	[LOGIN_STEP_GREETING] = CONN_GREETING,
	[LOGIN_STEP_STARTTLS] = CONN_STARTTLS,
	[LOGIN_STEP_CAPABILITY] = CONN_CAPABILITY,
	[LOGIN_STEP_TOKEN] = CONN_TOKEN,
	[LOGIN_STEP_AUTH] = CONN_AUTH,
	[LOGIN_STEP_CAPS_AGAIN] = CONN_CAPS_AGAIN,
	[LOGIN_STEP_READY] = CONN_READY,
};
#define NSTEPS (sizeof(step_states) / sizeof(step_states[0]))

/* Does what the login decided. */
static void
act(struct conn *c, const struct login_next *nx)
{
	if (nx->note[0])
		LOG(c, nx->note_lvl, "%s", nx->note);
	switch (nx->act) {
	case LOGIN_ENTER:
		conn_enter(c, step_states[nx->step], nx->reason);
		break;
	case LOGIN_FAIL:
		fail(c, nx->err, nx->final, "%s", nx->msg);
		break;
	case LOGIN_SEND:
		send_line(c, 0, nx->line, nx->secret);
		secret_free(nx->line);
		break;
	case LOGIN_CMD:
		own_cmd(c, nx->secret, login_done, "%s", nx->line);
		secret_free(nx->line);
		break;
	default:
		fatal("bad login action %d", nx->act);
	}
}

/* The token command is done; only a connection still waiting acts. */
static void
token_cb(void *ud, const struct login_next *nx)
{
	struct conn *c = ud;

	if (c->state == CONN_TOKEN)
		act(c, nx);
}

/*
 * The tagged reply to STARTTLS, CAPABILITY or the login command: each is
 * answered in the state that sent it, which tells the login which it is.
 */
static void
login_done(void *ud, const struct proto_resp *r)
{
	struct conn *c = ud;
	struct login_next nx;
	size_t at = 0;

	if (r == NULL)
		return;
	while (at < NSTEPS && step_states[at] != c->state)
		at++;
	if (at == NSTEPS)
		fatal("login reply in %s", state_names[c->state]);
	login_reply(c->lg, at, r, c->caps, transport_is_tls(c->tr), &nx);
	act(c, &nx);
}

/* ---- states -------------------------------------------------------------- */

/* Logged in (READY, IDLE...) or on the way there: entry actions. */
static void
enter_action(struct conn *c, enum conn_state st)
{
	struct login_next nx;

	switch (st) {
	case CONN_TLS:
		if (transport_start_tls(c->tr, c->o.ssl_ctx, c->a->host) < 0)
			fail(c, IDLEFETCH_ETLS, false, "cannot start TLS");
		break;
	case CONN_STARTTLS:
		own_cmd(c, false, login_done, "STARTTLS");
		break;
	case CONN_CAPABILITY:
	case CONN_CAPS_AGAIN:
		own_cmd(c, false, login_done, "CAPABILITY");
		break;
	case CONN_TOKEN:
		login_fetch(c->lg, token_cb, c);
		break;
	case CONN_AUTH:
		if (c->o.ssl_ctx && !transport_is_tls(c->tr))
			fatal("credentials about to be sent without TLS");
		login_auth(c->lg, c->caps, &nx);
		act(c, &nx);
		break;
	case CONN_READY:
		if (cmdq_len(c->q) > 0)
			answer_timer(c);
		break;
	case CONN_IDLE_START:
		own_cmd(c, false, idle_done, "IDLE");
		break;
	case CONN_IDLE:
		arm(c, c->idle_ms);
		break;
	case CONN_IDLE_DONE:
		send_line(c, 0, "DONE", false);
		break;
	case CONN_LOGOUT:
		arm(c, LOGOUT_TIMEOUT_MS);
		own_cmd(c, false, logout_done, "LOGOUT");
		break;
	default:
		break;
	}
}

/*
 * The one way to change state: logs the change and its reason, stops the
 * old state's timer, arms the answer timeout where an answer is awaited
 * and performs the new state's entry action, last (it may fail, and
 * close).
 */
static void
conn_enter(struct conn *c, enum conn_state st, const char *why)
{
	enum conn_state was = c->state;

	uv_timer_stop(&c->timer);
	if (was != st)
		LOG(c, LOGL_DEBUG, "conn %s -> %s (%s)", state_names[was],
		    state_names[st], why);
	c->state = st;
	if (awaits_answer(c))
		answer_timer(c);
	enter_action(c, st);
	if (c->state != st)
		return; /* the entry action failed */
	c->o.ops->changed(c->o.ud);
	if (st == CONN_READY && (was == CONN_AUTH || was == CONN_CAPS_AGAIN))
		c->o.ops->ready(c->o.ud);
}

static void
timer_cb(uv_timer_t *t)
{
	struct conn *c = t->data;

	switch (c->state) {
	case CONN_IDLE:
		/* Re-issue IDLE: keeps NAT state alive and proves the peer is. */
		conn_enter(c, CONN_IDLE_DONE, "refresh");
		break;
	case CONN_READY:
		if (cmdq_len(c->q) == 0 || c->paused) { /* waiting for the disk */
			answer_timer(c);
			break;
		}
		fail(c, -ETIMEDOUT, false, "no answer from the server for %u s",
		    c->a->timeout);
		break;
	case CONN_LOGOUT:
		logout_done(c, NULL);
		break;
	default:
		fail(c, -ETIMEDOUT, false, "%s:%u: timed out in %s",
		    c->a->host, c->a->port, state_names[c->state]);
		break;
	}
}

static void
idle_done(void *ud, const struct proto_resp *r)
{
	struct conn *c = ud;
	conn_done_cb *cb = c->idle_cb;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK) {
		fail(c, IDLEFETCH_EPROTO, false, "IDLE failed: %s", r->text);
		return;
	}
	c->idle_cb = NULL;
	conn_enter(c, CONN_READY, "IDLE over");
	if (c->state == CONN_READY && cb)
		cb(c->idle_ud, r);
}

/* LOGOUT answered, timed out or cut: closed either way, and said so. */
static void
logout_done(void *ud, const struct proto_resp *r)
{
	struct conn *c = ud;
	conn_done_cb *cb = c->logout_cb;

	if (cb == NULL)
		return; /* its own close cancelling it */
	c->logout_cb = NULL;
	conn_close(c);
	cb(c->logout_ud, r);
}

/* ---- responses ------------------------------------------------------------ */

static void
server_busy(struct conn *c, const struct proto_resp *r)
{
	if ((r->has & HAS_BUSY) && r->retry_ms > c->retry_ms)
		c->retry_ms = r->retry_ms;
}

static void
on_tagged(struct conn *c, const struct proto_resp *r)
{
	conn_done_cb *done;
	void *ud;

	if (!cmdq_finish(c->q, r->tag, &done, &ud)) {
		fail(c, IDLEFETCH_EPROTO, false,
		    "server answered unknown tag %s", r->tag);
		return;
	}
	if (r->has & HAS_CAPS)
		c->caps = r->caps;
	if (c->state == CONN_READY && cmdq_len(c->q) == 0)
		uv_timer_stop(&c->timer);
	else
		progress(c);
	if (r->status != PROTO_OK && (r->has & HAS_BUSY)) {
		/* Not a refusal: not a bad password, not a missing folder. */
		server_busy(c, r);
		if (done)
			done(ud, NULL);
		fail(c, -EAGAIN, false,
		    "the server is busy (%s); trying again later", r->text);
		return;
	}
	if (done)
		done(ud, r);
}

/* Untagged FETCH, LIST, STATUS: to the oldest command that asked. */
static void
on_untagged(struct conn *c, const struct proto_resp *r)
{
	if (r->status == PROTO_BYE) {
		free(c->bye);
		c->bye = xstrdup(r->text);
		server_busy(c, r);
		return;
	}
	if (r->has & HAS_CAPS)
		c->caps = r->caps;
	if (cmdq_wants(c->q, r->has)) {
		progress(c);
		cmdq_untagged(c->q, r);
		return;
	}
	c->o.ops->untagged(c->o.ud, r);
}

static void
on_continue(struct conn *c, const struct proto_resp *r)
{
	struct login_next nx;

	if (c->state == CONN_IDLE_START) {
		conn_enter(c, CONN_IDLE, "server idling");
	} else if (c->state == CONN_IDLE_CANCEL) {
		conn_enter(c, CONN_IDLE_DONE, "asked to end");
	} else if (c->state == CONN_AUTH) {
		login_continue(c->lg, r->text, &nx);
		act(c, &nx);
	} else {
		fail(c, IDLEFETCH_EPROTO, false, "unexpected continuation");
	}
}

static int
on_unit(void *ud, const char *p, size_t n)
{
	struct conn *c = ud;
	struct proto_resp r;
	struct login_next nx;
	bool greeting = c->state == CONN_GREETING;
	int pr;

	if (log_enabled(LOGL_DEBUG))
		LOG(c, LOGL_DEBUG, "S: %.*s", (int)(n > 200 ? 200 : n - 2), p);
	pr = proto_parse(p, n, greeting, &r);
	/* A message's FETCH, a line of the listing: the owner's first. */
	if (!greeting && c->sink && !c->sink->unit(c->sink_ud, pr, &r, p, n))
		return 1;
	/* RFC 3501 7.1: an ALERT must be presented to the user. */
	if (pr == 0 && (r.has & HAS_ALERT))
		LOG(c, LOGL_WARN, "server alert: %s", r.text);
	if (greeting) {
		login_greeting(c->lg, pr, &r, transport_is_tls(c->tr), &nx);
		if (nx.act != LOGIN_FAIL && (r.has & HAS_CAPS))
			c->caps = r.caps;
		act(c, &nx);
		return conn_alive(c) ? 0 : 1;
	}
	if (pr < 0 && r.kind != PROTO_TAGGED && r.status != PROTO_BYE) {
		LOG(c, LOGL_DEBUG,
		    "skipping a response the parser does not know");
		return 0;
	}
	if (r.kind == PROTO_CONTINUE)
		on_continue(c, &r);
	else if (r.kind == PROTO_TAGGED)
		on_tagged(c, &r);
	else
		on_untagged(c, &r);
	if (!conn_alive(c))
		return 1;
	/* STARTTLS: whatever followed the OK in plaintext must be dropped. */
	return c->state == CONN_TLS ? 1 : 0;
}

/* ---- literals: the sink's, with the answer timeout kept ------------------- */

static int
lit_begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	struct conn *c = ud;

	return c->sink ? c->sink->literal_begin(c->sink_ud, prefix, len, size) :
			 0;
}

static int
lit_data(void *ud, const char *p, size_t n)
{
	struct conn *c = ud;

	progress(c); /* message bytes: the answer is coming */
	return c->sink ? c->sink->literal_data(c->sink_ud, p, n) : 0;
}

static int
lit_end(void *ud)
{
	struct conn *c = ud;

	return c->sink ? c->sink->literal_end(c->sink_ud) : 0;
}

/* ---- transport events ------------------------------------------------------- */

static void
on_data(struct conn *c, const char *data, size_t len)
{
	int r = framer_push(c->fr, data, len);

	if (r < 0 && conn_alive(c)) {
		fail(c, r, false, "connection closed: %s",
		    r == -EMSGSIZE ?
			"server sent an over-long line or literal" :
			err_str(r));
		return;
	}
	if (conn_alive(c))
		c->o.ops->read(c->o.ud);
}

static void
on_transport(void *ud, enum transport_event ev, const char *data, size_t len,
    int err, const char *why)
{
	struct conn *c = ud;
	struct login_next nx;

	switch (ev) {
	case TRANSPORT_CONNECTED:
		LOG(c, LOGL_DEBUG, "connected to %s:%u", c->a->host,
		    c->a->port);
		login_connected(c->lg, &nx);
		act(c, &nx);
		break;
	case TRANSPORT_TLS_READY:
		LOG(c, LOGL_DEBUG, "TLS established, certificate verified");
		/* RFC 3501: capabilities must be asked for again after TLS. */
		c->caps = 0;
		login_tls_up(c->lg, &nx);
		act(c, &nx);
		break;
	case TRANSPORT_DATA:
		on_data(c, data, len);
		break;
	case TRANSPORT_ERROR:
		if (c->state == CONN_LOGOUT) {
			logout_done(c, NULL);
			break;
		}
		if (c->bye)
			fail(c, err, false,
			    "%s:%u: server closed the connection: %s",
			    c->a->host, c->a->port, c->bye);
		else
			fail(c, err, false, "%s:%u: %s", c->a->host,
			    c->a->port, why);
		break;
	default:
		fatal("bad transport event %d", ev);
	}
}

/* ---- public ------------------------------------------------------------------- */

static const struct framer_ops framer_ops = { .literal_begin = lit_begin,
	.literal_data = lit_data,
	.literal_end = lit_end,
	.unit = on_unit };

struct conn *
conn_new(uv_loop_t *loop, const struct conn_opts *o)
{
	struct conn *c = xcalloc(1, sizeof(*c));

	c->loop = loop;
	c->o = *o;
	c->a = o->acct;
	c->fr = framer_new(&framer_ops, c);
	c->q = cmdq_new();
	c->lg = login_new(o->acct, o->oauth);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	return c;
}

int
conn_open(struct conn *c)
{
	if (c->state != CONN_CLOSED)
		fatal("conn_open in %s", state_names[c->state]);
	free(c->bye);
	c->bye = NULL;
	c->caps = 0;
	c->paused = false;
	framer_reset(c->fr);
	c->tr = transport_new(c->loop, on_transport, c);
	conn_enter(c, CONN_CONNECT, "opening");
	return transport_connect(c->tr, c->a->host, c->a->port);
}

void
conn_close(struct conn *c)
{
	if (c->tr) {
		transport_free(c->tr);
		c->tr = NULL;
	}
	framer_reset(c->fr);
	uv_timer_stop(&c->timer);
	login_reset(c->lg); /* it may wait for a token */
	c->idle_cb = NULL;
	c->logout_cb = NULL;
	if (c->state != CONN_CLOSED) {
		LOG(c, LOGL_DEBUG, "conn %s -> CLOSED", state_names[c->state]);
		c->state = CONN_CLOSED;
	}
	/* Their owners free what they held; nothing is sent any more. */
	cmdq_cancel(c->q, c);
}

static void
conn_close_cb(uv_handle_t *h)
{
	struct conn *c = h->data;

	framer_free(c->fr);
	cmdq_free(c->q);
	login_free(c->lg);
	free(c->bye);
	free(c);
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	conn_close(c);
	uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

void
conn_set_folder(struct conn *c, const char *folder)
{
	c->folder = folder;
}

void
conn_set_sink(struct conn *c, const struct conn_sink *k, void *ud)
{
	c->sink = k;
	c->sink_ud = ud;
}

void
conn_idle(struct conn *c, uint64_t wait_ms, conn_done_cb *done, void *ud)
{
	if (c->state != CONN_READY)
		fatal("conn_idle in %s", state_names[c->state]);
	c->idle_ms = wait_ms;
	c->idle_cb = done;
	c->idle_ud = ud;
	conn_enter(c, CONN_IDLE_START, "waiting");
}

void
conn_idle_done(struct conn *c)
{
	if (c->state == CONN_IDLE)
		conn_enter(c, CONN_IDLE_DONE, "asked to end");
	else if (c->state == CONN_IDLE_START)
		conn_enter(c, CONN_IDLE_CANCEL, "asked to end");
}

void
conn_logout(struct conn *c, conn_done_cb *done, void *ud)
{
	c->logout_cb = done;
	c->logout_ud = ud;
	if (!conn_alive(c)) {
		logout_done(c, NULL);
		return;
	}
	conn_enter(c, CONN_LOGOUT, "logging out");
}

void
conn_pause(struct conn *c, bool pause)
{
	c->paused = pause;
	if (c->tr)
		transport_pause(c->tr, pause);
}

enum conn_state
conn_state(const struct conn *c)
{
	return c->state;
}

const char *
conn_state_name(enum conn_state st)
{
	return state_names[st];
}

bool
conn_alive(const struct conn *c)
{
	return c->state != CONN_CLOSED && c->state != CONN_CONNECT;
}

uint32_t
conn_caps(const struct conn *c)
{
	return c->caps;
}

size_t
conn_pending(const struct conn *c)
{
	return cmdq_len(c->q);
}

const char *
conn_bye(const struct conn *c)
{
	return c->bye;
}

uint32_t
conn_take_retry_ms(struct conn *c)
{
	uint32_t ms = c->retry_ms;

	c->retry_ms = 0;
	return ms;
}
