/*
 * rcimport: what a fetchmailrc may carry into idlefetch.conf. A control
 * character never reaches it, a value that the configuration cannot hold
 * as it is is refused (a password goes to a private file instead), and a
 * large file takes memory in proportion to its size.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/rcimport.h"

struct run {
	int r;
	char *out; /* what was printed */
	char err[1024];
};

static struct run
import(const char *text, const struct rcimport_opts *opts)
{
	struct rcimport_opts o = { .source = "rc", .maildir = "/srv/md",
		.secrets_dir = "/etc/idlefetch" };
	struct run run = { 0 };
	size_t len = 0;
	FILE *fp = open_memstream(&run.out, &len);

	if (opts)
		o = *opts;
	run.r = rcimport(text, &o, fp, run.err, sizeof(run.err));
	fclose(fp);
	return run;
}

static void
assert_refused(const char *text, const char *what)
{
	struct run run = import(text, NULL);

	if (run.r != -EINVAL || strstr(run.err, what) == NULL)
		fail_msg("%s: %d '%s', not '%s'", text, run.r, run.err, what);
	assert_string_equal(run.out, "");
	free(run.out);
}

/* Wherever it stands, a control character would start a line of its own. */
static void
test_control_characters_are_refused_anywhere(void **state)
{
	(void)state;
	assert_refused("poll a user u\n folder \"IN\nBOX\"",
	    "rc:2: the value after 'folder' holds a control character "
	    "(0x0a)");
	assert_refused("poll a user u password 'x\r[account e]'",
	    "rc:1: the value after 'password' holds a control character");
	assert_refused("poll a user u\n\n mda \"p\x1b[2J\"",
	    "rc:3: the value after 'mda' holds a control character (0x1b)");
	assert_refused("poll a user u x\x01y", "rc:1: the value after 'u'");
	assert_refused("set postmaster \"a\nb\"\npoll a user u",
	    "rc:1: the value after 'postmaster'");
	assert_refused("poll a user u \"\n[account evil]\"",
	    "rc:1: the value after 'u'");
	assert_refused("poll a user u is \"b\tc\" here",
	    "the value after 'u' holds a control character (0x09)");
	assert_refused("\"\x7f\"", "rc:1: a word holds a control character");
}

static void
test_values_the_configuration_cannot_hold_are_refused(void **state)
{
	struct run run;

	(void)state;
	assert_refused("poll a user u folder \"x ;y\"",
	    "rc:1: folder 'x ;y': idlefetch.conf cannot hold this value as "
	    "it is: a ';' after a space");
	assert_refused("poll a user u folder INBOX \";y\"", "folder ';y'");
	assert_refused("poll a user u folder \"a,b\"", "folder 'a,b'");
	assert_refused("poll a user \"${USER}\"", "user '${USER}'");
	assert_refused("poll \"a \" user u", "poll 'a ': idlefetch.conf");
	assert_refused("poll a via \"b\t;\" user u", "control character");
	assert_refused("poll a user u sslcertfile \" /ca\"", "sslcertfile");
	/* A ';' inside a word and a '$' alone are fine. */
	run = import("poll a user u folder \"a;b\" '$x' password \"p;${\"",
	    NULL);
	assert_int_equal(run.r, 0);
	assert_non_null(strstr(run.out, "folders = a;b, $x\n"));
	free(run.out);
}

static void
test_paths_from_the_command_line_are_checked(void **state)
{
	struct rcimport_opts o = { .source = "rc", .maildir = "/m ;x",
		.secrets_dir = "/s" };
	struct run run;

	(void)state;
	run = import("poll a user u", &o);
	assert_int_equal(run.r, -EINVAL);
	assert_non_null(strstr(run.err, "--maildir: "));
	free(run.out);
	o.maildir = "${HOME}/Maildir"; /* meant to be expanded */
	run = import("poll a user u", &o);
	assert_int_equal(run.r, 0);
	assert_non_null(strstr(run.out, "maildir = ${HOME}/Maildir\n"));
	free(run.out);
}

static void
assert_file(const char *path, const char *text, mode_t mode)
{
	char buf[256] = "";
	struct stat st;
	FILE *fp = fopen(path, "r");

	assert_non_null(fp);
	assert_int_equal(fstat(fileno(fp), &st), 0);
	assert_int_equal(st.st_mode & 07777, mode);
	assert_true(fread(buf, 1, sizeof(buf) - 1, fp) > 0);
	fclose(fp);
	assert_string_equal(buf, text);
}

static void
test_keep_passwords_sends_an_odd_one_to_a_private_file(void **state)
{
	char dir[] = "/tmp/test_rcimport.XXXXXX", *path, *line;
	struct rcimport_opts o = { .source = "rc", .maildir = "/m",
		.keep_passwords = true };
	const char *rc = "poll a user bob password 'p w ;x ${HOME}'\n"
			 "poll b user carol password plain";
	struct run run;

	(void)state;
	assert_non_null(mkdtemp(dir));
	o.secrets_dir = dir;
	path = malloc(strlen(dir) + 20);
	sprintf(path, "%s/bob.password", dir);
	line = malloc(strlen(dir) + 40);
	sprintf(line, "\npassword_file = %s/bob.password\n", dir);
	run = import(rc, &o);
	assert_int_equal(run.r, 0);
	assert_non_null(strstr(run.out, line));
	assert_non_null(strstr(run.out, "\npassword = plain\n"));
	assert_null(strstr(run.out, "p w"));
	assert_file(path, "p w ;x ${HOME}\n", 0600);
	free(run.out);
	/* Again: its own file is kept; another password is not replaced. */
	run = import(rc, &o);
	assert_int_equal(run.r, 0);
	free(run.out);
	assert_int_equal(truncate(path, 3), 0);
	run = import(rc, &o);
	assert_int_equal(run.r, -EEXIST);
	assert_string_equal(run.out, "");
	assert_non_null(strstr(run.err, "rc:1: password of 'bob'"));
	assert_non_null(strstr(run.err, "holds another password"));
	free(run.out);
	assert_file(path, "p w", 0600);
	assert_int_equal(unlink(path), 0);
	/* Nor into a directory that others can write to. */
	assert_int_equal(chmod(dir, 0777), 0);
	run = import(rc, &o);
	assert_int_equal(run.r, -EPERM);
	assert_non_null(strstr(run.err, "is writable by other users"));
	free(run.out);
	assert_int_equal(rmdir(dir), 0);
	o.secrets_dir = "${CREDENTIALS_DIRECTORY}";
	run = import(rc, &o);
	assert_int_equal(run.r, -EINVAL);
	assert_non_null(strstr(run.err, "--secrets-dir names a variable"));
	free(run.out);
	free(path);
	free(line);
}

/* 200,000 unknown words: each token as long as itself, comments capped. */
static void
test_many_words_take_little(void **state)
{
	size_t n = 200000;
	char *rc = malloc(64 + 4 * n), *p;
	struct run run;

	(void)state;
	p = rc + sprintf(rc, "poll a user alice\n");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "\"a\" ");
	run = import(rc, NULL);
	assert_int_equal(run.r, 0);
	assert_true(strlen(run.out) < 8192);
	assert_non_null(strstr(run.out, "; a: no counterpart in idlefetch\n"));
	assert_non_null(strstr(run.out, " more options with no counterpart "
					"in idlefetch: see rc\n"));
	free(run.out);
	free(rc);
}

static void
test_account_names_are_unique(void **state)
{
	struct run run;

	(void)state;
	run = import("poll a user alice user alice@b user alice-2 user '' "
		     "user '@x' user alice",
	    NULL);
	assert_int_equal(run.r, 0);
	assert_non_null(strstr(run.out, "[account alice]\n"));
	assert_non_null(strstr(run.out, "[account alice-2]\n"));
	assert_non_null(strstr(run.out, "[account alice-2-2]\n"));
	assert_non_null(strstr(run.out, "[account account]\n"));
	assert_non_null(strstr(run.out, "[account account-2]\n"));
	assert_non_null(strstr(run.out, "[account alice-3]\n"));
	free(run.out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control_characters_are_refused_anywhere),
		cmocka_unit_test(
		    test_values_the_configuration_cannot_hold_are_refused),
		cmocka_unit_test(test_paths_from_the_command_line_are_checked),
		cmocka_unit_test(
		    test_keep_passwords_sends_an_odd_one_to_a_private_file),
		cmocka_unit_test(test_many_words_take_little),
		cmocka_unit_test(test_account_names_are_unique),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
