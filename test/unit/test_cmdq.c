/*
 * Unit tests for cmdq: tags in order, a tagged reply finds its command
 * (and nothing else does), untagged responses go to the oldest command
 * that asked for them, and a close tells every owner but the connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/cmdq.h"
#include "idlefetch/proto.h"
#include "idlefetch/util.h"

static int done_ok, done_null, untagged_n;
static void *last_ud;

static void
done(void *ud, const struct proto_resp *r)
{
	last_ud = ud;
	if (r)
		done_ok++;
	else
		done_null++;
}

static void
untagged(void *ud, const struct proto_resp *r)
{
	(void)r;
	last_ud = ud;
	untagged_n++;
}

static void
test_tags(void **state)
{
	struct cmdq *q = cmdq_new();
	cmdq_done_cb *d;
	int a, b;
	void *ud;

	(void)state;
	assert_int_equal(cmdq_add(q, 0, done, NULL, &a), 1);
	assert_int_equal(cmdq_add(q, 0, done, NULL, &b), 2);
	assert_int_equal(cmdq_len(q), 2);
	assert_false(cmdq_finish(q, "a3", &d, &ud));
	assert_false(cmdq_finish(q, "a1x", &d, &ud));
	assert_false(cmdq_finish(q, "b1", &d, &ud));
	assert_false(cmdq_finish(q, "*", &d, &ud));
	assert_true(cmdq_finish(q, "a2", &d, &ud));
	assert_ptr_equal(ud, &b);
	assert_ptr_equal(d, done);
	assert_false(cmdq_finish(q, "a2", &d, &ud));
	assert_int_equal(cmdq_len(q), 1);
	/* Tags go on counting: an old reply never matches a new command. */
	assert_int_equal(cmdq_add(q, 0, done, NULL, &b), 3);
	cmdq_free(q);
}

static void
test_untagged_to_oldest_asking(void **state)
{
	struct cmdq *q = cmdq_new();
	struct proto_resp r = { .has = HAS_FETCH };
	int a, b, c;

	(void)state;
	untagged_n = 0;
	cmdq_add(q, 0, done, NULL, &a);
	cmdq_add(q, HAS_LIST, done, untagged, &b);
	cmdq_add(q, HAS_FETCH, done, untagged, &c);
	assert_true(cmdq_wants(q, HAS_FETCH));
	assert_true(cmdq_untagged(q, &r));
	assert_ptr_equal(last_ud, &c);
	r.has = HAS_LIST | HAS_FETCH;
	assert_true(cmdq_untagged(q, &r));
	assert_ptr_equal(last_ud, &b);
	r.has = HAS_STATUS;
	assert_false(cmdq_wants(q, HAS_STATUS));
	assert_false(cmdq_untagged(q, &r));
	assert_int_equal(untagged_n, 2);
	cmdq_free(q);
}

static void
test_secret_and_cancel(void **state)
{
	struct cmdq *q = cmdq_new();
	unsigned own;
	char *s;
	int a;

	(void)state;
	done_null = done_ok = 0;
	cmdq_add(q, 0, done, NULL, &a);
	own = cmdq_add(q, 0, done, NULL, q);
	assert_false(cmdq_has_secret(q));
	cmdq_set_secret(q, own, "AHVzZXIAcGFzcw==");
	assert_true(cmdq_has_secret(q));
	s = cmdq_take_secret(q);
	assert_string_equal(s, "AHVzZXIAcGFzcw==");
	secret_free(s);
	assert_false(cmdq_has_secret(q));
	cmdq_set_secret(q, own, "kept until the close");
	/* The owner's command hears r == NULL; the skipped one does not. */
	cmdq_cancel(q, q);
	assert_int_equal(done_null, 1);
	assert_int_equal(done_ok, 0);
	assert_ptr_equal(last_ud, &a);
	assert_int_equal(cmdq_len(q), 0);
	assert_int_equal(cmdq_add(q, 0, done, NULL, &a), 3);
	cmdq_free(q);
}

/* An idle connection waits for one reply: its table is one slot. */
static void
test_table_is_as_small_as_what_waits(void **state)
{
	struct cmdq *q = cmdq_new();
	cmdq_done_cb *d;
	char tag[16];
	void *ud;
	int a;

	(void)state;
	assert_int_equal(cmdq_held(q), 0);
	for (unsigned i = 1; i <= 9; i++)
		assert_int_equal(cmdq_add(q, 0, done, NULL, &a), i);
	for (unsigned i = 1; i <= 9; i++) {
		snprintf(tag, sizeof(tag), "a%u", i);
		assert_true(cmdq_finish(q, tag, &d, &ud));
	}
	assert_int_equal(cmdq_held(q), 0);
	cmdq_add(q, 0, done, NULL, &a);
	assert_true(cmdq_held(q) > 0);
	assert_true(cmdq_held(q) <= 64);
	cmdq_free(q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_untagged_to_oldest_asking),
		cmocka_unit_test(test_secret_and_cancel),
		cmocka_unit_test(test_table_is_as_small_as_what_waits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
