/*
 * Unit tests for folders: which subscribed folders `folders = *` fetches,
 * and the exclude patterns.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/folders.h"
#include "idlefetch/util.h"
#include "idlefetch/proto.h"

/* An account that says folders = <named>, * and exclude = <patterns>. */
static struct account *
account(const char *const *named, size_t nnamed, const char *const *exclude,
    size_t nexclude, const char *move_to)
{
	struct account *a = calloc(1, sizeof(*a));

	a->folders = (char **)named;
	a->nfolders = nnamed;
	a->subscribed = true;
	a->exclude = (char **)exclude;
	a->nexclude = nexclude;
	a->move_to = (char *)move_to;
	return a;
}

static void
test_exclude_patterns(void **state)
{
	static const char *const ex[] = { "Trash", "junk", "Lists/*",
		"[Gmail]/All Mail", "*.old" };
	struct account *a = account(NULL, 0, ex, 5, NULL);

	(void)state;
	assert_true(folders_excluded(a, "Trash", '/'));
	assert_true(folders_excluded(a, "TRASH", '/')); /* without case */
	assert_true(folders_excluded(a, "Junk", '.'));
	assert_false(folders_excluded(a, "Trash2", '/'));
	assert_false(folders_excluded(a, "MyTrash", '/'));
	/* '*' runs over levels; '/' in a pattern is the server's delimiter. */
	assert_true(folders_excluded(a, "Lists/dev", '/'));
	assert_true(folders_excluded(a, "Lists.dev", '.'));
	assert_true(folders_excluded(a, "Lists/dev/team", '/'));
	assert_false(folders_excluded(a, "Lists", '/'));
	/* '.' is a delimiter only where the server says so. */
	assert_false(folders_excluded(a, "Lists.dev", '/'));
	/* '[' is no bracket expression: Gmail's names as written. */
	assert_true(folders_excluded(a, "[Gmail]/All Mail", '/'));
	assert_false(folders_excluded(a, "G/All Mail", '/'));
	/* Below INBOX. (Courier, Cyrus) the pattern still holds. */
	assert_true(folders_excluded(a, "INBOX.Trash", '.'));
	assert_true(folders_excluded(a, "INBOX.Lists.dev", '.'));
	assert_false(folders_excluded(a, "INBOX", '.'));
	/* A suffix, and many stars against a long name. */
	assert_true(folders_excluded(a, "2019.old", '/'));
	free(a);
	{
		static const char *const stars[] = { "*a*a*a*a*a*a*a*b" };
		char name[4096];

		a = account(NULL, 0, stars, 1, NULL);
		memset(name, 'a', sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		assert_false(folders_excluded(a, name, '/'));
		name[sizeof(name) - 2] = 'b';
		assert_true(folders_excluded(a, name, '/'));
		free(a);
	}
}

static void
test_the_set(void **state)
{
	static const char *const named[] = { "INBOX", "Work" };
	static const char *const ex[] = { "Trash" };
	struct account *a = account(named, 2, ex, 1, "Archive");
	struct folder_set fs;
	char why[512];

	(void)state;
	folders_init(&fs, a);
	assert_int_equal(fs.n, 2);
	assert_int_equal(folders_add(&fs, a, "inbox", '/', LISTF_SUBSCRIBED,
			     why, sizeof(why)),
	    FOLDERS_KNOWN);
	assert_int_equal(folders_add(&fs, a, "Work", '/', 0, NULL, 0),
	    FOLDERS_KNOWN);
	assert_int_equal(folders_add(&fs, a, "Trash", '/', 0, NULL, 0),
	    FOLDERS_EXCLUDED);
	/* The move target would be fetched back: never. */
	assert_int_equal(folders_add(&fs, a, "Archive", '/', 0, NULL, 0),
	    FOLDERS_EXCLUDED);
	/* Gmail's All Mail: every message of INBOX again. */
	assert_int_equal(folders_add(&fs, a, "[Gmail]/All Mail", '/',
			     LISTF_SUBSCRIBED | LISTF_VIRTUAL, why,
			     sizeof(why)),
	    FOLDERS_VIRTUAL);
	assert_non_null(strstr(why, "'[Gmail]/All Mail' shows messages kept"));
	assert_int_equal(folders_add(&fs, a, "Gone", '/', LISTF_NONEXISTENT,
			     NULL, 0),
	    FOLDERS_UNUSABLE);
	assert_int_equal(folders_add(&fs, a, "Lists", '/', LISTF_NOSELECT, NULL,
			     0),
	    FOLDERS_UNUSABLE);
	assert_int_equal(folders_add(&fs, a, "Entw&APw-rfe", '/', 0, NULL, 0),
	    FOLDERS_ADDED);
	assert_string_equal(fs.names[2], "Entwürfe");
	assert_int_equal(folders_add(&fs, a, "Entw&APw-rfe", '/', 0, NULL, 0),
	    FOLDERS_KNOWN);
	/* Names it could not send back the same, or not keep on disk. */
	assert_int_equal(folders_add(&fs, a, "Bad&-x&", '/', 0, why,
			     sizeof(why)),
	    FOLDERS_BAD_NAME);
	assert_non_null(strstr(why, "modified UTF-7"));
	assert_int_equal(folders_add(&fs, a, "&AGEAYgBj-", '/', 0, why,
			     sizeof(why)),
	    FOLDERS_BAD_NAME);
	assert_int_equal(folders_add(&fs, a, ".hidden", '/', 0, why,
			     sizeof(why)),
	    FOLDERS_BAD_NAME);
	assert_int_equal(folders_add(&fs, a, "a/../b", '/', 0, why,
			     sizeof(why)),
	    FOLDERS_BAD_NAME);
	assert_int_equal(fs.n, 3);
	{
		const char *const want[] = { "INBOX", "Work", "Entwürfe" };

		assert_true(strv_equal((const char *const *)fs.names, fs.n,
		    want, 3));
		assert_false(
		    strv_equal((const char *const *)fs.names, 2, want, 3));
	}
	folders_free(&fs);
	assert_int_equal(fs.n, 0);
	free(a);
}

/* A server listing a million folders gets FOLDERS_MAX of them. */
static void
test_at_most_folders_max(void **state)
{
	struct account *a = account(NULL, 0, NULL, 0, NULL);
	struct folder_set fs;
	char name[32];
	size_t added = 0, capped = 0;

	(void)state;
	folders_init(&fs, a);
	for (unsigned i = 0; i < FOLDERS_MAX + 50; i++) {
		snprintf(name, sizeof(name), "F%u", i);
		switch (folders_add(&fs, a, name, '/', 0, NULL, 0)) {
		case FOLDERS_ADDED:
			added++;
			break;
		case FOLDERS_TOO_MANY:
			capped++;
			break;
		default:
			fail();
		}
	}
	assert_int_equal(added, FOLDERS_MAX);
	assert_int_equal(capped, 50);
	assert_int_equal(fs.n, FOLDERS_MAX);
	/* Known ones are still told apart from new ones. */
	assert_int_equal(folders_add(&fs, a, "F0", '/', 0, NULL, 0),
	    FOLDERS_KNOWN);
	folders_free(&fs);
	free(a);
}

/* What the fake states claim: wire name -> claim, the rest have none. */
struct claims {
	const char *wire[4];
	int64_t at[4];
	unsigned asked;
};

static int64_t
fake_claim(void *ud, const char *wire)
{
	struct claims *c = ud;

	c->asked++;
	for (size_t i = 0; i < 4 && c->wire[i]; i++)
		if (strcmp(c->wire[i], wire) == 0)
			return c->at[i];
	return -1;
}

/*
 * folders = * over a Maildir: the server lists `list` (n names, in that
 * order); the set after folders_settle() must be `want` and the one left
 * out `out`, kept from it by `owner`.
 */
static void
settle_case(struct claims *c, const char *const *list, size_t n,
    const char *const *want, size_t nwant, const char *out, const char *owner,
    bool by_state)
{
	static const char *const named[] = { "INBOX" };
	struct account *a = account(named, 1, NULL, 0, NULL);
	struct folder_set fs;

	a->maildir = (char *)"/m";
	folders_init(&fs, a);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(folders_add(&fs, a, list[i], '/',
				     LISTF_SUBSCRIBED, NULL, 0),
		    FOLDERS_ADDED);
	assert_int_equal(folders_settle(&fs, a, fake_claim, c), 1);
	assert_true(
	    strv_equal((const char *const *)fs.names, fs.n, want, nwant));
	assert_int_equal(fs.nclashes, 1);
	assert_string_equal(fs.clashes[0].name, out);
	assert_string_equal(fs.clashes[0].owner, owner);
	assert_string_equal(fs.clashes[0].dir, "/m/.a.b");
	assert_int_equal(fs.clashes[0].by_state, by_state);
	folders_free(&fs);
	free(a);
}

/*
 * a.b and a/b both map to Maildir++ .a.b: with no state, the name that
 * sorts first keeps it, whatever the order the server lists them in.
 */
static void
test_maildir_clash_without_state_first_name_keeps_it(void **state)
{
	static const char *const ab[] = { "x", "a.b", "y", "a/b", "z" };
	static const char *const ba[] = { "x", "a/b", "y", "a.b", "z" };
	static const char *const want[] = { "INBOX", "x", "a.b", "y", "z" };
	static const char *const want2[] = { "INBOX", "x", "y", "a.b", "z" };
	struct claims c = { { NULL }, { 0 }, 0 };

	(void)state;
	settle_case(&c, ab, 5, want, 5, "a/b", "a.b", false);
	/* Only the two that share one were asked about their state. */
	assert_int_equal(c.asked, 2);
	settle_case(&c, ba, 5, want2, 5, "a/b", "a.b", false);
}

/*
 * The folder whose state owns .a.b keeps it, though its name sorts last,
 * in both orders; of two states, the one saved last (it delivered there
 * last); saved at the same time, the name that sorts first.
 */
static void
test_maildir_clash_the_owner_by_state_keeps_it(void **state)
{
	static const char *const ab[] = { "a.b", "a/b" };
	static const char *const ba[] = { "a/b", "a.b" };
	static const char *const keep_ab[] = { "INBOX", "a.b" };
	static const char *const keep_ba[] = { "INBOX", "a/b" };
	struct claims only = { { "a/b" }, { 5 }, 0 };
	struct claims newer = { { "a.b", "a/b" }, { 7, 9 }, 0 };
	struct claims older = { { "a.b", "a/b" }, { 9, 7 }, 0 };
	struct claims same = { { "a.b", "a/b" }, { 9, 9 }, 0 };

	(void)state;
	settle_case(&only, ab, 2, keep_ba, 2, "a.b", "a/b", true);
	settle_case(&only, ba, 2, keep_ba, 2, "a.b", "a/b", true);
	settle_case(&newer, ab, 2, keep_ba, 2, "a.b", "a/b", true);
	settle_case(&newer, ba, 2, keep_ba, 2, "a.b", "a/b", true);
	settle_case(&older, ba, 2, keep_ab, 2, "a/b", "a.b", true);
	settle_case(&same, ba, 2, keep_ab, 2, "a/b", "a.b", true);
}

/* Named folders are judged alike; three on one Maildir folder keep one. */
static void
test_maildir_clash_named_folders_and_three_of_a_kind(void **state)
{
	static const char *const named[] = { "INBOX", "a/b/c" };
	struct account *a = account(named, 2, NULL, 0, NULL);
	struct claims c = { { "a.b/c" }, { 1 }, 0 };
	struct folder_set fs;
	uint32_t mark;

	(void)state;
	a->maildir = (char *)"/m";
	folders_init(&fs, a);
	assert_int_equal(folders_add(&fs, a, "a.b.c", '/', 0, NULL, 0),
	    FOLDERS_ADDED);
	assert_int_equal(folders_add(&fs, a, "a.b/c", '/', 0, NULL, 0),
	    FOLDERS_ADDED);
	assert_int_equal(folders_add(&fs, a, "other", '/', 0, NULL, 0),
	    FOLDERS_ADDED);
	assert_int_equal(folders_settle(&fs, a, fake_claim, &c), 2);
	{
		const char *const want[] = { "INBOX", "a.b/c", "other" };

		assert_true(
		    strv_equal((const char *const *)fs.names, fs.n, want, 3));
	}
	assert_int_equal(fs.nclashes, 2);
	assert_string_equal(fs.clashes[0].owner, "a.b/c");
	assert_string_equal(fs.clashes[1].owner, "a.b/c");
	assert_string_equal(fs.clashes[0].dir, "/m/.a.b.c");
	mark = folders_clash_mark(&fs);
	assert_int_not_equal(mark, 0);
	/* Settled again: nothing more to leave out, the same clashes. */
	assert_int_equal(folders_settle(&fs, a, fake_claim, &c), 0);
	assert_int_equal(folders_clash_mark(&fs), mark);
	folders_free(&fs);
	assert_int_equal(fs.nclashes, 0);
	assert_int_equal(folders_clash_mark(&fs), 0);
	free(a);
}

/* The mark is the same for either LIST order, and tells owners apart. */
static void
test_maildir_clash_mark(void **state)
{
	static const char *const order[2][2] = { { "a.b", "a/b" },
		{ "a/b", "a.b" } };
	struct account *a = account(NULL, 0, NULL, 0, NULL);
	struct claims none = { { NULL }, { 0 }, 0 };
	struct claims ba = { { "a/b" }, { 1 }, 0 };
	uint32_t marks[3];

	(void)state;
	a->maildir = (char *)"/m";
	for (size_t k = 0; k < 3; k++) {
		struct folder_set fs;

		folders_init(&fs, a);
		for (size_t i = 0; i < 2; i++)
			folders_add(&fs, a, order[k % 2][i], '/', 0, NULL, 0);
		folders_settle(&fs, a, fake_claim, k < 2 ? &none : &ba);
		marks[k] = folders_clash_mark(&fs);
		folders_free(&fs);
	}
	assert_int_equal(marks[0], marks[1]);
	assert_int_not_equal(marks[0], marks[2]);
	free(a);
}

/* An MDA or LMTP target has no Maildir folders to share: both fetched. */
static void
test_no_maildir_no_clash(void **state)
{
	struct account *a = account(NULL, 0, NULL, 0, NULL);
	struct claims c = { { NULL }, { 0 }, 0 };
	struct folder_set fs;

	(void)state;
	folders_init(&fs, a);
	folders_add(&fs, a, "a.b", '/', 0, NULL, 0);
	folders_add(&fs, a, "a/b", '/', 0, NULL, 0);
	assert_int_equal(folders_settle(&fs, a, fake_claim, &c), 0);
	assert_int_equal(fs.n, 2);
	assert_int_equal(c.asked, 0);
	folders_free(&fs);
	free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exclude_patterns),
		cmocka_unit_test(test_the_set),
		cmocka_unit_test(test_at_most_folders_max),
		cmocka_unit_test(
		    test_maildir_clash_without_state_first_name_keeps_it),
		cmocka_unit_test(
		    test_maildir_clash_the_owner_by_state_keeps_it),
		cmocka_unit_test(
		    test_maildir_clash_named_folders_and_three_of_a_kind),
		cmocka_unit_test(test_maildir_clash_mark),
		cmocka_unit_test(test_no_maildir_no_clash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
