/*
 * Unit tests for sasl: the login command an account sends for what the
 * server offers, each encoding byte for byte, and a hostile OAuth2 error
 * challenge (bad base64, huge, not JSON) reduced to one printable line.
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

#include "idlefetch/config.h"
#include "idlefetch/oauth.h"
#include "idlefetch/proto.h"
#include "idlefetch/sasl.h"
#include "idlefetch/util.h"

static struct account
account_of(enum auth_mode auth, char *user, char *pass)
{
	return (struct account){ .host = "imap.example.org",
		.port = 993,
		.username = user,
		.password = pass,
		.auth = auth };
}

/* Decodes b64 into out; its length rounded up to a multiple of 3. */
static int
unb64(const char *b64, char *out, size_t cap)
{
	int n;

	assert_true(strlen(b64) / 4 * 3 <= cap);
	n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)b64,
	    (int)strlen(b64));
	assert_true(n >= 0);
	return n;
}

static void
test_plain(void **state)
{
	char *b = sasl_plain("user", "pass");
	char raw[64];

	(void)state;
	assert_string_equal(b, "AHVzZXIAcGFzcw==");
	free(b);
	/* RFC 4616: authzid empty, NUL, authcid, NUL, password; UTF-8 kept. */
	b = sasl_plain("j\xc3\xbcrgen@example.org", "p\"a ss");
	assert_int_equal(unb64(b, raw, sizeof(raw)), 27);
	assert_memory_equal(raw, "\0j\xc3\xbcrgen@example.org\0p\"a ss", 27);
	free(b);
}

static void
test_password_login(void **state)
{
	struct account a = account_of(AUTH_PASSWORD, "user", "pass");
	char *line, *plus, why[256];

	(void)state;
	/* SASL-IR: the response goes with the command, which is secret. */
	assert_int_equal(sasl_login(&a, CAP_AUTH_PLAIN | CAP_SASL_IR, NULL,
			     &line, &plus, why, sizeof(why)),
	    0);
	assert_string_equal(line, "AUTHENTICATE PLAIN AHVzZXIAcGFzcw==");
	assert_null(plus);
	secret_free(line);
	/* Without: after the "+". */
	assert_int_equal(sasl_login(&a, CAP_AUTH_PLAIN, NULL, &line, &plus,
			     why, sizeof(why)),
	    0);
	assert_string_equal(line, "AUTHENTICATE PLAIN");
	assert_string_equal(plus, "AHVzZXIAcGFzcw==");
	secret_free(line);
	secret_free(plus);
	/* No AUTH=PLAIN: LOGIN, quoted. */
	a.password = "p\"w\\";
	assert_int_equal(
	    sasl_login(&a, 0, NULL, &line, &plus, why, sizeof(why)), 0);
	assert_string_equal(line, "LOGIN \"user\" \"p\\\"w\\\\\"");
	assert_null(plus);
	secret_free(line);
}

static void
test_password_refusals(void **state)
{
	struct account a = account_of(AUTH_PASSWORD, "user", "pass");
	char *line = NULL, *plus = NULL, why[256];

	(void)state;
	assert_int_equal(sasl_login(&a, CAP_LOGINDISABLED, NULL, &line, &plus,
			     why, sizeof(why)),
	    IDLEFETCH_ECAPA);
	assert_string_equal(why,
	    "server refuses LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN; "
	    "not logging in");
	/* A line break LOGIN cannot carry; retrying cannot help. */
	a.password = "pa\r\nss";
	assert_int_equal(
	    sasl_login(&a, 0, NULL, &line, &plus, why, sizeof(why)), -EINVAL);
	assert_string_equal(why,
	    "username or password has bytes LOGIN cannot carry and the "
	    "server offers no AUTH=PLAIN");
	/* ...which AUTHENTICATE PLAIN carries. */
	assert_int_equal(sasl_login(&a, CAP_AUTH_PLAIN, NULL, &line, &plus,
			     why, sizeof(why)),
	    0);
	assert_string_equal(line, "AUTHENTICATE PLAIN");
	assert_string_equal(plus, "AHVzZXIAcGENCnNz");
	secret_free(line);
	secret_free(plus);
}

static void
test_oauth_login(void **state)
{
	struct account a = account_of(AUTH_XOAUTH2, "a@b.c", NULL);
	char *line, *plus, why[256], *want, raw[256];

	(void)state;
	want = oauth_response(AUTH_XOAUTH2, "a@b.c", "T0K",
	    "imap.example.org", 993);
	assert_int_equal(sasl_login(&a, CAP_AUTH_XOAUTH2 | CAP_SASL_IR, "T0K",
			     &line, &plus, why, sizeof(why)),
	    0);
	assert_null(plus);
	assert_string_equal(line + strlen("AUTHENTICATE XOAUTH2 "), want);
	assert_int_equal(unb64(want, raw, sizeof(raw)), 30);
	assert_memory_equal(raw, "user=a@b.c\1auth=Bearer T0K\1\1", 28);
	secret_free(line);
	secret_free(want);
	/* Not offered: not logging in, and the reason names both. */
	a.auth = AUTH_OAUTHBEARER;
	assert_int_equal(sasl_login(&a, CAP_AUTH_XOAUTH2 | CAP_AUTH_PLAIN,
			     "T0K", &line, &plus, why, sizeof(why)),
	    IDLEFETCH_ECAPA);
	assert_string_equal(why,
	    "auth = oauthbearer but the server does not offer "
	    "AUTH=OAUTHBEARER; not logging in");
	assert_int_equal(sasl_login(&a, CAP_AUTH_OAUTHBEARER, "T0K", &line,
			     &plus, why, sizeof(why)),
	    0);
	assert_string_equal(line, "AUTHENTICATE OAUTHBEARER");
	assert_non_null(plus);
	secret_free(line);
	secret_free(plus);
	assert_string_equal(sasl_oauth_abort(AUTH_XOAUTH2), "");
	assert_string_equal(sasl_oauth_abort(AUTH_OAUTHBEARER), "AQ==");
}

/* A challenge is the server's: bad base64, a megabyte, binary, not JSON. */
static void
test_hostile_challenge(void **state)
{
	size_t big = 1 << 20;
	char *huge = xmalloc(big + 1), out[64];

	(void)state;
	memset(huge, 'Q', big);
	huge[big] = '\0';
	oauth_describe_challenge(huge, out, sizeof(out));
	assert_true(strlen(out) < sizeof(out));
	for (size_t i = 0; out[i]; i++)
		assert_true(out[i] >= 0x20 && out[i] < 0x7f);
	free(huge);
	oauth_describe_challenge("e30=====", out, sizeof(out));
	assert_true(strlen(out) < sizeof(out));
	/* "\x01\x02{\"a\"" and a NUL: not JSON, nothing unprintable comes out */
	oauth_describe_challenge("AQJ7ImEiAA==", out, sizeof(out));
	for (size_t i = 0; out[i]; i++)
		assert_true(out[i] >= 0x20 && out[i] < 0x7f);
	oauth_describe_challenge("", out, sizeof(out));
	assert_true(strlen(out) < sizeof(out));
	oauth_describe_challenge("=", out, sizeof(out));
	assert_string_equal(out, "an undecodable challenge");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_password_login),
		cmocka_unit_test(test_password_refusals),
		cmocka_unit_test(test_oauth_login),
		cmocka_unit_test(test_hostile_challenge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
