/*
 * Unit tests for the selection: what the selected folder's untagged
 * replies say is kept (EXISTS grows and shrinks with EXPUNGE), and what
 * the sync does after SELECT follows from the saved state: a recovery cut
 * short or a new UIDVALIDITY recovers, new/ is reconciled once, a next UID
 * not above the last delivered one recovers, and last_uid is verified only
 * when there is something to check it against.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/log.h"
#include "idlefetch/selection.h"

static struct account account = { .name = "test", .after = AFTER_KEEP };

static struct selection *
selected(uint32_t uidvalidity, uint32_t uidnext, uint32_t exists)
{
	struct selection *s = selection_init(malloc(selection_size()), &account,
	    "Entwürfe", NULL);
	struct proto_resp r = { 0 };

	r.has = HAS_UIDVALIDITY | HAS_UIDNEXT | HAS_EXISTS;
	r.uidvalidity = uidvalidity;
	r.uidnext = uidnext;
	r.exists = exists;
	selection_untagged(s, &r);
	return s;
}

static void
done(struct selection *s)
{
	selection_fini(s);
	free(s);
}

static void
test_untagged_counts_messages(void **state)
{
	struct selection *s = selected(7, 11, 10);
	struct proto_resp r = { 0 };

	(void)state;
	assert_string_equal(selection_wire(s), "Entw&APw-rfe");
	assert_int_equal(selection_uidvalidity(s), 7);
	assert_int_equal(selection_uidnext(s), 11);
	assert_int_equal(selection_exists(s), 10);
	r.has = HAS_EXPUNGE;
	assert_false(selection_untagged(s, &r));
	assert_int_equal(selection_exists(s), 9);
	r.has = HAS_EXISTS;
	r.exists = 9;
	assert_false(selection_untagged(s, &r));
	r.exists = 12;
	assert_true(selection_untagged(s, &r));
	assert_int_equal(selection_exists(s), 12);
	done(s);
}

static void
test_renumbered_or_cut_short_recovers(void **state)
{
	struct selection *s = selected(7, 11, 10);
	struct state_rec st = { .uidvalidity = 7, .last_uid = 5 };

	(void)state;
	st.recovering = 1;
	assert_int_equal(selection_check(s, &st, true), SELECTION_RECOVER);
	st.recovering = 0;
	st.uidvalidity = 6;
	assert_int_equal(selection_check(s, &st, true), SELECTION_RECOVER);
	/* UIDs only grow: a next UID at the last delivered one is another. */
	st.uidvalidity = 7;
	st.last_uid = 11;
	assert_int_equal(selection_check(s, &st, true), SELECTION_RECOVER);
	done(s);
}

static void
test_reconciles_then_verifies_what_it_can(void **state)
{
	struct selection *s = selected(7, 11, 10);
	struct state_rec st = { .uidvalidity = 7, .last_uid = 5 };

	(void)state;
	assert_int_equal(selection_check(s, &st, false), SELECTION_RECONCILE);
	/* Nothing known of the message last_uid: nothing to check. */
	assert_int_equal(selection_check(s, &st, true), SELECTION_LIST);
	st.last.size = 1234;
	assert_int_equal(selection_check(s, &st, true), SELECTION_VERIFY);
	assert_int_equal(selection_check_last(s, &st), SELECTION_VERIFY);
	/* A first sync: no last UID to check. */
	memset(&st, 0, sizeof(st));
	assert_int_equal(selection_check(s, &st, true), SELECTION_LIST);
	done(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_untagged_counts_messages),
		cmocka_unit_test(test_renumbered_or_cut_short_recovers),
		cmocka_unit_test(test_reconciles_then_verifies_what_it_can),
	};

	log_init(LOGL_DEBUG, LOG_TARGET_STDERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
