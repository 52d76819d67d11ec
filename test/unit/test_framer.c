/* Unit tests for the framer: units, literals, splitting, hostile sizes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/framer.h"
#include "idlefetch/util.h"

/* Records every callback as text so runs can be compared. */
struct rec {
	char log[65536];
	size_t len;
	int stop_after; /* unit callback returns 1 at this unit */
	int units;
};

static void
add(struct rec *r, const char *p, size_t n)
{
	assert_true(r->len + n < sizeof(r->log));
	memcpy(r->log + r->len, p, n);
	r->len += n;
	r->log[r->len] = '\0';
}

static int
lit_begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	struct rec *r = ud;
	char buf[64];
	/* Stream only what follows "BODY[]", as the session does. */
	int stream = len > 8 && memmem(prefix, len, "BODY[]", 6) != NULL;

	snprintf(buf, sizeof(buf), "<begin %llu %s>", (unsigned long long)size,
	    stream ? "stream" : "keep");
	add(r, buf, strlen(buf));
	return stream;
}

static int
lit_data(void *ud, const char *p, size_t n)
{
	struct rec *r = ud;

	add(r, p, n);
	return 0;
}

static int
lit_end(void *ud)
{
	add(ud, "<end>", 5);
	return 0;
}

static int
unit(void *ud, const char *p, size_t n)
{
	struct rec *r = ud;

	add(r, "<unit ", 6);
	add(r, p, n);
	add(r, ">", 1);
	return ++r->units == r->stop_after ? 1 : 0;
}

static const struct framer_ops ops = { lit_begin, lit_data, lit_end, unit };

static const char stream_in[] =
    "* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"
    "* LIST () \"/\" {5}\r\nInbox\r\n"
    "* 1 FETCH (UID 7 RFC822.SIZE 16 BODY[] {16}\r\nHi\r\nthere\r\n{3}\r\n UID 7)\r\n"
    "* 2 FETCH (UID 8 BODY[] {0}\r\n)\r\n"
    "* 3 FETCH (UID 9 BODY[] {4+}\r\nab\r\n)\r\n"
    "a1 OK done\r\n";

static const char stream_out[] =
    "<unit * OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n>"
    "<begin 5 keep><unit * LIST () \"/\" {5}\r\nInbox\r\n>"
    "<begin 16 stream>Hi\r\nthere\r\n{3}\r\n<end>"
    "<unit * 1 FETCH (UID 7 RFC822.SIZE 16 BODY[] {0}\r\n UID 7)\r\n>"
    "<begin 0 stream><end><unit * 2 FETCH (UID 8 BODY[] {0}\r\n)\r\n>"
    "<begin 4 stream>ab\r\n<end><unit * 3 FETCH (UID 9 BODY[] {0}\r\n)\r\n>"
    "<unit a1 OK done\r\n>";

/* Collapses consecutive body chunks so splits do not change the log. */
static void
run_split(size_t cut, size_t step, struct rec *r)
{
	struct framer *f = framer_new(&ops, r);
	size_t n = strlen(stream_in), off = 0;

	memset(r, 0, sizeof(*r));
	assert_int_equal(framer_push(f, stream_in, cut), 0);
	off = cut;
	while (off < n) {
		size_t take = step && off + step < n ? step : n - off;

		assert_int_equal(framer_push(f, stream_in + off, take), 0);
		off += take;
	}
	framer_free(f);
}

static void
test_units_and_literals_in_one_push(void **state)
{
	struct rec r;

	run_split(strlen(stream_in), 0, &r);
	assert_string_equal(r.log, stream_out);
}

static void
test_split_at_every_byte_boundary_gives_the_same_units(void **state)
{
	struct rec r;

	for (size_t cut = 0; cut <= strlen(stream_in); cut++) {
		run_split(cut, 0, &r);
		assert_string_equal(r.log, stream_out);
	}
}

static void
test_byte_by_byte_gives_the_same_units(void **state)
{
	struct rec r;

	run_split(0, 1, &r);
	assert_string_equal(r.log, stream_out);
}

static int
push_one(const char *s)
{
	struct rec r = { 0 };
	struct framer *f = framer_new(&ops, &r);
	int ret = framer_push(f, s, strlen(s));

	framer_free(f);
	return ret;
}

static void
test_absurd_literal_sizes_are_rejected(void **state)
{
	assert_int_equal(push_one(
			     "* 1 FETCH (BODY[] {99999999999999999999999}\r\n"),
	    -EMSGSIZE);
	assert_int_equal(push_one("* 1 FETCH (BODY[] {4294967296}\r\n"),
	    -EMSGSIZE);
	assert_int_equal(push_one(
			     "* 1 FETCH (BODY[] {18446744073709551615}\r\n"),
	    -EMSGSIZE);
	/* A literal that is kept in memory is capped far lower. */
	assert_int_equal(push_one("* LIST () \"/\" {2000000}\r\n"), -EMSGSIZE);
	assert_int_equal(push_one("* LIST () \"/\" {}\r\n"), IDLEFETCH_EPROTO);
}

static void
test_overlong_line_is_rejected(void **state)
{
	size_t n = FRAMER_MAX_LINE + 10;
	char *s = malloc(n + 1);
	struct rec r = { 0 };
	struct framer *f = framer_new(&ops, &r);

	memset(s, 'x', n);
	s[n] = '\0';
	assert_int_equal(framer_push(f, s, n), -EMSGSIZE);
	assert_int_equal(r.units, 0);
	framer_free(f);
	free(s);
}

static void
test_unit_callback_can_stop_the_rest_of_the_buffer(void **state)
{
	struct rec r = { .stop_after = 1 };
	struct framer *f = framer_new(&ops, &r);
	const char *s = "a1 OK begin TLS now\r\n* injected plaintext\r\n";

	assert_int_equal(framer_push(f, s, strlen(s)), 1);
	assert_string_equal(r.log, "<unit a1 OK begin TLS now\r\n>");
	framer_free(f);
}

static void
test_bare_lf_is_treated_as_crlf(void **state)
{
	struct rec r = { 0 };
	struct framer *f = framer_new(&ops, &r);

	assert_int_equal(framer_push(f, "* 3 EXISTS\n", 11), 0);
	assert_string_equal(r.log, "<unit * 3 EXISTS\r\n>");
	framer_free(f);
}

static void
test_reset_drops_a_partial_unit(void **state)
{
	struct rec r = { 0 };
	struct framer *f = framer_new(&ops, &r);

	assert_int_equal(framer_push(f, "* 1 FETCH (BODY[] {10}\r\nabc", 27),
	    0);
	assert_int_equal(framer_in_literal(f), 1);
	framer_reset(f);
	assert_int_equal(framer_in_literal(f), 0);
	r.len = 0;
	assert_int_equal(framer_push(f, "a1 OK x\r\n", 9), 0);
	assert_string_equal(r.log, "<unit a1 OK x\r\n>");
	framer_free(f);
}

/* An idle connection keeps no buffer: only a partial unit holds one. */
static void
test_no_buffer_is_held_between_units(void **state)
{
	struct rec r = { 0 };
	struct framer *f = framer_new(&ops, &r);

	assert_int_equal(framer_held(f), 0);
	assert_int_equal(framer_push(f, "* 3 EXISTS\r\n* 4 EXI", 19), 0);
	assert_true(framer_held(f) > 0);
	assert_int_equal(framer_push(f, "STS\r\n", 5), 0);
	assert_string_equal(r.log,
	    "<unit * 3 EXISTS\r\n><unit * 4 EXISTS\r\n>");
	assert_int_equal(framer_held(f), 0);
	/* A streamed body keeps the unit's start until its end. */
	assert_int_equal(framer_push(f, "* 1 FETCH (BODY[] {3}\r\nab", 25), 0);
	assert_true(framer_held(f) > 0);
	assert_int_equal(framer_push(f, "c)\r\n", 4), 0);
	assert_int_equal(framer_held(f), 0);
	framer_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_units_and_literals_in_one_push),
		cmocka_unit_test(
		    test_split_at_every_byte_boundary_gives_the_same_units),
		cmocka_unit_test(test_byte_by_byte_gives_the_same_units),
		cmocka_unit_test(test_absurd_literal_sizes_are_rejected),
		cmocka_unit_test(test_overlong_line_is_rejected),
		cmocka_unit_test(
		    test_unit_callback_can_stop_the_rest_of_the_buffer),
		cmocka_unit_test(test_bare_lf_is_treated_as_crlf),
		cmocka_unit_test(test_reset_drops_a_partial_unit),
		cmocka_unit_test(test_no_buffer_is_held_between_units),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
