/*
 * cmdline: which commands run without a shell, and what their words are.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/cmdline.h"

static void
test_plain_commands_are_split(void **state)
{
	char bad = 'x';
	char **v = cmdline_split("  pass\tshow  work/imap ", true, &bad);

	(void)state;
	assert_int_equal(bad, 0);
	assert_non_null(v);
	assert_string_equal(v[0], "pass");
	assert_string_equal(v[1], "show");
	assert_string_equal(v[2], "work/imap");
	assert_null(v[3]);
	cmdline_free(v);
}

/* A variable's value is one part of its word, never code. */
static void
test_variables_stay_data(void **state)
{
	char bad;
	char **v;

	(void)state;
	setenv("CMDLINE_TEST", "a b; rm -rf ~ $(x) *", 1);
	unsetenv("CMDLINE_UNSET");
	v = cmdline_split("oama access --user=${CMDLINE_TEST}x ${CMDLINE_UNSET}",
	    true, &bad);
	assert_non_null(v);
	assert_string_equal(v[2], "--user=a b; rm -rf ~ $(x) *x");
	assert_string_equal(v[3], "");
	assert_null(v[4]);
	cmdline_free(v);
	/* Without expansion a $ needs the shell. */
	assert_null(cmdline_split("x ${CMDLINE_TEST}", false, &bad));
	assert_int_equal(bad, '$');
}

static void
test_shell_commands_are_left_to_the_shell(void **state)
{
	static const struct {
		const char *cmd;
		char bad;
	} cases[] = {
		{ "pass show work | head -1", '|' },
		{ "echo $HOME", '$' },
		{ "x ${1x}", '$' },
		{ "x ${A", '$' },
		{ "gpg -d 'my file'", '\'' },
		{ "cat ~/.pw", '~' },
		{ "a > b", '>' },
		{ "a;b", ';' },
		{ "a *", '*' },
	};
	char bad;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_null(cmdline_split(cases[i].cmd, true, &bad));
		assert_int_equal(bad, cases[i].bad);
	}
	assert_null(cmdline_split(" \t", true, &bad));
	assert_int_equal(bad, 0);
}

/* What is no program on PATH is the shell's: a builtin, a typo. */
static void
test_builtins_go_to_the_shell(void **state)
{
	char **v;

	(void)state;
	assert_null(cmdline_shell_free("exit 3"));
	assert_null(cmdline_shell_free("/no/such/program x"));
	v = cmdline_shell_free("true x");
	assert_non_null(v);
	assert_string_equal(v[0], "true");
	cmdline_free(v);
	v = cmdline_shell_free("/bin/true");
	assert_non_null(v);
	cmdline_free(v);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_commands_are_split),
		cmocka_unit_test(test_variables_stay_data),
		cmocka_unit_test(test_shell_commands_are_left_to_the_shell),
		cmocka_unit_test(test_builtins_go_to_the_shell),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
