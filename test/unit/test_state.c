/* Unit tests for the state store: round trip, atomic replace, corruption. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/state.h"

static char root[] = "/tmp/idlefetch-state-test-XXXXXX";

static void
test_path_encodes_the_folder(void **state)
{
	char *p = state_path("/var/lib/idlefetch", "work", "Lists/dev");

	assert_string_equal(p, "/var/lib/idlefetch/work/Lists%2Fdev.state");
	free(p);
}

static void
test_missing_file_is_enoent_and_zero(void **state)
{
	struct state_rec st = { 5, 6 };
	char *p = state_path(root, "none", "INBOX");

	assert_int_equal(state_load(p, &st), -ENOENT);
	assert_int_equal(st.uidvalidity, 0);
	assert_int_equal(st.last_uid, 0);
	free(p);
}

static void
test_save_then_load_round_trips(void **state)
{
	struct state_rec in = { 4294967295u, 123456 }, out;
	char *p = state_path(root, "acct", "INBOX");
	char tmp[600];

	assert_int_equal(state_prepare(p), 0);
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.uidvalidity, in.uidvalidity);
	assert_int_equal(out.last_uid, in.last_uid);
	in.last_uid = 123457;
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.last_uid, 123457);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	assert_int_equal(access(tmp, F_OK), -1); /* no temp file left */
	free(p);
}

static void
test_corrupt_files_are_refused(void **state)
{
	static const char *bad[] = {
		"",
		"garbage",
		"idlefetch-state 2\nuidvalidity 1\nlast_uid 2\n",
		"idlefetch-state 1\nuidvalidity 1\n",
		"idlefetch-state 1\nuidvalidity 99999999999\nlast_uid 2\n",
		"idlefetch-state 1\nuidvalidity x\nlast_uid 2\n",
	};
	struct state_rec st;
	char *p = state_path(root, "acct", "Bad");

	assert_int_equal(state_prepare(p), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *fp = fopen(p, "w");

		fputs(bad[i], fp);
		fclose(fp);
		assert_int_equal(state_load(p, &st), -EINVAL);
	}
	free(p);
}

static void
test_save_into_a_missing_directory_fails(void **state)
{
	struct state_rec st = { 1, 1 };

	assert_true(state_save("/nonexistent/dir/x.state", &st) < 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_encodes_the_folder),
		cmocka_unit_test(test_missing_file_is_enoent_and_zero),
		cmocka_unit_test(test_save_then_load_round_trips),
		cmocka_unit_test(test_corrupt_files_are_refused),
		cmocka_unit_test(test_save_into_a_missing_directory_fails),
	};
	char cmd[600];
	int r;

	if (mkdtemp(root) == NULL)
		return 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		return 1;
	return r;
}
