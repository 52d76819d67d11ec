/*
 * config_keys: every configuration key is one row of config_keys[] below,
 * and what can be said of a key is said there once: its section, name,
 * environment variable, default, range or choices, and how its value is
 * read, printed, compared and freed (its type). A key of a simple type
 * (a number, a string, a path, a choice) needs nothing but its row; the
 * others (folders, deliver, after, tls_fingerprint, shard...) name a type
 * of their own, defined here above the table.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/config.h"
#include "idlefetch/config_keys.h"
#include "idlefetch/httpd.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/shard.h"
#include "idlefetch/target.h"
#include "idlefetch/util.h"

/* The field of key k in obj, a struct config or a struct account. */
#define FIELD(k, obj, T) ((T *)(void *)((char *)(obj) + (k)->off))
#define CFIELD(k, obj, T)                                                      \
	((const T *)(const void *)((const char *)(obj) + (k)->off))

/* A choice is stored in an int; so are these enums. */
_Static_assert(sizeof(enum tls_mode) == sizeof(int), "tls is an int");
_Static_assert(sizeof(enum auth_mode) == sizeof(int), "auth is an int");
_Static_assert(sizeof(enum log_target) == sizeof(int), "log is an int");

static bool
str_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Numbers: unsigned, in min..max. */

static int
uint_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	uint64_t n;

	if (parse_u64(v, k->min, k->max, &n) < 0) {
		snprintf(why, len, "'%s' is not a number in %u..%u", v, k->min,
		    k->max);
		return -EINVAL;
	}
	*FIELD(k, obj, unsigned) = (unsigned)n;
	return 0;
}

static void
uint_print(const struct config_key *k, const void *obj, FILE *fp)
{
	fprintf(fp, "%s = %u\n", k->name, *CFIELD(k, obj, unsigned));
}

static bool
uint_equal(const struct config_key *k, const void *a, const void *b)
{
	return *CFIELD(k, a, unsigned) == *CFIELD(k, b, unsigned);
}

static const struct config_key_type t_uint = { uint_set, uint_print, uint_equal,
	NULL };

/* Strings: any text the key's check lets through; NULL when not given. */

static int
string_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	char **p = FIELD(k, obj, char *);

	if (k->check != NULL && k->check(v, why, len) < 0)
		return -EINVAL;
	if (k->flags & CONFIG_KEY_SECRET)
		secret_free(*p);
	else
		free(*p);
	*p = xstrdup(v);
	return 0;
}

static void
string_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const char *s = *CFIELD(k, obj, char *);

	if (s != NULL)
		fprintf(fp, "%s = %s\n", k->name, s);
}

static bool
string_equal(const struct config_key *k, const void *a, const void *b)
{
	return str_equal(*CFIELD(k, a, char *), *CFIELD(k, b, char *));
}

static void
string_free(const struct config_key *k, void *obj)
{
	char **p = FIELD(k, obj, char *);

	if (k->flags & CONFIG_KEY_SECRET)
		secret_free(*p);
	else
		free(*p);
	*p = NULL;
}

static const struct config_key_type t_string = { string_set, string_print,
	string_equal, string_free };

static int
path_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	if (v[0] != '/') {
		snprintf(why, len, "'%s' is not an absolute path", v);
		return -EINVAL;
	}
	return string_set(k, obj, v, why, len);
}

static const struct config_key_type t_path = { path_set, string_print,
	string_equal, string_free };

/*
 * password_file and password_command: what they give is the password,
 * which is what is compared and (masked) printed.
 */
static const struct config_key_type t_secret_source = { string_set, NULL, NULL,
	string_free };

/* The password itself: printed masked, and only when it is used. */
static void
password_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct account *a = obj;

	if (a->auth == AUTH_PASSWORD)
		fprintf(fp, "%s = ********\n", k->name);
}

static const struct config_key_type t_password = { string_set, password_print,
	string_equal, string_free };

/* lmtp_recipient lives in deliver's target, which compares and frees it. */
static const struct config_key_type t_recipient = { string_set, string_print,
	NULL, NULL };

/*
 * Choices: one of the names in k->choices, stored as its value in an int
 * (a bool for yes/no).
 */

static int choice_get(const struct config_key *k, const void *obj);

static int choice_set(const struct config_key *k, void *obj, const char *v,
    char *why, size_t len);

static void
choice_print(const struct config_key *k, const void *obj, FILE *fp)
{
	int value = choice_get(k, obj);

	for (const struct config_choice *c = k->choices; c->name; c++)
		if (c->value == value) {
			fprintf(fp, "%s = %s\n", k->name, c->name);
			return;
		}
	fatal("key %s holds %d, not one of its choices", k->name, value);
}

static bool
choice_equal(const struct config_key *k, const void *a, const void *b)
{
	return choice_get(k, a) == choice_get(k, b);
}

static const struct config_key_type t_choice = { choice_set, choice_print,
	choice_equal, NULL };
static const struct config_key_type t_yes_no = { choice_set, choice_print,
	choice_equal, NULL };

static int
choice_get(const struct config_key *k, const void *obj)
{
	if (k->type == &t_yes_no)
		return *CFIELD(k, obj, bool);
	return *CFIELD(k, obj, int);
}

static int
choice_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	const struct config_choice *c;
	size_t n;

	for (c = k->choices; c->name; c++)
		if (strcmp(c->name, v) == 0)
			break;
	if (c->name != NULL) {
		if (k->type == &t_yes_no)
			*FIELD(k, obj, bool) = c->value != 0;
		else
			*FIELD(k, obj, int) = c->value;
		return 0;
	}
	n = (size_t)snprintf(why, len, "'%s' is not one of", v);
	for (c = k->choices; c->name && n < len; c++)
		n += (size_t)snprintf(why + n, len - n, "%s %s",
		    c == k->choices ? "" : ",", c->name);
	return -EINVAL;
}

static const struct config_choice yes_no[] = { { "yes", 1 }, { "no", 0 },
	{ NULL, 0 } };

/* Checks of string values. */

/*
 * Refuses a value with a control character (C0 or DEL): "a control
 * character (byte 0xNN)" and what, which says why it cannot be there.
 */
static int
no_control_char(const char *v, const char *what, char *why, size_t len)
{
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(why, len,
			    "a control character (byte 0x%02x) %s",
			    (unsigned char)*p, what);
			return -EINVAL;
		}
	return 0;
}

static int
check_host(const char *v, char *why, size_t len)
{
	if (no_control_char(v, "is in no host name or address", why, len) < 0)
		return -EINVAL;
	if (strpbrk(v, " /") != NULL) {
		snprintf(why, len, "'%s' is not a host name or address", v);
		return -EINVAL;
	}
	return 0;
}

/*
 * IMAP LOGIN's quoted string cannot carry CR or LF, nor XOAUTH2 and
 * OAUTHBEARER a \x01 (their separator; oauth.h): a control character is
 * refused here, with the file and line, not at the first login.
 */
static int
check_username(const char *v, char *why, size_t len)
{
	return no_control_char(v, "cannot be sent in a login", why, len);
}

/* An address for RCPT TO: plain ASCII, no spaces or angle brackets. */
static int
check_recipient(const char *v, char *why, size_t len)
{
	bool ok = strlen(v) <= 254 && v[0] != '@';

	for (const char *p = v; ok && *p; p++)
		ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f &&
		    *p != '<' && *p != '>';
	if (!ok) {
		snprintf(why, len, "'%s' is not a mail address", v);
		return -EINVAL;
	}
	return 0;
}

/*
 * user / group: must exist now, so that a typo is found by --check-config
 * and not when the daemon starts as root.
 */
static int
check_identity(const char *v, bool user, char *why, size_t len)
{
	if (user ? getpwnam(v) != NULL : getgrnam(v) != NULL)
		return 0;
	snprintf(why, len, "no %s '%s' on this system", user ? "user" : "group",
	    v);
	return -EINVAL;
}

static int
check_user(const char *v, char *why, size_t len)
{
	return check_identity(v, true, why, len);
}

static int
check_group(const char *v, char *why, size_t len)
{
	return check_identity(v, false, why, len);
}

/* metrics = PORT | ADDRESS:PORT | [IPV6]:PORT, numeric (httpd.h) */
static int
check_metrics(const char *v, char *why, size_t len)
{
	struct sockaddr_storage ss;

	return httpd_parse_address(v, &ss, why, len);
}

/*
 * tls_fingerprint = sha256:HEX: 64 hex digits, in pairs that may be
 * separated by colons (as `openssl x509 -fingerprint` prints them).
 */
static int
pin_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct account *a = obj;
	const char *p = v + 7;
	size_t n = 0;

	if (strncasecmp(v, "sha256:", 7) != 0)
		goto bad;
	while (*p != '\0' && n < sizeof(a->pin)) {
		unsigned byte;

		if (!isxdigit((unsigned char)p[0]) ||
		    !isxdigit((unsigned char)p[1]) ||
		    sscanf(p, "%2x", &byte) != 1)
			goto bad;
		a->pin[n++] = (unsigned char)byte;
		p += 2;
		if (*p == ':' && n < sizeof(a->pin))
			p++;
	}
	if (n != sizeof(a->pin) || *p != '\0')
		goto bad;
	a->pinned = true;
	return 0;
bad:
	snprintf(why, len,
	    "'%s' is not sha256: and the 64 hex digits of a certificate's "
	    "or public key's SHA-256 digest",
	    v);
	return -EINVAL;
}

static void
pin_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct account *a = obj;

	if (!a->pinned)
		return;
	fprintf(fp, "%s = sha256:", k->name);
	for (size_t j = 0; j < sizeof(a->pin); j++)
		fprintf(fp, "%s%02x", j ? ":" : "", a->pin[j]);
	fprintf(fp, "\n");
}

static bool
pin_equal(const struct config_key *k, const void *x, const void *y)
{
	const struct account *a = x, *b = y;

	return a->pinned == b->pinned &&
	    memcmp(a->pin, b->pin, sizeof(a->pin)) == 0;
}

static const struct config_key_type t_pin = { pin_set, pin_print, pin_equal,
	NULL };

/* deliver = maildir | mda:... | lmtp:... (target.h) */
static int
deliver_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct account *a = obj;
	struct target t;

	if (target_parse(&t, v, why, len) < 0)
		return -EINVAL;
	/* lmtp_recipient may have come first. */
	t.recipient = a->target.recipient;
	a->target.recipient = NULL;
	target_free(&a->target);
	a->target = t;
	return 0;
}

static void
deliver_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct account *a = obj;
	char t[1024];

	if (a->target.kind == TARGET_MAILDIR)
		return;
	target_print(&a->target, t, sizeof(t));
	fprintf(fp, "%s = %s\n", k->name, t);
}

static bool
deliver_equal(const struct config_key *k, const void *x, const void *y)
{
	const struct account *a = x, *b = y;

	return target_equal(&a->target, &b->target);
}

static void
deliver_free(const struct config_key *k, void *obj)
{
	struct account *a = obj;

	target_free(&a->target);
}

static const struct config_key_type t_deliver = { deliver_set, deliver_print,
	deliver_equal, deliver_free };

/* shard = I/N | auto (shard.h) */
static int
shard_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct config *cfg = obj;

	return shard_parse(v, &cfg->shard, why, len) < 0 ? -EINVAL : 0;
}

/* With the accounts this replica takes, for --check-config. */
static void
shard_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct config *cfg = obj;
	size_t n = 0;

	if (cfg->shard.count == 0)
		return;
	fprintf(fp, "%s = %u/%u\n; this replica takes:", k->name,
	    cfg->shard.index, cfg->shard.count);
	for (size_t i = 0; i < cfg->naccounts; i++)
		if (shard_has(&cfg->shard, cfg->accounts[i].name))
			fprintf(fp, "%s %s", n++ ? "," : "",
			    cfg->accounts[i].name);
	fprintf(fp, "%s (%zu of %zu)\n", n ? "" : " nothing", n,
	    cfg->naccounts);
}

static const struct config_key_type t_shard = { shard_set, shard_print, NULL,
	NULL };

static const struct config_choice logs[] = { { "stderr", LOG_TARGET_STDERR },
	{ "syslog", LOG_TARGET_SYSLOG }, { "json", LOG_TARGET_JSON },
	{ NULL, 0 } };
static const struct config_choice tls_modes[] = {
	{ "implicit", TLS_MODE_IMPLICIT }, { "starttls", TLS_MODE_STARTTLS },
	{ "none", TLS_MODE_NONE }, { NULL, 0 }
};
static const struct config_choice auths[] = { { "password", AUTH_PASSWORD },
	{ "xoauth2", AUTH_XOAUTH2 }, { "oauthbearer", AUTH_OAUTHBEARER },
	{ NULL, 0 } };
static const struct config_choice idles[] = { { "auto", 1 }, { "off", 0 },
	{ NULL, 0 } };

/* A key of [global] kept in struct config's field, or of [account]. */
#define GLOBAL(field)                                                          \
	.section = CONFIG_GLOBAL, .off = offsetof(struct config, field)
#define ACCOUNT(field)                                                         \
	.section = CONFIG_ACCOUNT, .off = offsetof(struct account, field)

/*
 * The keys, in the order --check-config prints them (and the environment
 * is read). Adding a key: a row here, its field in config.h, and a line in
 * man/idlefetch.conf.5 and README's key table (test_docs.py checks both).
 */
const struct config_key config_keys[] = {
	{ GLOBAL(state_dir), .name = "state_dir", .env = "IDLEFETCH_STATE_DIR",
	    .type = &t_path, .def = CONFIG_DEFAULT_STATE,
	    .doc = "where the per-folder state files live" },
	{ GLOBAL(log), .name = "log", .env = "IDLEFETCH_LOG", .type = &t_choice,
	    .choices = logs, .def = "stderr", .doc = "where the log goes" },
	{ GLOBAL(user), .name = "user", .env = "IDLEFETCH_USER",
	    .type = &t_string, .check = check_user,
	    .doc = "started as root: prepare the directories, become this "
		   "user" },
	{ GLOBAL(group), .name = "group", .env = "IDLEFETCH_GROUP",
	    .type = &t_string, .check = check_group,
	    .doc = "the primary group with user (default: the user's own)" },
	{ GLOBAL(command_timeout), .name = "command_timeout",
	    .env = "IDLEFETCH_COMMAND_TIMEOUT", .type = &t_uint, .def = "30",
	    .min = 1, .max = 600,
	    .doc = "seconds a password or token command, an MDA or "
		   "on_delivery may run" },
	{ GLOBAL(on_delivery), .name = "on_delivery",
	    .env = "IDLEFETCH_ON_DELIVERY", .type = &t_string,
	    .flags = CONFIG_KEY_SHELL | CONFIG_KEY_EMPTY_OK,
	    .doc = "the on_delivery of accounts that have none of their "
		   "own" },
	{ GLOBAL(shard), .name = "shard", .env = "IDLEFETCH_SHARD",
	    .type = &t_shard,
	    .doc = "I/N or auto: the accounts this replica of N fetches" },
	{ GLOBAL(metrics), .name = "metrics", .env = "IDLEFETCH_METRICS",
	    .type = &t_string, .check = check_metrics,
	    .doc = "PORT or ADDRESS:PORT: serve Prometheus metrics on "
		   "/metrics (default: off; PORT alone: loopback)" },
	{ GLOBAL(metrics_folders), .name = "metrics_folders",
	    .env = "IDLEFETCH_METRICS_FOLDERS", .type = &t_yes_no,
	    .choices = yes_no, .def = "yes", .flags = CONFIG_KEY_QUIET_DEFAULT,
	    .doc = "no: metrics per account only, no series per folder" },
	{ GLOBAL(debug_stall_signal), .name = "debug_stall_signal",
	    .env = "IDLEFETCH_DEBUG_STALL_SIGNAL", .type = &t_yes_no,
	    .choices = yes_no, .def = "no", .flags = CONFIG_KEY_QUIET_DEFAULT,
	    .doc = "yes: SIGUSR2 blocks the event loop (tests a watchdog)" },
	{ ACCOUNT(host), .name = "host", .env = "IDLEFETCH_HOST",
	    .type = &t_string, .check = check_host,
	    .flags = CONFIG_KEY_REQUIRED, .doc = "the IMAP server" },
	{ ACCOUNT(port), .name = "port", .env = "IDLEFETCH_PORT",
	    .type = &t_uint, .min = 1, .max = 65535,
	    .doc = "its port; default 993 with tls = implicit, else 143" },
	{ ACCOUNT(tls), .name = "tls", .env = "IDLEFETCH_TLS",
	    .type = &t_choice, .choices = tls_modes, .def = "implicit",
	    .doc = "TLS from the first byte, after STARTTLS, or none" },
	{ ACCOUNT(username), .name = "username", .env = "IDLEFETCH_USERNAME",
	    .type = &t_string, .check = check_username,
	    .flags = CONFIG_KEY_REQUIRED, .doc = "the login name" },
	{ ACCOUNT(password), .name = "password", .env = "IDLEFETCH_PASSWORD",
	    .type = &t_password,
	    .flags = CONFIG_KEY_EMPTY_OK | CONFIG_KEY_SECRET,
	    .doc = "the password itself (better: ${VAR} or password_file)" },
	{ ACCOUNT(password_file), .name = "password_file",
	    .env = "IDLEFETCH_PASSWORD_FILE", .type = &t_secret_source,
	    .flags = CONFIG_KEY_SECRET_SOURCE,
	    .doc = "a private file whose first line is the password" },
	{ ACCOUNT(password_command), .name = "password_command",
	    .env = "IDLEFETCH_PASSWORD_COMMAND", .type = &t_secret_source,
	    .flags = CONFIG_KEY_SECRET_SOURCE | CONFIG_KEY_SHELL,
	    .doc = "a command whose first line of output is the password" },
	{ ACCOUNT(auth), .name = "auth", .env = "IDLEFETCH_AUTH",
	    .type = &t_choice, .choices = auths, .def = "password",
	    .flags = CONFIG_KEY_QUIET_DEFAULT,
	    .doc = "log in with the password, or with an OAuth2 token" },
	{ ACCOUNT(oauth_token_command), .name = "oauth_token_command",
	    .env = "IDLEFETCH_OAUTH_TOKEN_COMMAND", .type = &t_string,
	    .flags = CONFIG_KEY_SHELL,
	    .doc = "with OAuth2: a command that prints an access token" },
	{ ACCOUNT(on_delivery), .name = "on_delivery",
	    .env = "IDLEFETCH_ON_DELIVERY", .type = &t_string,
	    .flags = CONFIG_KEY_SHELL | CONFIG_KEY_EMPTY_OK,
	    .doc = "a command run after new mail was delivered; empty: "
		   "none" },
	{ ACCOUNT(ca_file), .name = "ca_file", .env = "IDLEFETCH_CA_FILE",
	    .type = &t_string,
	    .doc = "PEM file of trusted CAs instead of the system store" },
	{ ACCOUNT(pin), .name = "tls_fingerprint",
	    .env = "IDLEFETCH_TLS_FINGERPRINT", .type = &t_pin,
	    .doc = "sha256: digest of the one certificate or key accepted" },
	{ ACCOUNT(read_only), .name = "read_only", .env = "IDLEFETCH_READ_ONLY",
	    .type = &t_yes_no, .choices = yes_no, .def = "no",
	    .flags = CONFIG_KEY_QUIET_DEFAULT,
	    .doc = "yes: EXAMINE instead of SELECT (after = keep only)" },
	{ ACCOUNT(folders), .name = "folders", .env = "IDLEFETCH_FOLDERS",
	    .type = &config_type_folders,
	    .doc = "folders to fetch, * for every subscribed one; default "
		   "INBOX" },
	{ ACCOUNT(exclude), .name = "exclude", .env = "IDLEFETCH_EXCLUDE",
	    .type = &config_type_exclude,
	    .doc = "with folders = *: patterns of folders not to fetch" },
	{ ACCOUNT(maildir), .name = "maildir", .env = "IDLEFETCH_MAILDIR",
	    .type = &t_path,
	    .doc = "the Maildir; other folders go to Maildir++ subfolders" },
	{ ACCOUNT(target), .name = "deliver", .env = "IDLEFETCH_DELIVER",
	    .type = &t_deliver, .def = "maildir",
	    .doc = "maildir, mda:PROGRAM ARGS or lmtp:HOST:PORT | lmtp:/PATH" },
	{ ACCOUNT(target.recipient), .name = "lmtp_recipient",
	    .env = "IDLEFETCH_LMTP_RECIPIENT", .type = &t_recipient,
	    .check = check_recipient,
	    .doc = "with deliver = lmtp:, the address of RCPT TO" },
	{ ACCOUNT(after), .name = "after", .env = "IDLEFETCH_AFTER",
	    .type = &config_type_after, .def = "keep",
	    .doc = "keep, delete or move:FOLDER once a message is durable" },
	{ ACCOUNT(idle), .name = "idle", .env = "IDLEFETCH_IDLE",
	    .type = &t_choice, .choices = idles, .def = "auto",
	    .doc = "auto: IDLE when offered; off: always poll" },
	{ ACCOUNT(poll_interval), .name = "poll_interval",
	    .env = "IDLEFETCH_POLL_INTERVAL", .type = &t_uint, .def = "60",
	    .min = 1, .max = 86400,
	    .doc = "seconds between polls when not idling" },
	/* Folders without a connection of their own wait this long for news. */
	{ ACCOUNT(status_interval), .name = "status_interval",
	    .env = "IDLEFETCH_STATUS_INTERVAL", .type = &t_uint, .def = "5",
	    .min = 1, .max = 3600,
	    .doc = "seconds between STATUS rounds of an IDLE connection "
		   "without NOTIFY" },
	/* RFC 2177: servers may drop an IDLE after 30 minutes. */
	{ ACCOUNT(idle_refresh), .name = "idle_refresh",
	    .env = "IDLEFETCH_IDLE_REFRESH", .type = &t_uint, .def = "600",
	    .min = 10, .max = 1740,
	    .doc = "seconds after which IDLE is issued again" },
	{ ACCOUNT(timeout), .name = "timeout", .env = "IDLEFETCH_TIMEOUT",
	    .type = &t_uint, .def = "60", .min = 2, .max = 3600,
	    .doc = "seconds without an answer before a connection is dead" },
	/* Dovecot refuses an 11th per user and address by default. */
	{ ACCOUNT(max_connections), .name = "max_connections",
	    .env = "IDLEFETCH_MAX_CONNECTIONS", .type = &t_uint, .def = "5",
	    .min = 1, .max = 100,
	    .doc = "without NOTIFY: connections for the account at most" },
};

_Static_assert(ARRAY_LEN(config_keys) <= CONFIG_KEYS_MAX, "one bit per key");

const size_t config_nkeys = ARRAY_LEN(config_keys);

const struct config_key *
config_key_find(enum config_section s, const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
		if (config_keys[i].section == s &&
		    strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

size_t
config_key_index(const struct config_key *k)
{
	return (size_t)(k - config_keys);
}

int
config_key_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	return k->type->set(k, obj, v, why, len);
}

void
config_keys_defaults(enum config_section s, void *obj)
{
	char why[512];

	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
		if (config_keys[i].section == s && config_keys[i].def != NULL &&
		    config_key_set(&config_keys[i], obj, config_keys[i].def,
			why, sizeof(why)) < 0)
			fatal("default of %s: %s", config_keys[i].name, why);
}

/* Whether obj holds k's default. */
static bool
is_default(const struct config_key *k, const void *obj)
{
	union {
		struct config c;
		struct account a;
	} def;
	char why[512];
	bool same;

	memset(&def, 0, sizeof(def));
	if (k->def == NULL ||
	    config_key_set(k, &def, k->def, why, sizeof(why)) < 0)
		return false;
	same = k->type->equal(k, obj, &def);
	if (k->type->free != NULL)
		k->type->free(k, &def);
	return same;
}

void
config_keys_print(enum config_section s, const void *obj, FILE *fp)
{
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
		const struct config_key *k = &config_keys[i];

		if (k->section != s || k->type->print == NULL)
			continue;
		if ((k->flags & CONFIG_KEY_QUIET_DEFAULT) && is_default(k, obj))
			continue;
		k->type->print(k, obj, fp);
	}
}

bool
config_keys_equal(enum config_section s, const void *a, const void *b)
{
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
		if (config_keys[i].section == s &&
		    config_keys[i].type->equal != NULL &&
		    !config_keys[i].type->equal(&config_keys[i], a, b))
			return false;
	return true;
}

void
config_keys_free(enum config_section s, void *obj)
{
	for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
		if (config_keys[i].section == s &&
		    config_keys[i].type->free != NULL)
			config_keys[i].type->free(&config_keys[i], obj);
}
