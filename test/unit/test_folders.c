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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exclude_patterns),
		cmocka_unit_test(test_the_set),
		cmocka_unit_test(test_at_most_folders_max),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
