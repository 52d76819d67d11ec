/* Unit tests for config: every error names file, line and key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/config.h"
#include "idlefetch/config_keys.h"
#include "idlefetch/foldername.h"

static char path[] = "/tmp/idlefetch-config-test-XXXXXX";

static const char *base = "[global]\n"
			  "state_dir = /var/lib/x\n"
			  "\n"
			  "[account work]\n"
			  "host = imap.example.org\n"
			  "username = alice\n"
			  "password = s3cret\n"
			  "maildir = /srv/mail\n";

static void
write_conf(const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* Loads base + extra lines; returns the result, err holds the message. */
static int
load(const char *extra, char *err, size_t errlen, struct config **cfg)
{
	char text[8192];

	snprintf(text, sizeof(text), "%s%s", base, extra);
	write_conf(text);
	*cfg = NULL;
	err[0] = '\0';
	return config_load_file(path, cfg, err, errlen);
}

/* Expects extra to fail with "PATH:LINE: ...what" */
static void
expect_error(const char *extra, unsigned line, const char *what)
{
	struct config *cfg;
	char err[1024], want[1200];
	int r = load(extra, err, sizeof(err), &cfg);

	if (r == 0)
		fail_msg("config with '%s' was accepted", extra);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:%u: %s", path, line, what);
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' lacks '%s'", err, want);
}

static void
test_defaults_are_filled_in(void **state)
{
	struct config *cfg;
	char err[512];
	const struct account *a;

	assert_int_equal(load("", err, sizeof(err), &cfg), 0);
	assert_int_equal(cfg->naccounts, 1);
	a = &cfg->accounts[0];
	assert_string_equal(a->name, "work");
	assert_int_equal(a->port, 993);
	assert_int_equal(a->tls, TLS_MODE_IMPLICIT);
	assert_int_equal(a->nfolders, 1);
	assert_string_equal(a->folders[0], "INBOX");
	assert_int_equal(a->after, AFTER_KEEP);
	assert_int_equal(a->idle, 1);
	assert_int_equal(a->poll_interval, 60);
	assert_int_equal(a->idle_refresh, 600);
	assert_string_equal(cfg->state_dir, "/var/lib/x");
	config_free(cfg);
}

static void
test_all_keys_are_read(void **state)
{
	struct config *cfg;
	char err[512];
	const struct account *a;

	assert_int_equal(load("tls = starttls ; inline comment\n"
			      "folders = INBOX, Lists/dev , Sent\nafter = move:Archive\n"
			      "idle = off\npoll_interval = 30\nidle_refresh = 300\n"
			      "ca_file = /etc/ca.pem\n",
			     err, sizeof(err), &cfg),
	    0);
	a = &cfg->accounts[0];
	assert_int_equal(a->port, 143);
	assert_int_equal(a->tls, TLS_MODE_STARTTLS);
	assert_int_equal(a->nfolders, 3);
	assert_string_equal(a->folders[1], "Lists/dev");
	assert_int_equal(a->after, AFTER_MOVE);
	assert_string_equal(a->move_to, "Archive");
	assert_int_equal(a->idle, 0);
	assert_int_equal(a->poll_interval, 30);
	assert_int_equal(a->idle_refresh, 300);
	assert_string_equal(a->ca_file, "/etc/ca.pem");
	assert_false(a->pinned);
	assert_false(a->read_only);
	config_free(cfg);
	/* A pin as openssl prints it, colons and capitals, or plain. */
	assert_int_equal(load("tls_fingerprint = sha256:"
			      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
			      "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff\n"
			      "read_only = yes\n",
			     err, sizeof(err), &cfg),
	    0);
	a = &cfg->accounts[0];
	assert_true(a->pinned);
	assert_int_equal(a->pin[10], 0xaa);
	assert_int_equal(a->pin[31], 0xff);
	assert_true(a->read_only);
	config_free(cfg);
	assert_int_equal(load("tls_fingerprint = sha256:"
			      "00112233445566778899aabbccddeeff"
			      "00112233445566778899aabbccddeeff\n",
			     err, sizeof(err), &cfg),
	    0);
	config_free(cfg);
}

/* A password in a file others can read is refused, with the fix. */
static void
test_secrets_readable_by_others_are_refused(void **state)
{
	struct config *cfg;
	char err[1024], want[2400], pw[600];
	FILE *fp;

	(void)state;
	write_conf(base);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)),
	    -EINVAL);
	snprintf(want, sizeof(want),
	    "%s:7: key 'password': the configuration file %s is readable by "
	    "every user (mode 0644): run chmod 600 %s, or move the password",
	    path, path, path);
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' lacks '%s'", err, want);
	/* Its own group may read it (root:idlefetch 0640). */
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(chown(path, (uid_t)-1, getegid()), 0);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	config_free(cfg);
	/* A password from the environment is not on disk. */
	setenv("TEST_PW", "x", 1);
	write_conf("[account a]\nhost = h\nusername = u\n"
		   "password = ${TEST_PW}\nmaildir = /m\n");
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	config_free(cfg);
	/* A password_file readable by all. */
	snprintf(pw, sizeof(pw), "%s.pw", path);
	fp = fopen(pw, "w");
	assert_non_null(fp);
	fputs("s3cret\n", fp);
	fclose(fp);
	assert_int_equal(chmod(pw, 0604), 0);
	snprintf(want, sizeof(want),
	    "[account a]\nhost = h\nusername = u\npassword_file = %s\n"
	    "maildir = /m\n", pw);
	write_conf(want);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)),
	    -EINVAL);
	snprintf(want, sizeof(want),
	    "key 'password_file': password_file %s is readable by every user "
	    "(mode 0604): run chmod 600 %s", pw, pw);
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' lacks '%s'", err, want);
	assert_int_equal(chmod(pw, 0600), 0);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	config_free(cfg);
	unlink(pw);
	assert_int_equal(chmod(path, 0600), 0);
}

/* deliver = : a program without a shell, or LMTP; each error named. */
static void
test_delivery_targets(void **state)
{
	static const char *acct = "[global]\nstate_dir = /var/lib/x\n"
				  "command_timeout = 7\n\n"
				  "[account work]\nhost = h\nusername = u\n"
				  "password = p\n";
	struct config *cfg;
	char err[512], text[1024], t[256];
	const struct account *a;

	(void)state;
	snprintf(text, sizeof(text), "%sdeliver = mda:/usr/lib/dovecot/deliver"
	    " -d bob  -f %%F -m %%f.%%a 100%%%%\n", acct);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	a = &cfg->accounts[0];
	assert_int_equal(a->target.kind, TARGET_MDA);
	assert_null(a->maildir);
	assert_string_equal(a->target.argv[0], "/usr/lib/dovecot/deliver");
	assert_string_equal(a->target.argv[4], "%F");
	assert_string_equal(a->target.argv[6], "%f.%a");
	assert_string_equal(a->target.argv[7], "100%%");
	assert_null(a->target.argv[8]);
	assert_int_equal(a->target.timeout, 7);
	target_print(&a->target, t, sizeof(t));
	assert_string_equal(t, "mda:/usr/lib/dovecot/deliver -d bob -f %F "
			       "-m %f.%a 100%%");
	config_free(cfg);

	snprintf(text, sizeof(text), "%sdeliver = lmtp:[::1]:24\n"
	    "lmtp_recipient = bob@example.org\ntimeout = 9\n", acct);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	a = &cfg->accounts[0];
	assert_int_equal(a->target.kind, TARGET_LMTP);
	assert_string_equal(a->target.host, "::1");
	assert_string_equal(a->target.port, "24");
	assert_string_equal(a->target.recipient, "bob@example.org");
	assert_int_equal(a->target.timeout, 9);
	target_print(&a->target, t, sizeof(t));
	assert_string_equal(t, "lmtp:[::1]:24");
	config_free(cfg);

	snprintf(text, sizeof(text),
	    "%sdeliver = lmtp:/run/dovecot/lmtp\nlmtp_recipient = bob\n", acct);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].target.path, "/run/dovecot/lmtp");
	config_free(cfg);

	expect_error("deliver = mda:procmail -d $USER\n", 9,
	    "key 'deliver': mda: runs its program without a shell, and '$' "
	    "needs one");
	expect_error("deliver = mda:deliver | tee x\n", 9,
	    "key 'deliver': mda: runs its program without a shell, and '|'");
	expect_error("deliver = mda:deliver -d %T\n", 9,
	    "key 'deliver': '%T' in mda: is not one of %F (sender)");
	expect_error("deliver = mda:%F\n", 9,
	    "key 'deliver': mda: the program's name cannot");
	expect_error("deliver = lmtp:host\n", 9,
	    "key 'deliver': lmtp: needs HOST:PORT or /PATH");
	expect_error("deliver = lmtp:host:0\n", 9,
	    "key 'deliver': '0' is not a port number");
	expect_error("deliver = smtp:host:25\n", 9,
	    "key 'deliver': 'smtp:host:25' is not one of maildir, mda:");
	expect_error("deliver = mda:/bin/true\n", 4,
	    "key 'maildir': [account work] delivers with deliver = mda:");
	expect_error("lmtp_recipient = bob\n", 4,
	    "key 'lmtp_recipient': [account work] has no deliver = lmtp:");
	expect_error("lmtp_recipient = <bob>\n", 9,
	    "key 'lmtp_recipient': '<bob>' is not a mail address");
	snprintf(text, sizeof(text), "%sdeliver = lmtp:h:24\n", acct);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":5: key 'lmtp_recipient': missing in "
				    "[account work]: deliver = lmtp: needs it"));
	snprintf(text, sizeof(text), "%sdeliver = maildir\n", acct);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":5: key 'maildir': missing"));
}

/* Settings that contradict each other name the key that cannot hold. */
static void
test_read_only_and_pin_need_their_conditions(void **state)
{
	(void)state;
	expect_error("auth = xoauth2\noauth_token_command = oama access a\n", 4,
	    "key 'auth': [account work] logs in with OAuth2: it needs "
	    "oauth_token_command and no password");
	expect_error("oauth_token_command = x\n", 4,
	    "key 'oauth_token_command': [account work] has no auth = xoauth2");
	expect_error("auth = kerberos\n", 9, "key 'auth': 'kerberos' is not one");
	expect_error("read_only = yes\nafter = delete\n", 4,
	    "key 'read_only': [account work] opens its folders read-only");
	expect_error("tls = none\ntls_fingerprint = sha256:"
		     "00112233445566778899aabbccddeeff"
		     "00112233445566778899aabbccddeeff\n",
	    4, "key 'tls_fingerprint': [account work] has tls = none");
}

static void
test_value_errors_name_file_line_and_key(void **state)
{
	expect_error("port = abc\n", 9,
	    "key 'port': 'abc' is not a number in 1..65535");
	expect_error("port = 0\n", 9, "key 'port'");
	expect_error("port = 70000\n", 9, "key 'port'");
	expect_error("port = 99999999999999999999999\n", 9, "key 'port'");
	expect_error("tls = maybe\n", 9, "key 'tls': 'maybe' is not one of");
	expect_error("after = archive\n", 9, "key 'after'");
	expect_error("after = move:../x\n", 9, "key 'after'");
	expect_error("idle = yes\n", 9, "key 'idle'");
	expect_error("poll_interval = 0\n", 9, "key 'poll_interval'");
	expect_error("idle_refresh = 5\n", 9, "key 'idle_refresh'");
	expect_error("idle_refresh = 3600\n", 9, "key 'idle_refresh'");
	expect_error("host = a b\n", 9, "key 'host'");
	expect_error("\n\nca_file =\n", 11, "key 'ca_file': empty value");
	expect_error("tls_fingerprint = md5:00\n", 9, "key 'tls_fingerprint'");
	expect_error("tls_fingerprint = sha256:0011\n", 9,
	    "key 'tls_fingerprint'");
	expect_error("read_only = maybe\n", 9, "key 'read_only'");
}

static void
test_unknown_and_duplicate_keys_are_errors(void **state)
{
	expect_error("hots = x\n", 9,
	    "key 'hots': unknown key in [account work]");
	expect_error("host = other\n", 9, "key 'host': given twice");
	expect_error("[global]\nstate_dir = /a\n", 10,
	    "key 'state_dir': given twice");
	expect_error("[global]\nusr = x\n", 10,
	    "key 'usr': unknown key in [global]");
	expect_error("[global]\nlog = file\n", 10, "key 'log'");
	expect_error("[globl]\nx = 1\n", 10, "unknown section [globl]");
	expect_error("[account bad/name]\nhost = x\n", 10,
	    "invalid account name");
}

static void
test_folder_names_that_escape_the_maildir_are_refused(void **state)
{
	expect_error("folders = ../etc\n", 9,
	    "key 'folders': invalid folder name");
	expect_error("folders = /abs\n", 9, "key 'folders'");
	expect_error("folders = a//b\n", 9, "key 'folders'");
	expect_error("folders = a/../b\n", 9, "key 'folders'");
	expect_error("folders = .hidden\n", 9, "key 'folders'");
	/* UTF-8 is fine (sent as modified UTF-7); Latin-1 and C1 are not. */
	expect_error("folders = caf\xe9\n", 9, "key 'folders'");
	expect_error("folders = a\xc2\x85\n", 9, "key 'folders'");
	expect_error("folders = Entw\xc3\xbcrfe, Entw&APw-rfe\n", 9,
	    "key 'folders': folder 'Entw&APw-rfe' listed twice (as "
	    "'Entw\xc3\xbcrfe'");
	expect_error("folders = INBOX, INBOX\n", 9,
	    "key 'folders': folder 'INBOX' listed twice");
	/* INBOX is case-insensitive: both would fetch, and deliver, it. */
	expect_error("folders = INBOX, inbox\n", 9,
	    "key 'folders': folder 'inbox' listed twice (as 'INBOX'; INBOX "
	    "is case-insensitive)");
	expect_error("folders = Lists, INBOX\nafter = move:Inbox\n", 4,
	    "key 'after': cannot move into 'Inbox'");
	expect_error("folders = ,\n", 9, "key 'folders': no folder given");
	/* 90 characters that are percent-encoded: 270 + ".state.tmp". */
	expect_error("folders = +++++++++++++++++++++++++++++++++++++++++++++"
		     "+++++++++++++++++++++++++++++++++++++++++++++\n",
	    9, "key 'folders': folder name '++++++++++++++++++++++++++++++++"
		"++++++++...' is too long: its state file name would be 280 "
		"bytes");
	expect_error("folders = Archive\nafter = move:Archive\n", 4,
	    "key 'after': cannot move into 'Archive'");
}

static void
test_missing_and_conflicting_keys_name_the_section(void **state)
{
	struct config *cfg;
	char err[512];

	write_conf("[account a]\nhost = h\nusername = u\npassword = p\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(
	    strstr(err, ":1: key 'maildir': missing in [account a]"));
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(
	    strstr(err, ":1: key 'password': [account a] needs exactly one"));
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password = p\npassword_command = echo p\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "needs exactly one"));
	write_conf("[global]\nstate_dir = /x\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "no [account NAME] section"));
	write_conf("[account a]\nmaildir = relative/dir\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err,
	    ":2: key 'maildir': 'relative/dir' is not an absolute path"));
	write_conf("[global]\nstate_dir = var\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, ":2: key 'state_dir'"));
}

static void
test_syntax_errors_and_long_lines(void **state)
{
	char big[6000];

	expect_error("this is not ini\n", 9, "syntax error");
	memset(big, 'x', sizeof(big));
	memcpy(big, "host2 = ", 8);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	expect_error(big, 9, "line too long");
}

static void
test_missing_file_is_named(void **state)
{
	struct config *cfg;
	char err[512];

	assert_int_equal(config_load_file("/nonexistent/idlefetch.conf", &cfg,
			     err, sizeof(err)),
	    -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/idlefetch.conf"));
}

static void
test_variables_are_expanded(void **state)
{
	struct config *cfg;
	char err[512], text[1024];

	setenv("IDLEFETCH_TEST_PW", "from-env", 1);
	snprintf(text, sizeof(text),
	    "[account a]\nhost = h\nusername = u\n"
	    "maildir = /m/${IDLEFETCH_TEST_PW}\npassword = ${IDLEFETCH_TEST_PW}\n");
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password, "from-env");
	assert_string_equal(cfg->accounts[0].maildir, "/m/from-env");
	config_free(cfg);
}

static void
test_unset_variable_is_an_error(void **state)
{
	struct config *cfg;
	char err[512];

	unsetenv("IDLEFETCH_TEST_UNSET");
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password = ${IDLEFETCH_TEST_UNSET}\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err,
	    ":5: key 'password': environment variable "
	    "IDLEFETCH_TEST_UNSET is not set"));
	write_conf("[account a]\nhost = ${oops\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, ":2: key 'host': malformed ${...}"));
}

static void
test_password_file_and_command(void **state)
{
	char pw[] = "/tmp/idlefetch-pw-XXXXXX", text[1024], err[512];
	struct config *cfg;
	int fd = mkstemp(pw);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "filepw\nignored\n", 15), 15);
	close(fd);
	snprintf(text, sizeof(text),
	    "[account a]\nhost = h\nusername = u\n"
	    "maildir = /m\npassword_file = %s\n",
	    pw);
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password, "filepw");
	config_free(cfg);
	unlink(pw);
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, ":5: key 'password_file': cannot read"));

	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = printf 'cmdpw\\n'\n");
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password, "cmdpw");
	config_free(cfg);
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = exit 3\n");
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err,
	    "key 'password_command': command failed "
	    "(exit status 3)"));
}

static void
test_user_and_group_must_exist(void **state)
{
	struct config *cfg;
	char err[512];

	expect_error("[global]\nuser = no-such-user-here\n", 10,
	    "key 'user': no user 'no-such-user-here' on this system");
	expect_error("[global]\ngroup = no-such-group-here\n", 10,
	    "key 'group': no group 'no-such-group-here' on this system");
	expect_error("[global]\nuser = root\nuser = root\n", 11,
	    "key 'user': given twice");
	assert_int_equal(load("[global]\nuser = root\ngroup = root\n", err,
			     sizeof(err), &cfg),
	    0);
	assert_string_equal(cfg->user, "root");
	assert_string_equal(cfg->group, "root");
	config_free(cfg);
}

/*
 * A daemon started as root parses first and reads secrets only after it
 * became its user: parsing must not run the command.
 */
static void
test_parse_leaves_secrets_for_later(void **state)
{
	char mark[] = "/tmp/idlefetch-cmd-ran-XXXXXX", text[1024], err[512];
	struct config *cfg;
	int fd = mkstemp(mark);

	assert_true(fd >= 0);
	close(fd);
	unlink(mark);
	snprintf(text, sizeof(text),
	    "[account a]\nhost = h\nusername = u\nmaildir = /m\n"
	    "password_command = touch %s; echo pw\n",
	    mark);
	write_conf(text);
	assert_int_equal(config_parse_file(path, &cfg, err, sizeof(err)), 0);
	assert_null(cfg->accounts[0].password);
	assert_int_equal(access(mark, F_OK), -1);
	assert_int_equal(config_read_secrets(cfg, NULL, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password, "pw");
	assert_int_equal(access(mark, F_OK), 0);
	unlink(mark);
	config_free(cfg);

	/* The late error still names the file, the line and the key. */
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "\npassword_file = /nonexistent/pw\n");
	assert_int_equal(config_parse_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_not_equal(
	    config_read_secrets(cfg, NULL, err, sizeof(err)), 0);
	assert_non_null(strstr(err, ":6: key 'password_file': cannot read"));
	config_free(cfg);
}

/*
 * password_command keeps its ${NAME}s for the shell, which expands them
 * as data; pasted in, a value holding "; cmd" would run cmd.
 */
static void
test_password_command_keeps_variables_for_the_shell(void **state)
{
	struct config *cfg;
	char err[512];

	setenv("IDLEFETCH_TEST_PW", "x; touch /tmp/should-not-exist", 1);
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = printf '%s' \"${IDLEFETCH_TEST_PW}\"\n");
	assert_int_equal(config_parse_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password_command,
	    "printf '%s' \"${IDLEFETCH_TEST_PW}\"");
	config_free(cfg);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password,
	    "x; touch /tmp/should-not-exist");
	config_free(cfg);
	unsetenv("IDLEFETCH_TEST_PW");
	/* An unset variable is still an error, found when parsing. */
	assert_int_not_equal(config_parse_file(path, &cfg, err, sizeof(err)),
	    0);
	assert_non_null(strstr(err, ":5: key 'password_command': environment "
				    "variable IDLEFETCH_TEST_PW is not set"));
	expect_error("[global]\ncommand_timeout = 0\n", 10,
	    "key 'command_timeout': '0' is not a number in 1..600");
}

static void
test_environment_config(void **state)
{
	struct config *cfg;
	char err[512];

	setenv("IDLEFETCH_HOST", "imap.example.org", 1);
	setenv("IDLEFETCH_USERNAME", "bob", 1);
	setenv("IDLEFETCH_PASSWORD", "pw", 1);
	setenv("IDLEFETCH_MAILDIR", "/mail", 1);
	setenv("IDLEFETCH_TLS", "starttls", 1);
	setenv("IDLEFETCH_FOLDERS", "INBOX,Spam", 1);
	assert_int_equal(config_load_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].name, "default");
	assert_int_equal(cfg->accounts[0].port, 143);
	assert_int_equal(cfg->accounts[0].nfolders, 2);
	assert_string_equal(cfg->source, "environment");
	config_free(cfg);
	setenv("IDLEFETCH_PORT", "http", 1);
	assert_int_not_equal(config_load_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err,
	    "IDLEFETCH_PORT: key 'port': 'http' is not a number in 1..65535");
	unsetenv("IDLEFETCH_PORT");
	unsetenv("IDLEFETCH_MAILDIR");
	assert_int_not_equal(config_load_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err,
	    "environment: key 'maildir': missing in [account default]");
	unsetenv("IDLEFETCH_HOST");
}

static void
test_print_masks_the_password(void **state)
{
	struct config *cfg;
	char err[512], out[4096] = "";
	FILE *fp;

	assert_int_equal(load("", err, sizeof(err), &cfg), 0);
	fp = fmemopen(out, sizeof(out) - 1, "w");
	config_print(cfg, fp);
	fclose(fp);
	assert_null(strstr(out, "s3cret"));
	assert_non_null(strstr(out, "password = ********"));
	assert_non_null(strstr(out, "host = imap.example.org"));
	config_free(cfg);
}

static void
test_folder_paths_and_keys(void **state)
{
	struct account a = { .maildir = "/m" };
	char *p;

	p = folder_maildir(a.maildir, "INBOX");
	assert_string_equal(p, "/m");
	free(p);
	p = folder_maildir(a.maildir, "Lists/dev");
	assert_string_equal(p, "/m/.Lists.dev");
	free(p);
	p = folder_key("Lists/dev");
	assert_string_equal(p, "Lists%2Fdev");
	free(p);
	p = folder_key("Lists.dev");
	assert_string_equal(p, "Lists%2Edev");
	free(p);
	/* A UTF-8 name is a UTF-8 Maildir++ folder. */
	p = folder_maildir(a.maildir, "Entw\xc3\xbcrfe");
	assert_string_equal(p, "/m/.Entw\xc3\xbcrfe");
	free(p);
}

/* folders = *: INBOX and every subscribed folder, exclude only with it. */
static void
test_subscribed_folders_and_exclude(void **state)
{
	struct config *cfg, *other;
	char err[1024], *out;
	size_t len;
	FILE *fp;

	(void)state;
	assert_int_equal(load("folders = Work, *\nexclude = Trash, Lists/*\n",
			     err, sizeof(err), &cfg),
	    0);
	assert_true(cfg->accounts[0].subscribed);
	assert_int_equal(cfg->accounts[0].nfolders, 2);
	assert_string_equal(cfg->accounts[0].folders[0], "INBOX");
	assert_string_equal(cfg->accounts[0].folders[1], "Work");
	assert_int_equal(cfg->accounts[0].nexclude, 2);
	assert_string_equal(cfg->accounts[0].exclude[1], "Lists/*");
	fp = open_memstream(&out, &len);
	config_print(cfg, fp);
	fclose(fp);
	assert_non_null(strstr(out, "folders = INBOX, Work, *\n"));
	assert_non_null(strstr(out, "exclude = Trash, Lists/*\n"));
	free(out);
	/* Another pattern: another account, for a reload. */
	assert_int_equal(load("folders = Work, *\nexclude = Trash\n", err,
			     sizeof(err), &other),
	    0);
	assert_false(config_account_equal(&cfg->accounts[0],
	    &other->accounts[0]));
	config_free(other);
	config_free(cfg);
	assert_int_equal(load("folders = *\n", err, sizeof(err), &cfg), 0);
	assert_int_equal(cfg->accounts[0].nfolders, 1);
	config_free(cfg);
	expect_error("folders = *, *\n", 9, "key 'folders': '*' listed twice");
	expect_error("folders = INBOX\nexclude = Trash\n", 4,
	    "key 'exclude': [account work] lists its folders");
	expect_error("exclude = Trash\n", 4, "key 'exclude'");
	expect_error("folders = *\nexclude = ,\n", 10,
	    "key 'exclude': no pattern given");
	expect_error("folders = *\nexclude = caf\xe9\n", 10,
	    "key 'exclude': 'caf\xe9' is not UTF-8");
}

/* config_print into a string the caller frees. */
static char *
printed(const struct config *cfg)
{
	char *out = NULL;
	size_t len;
	FILE *fp = open_memstream(&out, &len);

	assert_non_null(fp);
	config_print(cfg, fp);
	fclose(fp);
	return out;
}

/*
 * What --check-config prints is a configuration that reads back the
 * same: every key printed is parsed by its own row, values and all.
 */
static void
test_printed_configuration_reads_back_the_same(void **state)
{
	static const char *text =
	    "[global]\nstate_dir = /var/lib/x\nlog = json\n"
	    "command_timeout = 12\nshard = 1/3\n\n"
	    "[account work]\nhost = imap.example.org\nport = 1993\n"
	    "tls = starttls\nca_file = /etc/ca.pem\n"
	    "tls_fingerprint = sha256:"
	    "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n"
	    "username = alice\npassword = ********\n"
	    "folders = Lists/dev, Entw\xc3\xbcrfe, *\nexclude = Trash, L/*\n"
	    "maildir = /srv/mail\nafter = move:Archive\nidle = off\n"
	    "poll_interval = 30\nidle_refresh = 300\ntimeout = 20\n"
	    "max_connections = 3\n\n"
	    "[account ro]\nhost = h2\nusername = bob\npassword = ********\n"
	    "read_only = yes\ndeliver = lmtp:[::1]:24\n"
	    "lmtp_recipient = bob@example.org\n\n"
	    "[account oa]\nhost = h3\ntls = none\nusername = carol\n"
	    "auth = xoauth2\noauth_token_command = echo ${HOME}\n"
	    "deliver = mda:/usr/bin/procmail -d %a 100%%\nafter = delete\n";
	struct config *cfg, *again;
	char err[1024], *out, *out2;

	(void)state;
	write_conf(text);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	out = printed(cfg);
	write_conf(out);
	assert_int_equal(config_load_file(path, &again, err, sizeof(err)), 0);
	out2 = printed(again);
	/* Only the source line differs: both are the same file. */
	assert_string_equal(out, out2);
	assert_int_equal(again->naccounts, 3);
	for (size_t i = 0; i < again->naccounts; i++)
		assert_true(config_account_equal(&cfg->accounts[i],
		    &again->accounts[i]));
	assert_non_null(strstr(out, "oauth_token_command = echo ${HOME}\n"));
	assert_non_null(strstr(out, "; this replica takes:"));
	free(out);
	free(out2);
	config_free(again);
	config_free(cfg);
}

/* A default written out changes nothing: defaults come from the rows. */
static void
test_written_defaults_change_nothing(void **state)
{
	struct config *cfg, *with;
	char err[1024], extra[256], *out, *out2;

	(void)state;
	assert_int_equal(load("", err, sizeof(err), &cfg), 0);
	out = printed(cfg);
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];

		/* state_dir and maildir are in the base configuration. */
		if (k->def == NULL || strcmp(k->name, "state_dir") == 0)
			continue;
		snprintf(extra, sizeof(extra), "%s%s = %s\n",
		    k->section == CONFIG_GLOBAL ? "[global]\n" : "", k->name,
		    k->def);
		if (load(extra, err, sizeof(err), &with) != 0)
			fail_msg("'%s': %s", extra, err);
		out2 = printed(with);
		assert_string_equal(out, out2);
		assert_true(config_account_equal(&cfg->accounts[0],
		    &with->accounts[0]));
		free(out2);
		config_free(with);
	}
	free(out);
	config_free(cfg);
}

/* Every key of the table, given twice in its section, is refused. */
static void
test_every_key_given_twice_is_refused(void **state)
{
	char extra[256], want[256], first[256], err[1024];
	struct config *cfg;

	(void)state;
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];
		bool global = k->section == CONFIG_GLOBAL;

		if (strcmp(k->name, "state_dir") == 0) {
			expect_error("[global]\nstate_dir = /a\n", 10,
			    "key 'state_dir': given twice in [global]");
			continue;
		}
		/* The first is refused for its value, or the second twice. */
		snprintf(extra, sizeof(extra), "%s%s = x\n%s = x\n",
		    global ? "[global]\n" : "", k->name, k->name);
		assert_int_not_equal(load(extra, err, sizeof(err), &cfg), 0);
		snprintf(want, sizeof(want), ":%u: key '%s': given twice in [%s]",
		    global ? 11 : 10, k->name, global ? "global" : "account work");
		snprintf(first, sizeof(first), ":%u: key '%s': ",
		    global ? 10 : 9, k->name);
		if (strstr(err, want) == NULL && strstr(err, first) == NULL)
			fail_msg("error '%s' lacks '%s'", err, want);
		/* on_delivery is a key of both sections. */
		if (config_key_find(global ? CONFIG_ACCOUNT : CONFIG_GLOBAL,
			k->name) != NULL)
			continue;
		snprintf(extra, sizeof(extra), "%s%s = x\n",
		    global ? "" : "[global]\n", k->name);
		snprintf(want, sizeof(want), "key '%s': unknown key in [%s]",
		    k->name, global ? "account work" : "global");
		expect_error(extra, global ? 9 : 10, want);
	}
}

/*
 * A configuration of several MiB (thousands of accounts) is read whole:
 * cut at 1 MiB, the last accounts were dropped without a word, and one
 * cut in the middle of its password got a wrong one.
 */
static void
test_large_files_are_read_whole(void **state)
{
	struct config *cfg = NULL;
	char err[512];
	FILE *fp = fopen(path, "w");
	const unsigned n = 12000; /* about 1.5 MiB */

	(void)state;
	assert_non_null(fp);
	fputs("[global]\nstate_dir = /var/lib/x\n", fp);
	for (unsigned i = 0; i < n; i++)
		fprintf(fp,
		    "\n[account a%u]\nhost = imap%u.example.org\n"
		    "username = user%u@example.org\npassword = password-%u\n"
		    "folders = INBOX, Lists/dev\nmaildir = /srv/mail/u%u\n",
		    i, i, i, i, i);
	fclose(fp);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg->naccounts, n);
	assert_string_equal(cfg->accounts[n - 1].password, "password-11999");
	assert_string_equal(cfg->accounts[n - 1].maildir, "/srv/mail/u11999");
	config_free(cfg);
}

/* Loads text, expects it refused with exactly want, from any source. */
static void
expect_load_error(const char *text, const char *want)
{
	struct config *cfg = NULL;
	char err[1024] = "";

	write_conf(text);
	if (config_load_file(path, &cfg, err, sizeof(err)) == 0)
		fail_msg("'%s' was accepted", text);
	assert_null(cfg);
	assert_string_equal(err, want);
}

/*
 * A control character in the user name would break what carries it:
 * \x01 separates XOAUTH2's and OAUTHBEARER's fields, CR LF ends an IMAP
 * LOGIN. It is refused with the file, the line and the key, whether it
 * was written in the file, came from a ${VAR} or from the environment.
 */
static void
test_username_with_control_character_is_refused(void **state)
{
	struct config *cfg;
	char want[1024], err[1024];

	(void)state;
	snprintf(want, sizeof(want),
	    "%s:3: key 'username': a control character (byte 0x01) cannot "
	    "be sent in a login",
	    path);
	expect_load_error("[account a]\nhost = h\nusername = bob\x01"
			  "auth=Bearer x\npassword = p\nmaildir = /m\n",
	    want);
	setenv("IDLEFETCH_TEST_USER", "bob\r\nA1 DELETE INBOX", 1);
	snprintf(want, sizeof(want),
	    "%s:3: key 'username': a control character (byte 0x0d) cannot "
	    "be sent in a login",
	    path);
	expect_load_error("[account a]\nhost = h\n"
			  "username = ${IDLEFETCH_TEST_USER}\npassword = p\n"
			  "maildir = /m\n",
	    want);
	unsetenv("IDLEFETCH_TEST_USER");
	snprintf(want, sizeof(want),
	    "%s:2: key 'host': a control character (byte 0x7f) is in no "
	    "host name or address",
	    path);
	expect_load_error("[account a]\nhost = h\x7f\nusername = u\n"
			  "password = p\nmaildir = /m\n",
	    want);
	/* UTF-8 is a user name (RFC 6855), and so are spaces. */
	write_conf("[account a]\nhost = h\nusername = J\xc3\xbcrgen M\n"
		   "password = p\nmaildir = /m\n");
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].username, "J\xc3\xbcrgen M");
	config_free(cfg);
	/* The environment's account: the variable and the key. */
	setenv("IDLEFETCH_HOST", "imap.example.org", 1);
	setenv("IDLEFETCH_USERNAME", "bob\x01", 1);
	setenv("IDLEFETCH_PASSWORD", "pw", 1);
	setenv("IDLEFETCH_MAILDIR", "/mail", 1);
	assert_int_not_equal(config_load_env(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err,
	    "IDLEFETCH_USERNAME: key 'username': a control character (byte "
	    "0x01) cannot be sent in a login");
	unsetenv("IDLEFETCH_HOST");
	unsetenv("IDLEFETCH_USERNAME");
	unsetenv("IDLEFETCH_PASSWORD");
	unsetenv("IDLEFETCH_MAILDIR");
}

/*
 * password_command runs as the daemon runs it: stdin on /dev/null, not
 * the caller's; a command that outlives command_timeout is killed and is
 * an error naming the file, the line and the key; what it wrote on
 * stderr is in the error.
 */
static void
test_password_command_has_no_stdin_and_a_time_limit(void **state)
{
	struct config *cfg = NULL;
	char err[1024];
	struct timespec t0, t1;
	int fds[2], saved, r;

	(void)state;
	/* Our stdin is a pipe: the command must not see it. */
	assert_int_equal(pipe(fds), 0);
	saved = dup(0);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fds[0], 0), 0);
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = readlink /proc/self/fd/0\n");
	r = config_load_file(path, &cfg, err, sizeof(err));
	assert_int_equal(dup2(saved, 0), 0);
	close(saved);
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(r, 0);
	assert_string_equal(cfg->accounts[0].password, "/dev/null");
	config_free(cfg);

	write_conf("[global]\ncommand_timeout = 1\n[account a]\nhost = h\n"
		   "username = u\nmaildir = /m\n"
		   "password_command = echo starting >&2; sleep 20\n");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_not_equal(config_load_file(path, &cfg, err, sizeof(err)),
	    0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_null(cfg);
	assert_true(t1.tv_sec - t0.tv_sec < 10);
	assert_non_null(strstr(err, ":7: key 'password_command': command did "
				    "not finish within 1 s; killed (it said: "
				    "starting)"));
}

/*
 * Only the accounts this process fetches have their secrets read: the one
 * --account names, and those its shard takes. Another replica's
 * password_file may not be mounted here, nor its command work.
 */
static void
test_secrets_of_accounts_not_fetched_are_not_read(void **state)
{
	char text[4096], err[1024];
	size_t len = 0;
	struct config *cfg;
	unsigned mine = 0;

	(void)state;
	len += snprintf(text + len, sizeof(text) - len,
	    "[global]\nshard = 0/2\n");
	/* Shard 0's accounts can be read; shard 1's cannot. */
	for (int i = 0; i < 8; i++) {
		char name[8];
		bool here;

		snprintf(name, sizeof(name), "n%d", i);
		here = shard_of(name, 2) == 0;
		mine += here;
		len += snprintf(text + len, sizeof(text) - len,
		    "[account %s]\nhost = h\nusername = u\nmaildir = /m\n%s\n",
		    name,
		    here ? "password_command = echo pw" :
		    i % 2 ? "password_command = false" :
			    "password_file = /nonexistent/pw");
	}
	assert_true(mine > 0 && mine < 8);
	write_conf(text);
	assert_int_equal(config_parse_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(config_read_secrets(cfg, NULL, err, sizeof(err)), 0);
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		assert_int_equal(config_wanted(cfg, a, NULL),
		    shard_of(a->name, 2) == 0);
		if (shard_of(a->name, 2) == 0)
			assert_string_equal(a->password, "pw");
		else
			assert_null(a->password);
	}
	config_free(cfg);

	/* --account: that one alone, in its shard or not. */
	write_conf("[account a]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = echo pw-a\n"
		   "[account b]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_command = false\n"
		   "[account c]\nhost = h\nusername = u\nmaildir = /m\n"
		   "password_file = /nonexistent/pw\n");
	assert_int_equal(config_parse_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(config_read_secrets(cfg, "a", err, sizeof(err)), 0);
	assert_string_equal(cfg->accounts[0].password, "pw-a");
	assert_null(cfg->accounts[1].password);
	assert_null(cfg->accounts[2].password);
	assert_false(config_wanted(cfg, &cfg->accounts[1], "a"));
	/* Without --account, every account: c's file (read first) fails. */
	assert_int_not_equal(
	    config_read_secrets(cfg, NULL, err, sizeof(err)), 0);
	assert_non_null(strstr(err, ":15: key 'password_file': cannot read"));
	config_free(cfg);
}

/*
 * Hundreds of accounts do not start hundreds of commands (three pipes
 * each) at once: at most CONFIG_SECRETS_AT_ONCE run together, and every
 * one of them still runs.
 */
static void
test_password_commands_run_a_bounded_number_at_once(void **state)
{
	char dir[] = "/tmp/idlefetch-batch-XXXXXX", text[16384], err[1024];
	char counts[300], script[300], line[64];
	size_t len = 0;
	struct config *cfg;
	unsigned most = 0, seen = 0;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(counts, sizeof(counts), "%s/counts", dir);
	snprintf(script, sizeof(script), "%s/pw", dir);
	/* How many run now, seen by each of them half-way through. */
	fp = fopen(script, "w");
	assert_non_null(fp);
	fprintf(fp, "#!/bin/sh\ntouch %s/run.$$\nsleep 0.3\n"
	    "ls %s | grep -c run >> %s\nrm %s/run.$$\necho pw$1\n",
	    dir, dir, counts, dir);
	fclose(fp);
	assert_int_equal(chmod(script, 0700), 0);
	for (int i = 0; i < 40; i++)
		len += snprintf(text + len, sizeof(text) - len,
		    "[account n%d]\nhost = h\nusername = u\nmaildir = /m\n"
		    "password_command = %s %d\n",
		    i, script, i);
	assert_true(len < sizeof(text));
	write_conf(text);
	if (config_load_file(path, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < cfg->naccounts; i++)
		assert_non_null(cfg->accounts[i].password);
	config_free(cfg);
	fp = fopen(counts, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		unsigned n = (unsigned)strtoul(line, NULL, 10);

		most = n > most ? n : most;
		seen++;
	}
	fclose(fp);
	unlink(counts);
	unlink(script);
	rmdir(dir);
	assert_int_equal(seen, 40);
	assert_true(most >= 2);
	assert_true(most <= CONFIG_SECRETS_AT_ONCE);
}

/*
 * Maildir++ delivers a.b and a/b into one folder, .a.b: two such named
 * folders are refused with the file, the line and the key. An LMTP or
 * MDA target keeps them apart by their state, and takes them.
 */
static void
test_named_folders_sharing_a_maildir_folder_are_refused(void **state)
{
	static const char *lmtp = "[account work]\nhost = h\nusername = u\n"
				  "password = p\ndeliver = lmtp:[::1]:24\n"
				  "lmtp_recipient = bob@example.org\n"
				  "folders = a.b, a/b\n";
	struct config *cfg;
	char err[1024];

	(void)state;
	expect_error("folders = INBOX, a.b, a/b\n", 9,
	    "key 'folders': folders 'a.b' and 'a/b' would both be delivered "
	    "to Maildir folder .a.b; rename one on the server");
	expect_error("after = keep\nfolders = Lists/dev/x, *, Lists.dev/x\n", 10,
	    "key 'folders': folders 'Lists/dev/x' and 'Lists.dev/x' would "
	    "both be delivered to Maildir folder .Lists.dev.x; rename one on "
	    "the server");
	/* Names that differ in Maildir++ are fine, as is one folder. */
	assert_int_equal(load("folders = a.b, a.c, a/b/c, inbox\n", err,
			     sizeof(err), &cfg),
	    0);
	config_free(cfg);
	write_conf(lmtp);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg->accounts[0].nfolders, 2);
	config_free(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_filled_in),
		cmocka_unit_test(test_all_keys_are_read),
		cmocka_unit_test(test_read_only_and_pin_need_their_conditions),
		cmocka_unit_test(test_secrets_readable_by_others_are_refused),
		cmocka_unit_test(test_value_errors_name_file_line_and_key),
		cmocka_unit_test(test_unknown_and_duplicate_keys_are_errors),
		cmocka_unit_test(
		    test_folder_names_that_escape_the_maildir_are_refused),
		cmocka_unit_test(
		    test_missing_and_conflicting_keys_name_the_section),
		cmocka_unit_test(test_syntax_errors_and_long_lines),
		cmocka_unit_test(test_missing_file_is_named),
		cmocka_unit_test(test_variables_are_expanded),
		cmocka_unit_test(test_unset_variable_is_an_error),
		cmocka_unit_test(test_password_file_and_command),
		cmocka_unit_test(test_user_and_group_must_exist),
		cmocka_unit_test(test_password_command_keeps_variables_for_the_shell),
		cmocka_unit_test(test_parse_leaves_secrets_for_later),
		cmocka_unit_test(test_environment_config),
		cmocka_unit_test(test_print_masks_the_password),
		cmocka_unit_test(test_printed_configuration_reads_back_the_same),
		cmocka_unit_test(test_written_defaults_change_nothing),
		cmocka_unit_test(test_every_key_given_twice_is_refused),
		cmocka_unit_test(test_folder_paths_and_keys),
		cmocka_unit_test(test_subscribed_folders_and_exclude),
		cmocka_unit_test(test_large_files_are_read_whole),
		cmocka_unit_test(test_delivery_targets),
		cmocka_unit_test(
		    test_username_with_control_character_is_refused),
		cmocka_unit_test(
		    test_password_command_has_no_stdin_and_a_time_limit),
		cmocka_unit_test(
		    test_secrets_of_accounts_not_fetched_are_not_read),
		cmocka_unit_test(
		    test_password_commands_run_a_bounded_number_at_once),
		cmocka_unit_test(
		    test_named_folders_sharing_a_maildir_folder_are_refused),
	};
	int fd = mkstemp(path), r;

	if (fd < 0)
		return 1;
	close(fd);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(path);
	return r;
}
