/*
 * Unit tests for login: what the connection is told to do for each
 * greeting, STARTTLS and login reply, without a socket. The server's
 * lines go through the real parser; the OAuth2 token comes from a real
 * oauth_token_command run on a libuv loop.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/login.h"
#include "idlefetch/oauth.h"
#include "idlefetch/proto.h"
#include "idlefetch/util.h"

static struct account
account_of(enum auth_mode auth, enum tls_mode tls)
{
	return (struct account){ .name = "t",
		.host = "imap.example.org",
		.port = 143,
		.tls = tls,
		.username = "user",
		.password = "pass",
		.auth = auth };
}

/* The server's line, parsed as the connection would. */
static struct proto_resp
parsed(const char *line, bool greeting)
{
	struct proto_resp r;
	char *unit = xasprintf("%s\r\n", line);

	memset(&r, 0, sizeof(r));
	assert_int_equal(proto_parse(unit, strlen(unit), greeting, &r), 0);
	free(unit);
	return r;
}

static void
assert_enter(const struct login_next *nx, enum login_step step,
    const char *reason)
{
	assert_int_equal(nx->act, LOGIN_ENTER);
	assert_int_equal(nx->step, step);
	assert_string_equal(nx->reason, reason);
}

static void
assert_fail(const struct login_next *nx, int err, const char *msg)
{
	assert_int_equal(nx->act, LOGIN_FAIL);
	assert_int_equal(nx->err, err);
	assert_false(nx->final);
	assert_string_equal(nx->msg, msg);
}

static void
test_greetings(void **state)
{
	struct account a = account_of(AUTH_PASSWORD, TLS_MODE_NONE);
	struct login *l = login_new(&a, NULL);
	struct login_next nx;
	struct proto_resp r;

	(void)state;
	memset(&r, 0, sizeof(r));
	login_greeting(l, IDLEFETCH_EPROTO, &r, false, &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO,
	    "server refused the connection: bad greeting");
	r = parsed("* BYE too many connections", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO,
	    "server refused the connection: too many connections");
	r = parsed("* PREAUTH welcome back", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO,
	    "server sent PREAUTH; refusing "
	    "a connection that skips authentication");
	r = parsed("* OK ready", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_enter(&nx, LOGIN_STEP_CAPABILITY, "greeted");
	r = parsed("* OK [CAPABILITY IMAP4rev1 IDLE] ready", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_enter(&nx, LOGIN_STEP_AUTH, "capabilities known");
	assert_string_equal(nx.note, "");
	login_free(l);
}

static void
test_starttls(void **state)
{
	struct account a = account_of(AUTH_PASSWORD, TLS_MODE_STARTTLS);
	struct login *l = login_new(&a, NULL);
	struct login_next nx;
	struct proto_resp r;

	(void)state;
	r = parsed("* OK [CAPABILITY IMAP4rev1] ready", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_int_equal(nx.act, LOGIN_FAIL);
	assert_int_equal(nx.err, IDLEFETCH_ECAPA);
	r = parsed("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready", true);
	login_greeting(l, 0, &r, false, &nx);
	assert_enter(&nx, LOGIN_STEP_STARTTLS, "tls = starttls");
	r = parsed("a1 NO not today", false);
	login_reply(l, LOGIN_STEP_STARTTLS, &r, 0, false, &nx);
	assert_fail(&nx, IDLEFETCH_ETLS, "STARTTLS refused: not today");
	r = parsed("a1 OK begin TLS", false);
	login_reply(l, LOGIN_STEP_STARTTLS, &r, 0, false, &nx);
	assert_enter(&nx, LOGIN_STEP_TLS, "STARTTLS accepted");
	/* Over TLS now: the capabilities asked again lead to the login. */
	r = parsed("a2 OK done", false);
	login_reply(l, LOGIN_STEP_CAPABILITY, &r, CAP_STARTTLS, true, &nx);
	assert_enter(&nx, LOGIN_STEP_AUTH, "capabilities known");
	r = parsed("a2 BAD what", false);
	login_reply(l, LOGIN_STEP_CAPABILITY, &r, 0, true, &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO, "CAPABILITY failed: what");
	login_free(l);
}

static void
test_password(void **state)
{
	struct account a = account_of(AUTH_PASSWORD, TLS_MODE_NONE);
	struct login *l = login_new(&a, NULL);
	struct login_next nx;
	struct proto_resp r;

	(void)state;
	login_auth(l, 0, &nx);
	assert_int_equal(nx.act, LOGIN_CMD);
	assert_string_equal(nx.line, "LOGIN \"user\" \"pass\"");
	assert_true(nx.secret);
	secret_free(nx.line);
	/* No "+" belongs to LOGIN. */
	login_continue(l, "", &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO, "unexpected continuation");
	r = parsed("a3 NO [AUTHENTICATIONFAILED] wrong", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_fail(&nx, IDLEFETCH_EAUTH,
	    "login rejected for user user: wrong");
	r = parsed("a3 OK logged in", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_enter(&nx, LOGIN_STEP_CAPS_AGAIN, "logged in, no capabilities");
	assert_int_equal(nx.note_lvl, LOGL_INFO);
	assert_string_equal(nx.note, "logged in as user without TLS");
	r = parsed("a3 OK [CAPABILITY IMAP4rev1 IDLE] logged in", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, true, &nx);
	assert_enter(&nx, LOGIN_STEP_READY, "logged in");
	assert_string_equal(nx.note, "logged in as user over TLS");
	r = parsed("a4 OK done", false);
	login_reply(l, LOGIN_STEP_CAPS_AGAIN, &r, 0, true, &nx);
	assert_enter(&nx, LOGIN_STEP_READY, "capabilities known");
	login_free(l);
}

static void
got(void *ud, const struct login_next *nx)
{
	*(struct login_next *)ud = *nx;
}

/* Runs the token command; what the connection is told once it is done. */
static void
fetch(uv_loop_t *loop, struct login *l, struct login_next *nx)
{
	memset(nx, 0, sizeof(*nx));
	nx->act = -1;
	login_fetch(l, got, nx);
	for (int i = 0; i < 1000 && (int)nx->act == -1; i++)
		uv_run(loop, UV_RUN_ONCE);
}

#define BEARER_IR (CAP_AUTH_OAUTHBEARER | CAP_SASL_IR)

/* An OAUTHBEARER refusal's "+": {"status":"invalid_token"}, base64. */
static const char challenge[] = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=";

static void
test_oauth(void **state)
{
	struct account a = account_of(AUTH_OAUTHBEARER, TLS_MODE_NONE);
	uv_loop_t loop;
	struct oauth *o;
	struct login *l;
	struct login_next nx;
	struct proto_resp r;

	(void)state;
	uv_loop_init(&loop);
	o = oauth_new(&loop, "t", "echo tok1", 10);
	l = login_new(&a, o);
	/* No token yet: the connection waits for the command. */
	login_caps(l, CAP_SASL_IR, false, &nx);
	assert_enter(&nx, LOGIN_STEP_TOKEN, "no fresh token");
	fetch(&loop, l, &nx);
	assert_enter(&nx, LOGIN_STEP_AUTH, "token printed");
	login_auth(l, BEARER_IR, &nx);
	assert_int_equal(nx.act, LOGIN_CMD);
	assert_non_null(strstr(nx.line, "AUTHENTICATE OAUTHBEARER "));
	secret_free(nx.line);
	/* The refusal: its reasons, and the answer that ends the exchange. */
	login_continue(l, challenge, &nx);
	assert_int_equal(nx.act, LOGIN_SEND);
	assert_string_equal(nx.line, "AQ==");
	assert_false(nx.secret);
	secret_free(nx.line);
	login_continue(l, challenge, &nx);
	assert_fail(&nx, IDLEFETCH_EPROTO, "unexpected continuation");
	r = parsed("a1 NO [AUTHENTICATIONFAILED] no", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_int_equal(nx.act, LOGIN_FAIL);
	assert_int_equal(nx.err, IDLEFETCH_EAUTH);
	assert_non_null(strstr(nx.msg,
	    "login rejected for user user with a new token: no; "
	    "the server says: "));
	assert_non_null(strstr(nx.msg, "invalid_token"));
	assert_string_equal(nx.note, "");
	/* A refused token is not handed out again. */
	assert_null(oauth_token(o));
	login_caps(l, CAP_SASL_IR, false, &nx);
	assert_enter(&nx, LOGIN_STEP_TOKEN, "no fresh token");

	/* A new token, accepted, kept; refused later: a new one at once. */
	fetch(&loop, l, &nx);
	login_auth(l, BEARER_IR, &nx);
	secret_free(nx.line);
	r = parsed("a2 OK [CAPABILITY IMAP4rev1] in", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_enter(&nx, LOGIN_STEP_READY, "logged in");
	login_caps(l, CAP_SASL_IR, false, &nx);
	assert_enter(&nx, LOGIN_STEP_AUTH, "token kept");
	login_auth(l, BEARER_IR, &nx);
	secret_free(nx.line);
	r = parsed("a3 NO expired", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_fail(&nx, -EKEYEXPIRED, "reconnecting with a new token");
	assert_int_equal(nx.note_lvl, LOGL_WARN);
	assert_string_equal(nx.note,
	    "the server refused the kept token for user user (expired); "
	    "running oauth_token_command again");
	assert_null(oauth_token(o));

	login_free(l);
	oauth_free(o);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Without SASL-IR the response waits for "+"; a failing command fails. */
static void
test_oauth_no_ir(void **state)
{
	struct account a = account_of(AUTH_XOAUTH2, TLS_MODE_NONE);
	uv_loop_t loop;
	struct oauth *o;
	struct login *l;
	struct login_next nx;
	struct proto_resp r;

	(void)state;
	uv_loop_init(&loop);
	o = oauth_new(&loop, "t", "exit 3", 10);
	l = login_new(&a, o);
	fetch(&loop, l, &nx);
	assert_int_equal(nx.act, LOGIN_FAIL);
	assert_int_equal(nx.err, IDLEFETCH_EAUTH);
	login_free(l);
	oauth_free(o);
	o = oauth_new(&loop, "t", "echo tok2", 10);
	l = login_new(&a, o);
	fetch(&loop, l, &nx);
	assert_enter(&nx, LOGIN_STEP_AUTH, "token printed");
	/* A server that does not offer the mechanism is not sent a token. */
	login_auth(l, CAP_AUTH_OAUTHBEARER, &nx);
	assert_int_equal(nx.act, LOGIN_FAIL);
	assert_int_equal(nx.err, IDLEFETCH_ECAPA);
	assert_null(nx.line);
	fetch(&loop, l, &nx);
	login_auth(l, CAP_AUTH_XOAUTH2, &nx);
	assert_int_equal(nx.act, LOGIN_CMD);
	assert_string_equal(nx.line, "AUTHENTICATE XOAUTH2");
	assert_false(nx.secret);
	secret_free(nx.line);
	/* Its response waits for "+", and is sent as a secret. */
	login_continue(l, "", &nx);
	assert_int_equal(nx.act, LOGIN_SEND);
	assert_true(nx.secret);
	assert_non_null(strstr(nx.line, "="));
	secret_free(nx.line);
	/* Then a refusal's challenge is answered, not taken for another. */
	login_continue(l, challenge, &nx);
	assert_int_equal(nx.act, LOGIN_SEND);
	assert_string_equal(nx.line, "");
	assert_false(nx.secret);
	secret_free(nx.line);
	/* A response never asked for is wiped with the reply. */
	fetch(&loop, l, &nx);
	login_auth(l, CAP_AUTH_XOAUTH2, &nx);
	assert_false(nx.secret);
	secret_free(nx.line);
	r = parsed("a5 OK [CAPABILITY IMAP4rev1] in", false);
	login_reply(l, LOGIN_STEP_AUTH, &r, 0, false, &nx);
	assert_enter(&nx, LOGIN_STEP_READY, "logged in");
	login_continue(l, challenge, &nx);
	assert_int_equal(nx.act, LOGIN_SEND);
	assert_false(nx.secret);
	secret_free(nx.line);
	/* A fetch still running when the connection closes tells nobody. */
	nx.act = -1;
	login_fetch(l, got, &nx);
	login_reset(l);
	uv_run(&loop, UV_RUN_DEFAULT); /* the command ends */
	assert_int_equal((int)nx.act, -1);
	login_free(l);
	oauth_free(o);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greetings),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_password),
		cmocka_unit_test(test_oauth),
		cmocka_unit_test(test_oauth_no_ir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
