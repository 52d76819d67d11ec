/*
 * Unit tests for oauth: what a token command may print, the SASL initial
 * responses, and a server's error challenge in words.
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

static void
test_command_output(void **state)
{
	char *t;
	int64_t e;

	(void)state;
	assert_int_equal(oauth_parse_output("ya29.a0Af-_x", &t, &e), 0);
	assert_string_equal(t, "ya29.a0Af-_x");
	assert_true(e == -1);
	free(t);
	assert_int_equal(oauth_parse_output("{\"access_token\": \"abc\", "
					    "\"expires_in\": 3599, "
					    "\"token_type\": \"Bearer\"}",
			     &t, &e),
	    0);
	assert_string_equal(t, "abc");
	assert_true(e == 3599);
	free(t);
	assert_int_equal(oauth_parse_output("{\"access_token\":\"x\","
					    "\"expires_in\":\"60\"}",
			     &t, &e),
	    0);
	assert_true(e == 60);
	free(t);
	/* What is not a token is refused, never sent. */
	assert_int_equal(oauth_parse_output("", &t, &e), -EINVAL);
	assert_int_equal(oauth_parse_output("two words", &t, &e), -EINVAL);
	assert_int_equal(oauth_parse_output("{\"error\": \"invalid_grant\"}", &t,
			     &e),
	    -EINVAL);
	assert_int_equal(oauth_parse_output("{\"access_token\": 5}", &t, &e),
	    -EINVAL);
	assert_int_equal(oauth_parse_output("{\"access_token\": \"a", &t, &e),
	    -EINVAL);
	assert_null(t);
}

static void
decoded(const char *b64, char *out)
{
	int n = EVP_DecodeBlock((unsigned char *)out,
	    (const unsigned char *)b64, (int)strlen(b64));

	assert_true(n > 0);
	out[n] = '\0';
}

static void
test_initial_responses(void **state)
{
	char raw[256], *b;

	(void)state;
	b = oauth_response(AUTH_XOAUTH2, "a@b.c", "T0K", "imap.gmail.com", 993);
	decoded(b, raw);
	assert_memory_equal(raw, "user=a@b.c\001auth=Bearer T0K\001\001", 28);
	free(b);
	/* RFC 7628's form, with the user as a saslname (',' and '='). */
	b = oauth_response(AUTH_OAUTHBEARER, "a,b=c", "T", "h", 143);
	decoded(b, raw);
	assert_memory_equal(raw,
	    "n,a=a=2Cb=3Dc,\001host=h\001port=143\001auth=Bearer T\001\001",
	    46);
	free(b);
}

static void
test_error_challenge_in_words(void **state)
{
	char out[200];

	(void)state;
	/* {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"} */
	oauth_describe_challenge(
	    "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRw"
	    "czovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
	    out, sizeof(out));
	assert_string_equal(out,
	    "status 401, schemes bearer, scope https://mail.google.com/");
	/* Not JSON: the text, printable. */
	oauth_describe_challenge("bm8gd2F5Cg==", out, sizeof(out));
	assert_string_equal(out, "no way?");
	oauth_describe_challenge("!!!", out, sizeof(out));
	assert_string_equal(out, "an undecodable challenge");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_output),
		cmocka_unit_test(test_initial_responses),
		cmocka_unit_test(test_error_challenge_in_words),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
