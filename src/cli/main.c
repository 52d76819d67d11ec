/*
 * main: command line, configuration lookup and exit codes
 * (0 fine, 1 some account failed, 2 configuration or usage error; 3 from
 * --check-config: valid as far as it could check, see check_config).
 */
#include <errno.h>
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h> /* mallopt */
#endif
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "idlefetch/config.h"
#include "idlefetch/daemon.h"
#include "idlefetch/log.h"
#include "idlefetch/notify.h"
#include "idlefetch/privdrop.h"
#include "idlefetch/rcimport.h"
#include "idlefetch/shard.h"
#include "idlefetch/status.h"
#include "idlefetch/util.h"

/* --shard I/N: overrides the configuration's shard, also on SIGHUP. */
static struct shard cli_shard;
static bool have_cli_shard;

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: idlefetch [--config FILE] [--once] [--account NAME] "
	    "[--shard I/N]\n"
	    "                 [--check-config] [-v]\n"
	    "       idlefetch status [--config FILE] [--account NAME] "
	    "[--shard I/N]\n"
	    "       idlefetch import-fetchmailrc [FILE] [--maildir DIR] "
	    "[--secrets-dir DIR]\n"
	    "                 [--keep-passwords]\n"
	    "       idlefetch --version | --help\n\n"
	    "Keeps an IMAP IDLE connection per account (NOTIFY watches every "
	    "folder on it)\nand delivers every new message into a local "
	    "Maildir as it arrives.\n\n"
	    "  -c, --config FILE   configuration file (default $IDLEFETCH_CONFIG or\n"
	    "                      " CONFIG_DEFAULT_PATH "; without one, "
	    "IDLEFETCH_HOST etc.)\n"
	    "  -1, --once          fetch everything new once and exit "
	    "(0 all synced, 1 some failed)\n"
	    "  -a, --account NAME  only this account\n"
	    "  -s, --shard I/N     only the accounts replica I of N takes "
	    "(or auto: I from\n"
	    "                      the host name's -NUMBER, N from "
	    "$IDLEFETCH_SHARDS)\n"
	    "  -n, --check-config  validate, read the passwords as the daemon does "
	    "(as user =),\n"
	    "                      print the effective configuration, exit "
	    "(0 valid, 2 not,\n"
	    "                      3 valid but the passwords unread: not "
	    "root nor user =)\n"
	    "  -v, --verbose       debug logging (protocol trace, credentials hidden)\n"
	    "  -V, --version       print the version\n"
	    "  -h, --help          this text\n\n"
	    "Signals: SIGTERM/SIGINT finish the message in flight and stop; "
	    "SIGHUP reads\nthe configuration again and restarts only the "
	    "accounts that changed.\n\n"
	    "status: print each folder's state as the running daemon last "
	    "recorded it;\nexit 0 when healthy, 1 when not (no daemon, a "
	    "folder down for more than\n%d s or stopped), 2 for a "
	    "configuration error.\n\n"
	    "import-fetchmailrc: print an idlefetch.conf for a fetchmailrc "
	    "(default\n~/.fetchmailrc), with a comment on each option that "
	    "has no counterpart.\nMail goes to --maildir (default "
	    "~/Maildir); each password to a password_file\nin --secrets-dir "
	    "(default /etc/idlefetch), or stays in the file with\n"
	    "--keep-passwords.\n",
	    STATUS_GRACE_SECS);
}

/* --help (c 'h': 0) or an option getopt refused (2): the exit code. */
static int
usage_exit(int c)
{
	usage(c == 'h' ? stdout : stderr);
	return c == 'h' ? 0 : 2;
}

/* idlefetch import-fetchmailrc [FILE] [options]: 0, or 2 on an error. */
static int
import_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "maildir", required_argument, NULL, 'm' },
		{ "secrets-dir", required_argument, NULL, 'd' },
		{ "keep-passwords", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *home = getenv("HOME");
	struct rcimport_opts o = { .secrets_dir = "/etc/idlefetch" };
	char *text = NULL, *def_md = NULL, *def_rc = NULL, err[1024];
	size_t len = 0, cap = 0, n;
	FILE *fp;
	int c, r;

	while ((c = getopt_long(argc, argv, "m:d:kh", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			o.maildir = optarg;
			break;
		case 'd':
			o.secrets_dir = optarg;
			break;
		case 'k':
			o.keep_passwords = true;
			break;
		default:
			return usage_exit(c);
		}
	}
	if (optind + 1 < argc) {
		usage(stderr);
		return 2;
	}
	if (o.maildir == NULL)
		o.maildir = def_md = xasprintf("%s/Maildir", home ? home : "");
	o.source = optind < argc ? argv[optind] :
				   (def_rc = xasprintf("%s/.fetchmailrc",
					home ? home : ""));
	fp = fopen(o.source, "re");
	if (fp == NULL) {
		fprintf(stderr, "idlefetch: %s: %s\n", o.source,
		    strerror(errno));
		free(def_md);
		free(def_rc);
		return 2;
	}
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			text = xrealloc(text, cap);
		}
		n = fread(text + len, 1, cap - len - 1, fp);
		len += n;
	} while (n > 0 && len < (1u << 24));
	fclose(fp);
	text[len] = '\0';
	r = rcimport(text, &o, stdout, err, sizeof(err));
	OPENSSL_cleanse(text, len);
	free(text);
	if (r < 0)
		fprintf(stderr, "idlefetch: %s\n", err);
	free(def_md);
	free(def_rc);
	return r < 0 ? 2 : 0;
}

/*
 * Finds and parses the configuration without its secrets: at start still
 * as the user idlefetch was started as (root may be the only one who can
 * read the file), on SIGHUP as the user it became. 0 and *cfg, or -1 with
 * the reason in err (without the "idlefetch: " prefix).
 */
static int
find_config(const char *path, struct config **cfg, char *err, size_t errlen)
{
	if (path == NULL)
		path = getenv("IDLEFETCH_CONFIG");
	if (path != NULL && *path == '\0')
		path = NULL; /* an empty variable is an unset one */
	if (path == NULL && access(CONFIG_DEFAULT_PATH, F_OK) == 0)
		path = CONFIG_DEFAULT_PATH;
	if (path == NULL && getenv("IDLEFETCH_HOST") != NULL) {
		if (config_parse_env(cfg, err, errlen) < 0)
			return -1;
		if (have_cli_shard)
			(*cfg)->shard = cli_shard;
		return 0;
	}
	if (path == NULL) {
		snprintf(err, errlen,
		    "no configuration: %s does not exist and "
		    "IDLEFETCH_HOST is not set (see --help)",
		    CONFIG_DEFAULT_PATH);
		return -1;
	}
	if (config_parse_file(path, cfg, err, errlen) < 0)
		return -1;
	if (have_cli_shard)
		(*cfg)->shard = cli_shard;
	return 0;
}

/*
 * SIGHUP: the same lookup as at start-up, with the same --config; the
 * daemon reads the secrets itself, off the loop.
 */
static int
reload_config(void *ud, struct config **cfg, char *err, size_t errlen)
{
	return find_config(ud, cfg, err, errlen);
}

/*
 * --check-config's status when the configuration is valid but its
 * passwords and directories could not be checked: they are the user =
 * user's, and the caller is neither that user nor root. Not 0, which
 * says the daemon will find what it needs; not 2, a configuration error.
 */
#define CHECK_UNVERIFIED 3

/*
 * --check-config: what the daemon does before it connects, in its order,
 * for the accounts it would fetch (--account, the shard), changing
 * nothing on disk. Parsed as the user it was started as (find_config);
 * then, with `user =`, that user is become and the directories checked,
 * a missing one reported (privdrop_check), and only then is every
 * password_file read and every password_command run, the way the daemon
 * runs them (config_read_secrets). A password_command never runs as root
 * when `user` is set. Returns the exit code.
 */
static int
check_config(struct config *cfg, const char *account)
{
	char err[1024];
	int code = 0, r = privdrop_check(cfg, account, stderr, err,
	    sizeof(err));

	if (r == PRIVDROP_OTHER) {
		fprintf(stderr,
		    "idlefetch: warning: passwords not read and directories "
		    "not checked: the daemon reads them as user %s, which uid "
		    "%ld cannot become; run --check-config as root or as %s\n",
		    cfg->user, (long)geteuid(), cfg->user);
		code = CHECK_UNVERIFIED;
	} else if (r >= 0) {
		r = config_read_secrets(cfg, account, err, sizeof(err));
	}
	if (r < 0) {
		fprintf(stderr, "idlefetch: %s\n", err);
		config_free(cfg);
		return 2;
	}
	config_print(cfg, stdout);
	config_free(cfg);
	return code;
}

/*
 * The daemon's start: become the configured user, then talk to the
 * service manager and run; the daemon reads the secrets as that user (a
 * password_command never runs as root when `user` is set). Returns the
 * exit code.
 */
static int
run(struct config *cfg, const char *account, bool once, bool verbose,
    const char *path)
{
	char err[1024];
	int r;

	log_init(verbose ? LOGL_DEBUG : LOGL_INFO, cfg->log);
	r = privdrop_apply(cfg, account, err, sizeof(err));
	if (r < 0) {
		log_msg(LOGL_ERROR, NULL, NULL, "%s", err);
		config_free(cfg);
		return 2;
	}
	if (r == PRIVDROP_ROOT)
		log_msg(LOGL_WARN, NULL, NULL,
		    "running as root: set 'user =' in [global] to run as an "
		    "unprivileged user");
	else if (r == PRIVDROP_DONE && cfg->user != NULL)
		log_msg(LOGL_INFO, NULL, NULL, "running as user %s",
		    cfg->user);
	if (notify_init(err, sizeof(err)) < 0) {
		log_msg(LOGL_ERROR, NULL, NULL, "%s", err);
		config_free(cfg);
		return 2;
	}
	return daemon_run(cfg, account, once, reload_config, (void *)path);
}

/* What the command line asks for. */
struct args {
	const char *path, *account;
	bool once, check, verbose, status;
};

/*
 * Reads the options into a: -1 to go on, or the exit code (--version,
 * --help, a usage error).
 */
static int
parse_args(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, '1' },
		{ "account", required_argument, NULL, 'a' },
		{ "shard", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char err[1024];
	int c;

	while ((c = getopt_long(argc, argv, "c:1a:s:nvVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			a->path = optarg;
			break;
		case '1':
			a->once = true;
			break;
		case 'a':
			a->account = optarg;
			break;
		case 's':
			if (shard_parse(optarg, &cli_shard, err,
				sizeof(err)) < 0) {
				fprintf(stderr, "idlefetch: --shard: %s\n", err);
				return 2;
			}
			have_cli_shard = true;
			break;
		case 'n':
			a->check = true;
			break;
		case 'v':
			a->verbose = true;
			break;
		case 'V':
			printf("idlefetch %s\n", IDLEFETCH_VERSION);
			return 0;
		default:
			return usage_exit(c);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "idlefetch: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return 2;
	}
	if (a->status && (a->once || a->check)) {
		fprintf(stderr,
		    "idlefetch: status takes only --config, --account "
		    "and --shard\n");
		return 2;
	}
	return -1;
}

/* Whether cfg has the account --account named; says so when not. */
static bool
has_account(const struct config *cfg, const char *account)
{
	for (size_t i = 0; i < cfg->naccounts; i++)
		if (strcmp(cfg->accounts[i].name, account) == 0)
			return true;
	fprintf(stderr, "idlefetch: %s: no [account %s]\n", cfg->source,
	    account);
	return false;
}

/*
 * glibc gives each thread that allocates (libuv's threadpool: Maildir
 * scans, fsync) an arena of its own, whose pages stay resident after the
 * work is done: 100 KiB of an idle TLS account's 8.4 MiB and 200 KiB of
 * the --once peak, measured, with no measurable change in messages/s (the
 * loop thread does nearly all the allocating). One arena for the process,
 * unless the user's environment chose otherwise.
 */
static void
tune_malloc(void)
{
#ifdef __GLIBC__
	const char *t = getenv("GLIBC_TUNABLES");

	if (getenv("MALLOC_ARENA_MAX") != NULL ||
	    (t != NULL && strstr(t, "arena_max") != NULL))
		return;
	/* An allocator that ignores it (a sanitizer's) costs only memory. */
	(void)mallopt(M_ARENA_MAX, 1);
#endif
}

int
main(int argc, char **argv)
{
	struct args a = { 0 };
	struct config *cfg;
	char err[1024];
	int code;

	tune_malloc();
	if (argc > 1 && strcmp(argv[1], "import-fetchmailrc") == 0)
		return import_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "status") == 0) {
		a.status = true;
		argv[1] = argv[0];
		argc--;
		argv++;
	}
	code = parse_args(argc, argv, &a);
	if (code >= 0)
		return code;
	/*
	 * The daemon and --check-config read the secrets once they are the
	 * user the daemon runs as; status needs none.
	 */
	if (find_config(a.path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "idlefetch: %s\n", err);
		return 2;
	}
	if (a.account && !has_account(cfg, a.account)) {
		config_free(cfg);
		return 2;
	}
	if (a.status) {
		code = status_report(cfg, a.account, stdout);
		config_free(cfg);
		return code;
	}
	if (a.check)
		return check_config(cfg, a.account);
	return run(cfg, a.account, a.once, a.verbose, a.path);
}
