/*
 * Unit tests for the compaction of a folder's index: it is due only once
 * the index may hold far more lines than the folder has messages, and
 * only after a sync that trusted the folder's UIDs (the state not
 * recovering, under the UIDVALIDITY the folder has now); an empty folder
 * is compacted without a listing, which some servers refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/compaction.h"
#include "idlefetch/log.h"
#include "idlefetch/selection.h"

static struct account account = { .name = "test", .after = AFTER_KEEP };

/* The due threshold, in bytes: 60 a line, twice the folder, 64 more. */
#define THRESHOLD(exists) (60 * (2 * (uint64_t)(exists) + 64))

static struct selection *
selected(uint32_t uidvalidity, uint32_t exists)
{
	struct selection *s = selection_init(malloc(selection_size()), &account,
	    "INBOX", NULL);
	struct proto_resp r = { 0 };

	r.has = HAS_UIDVALIDITY | HAS_EXISTS;
	r.uidvalidity = uidvalidity;
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
test_due_once_the_index_holds_far_more_than_the_folder(void **state)
{
	struct compaction *cp = compaction_new(&account, "INBOX");
	struct selection *s = selected(7, 10);
	struct state_rec st = { .uidvalidity = 7, .last_uid = 500 };

	(void)state;
	assert_false(compaction_due(cp, &st, s)); /* no size known yet */
	compaction_set_size(cp, THRESHOLD(10) + 59);
	assert_false(compaction_due(cp, &st, s));
	compaction_set_size(cp, THRESHOLD(10) + 60);
	assert_true(compaction_due(cp, &st, s));
	/* Not while the folder's UIDs are not trusted. */
	st.recovering = 1;
	assert_false(compaction_due(cp, &st, s));
	st.recovering = 0;
	st.uidvalidity = 8;
	assert_false(compaction_due(cp, &st, s));
	compaction_free(cp);
	done(s);
}

static void
test_empty_folder_is_compacted_without_a_listing(void **state)
{
	struct compaction *cp = compaction_new(&account, "INBOX");
	struct selection *empty = selected(7, 0), *full = selected(7, 3);
	struct state_rec st = { .uidvalidity = 7 };

	(void)state;
	compaction_set_size(cp, THRESHOLD(0) + 60);
	assert_true(compaction_due(cp, &st, empty));
	assert_false(compaction_start(cp, empty));
	/* Once per sync: the size is forgotten, whatever comes of it. */
	assert_false(compaction_due(cp, &st, empty));
	compaction_set_size(cp, THRESHOLD(3) + 60);
	assert_true(compaction_start(cp, full));
	compaction_free(cp);
	done(empty);
	done(full);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		    test_due_once_the_index_holds_far_more_than_the_folder),
		cmocka_unit_test(test_empty_folder_is_compacted_without_a_listing),
	};

	log_init(LOGL_DEBUG, LOG_TARGET_STDERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
