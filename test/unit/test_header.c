/*
 * Unit tests for header: the Message-ID and Date behind the guard, and a
 * key that is the same from the server (CRLF, chosen fields) and from the
 * Maildir (LF, whole header).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/header.h"

static int
parse(const char *s, struct header_info *h)
{
	return header_parse(s, strlen(s), h);
}

static void
test_message_id_and_date(void **state)
{
	struct header_info h;

	(void)state;
	assert_int_equal(parse("From: a@b\r\nMessage-ID: <x.1@example.org>\r\n"
			       "Date: Thu, 26 Nov 2026 10:00:00 +0100\r\n\r\n"
			       "body, not header: Message-ID: <no@no>\r\n",
			     &h),
	    0);
	assert_string_equal(h.msgid, "<x.1@example.org>");
	assert_int_equal(h.date, 1795683600); /* 09:00:00 UTC */
	assert_true(h.lines != 0);
	/* Folded, with a comment: the ID alone. */
	assert_int_equal(parse("Message-Id:\n  <y@z> (from the list)\n\n", &h), 0);
	assert_string_equal(h.msgid, "<y@z>");
	assert_int_equal(h.date, 0);
}

static void
test_same_key_from_server_and_maildir(void **state)
{
	struct header_info srv, md;

	(void)state;
	/* No Message-ID: Date, From and Subject decide. */
	assert_int_equal(parse("Date: Wed, 25 Nov 2026 08:00:00 +0000\r\n"
			       "From: Ann <ann@example.org>\r\n"
			       "Subject: a  long\r\n\tsubject\r\n\r\n",
			     &srv),
	    0);
	assert_int_equal(parse("Received: from x\n\tby y\n"
			       "Date: Wed, 25 Nov 2026 08:00:00 +0000\n"
			       "To: b@example.org\n"
			       "From: Ann <ann@example.org>\n"
			       "Subject: a long subject\n"
			       "X-Other: 1\n\nbody\n",
			     &md),
	    0);
	assert_string_equal(srv.msgid, "");
	assert_int_equal(srv.date, md.date);
	assert_true(srv.lines == md.lines);
	assert_true(header_key(&srv) == header_key(&md));
	/* Another subject: another key. */
	assert_int_equal(parse("Date: Wed, 25 Nov 2026 08:00:00 +0000\n"
			       "From: Ann <ann@example.org>\n"
			       "Subject: another\n\n",
			     &md),
	    0);
	assert_true(header_key(&srv) != header_key(&md));
	/* Nothing to go by: no key. */
	assert_int_equal(parse("X-A: 1\n\n", &md), 0);
	assert_true(header_key(&md) == 0);
}

static void
test_guard_refuses_what_libetpan_cannot_take(void **state)
{
	struct header_info h;
	size_t n = 200000;
	char *deep = malloc(n + 32), *big;

	(void)state;
	/* Comments nested 200,000 deep: refused before the parser. */
	memcpy(deep, "Message-ID: <a@b>\r\nDate: ", 25);
	memset(deep + 25, '(', n);
	memcpy(deep + 25 + n, "\r\n\r\n", 5);
	assert_int_equal(parse(deep, &h), -ELOOP);
	assert_string_equal(h.msgid, "");
	free(deep);
	/* A NUL cuts nothing short: the block is refused. */
	assert_int_equal(header_parse("Message-ID: <a\0b@c>\r\n\r\n", 23, &h),
	    -EINVAL);
	assert_string_equal(h.msgid, "");
	/* Over HEADER_MAX without an empty line. */
	big = malloc(HEADER_MAX + 64);
	memcpy(big, "Subject: ", 9);
	memset(big + 9, 'x', HEADER_MAX + 40);
	big[HEADER_MAX + 49] = '\0';
	assert_int_equal(parse(big, &h), -E2BIG);
	assert_true(h.lines != 0); /* the hash needs no parser */
	free(big);
	/* The crashers of libetpan's other header parsers. */
	assert_int_equal(parse("Resent-Bcc::", &h), 0);
	assert_int_equal(parse("Return-Path:<o", &h), 0);
	(void)parse("Resent-Bcc: a@b\r\nMessage-ID: <c@d>\r\n\r\n", &h);
	/* White space inside an ID never reaches the key. */
	assert_int_equal(parse("Message-ID: <a b@c>\r\n\r\n", &h), 0);
	assert_null(strchr(h.msgid, ' '));
}

/* The envelope sender an MDA or LMTP target gets. */
static void
test_return_path(void **state)
{
	static const struct {
		const char *hdr;
		int r;
		const char *want;
	} cases[] = {
		{ "Return-Path: <a@b.example>\r\nFrom: x\r\n\r\nbody", 0,
		    "a@b.example" },
		{ "return-path:\n  <a@b.example> \nFrom: x\n\n", 0,
		    "a@b.example" },
		{ "Return-Path: <>\n\n", 0, "" },
		{ "From: x\nSubject: y\n\nReturn-Path: <late@x>\n", -ENOENT,
		    "" },
		{ "Return-Path: <first@x>\nReturn-Path: <second@x>\n\n", 0,
		    "first@x" },
		{ "Return-Path: a@b.example\n\n", -EINVAL, "" },
		{ "Return-Path: <a b@c>\n\n", -EINVAL, "" },
		{ "Return-Path: <a@b>\nX: \xc3\xa4\n\n", 0, "a@b" },
		{ "Return-Path: <\xc3\xa4@b>\n\n", -EINVAL, "" },
		{ "Return-Path: <a<b@c>\n\n", -EINVAL, "" },
		{ "Return-Path:<o", -ENOENT, "" }, /* not a whole field */
	};
	char out[HEADER_SENDER_MAX], big[600];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = header_return_path(cases[i].hdr, strlen(cases[i].hdr),
		    out);

		if (r != cases[i].r || strcmp(out, cases[i].want) != 0)
			fail_msg("case %zu: %d '%s'", i, r, out);
	}
	/* Too long for a command line: not used. */
	snprintf(big, sizeof(big), "Return-Path: <%0300d@x>\n\n", 0);
	assert_int_equal(header_return_path(big, strlen(big), out), -EINVAL);
	assert_string_equal(out, "");
}

static void
test_block_length(void **state)
{
	(void)state;
	assert_int_equal(header_block_len("A: 1\r\n\r\nbody", 13), 8);
	assert_int_equal(header_block_len("A: 1\n\nbody", 10), 6);
	assert_int_equal(header_block_len("\r\nbody", 6), 2);
	assert_int_equal(header_block_len("A: 1\r\n", 6), 6);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_id_and_date),
		cmocka_unit_test(test_same_key_from_server_and_maildir),
		cmocka_unit_test(test_guard_refuses_what_libetpan_cannot_take),
		cmocka_unit_test(test_block_length),
		cmocka_unit_test(test_return_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
