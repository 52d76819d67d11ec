/* Unit tests for mutf7: modified UTF-7 mailbox names, both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/mutf7.h"

static void
check_pair(const char *utf8, const char *wire)
{
	char *e = mutf7_encode(utf8), *d = mutf7_decode(wire);

	assert_non_null(e);
	assert_string_equal(e, wire);
	assert_non_null(d);
	assert_string_equal(d, utf8);
	free(e);
	free(d);
}

static void
test_rfc_examples_and_round_trips(void **state)
{
	(void)state;
	check_pair("INBOX", "INBOX");
	check_pair("Entwürfe", "Entw&APw-rfe");
	check_pair("Q&A", "Q&-A");
	check_pair("&", "&-");
	/* RFC 3501 5.1.3's example: ~peter/mail/台北/日本語 */
	check_pair("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		   "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	    "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	/* Outside the BMP: a surrogate pair in one run. */
	check_pair("mail \xf0\x9f\x93\xac", "mail &2D3c7A-");
	check_pair("Отправленные",
	    "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-");
}

static void
test_invalid_input_is_refused(void **state)
{
	static const char *bad_wire[] = {
		"Q&A", /* a run never closed */
		"&APw", /* ... */
		"&AGE-", /* 'a' encoded: ASCII must stand for itself */
		"&AAA-", /* NUL */
		"&2D0-", /* a lone high surrogate */
		"&3AA-", /* a lone low surrogate */
		"&APx-", /* bits left over that are not zero */
		"&APw!-", /* not base64 */
		"&-\x01", "a\xc3\xbc", /* a control, raw 8-bit */
		"&-&", /* "&" then a run never closed */
		"&APw-&APw-", /* two runs in a row: not canonical */
	};
	static const char *bad_utf8[] = {
		"\xc3", /* cut off */
		"\xc0\xaf", /* overlong '/' */
		"\xed\xa0\x80", /* a surrogate */
		"\xf4\x90\x80\x80", /* past U+10FFFF */
		"a\x01", "\xc2\x85", /* C0 and C1 controls */
		"\xff",
	};
	char *d;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_wire) / sizeof(*bad_wire); i++) {
		d = mutf7_decode(bad_wire[i]);
		if (d != NULL)
			fail_msg("decoded '%s' to '%s'", bad_wire[i], d);
	}
	/* "&&" is written "&-&-". */
	d = mutf7_decode("&-&-");
	assert_string_equal(d, "&&");
	free(d);
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(*bad_utf8); i++) {
		assert_false(utf8_valid(bad_utf8[i]));
		assert_null(mutf7_encode(bad_utf8[i]));
	}
	assert_true(utf8_valid("Entwürfe"));
}

static void
test_wire_name_keeps_what_already_is_modified_utf7(void **state)
{
	static const char *cases[][2] = {
		{ "INBOX", "INBOX" },
		{ "Entw&APw-rfe", "Entw&APw-rfe" }, /* as older configs had it */
		{ "Entwürfe", "Entw&APw-rfe" },
		{ "Q&A", "Q&-A" },
		{ "R&-D", "R&-D" },
		{ "Lists/dev", "Lists/dev" },
	};
	char *w;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		w = mutf7_wire_name(cases[i][0]);
		assert_non_null(w);
		assert_string_equal(w, cases[i][1]);
		free(w);
	}
	assert_null(mutf7_wire_name("\xff"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_examples_and_round_trips),
		cmocka_unit_test(test_invalid_input_is_refused),
		cmocka_unit_test(test_wire_name_keeps_what_already_is_modified_utf7),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
