/*
 * login: the decisions of an IMAP login, from the greeting to READY.
 *
 * Each function takes what the server said and fills a struct login_next
 * with what the connection must do; nothing here writes on the wire or
 * changes the connection's state, so every branch can be tried without a
 * socket. What is kept between two calls is the login's own: the OAuth2
 * token about to be sent (borrowed from the oauth), which token the last
 * login sent, whether the command had just printed it, and the reasons a
 * server gave for refusing it (decoded from its "+", until its NO).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/login.h"
#include "idlefetch/oauth.h"
#include "idlefetch/sasl.h"
#include "idlefetch/util.h"

struct login {
	const struct account *a;
	struct oauth *oauth; /* NULL for auth = password */
	const char *token; /* for the next login command; borrowed */
	char *plus; /* the login's response, sent after "+"; a secret */
	char *why; /* an OAuth2 refusal's reasons, decoded, until its NO */
	unsigned gen; /* the token the last login command sent */
	bool fresh; /* ...printed by the command for this login */
	login_token_cb *token_cb; /* a fetch's waiter */
	void *token_ud;
};

struct login *
login_new(const struct account *a, struct oauth *oauth)
{
	struct login *l = xcalloc(1, sizeof(*l));

	l->a = a;
	l->oauth = oauth;
	return l;
}

static void
forget_why(struct login *l)
{
	free(l->why);
	l->why = NULL;
}

void
login_free(struct login *l)
{
	if (l == NULL)
		return;
	secret_free(l->plus);
	free(l->why);
	free(l);
}

void
login_reset(struct login *l)
{
	if (l->oauth)
		oauth_cancel(l->oauth, l); /* a fetch may be running */
	l->token_cb = NULL;
	l->token = NULL;
	secret_free(l->plus);
	l->plus = NULL;
	forget_why(l);
}

/* ---- what to do ---------------------------------------------------------- */

static void
enter(struct login_next *nx, enum login_step step, const char *reason)
{
	nx->act = LOGIN_ENTER;
	nx->step = step;
	nx->reason = reason;
}

static void __attribute__((format(printf, 4, 5)))
fail(struct login_next *nx, int err, bool final, const char *fmt, ...)
{
	va_list ap;

	nx->act = LOGIN_FAIL;
	nx->err = err;
	nx->final = final;
	va_start(ap, fmt);
	vsnprintf(nx->msg, sizeof(nx->msg), fmt, ap);
	va_end(ap);
}

static void
begin(struct login_next *nx)
{
	memset(nx, 0, sizeof(*nx));
}

/* ---- before the login command ------------------------------------------- */

void
login_connected(struct login *l, struct login_next *nx)
{
	begin(nx);
	enter(nx,
	    l->a->tls == TLS_MODE_IMPLICIT ? LOGIN_STEP_TLS :
					     LOGIN_STEP_GREETING,
	    "connected");
}

void
login_tls_up(struct login *l, struct login_next *nx)
{
	begin(nx);
	if (l->a->tls == TLS_MODE_IMPLICIT)
		enter(nx, LOGIN_STEP_GREETING, "TLS up");
	else
		enter(nx, LOGIN_STEP_CAPABILITY, "TLS up");
}

void
login_greeting(struct login *l, int pr, const struct proto_resp *r, bool tls,
    struct login_next *nx)
{
	begin(nx);
	if (pr < 0 || r->status == PROTO_BYE) {
		fail(nx, IDLEFETCH_EPROTO, false,
		    "server refused the connection: %s",
		    pr < 0 ? "bad greeting" : r->text);
		return;
	}
	if (r->status == PROTO_PREAUTH) {
		fail(nx, IDLEFETCH_EPROTO, false,
		    "server sent PREAUTH; refusing "
		    "a connection that skips authentication");
		return;
	}
	if (r->has & HAS_CAPS)
		login_caps(l, r->caps, tls, nx);
	else
		enter(nx, LOGIN_STEP_CAPABILITY, "greeted");
}

/* Capabilities known: STARTTLS if asked for, else log in. */
void
login_caps(struct login *l, uint32_t caps, bool tls, struct login_next *nx)
{
	begin(nx);
	if (l->a->tls == TLS_MODE_STARTTLS && !tls) {
		if (!(caps & CAP_STARTTLS)) {
			fail(nx, IDLEFETCH_ECAPA, false,
			    "tls = starttls but the server "
			    "does not offer STARTTLS; not logging in");
			return;
		}
		enter(nx, LOGIN_STEP_STARTTLS, "tls = starttls");
		return;
	}
	if (l->a->auth == AUTH_PASSWORD) {
		enter(nx, LOGIN_STEP_AUTH, "capabilities known");
		return;
	}
	l->fresh = false;
	l->token = oauth_token(l->oauth);
	/* Nothing fresh: the command runs, the connection waits. */
	enter(nx, l->token ? LOGIN_STEP_AUTH : LOGIN_STEP_TOKEN,
	    l->token ? "token kept" : "no fresh token");
}

/* CAPABILITY's answer, before the login or after one that gave none. */
static void
caps_done(struct login *l, const struct proto_resp *r, bool again,
    uint32_t caps, bool tls, struct login_next *nx)
{
	begin(nx);
	if (r->status != PROTO_OK)
		fail(nx, IDLEFETCH_EPROTO, false, "CAPABILITY failed: %s",
		    r->text);
	else if (again)
		enter(nx, LOGIN_STEP_READY, "capabilities known");
	else
		login_caps(l, caps, tls, nx);
}

static void
starttls_done(const struct proto_resp *r, struct login_next *nx)
{
	begin(nx);
	if (r->status != PROTO_OK) {
		fail(nx, IDLEFETCH_ETLS, false, "STARTTLS refused: %s",
		    r->text);
		return;
	}
	enter(nx, LOGIN_STEP_TLS, "STARTTLS accepted");
}

static void
got_token(void *ud, const char *token, const char *err)
{
	struct login *l = ud;
	login_token_cb *cb = l->token_cb;
	struct login_next nx;

	begin(&nx);
	l->token_cb = NULL;
	if (token == NULL) {
		fail(&nx, IDLEFETCH_EAUTH, false, "%s", err);
	} else {
		l->fresh = true;
		l->token = token;
		enter(&nx, LOGIN_STEP_AUTH, "token printed");
	}
	if (cb)
		cb(l->token_ud, &nx);
}

void
login_fetch(struct login *l, login_token_cb *cb, void *ud)
{
	l->token_cb = cb;
	l->token_ud = ud;
	oauth_fetch(l->oauth, got_token, l);
}

/* ---- the login command -------------------------------------------------- */

/*
 * The login command the server takes. With an OAuth2 token, a refusal
 * comes as a "+" with the server's reasons (base64 JSON), answered by
 * sasl_oauth_abort(), then NO.
 */
void
login_auth(struct login *l, uint32_t caps, struct login_next *nx)
{
	char why[256];
	int r;

	begin(nx);
	secret_free(l->plus);
	r = sasl_login(l->a, caps, l->token, &nx->line, &l->plus, why,
	    sizeof(why));
	l->token = NULL;
	if (r < 0) {
		nx->line = l->plus = NULL;
		fail(nx, r, r == -EINVAL, "%s", why);
		return;
	}
	if (l->a->auth != AUTH_PASSWORD) {
		l->gen = oauth_generation(l->oauth);
		forget_why(l);
	}
	nx->act = LOGIN_CMD;
	nx->secret = l->plus == NULL;
}

/*
 * The response the login command left for "+", else the server refused
 * the token: its reasons, decoded, for the log.
 */
void
login_continue(struct login *l, const char *text, struct login_next *nx)
{
	char why[256];

	begin(nx);
	if (l->plus) {
		nx->act = LOGIN_SEND;
		nx->line = l->plus;
		nx->secret = true;
		l->plus = NULL;
		return;
	}
	if (l->a->auth == AUTH_PASSWORD || l->why != NULL) {
		fail(nx, IDLEFETCH_EPROTO, false, "unexpected continuation");
		return;
	}
	oauth_describe_challenge(text, why, sizeof(why));
	l->why = xstrdup(why);
	nx->act = LOGIN_SEND;
	nx->line = xstrdup(sasl_oauth_abort(l->a->auth));
}

/*
 * A refused token is not used again. One the command had just printed
 * means the account itself is refused (retried slowly); one that was kept
 * from before has merely expired early: a new one, at once (-EKEYEXPIRED).
 */
static void
oauth_rejected(struct login *l, const struct proto_resp *r,
    struct login_next *nx)
{
	char reason[300];

	oauth_refused(l->oauth, l->gen);
	snprintf(reason, sizeof(reason), "%s%s%s", r->text,
	    l->why ? "; the server says: " : "", l->why ? l->why : "");
	forget_why(l);
	if (l->fresh) {
		fail(nx, IDLEFETCH_EAUTH, false,
		    "login rejected for user %s with a new token: %s",
		    l->a->username, reason);
		return;
	}
	nx->note_lvl = LOGL_WARN;
	snprintf(nx->note, sizeof(nx->note),
	    "the server refused the kept token for user %s (%s); running "
	    "oauth_token_command again",
	    l->a->username, reason);
	fail(nx, -EKEYEXPIRED, false, "reconnecting with a new token");
}

static void
auth_done(struct login *l, const struct proto_resp *r, bool tls,
    struct login_next *nx)
{
	begin(nx);
	secret_free(l->plus); /* answered without asking for it */
	l->plus = NULL;
	if (r->status != PROTO_OK && l->a->auth != AUTH_PASSWORD) {
		oauth_rejected(l, r, nx);
		return;
	}
	if (r->status != PROTO_OK) {
		fail(nx, IDLEFETCH_EAUTH, false,
		    "login rejected for user %s: %s", l->a->username, r->text);
		return;
	}
	nx->note_lvl = LOGL_INFO;
	snprintf(nx->note, sizeof(nx->note), "logged in as %s%s",
	    l->a->username, tls ? " over TLS" : " without TLS");
	if (r->has & HAS_CAPS)
		enter(nx, LOGIN_STEP_READY, "logged in");
	else
		enter(nx, LOGIN_STEP_CAPS_AGAIN, "logged in, no capabilities");
}

void
login_reply(struct login *l, enum login_step at, const struct proto_resp *r,
    uint32_t caps, bool tls, struct login_next *nx)
{
	switch (at) {
	case LOGIN_STEP_STARTTLS:
		starttls_done(r, nx);
		break;
	case LOGIN_STEP_CAPABILITY:
	case LOGIN_STEP_CAPS_AGAIN:
		caps_done(l, r, at == LOGIN_STEP_CAPS_AGAIN, caps, tls, nx);
		break;
	case LOGIN_STEP_AUTH:
		auth_done(l, r, tls, nx);
		break;
	default:
		fatal("login reply in step %d", at);
	}
}
