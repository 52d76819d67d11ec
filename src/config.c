/*
 * config: reads the INI file with inih, expands ${VAR}, and validates every
 * key as it is seen so that each error can name the file, line and key.
 * Unknown sections and keys are errors: a typo must never silently fall back
 * to a default. The same key setters serve the IDLEFETCH_* environment.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grp.h>
#include <pwd.h>

#include <ini.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/shard.h"
#include "idlefetch/spawn.h"
#include "idlefetch/util.h"

/* A configuration file larger than this is refused, never cut short. */
#define CONFIG_MAX_BYTES (64u << 20)

/* Bits in account_ctx.seen, one per key, to reject duplicates. */
enum key_bit {
	K_HOST = 1 << 0,
	K_PORT = 1 << 1,
	K_TLS = 1 << 2,
	K_USER = 1 << 3,
	K_PASS = 1 << 4,
	K_PASSFILE = 1 << 5,
	K_PASSCMD = 1 << 6,
	K_FOLDERS = 1 << 7,
	K_MAILDIR = 1 << 8,
	K_AFTER = 1 << 9,
	K_IDLE = 1 << 10,
	K_POLL = 1 << 11,
	K_REFRESH = 1 << 12,
	K_CAFILE = 1 << 13,
	K_TIMEOUT = 1 << 14,
	K_MAXCONN = 1 << 15,
	K_EXCLUDE = 1 << 16,
	K_READONLY = 1 << 17,
	K_PIN = 1 << 18,
	K_AUTH = 1 << 19,
	K_OAUTHCMD = 1 << 20,
	K_DELIVER = 1 << 21,
	K_RCPT = 1 << 22,
};

struct account_ctx {
	unsigned seen;
	unsigned line; /* line of the [account] header */
};

struct parse_ctx {
	const char *file;
	struct config *cfg;
	struct account_ctx *actx; /* parallel to cfg->accounts */
	size_t cap_accounts; /* room in both */
	unsigned global_seen;
	/* reader state */
	const char *buf;
	size_t len, off;
	unsigned line;
	unsigned section_line;
	char *err;
	size_t errlen;
	bool failed;
	unsigned secret_line; /* the first password written in the file */
};

static void
seterr(struct parse_ctx *c, const char *key, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	if (c->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (c->line == 0 && key) /* from the environment */
		snprintf(c->err, c->errlen, "%s: key '%s': %s", c->file, key,
		    what);
	else if (c->line == 0)
		snprintf(c->err, c->errlen, "%s: %s", c->file, what);
	else if (key)
		snprintf(c->err, c->errlen, "%s:%u: key '%s': %s", c->file,
		    c->line, key, what);
	else
		snprintf(c->err, c->errlen, "%s:%u: %s", c->file, c->line,
		    what);
	c->failed = true;
}

/* Expands ${NAME} from the environment; returns NULL (error set) if unset. */
static char *
expand(struct parse_ctx *c, const char *key, const char *v)
{
	size_t cap = strlen(v) + 1, o = 0;
	char *out = xmalloc(cap);

	while (*v) {
		const char *end, *val;
		char name[128];
		size_t n;

		if (v[0] != '$' || v[1] != '{') {
			out[o++] = *v++;
			continue;
		}
		end = strchr(v + 2, '}');
		n = end ? (size_t)(end - v - 2) : 0;
		if (end == NULL || n == 0 || n >= sizeof(name)) {
			seterr(c, key, "malformed ${...} reference");
			free(out);
			return NULL;
		}
		memcpy(name, v + 2, n);
		name[n] = '\0';
		val = getenv(name);
		if (val == NULL) {
			seterr(c, key, "environment variable %s is not set",
			    name);
			free(out);
			return NULL;
		}
		cap += strlen(val);
		out = xrealloc(out, cap);
		memcpy(out + o, val, strlen(val));
		o += strlen(val);
		v = end + 1;
	}
	out[o] = '\0';
	return out;
}

static bool
valid_account_name(const char *s)
{
	if (*s == '\0' || strlen(s) > 64 || *s == '.')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

/* The first control character in s (C0 or DEL), or 0 when it has none. */
static unsigned char
control_char(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return (unsigned char)*s;
	return 0;
}

/*
 * Folder names become Maildir++ directory names and state file names, so
 * anything that could climb out of a directory is refused here.
 */
static bool
valid_folder(const char *s)
{
	const char *p;

	if (*s == '\0' || strlen(s) > 200 || *s == '/' || *s == '.')
		return false;
	/* UTF-8 goes to the server as modified UTF-7 (RFC 3501 5.1.3). */
	if (!utf8_valid(s))
		return false;
	for (p = s; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == '"' || ch == '\\')
			return false;
		if ((ch == '/' || ch == '.') &&
		    (p[1] == '\0' || p[1] == '/' || p[1] == '.'))
			return false;
	}
	return true;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/*
 * Whether two folder names name the same mailbox: exactly equal, except
 * that INBOX is case-insensitive in IMAP (RFC 3501 5.1), so "inbox" and
 * "INBOX" would be fetched, and delivered, twice.
 */
bool
config_same_folder(const char *x, const char *y)
{
	char *wx, *wy;
	bool same;

	if (strcasecmp(x, "INBOX") == 0 && strcasecmp(y, "INBOX") == 0)
		return true;
	/* Entwürfe and Entw&APw-rfe are one folder on the server. */
	wx = mutf7_wire_name(x);
	wy = mutf7_wire_name(y);
	same = wx && wy && strcmp(wx, wy) == 0;
	free(wx);
	free(wy);
	return same;
}

/*
 * A folder becomes two file names: its state file (percent-encoded, plus
 * ".state.tmp" while it is replaced) and its Maildir++ directory (".A.B").
 * Each must fit in a file name (255 bytes), or the folder would pass
 * --check-config and fail when it is first fetched.
 */
bool
config_folder_ok(const char *f, char *why, size_t len)
{
	char *w, *k;
	size_t state;

	if (!valid_folder(f)) {
		snprintf(why, len,
		    "invalid folder name '%s' (UTF-8 without control "
		    "characters, '\"' or '\\', no leading '/' or '.', "
		    "no empty or '..' parts)",
		    f);
		return false;
	}
	w = mutf7_wire_name(f);
	k = config_folder_key(w);
	state = strlen(k) + strlen(".state.tmp");
	free(k);
	free(w);
	if (state > 255 || strlen(f) + 1 > 255) {
		snprintf(why, len,
		    "folder name '%.40s...' is too long: its state file name "
		    "would be %zu bytes (at most 255; characters other than "
		    "letters, digits, '_' and '-' take 3 each)",
		    f, state);
		return false;
	}
	return true;
}

/* A comma-separated list of names, trimmed; empty entries are errors. */
static int
split_list(struct parse_ctx *c, const char *key, const char *v,
    const char *what, char ***out, size_t *n)
{
	char *copy = xstrdup(v), *save = NULL, *tok;

	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *f = trim(tok);

		if (*f == '\0') {
			seterr(c, key, "empty entry in '%s'", v);
			free(copy);
			return -EINVAL;
		}
		*out = xrealloc(*out, (*n + 1) * sizeof(**out));
		(*out)[(*n)++] = xstrdup(f);
	}
	free(copy);
	if (*n == 0) {
		seterr(c, key, "no %s given", what);
		return -EINVAL;
	}
	return 0;
}

static int
set_folders(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
	char **names = NULL, why[512];
	size_t n = 0;
	int r = split_list(c, key, v, "folder", &names, &n);

	for (size_t j = 0; r == 0 && j < n; j++) {
		const char *f = names[j];

		/* Every subscribed folder, looked up at each connection. */
		if (strcmp(f, "*") == 0) {
			if (a->subscribed) {
				seterr(c, key, "'*' listed twice");
				r = -EINVAL;
			}
			a->subscribed = true;
			continue;
		}
		if (!config_folder_ok(f, why, sizeof(why))) {
			seterr(c, key, "%s", why);
			r = -EINVAL;
			break;
		}
		for (size_t i = 0; i < a->nfolders; i++)
			if (config_same_folder(a->folders[i], f)) {
				if (strcmp(a->folders[i], f) == 0)
					seterr(c, key,
					    "folder '%s' listed twice", f);
				else
					seterr(c, key,
					    "folder '%s' listed twice (as "
					    "'%s'; %s)",
					    f, a->folders[i],
					    strcasecmp(f, "INBOX") == 0 ?
						"INBOX is case-insensitive" :
						"the server spells both the "
						"same way");
				r = -EINVAL;
				break;
			}
		if (r < 0)
			break;
		a->folders = xrealloc(a->folders,
		    (a->nfolders + 1) * sizeof(*a->folders));
		a->folders[a->nfolders++] = xstrdup(f);
	}
	for (size_t j = 0; j < n; j++)
		free(names[j]);
	free(names);
	return r;
}

/*
 * exclude = patterns of subscribed folders not to fetch: '*' stands for
 * any run of characters; no other character is special.
 */
static int
set_exclude(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
	int r = split_list(c, key, v, "pattern", &a->exclude,
	    &a->nexclude);

	for (size_t i = 0; r == 0 && i < a->nexclude; i++)
		if (!utf8_valid(a->exclude[i])) {
			seterr(c, key, "'%s' is not UTF-8", a->exclude[i]);
			r = -EINVAL;
		}
	return r;
}

static int
set_uint(struct parse_ctx *c, const char *key, const char *v, unsigned min,
    unsigned max, unsigned *out)
{
	uint64_t n;

	if (parse_u64(v, min, max, &n) < 0) {
		seterr(c, key, "'%s' is not a number in %u..%u", v, min, max);
		return -EINVAL;
	}
	*out = (unsigned)n;
	return 0;
}

/*
 * tls_fingerprint = sha256:HEX: 64 hex digits, in pairs that may be
 * separated by colons (as `openssl x509 -fingerprint` prints them).
 */
static int
set_pin(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
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
	seterr(c, key,
	    "'%s' is not sha256: and the 64 hex digits of a certificate's "
	    "or public key's SHA-256 digest",
	    v);
	return -EINVAL;
}

static int
set_target(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
	char why[256];
	struct target t;

	if (target_parse(&t, v, why, sizeof(why)) < 0) {
		seterr(c, key, "%s", why);
		return -EINVAL;
	}
	/* lmtp_recipient may have come first. */
	t.recipient = a->target.recipient;
	a->target = t;
	return 0;
}

/* An address for RCPT TO: plain ASCII, no spaces or angle brackets. */
static int
set_recipient(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
	if (strlen(v) > 254 || strchr(v, '@') == v) {
		seterr(c, key, "'%s' is not a mail address", v);
		return -EINVAL;
	}
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
		    *p == '<' || *p == '>') {
			seterr(c, key, "'%s' is not a mail address", v);
			return -EINVAL;
		}
	a->target.recipient = xstrdup(v);
	return 0;
}

static int
set_host(struct parse_ctx *c, struct account *a, const char *key, const char *v)
{
	if (control_char(v) != 0) {
		seterr(c, key,
		    "a control character (byte 0x%02x) is in no "
		    "host name or address",
		    control_char(v));
		return -EINVAL;
	}
	if (strpbrk(v, " /") != NULL) {
		seterr(c, key, "'%s' is not a host name or address", v);
		return -EINVAL;
	}
	a->host = xstrdup(v);
	return 0;
}

/*
 * IMAP LOGIN's quoted string cannot carry CR or LF, nor XOAUTH2 and
 * OAUTHBEARER a \x01 (their separator; oauth.h): a control character is
 * refused here, with the file and line, not at the first login. The
 * environment's IDLEFETCH_USERNAME comes here too.
 */
static int
set_username(struct parse_ctx *c, struct account *a, const char *key,
    const char *v)
{
	if (control_char(v) != 0) {
		seterr(c, key,
		    "a control character (byte 0x%02x) cannot be "
		    "sent in a login",
		    control_char(v));
		return -EINVAL;
	}
	a->username = xstrdup(v);
	return 0;
}

static int
set_account_key(struct parse_ctx *c, struct account *a, struct account_ctx *ax,
    const char *key, const char *v)
{
	static const struct {
		const char *name;
		unsigned bit;
	} keys[] = {
		{ "host", K_HOST },
		{ "port", K_PORT },
		{ "tls", K_TLS },
		{ "username", K_USER },
		{ "password", K_PASS },
		{ "password_file", K_PASSFILE },
		{ "password_command", K_PASSCMD },
		{ "folders", K_FOLDERS },
		{ "maildir", K_MAILDIR },
		{ "after", K_AFTER },
		{ "idle", K_IDLE },
		{ "poll_interval", K_POLL },
		{ "idle_refresh", K_REFRESH },
		{ "ca_file", K_CAFILE },
		{ "timeout", K_TIMEOUT },
		{ "max_connections", K_MAXCONN },
		{ "exclude", K_EXCLUDE },
		{ "read_only", K_READONLY },
		{ "tls_fingerprint", K_PIN },
		{ "auth", K_AUTH },
		{ "oauth_token_command", K_OAUTHCMD },
		{ "deliver", K_DELIVER },
		{ "lmtp_recipient", K_RCPT },
	};
	unsigned bit = 0;

	for (size_t i = 0; i < ARRAY_LEN(keys); i++)
		if (strcmp(keys[i].name, key) == 0)
			bit = keys[i].bit;
	if (bit == 0) {
		seterr(c, key, "unknown key in [account %s]", a->name);
		return -EINVAL;
	}
	if (ax->seen & bit) {
		seterr(c, key, "given twice in [account %s]", a->name);
		return -EINVAL;
	}
	ax->seen |= bit;
	if (*v == '\0' && bit != K_PASS) {
		seterr(c, key, "empty value");
		return -EINVAL;
	}
	switch (bit) {
	case K_HOST:
		return set_host(c, a, key, v);
	case K_PORT:
		return set_uint(c, key, v, 1, 65535, &a->port);
	case K_TLS:
		if (strcmp(v, "implicit") == 0)
			a->tls = TLS_MODE_IMPLICIT;
		else if (strcmp(v, "starttls") == 0)
			a->tls = TLS_MODE_STARTTLS;
		else if (strcmp(v, "none") == 0)
			a->tls = TLS_MODE_NONE;
		else {
			seterr(c, key,
			    "'%s' is not one of implicit, starttls, none", v);
			return -EINVAL;
		}
		return 0;
	case K_USER:
		return set_username(c, a, key, v);
	case K_PASS:
		a->password = xstrdup(v);
		return 0;
	case K_PASSFILE:
	case K_PASSCMD:
		*(bit == K_PASSFILE ? &a->password_file :
				      &a->password_command) = xstrdup(v);
		a->secret_src = xstrdup(c->file);
		a->secret_line = c->line;
		return 0;
	case K_FOLDERS:
		return set_folders(c, a, key, v);
	case K_EXCLUDE:
		return set_exclude(c, a, key, v);
	case K_MAILDIR:
		if (v[0] != '/') {
			seterr(c, key, "'%s' is not an absolute path", v);
			return -EINVAL;
		}
		a->maildir = xstrdup(v);
		return 0;
	case K_AFTER:
		if (strcmp(v, "keep") == 0)
			a->after = AFTER_KEEP;
		else if (strcmp(v, "delete") == 0)
			a->after = AFTER_DELETE;
		else if (strncmp(v, "move:", 5) == 0 && valid_folder(v + 5)) {
			a->after = AFTER_MOVE;
			a->move_to = xstrdup(v + 5);
		} else {
			seterr(c, key,
			    "'%s' is not one of keep, delete, move:FOLDER", v);
			return -EINVAL;
		}
		return 0;
	case K_IDLE:
		if (strcmp(v, "auto") == 0)
			a->idle = 1;
		else if (strcmp(v, "off") == 0)
			a->idle = 0;
		else {
			seterr(c, key, "'%s' is not one of auto, off", v);
			return -EINVAL;
		}
		return 0;
	case K_POLL:
		return set_uint(c, key, v, 1, 86400, &a->poll_interval);
	case K_REFRESH:
		/* RFC 2177: servers may drop an IDLE after 30 minutes. */
		return set_uint(c, key, v, 10, 1740, &a->idle_refresh);
	case K_CAFILE:
		a->ca_file = xstrdup(v);
		return 0;
	case K_MAXCONN:
		/* Dovecot refuses an 11th per user and address by default. */
		return set_uint(c, key, v, 1, 100, &a->max_connections);
	case K_TIMEOUT:
		return set_uint(c, key, v, 2, 3600, &a->timeout);
	case K_READONLY:
		if (strcmp(v, "yes") == 0 || strcmp(v, "no") == 0) {
			a->read_only = strcmp(v, "yes") == 0;
			return 0;
		}
		seterr(c, key, "'%s' is not one of yes, no", v);
		return -EINVAL;
	case K_PIN:
		return set_pin(c, a, key, v);
	case K_AUTH:
		if (strcmp(v, "password") == 0)
			a->auth = AUTH_PASSWORD;
		else if (strcmp(v, "xoauth2") == 0)
			a->auth = AUTH_XOAUTH2;
		else if (strcmp(v, "oauthbearer") == 0)
			a->auth = AUTH_OAUTHBEARER;
		else {
			seterr(c, key,
			    "'%s' is not one of password, xoauth2, oauthbearer",
			    v);
			return -EINVAL;
		}
		return 0;
	case K_OAUTHCMD:
		a->oauth_token_command = xstrdup(v);
		return 0;
	case K_DELIVER:
		return set_target(c, a, key, v);
	case K_RCPT:
		return set_recipient(c, a, key, v);
	default:
		fatal("bad key bit %u", bit);
	}
}

/*
 * user / group: must exist now, so that a typo is found by --check-config
 * and not when the daemon starts as root.
 */
static int
set_identity(struct parse_ctx *c, const char *key, const char *v, bool user)
{
	bool found = user ? getpwnam(v) != NULL : getgrnam(v) != NULL;

	if (*v == '\0') {
		seterr(c, key, "empty value");
		return -EINVAL;
	}
	if (!found) {
		seterr(c, key, "no %s '%s' on this system",
		    user ? "user" : "group", v);
		return -EINVAL;
	}
	*(user ? &c->cfg->user : &c->cfg->group) = xstrdup(v);
	return 0;
}

static int
set_global_key(struct parse_ctx *c, const char *key, const char *v)
{
	unsigned bit;

	if (strcmp(key, "state_dir") == 0)
		bit = 1;
	else if (strcmp(key, "log") == 0)
		bit = 2;
	else if (strcmp(key, "user") == 0)
		bit = 4;
	else if (strcmp(key, "group") == 0)
		bit = 8;
	else if (strcmp(key, "command_timeout") == 0)
		bit = 16;
	else if (strcmp(key, "shard") == 0)
		bit = 32;
	else {
		seterr(c, key, "unknown key in [global]");
		return -EINVAL;
	}
	if (c->global_seen & bit) {
		seterr(c, key, "given twice in [global]");
		return -EINVAL;
	}
	c->global_seen |= bit;
	if (bit == 1) {
		if (v[0] != '/') {
			seterr(c, key, "'%s' is not an absolute path", v);
			return -EINVAL;
		}
		free(c->cfg->state_dir);
		c->cfg->state_dir = xstrdup(v);
		return 0;
	}
	if (bit == 4 || bit == 8)
		return set_identity(c, key, v, bit == 4);
	if (bit == 16)
		return set_uint(c, key, v, 1, 600, &c->cfg->command_timeout);
	if (bit == 32) {
		char why[300];

		if (shard_parse(v, &c->cfg->shard, why, sizeof(why)) < 0) {
			seterr(c, key, "%s", why);
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(v, "stderr") == 0)
		c->cfg->log = LOG_TARGET_STDERR;
	else if (strcmp(v, "syslog") == 0)
		c->cfg->log = LOG_TARGET_SYSLOG;
	else if (strcmp(v, "json") == 0)
		c->cfg->log = LOG_TARGET_JSON;
	else {
		seterr(c, key, "'%s' is not one of stderr, syslog, json", v);
		return -EINVAL;
	}
	return 0;
}

static struct account *
find_account(struct parse_ctx *c, const char *name, struct account_ctx **ax)
{
	struct config *cfg = c->cfg;
	struct account *a;

	/* A section's keys come one after another: its account is the last. */
	for (size_t k = 0; k < cfg->naccounts; k++) {
		size_t i = cfg->naccounts - 1 - k;

		if (strcmp(cfg->accounts[i].name, name) == 0) {
			*ax = &c->actx[i];
			return &cfg->accounts[i];
		}
	}
	if (cfg->naccounts == c->cap_accounts) {
		c->cap_accounts = c->cap_accounts ? c->cap_accounts * 2 : 4;
		cfg->accounts = xrealloc(cfg->accounts,
		    c->cap_accounts * sizeof(*cfg->accounts));
		c->actx = xrealloc(c->actx, c->cap_accounts * sizeof(*c->actx));
	}
	a = &cfg->accounts[cfg->naccounts];
	memset(a, 0, sizeof(*a));
	*ax = &c->actx[cfg->naccounts];
	memset(*ax, 0, sizeof(**ax));
	(*ax)->line = c->section_line;
	cfg->naccounts++;
	a->name = xstrdup(name);
	a->tls = TLS_MODE_IMPLICIT;
	a->after = AFTER_KEEP;
	a->idle = 1;
	a->poll_interval = 60;
	a->idle_refresh = 600;
	a->max_connections = 5;
	a->timeout = 60;
	return a;
}

static int
handle_kv(struct parse_ctx *c, const char *section, const char *key,
    const char *raw)
{
	struct account_ctx *ax;
	struct account *a;
	char *v;
	int r;

	if (c->failed)
		return -EINVAL;
	if (strcmp(section, "global") != 0 &&
	    strncmp(section, "account ", 8) != 0) {
		seterr(c, NULL,
		    "unknown section [%s] (expected [global] or "
		    "[account NAME])",
		    section);
		return -EINVAL;
	}
	v = expand(c, key, raw);
	if (v == NULL)
		return -EINVAL;
	/* A password written in the file itself, not taken from a variable. */
	if (strcmp(key, "password") == 0 && *raw != '\0' &&
	    strstr(raw, "${") == NULL && c->secret_line == 0)
		c->secret_line = c->line;
	if (strcmp(key, "password_command") == 0 ||
	    strcmp(key, "oauth_token_command") == 0) {
		/*
		 * The shell expands ${NAME} itself, from the environment: a
		 * value pasted into the command line would be run as shell
		 * code ("; rm -rf ~"). expand() above only checked that
		 * every variable is set.
		 */
		OPENSSL_cleanse(v, strlen(v));
		free(v);
		v = xstrdup(raw);
	}
	if (strcmp(section, "global") == 0) {
		r = set_global_key(c, key, v);
	} else {
		const char *name = section + 8;

		while (*name == ' ')
			name++;
		if (!valid_account_name(name)) {
			seterr(c, NULL,
			    "invalid account name '%s' (letters, digits, "
			    "'.', '_', '-')",
			    name);
			r = -EINVAL;
		} else {
			a = find_account(c, name, &ax);
			r = set_account_key(c, a, ax, key, v);
		}
	}
	/* The value may be a password; a memset before free() may be elided. */
	OPENSSL_cleanse(v, strlen(v));
	free(v);
	return r;
}

static int
ini_handler_cb(void *user, const char *section, const char *name,
    const char *value)
{
	return handle_kv(user, section, name, value) == 0;
}

/* Feeds inih one line at a time so that we know the line number. */
static char *
ini_reader_cb(char *str, int num, void *stream)
{
	struct parse_ctx *c = stream;
	const char *nl, *start;
	size_t n;

	if (c->off >= c->len || c->failed)
		return NULL;
	start = c->buf + c->off;
	nl = memchr(start, '\n', c->len - c->off);
	n = nl ? (size_t)(nl - start) + 1 : c->len - c->off;
	c->line++;
	if (n + 1 > (size_t)num) {
		seterr(c, NULL, "line too long (at most %d bytes)", num - 2);
		return NULL;
	}
	memcpy(str, start, n);
	str[n] = '\0';
	c->off += n;
	if (memchr(str, '\0', n) != NULL) {
		seterr(c, NULL, "NUL byte in line");
		return NULL;
	}
	start = str;
	while (*start == ' ' || *start == '\t')
		start++;
	if (*start == '[')
		c->section_line = c->line;
	return str;
}

/*
 * The group idlefetch runs as once it drops its privileges (group =, or
 * user ='s own), which rereads the file on SIGHUP; else its own.
 */
static gid_t
run_gid(const struct config *cfg)
{
	struct group *gr = cfg->group ? getgrnam(cfg->group) : NULL;
	struct passwd *pw = cfg->user ? getpwnam(cfg->user) : NULL;

	return gr ? gr->gr_gid : pw ? pw->pw_gid : getegid();
}

/*
 * A file that holds a secret must not be readable by others: not by
 * everyone, and by its group only when that is the group idlefetch runs
 * as (root:idlefetch 0640 for a daemon that runs as idlefetch). why names
 * the file, its mode and the chmod that fixes it.
 */
static int
secret_mode_ok(FILE *fp, const char *path, const char *what, gid_t own,
    char *why, size_t whylen)
{
	struct stat st;

	if (fstat(fileno(fp), &st) < 0) {
		snprintf(why, whylen, "cannot stat %s: %s", path,
		    strerror(errno));
		return -errno;
	}
	if ((st.st_mode & S_IROTH) ||
	    ((st.st_mode & S_IRGRP) && st.st_gid != getegid() &&
		st.st_gid != own)) {
		snprintf(why, whylen,
		    "%s %s is readable by %s (mode %04o): run chmod 600 %s",
		    what, path, (st.st_mode & S_IROTH) ? "every user" :
		    "its group", (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static int
read_secret_file(const char *path, char **out, char *why, size_t whylen)
{
	char buf[4096];
	size_t n;
	FILE *fp = fopen(path, "re");
	int r;

	if (fp == NULL) {
		snprintf(why, whylen, "cannot read %s: %s", path,
		    strerror(errno));
		return -errno;
	}
	r = secret_mode_ok(fp, path, "password_file", getegid(), why, whylen);
	if (r < 0) {
		fclose(fp);
		return r;
	}
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	*out = xstrdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

/* maildir, deliver and lmtp_recipient go together. */
static int
finish_target(struct parse_ctx *c, struct account *a, struct account_ctx *ax)
{
	c->line = ax->line;
	a->target.timeout = a->target.kind == TARGET_MDA ?
	    c->cfg->command_timeout :
	    a->timeout;
	if (a->target.kind == TARGET_MAILDIR && !(ax->seen & K_MAILDIR)) {
		seterr(c, "maildir", "missing in [account %s]", a->name);
		return -EINVAL;
	}
	if (a->target.kind != TARGET_MAILDIR && (ax->seen & K_MAILDIR)) {
		seterr(c, "maildir",
		    "[account %s] delivers with deliver = %s: it has no "
		    "Maildir of its own",
		    a->name, a->target.kind == TARGET_MDA ? "mda:" : "lmtp:");
		return -EINVAL;
	}
	if ((a->target.kind == TARGET_LMTP) != (a->target.recipient != NULL)) {
		seterr(c, "lmtp_recipient",
		    a->target.recipient ?
			"[account %s] has no deliver = lmtp:" :
			"missing in [account %s]: deliver = lmtp: needs it",
		    a->name);
		return -EINVAL;
	}
	return 0;
}

/* Checks the keys that depend on each other and fills in defaults. */
static int
finish_account(struct parse_ctx *c, struct account *a, struct account_ctx *ax)
{
	static const struct {
		unsigned bit;
		const char *key;
	} req[] = {
		{ K_HOST, "host" },
		{ K_USER, "username" },
	};
	unsigned npass = !!(ax->seen & K_PASS) + !!(ax->seen & K_PASSFILE) +
	    !!(ax->seen & K_PASSCMD);
	bool inbox = false;

	c->line = ax->line;
	for (size_t i = 0; i < ARRAY_LEN(req); i++)
		if (!(ax->seen & req[i].bit)) {
			seterr(c, req[i].key, "missing in [account %s]",
			    a->name);
			return -EINVAL;
		}
	if (a->auth != AUTH_PASSWORD) {
		if (npass != 0 || !(ax->seen & K_OAUTHCMD)) {
			seterr(c, "auth",
			    "[account %s] logs in with OAuth2: it needs "
			    "oauth_token_command and no password, "
			    "password_file or password_command",
			    a->name);
			return -EINVAL;
		}
	} else if (ax->seen & K_OAUTHCMD) {
		seterr(c, "oauth_token_command",
		    "[account %s] has no auth = xoauth2 or oauthbearer",
		    a->name);
		return -EINVAL;
	} else if (npass != 1) {
		seterr(c, "password",
		    "[account %s] needs exactly one of password, "
		    "password_file, password_command",
		    a->name);
		return -EINVAL;
	}
	if (finish_target(c, a, ax) < 0)
		return -EINVAL;
	c->line = ax->line;
	if (!(ax->seen & K_PORT))
		a->port = a->tls == TLS_MODE_IMPLICIT ? 993 : 143;
	if (a->read_only && a->after != AFTER_KEEP) {
		seterr(c, "read_only",
		    "[account %s] opens its folders read-only: after must be "
		    "keep",
		    a->name);
		return -EINVAL;
	}
	if (a->pinned && a->tls == TLS_MODE_NONE) {
		seterr(c, "tls_fingerprint",
		    "[account %s] has tls = none: there is no certificate to "
		    "check",
		    a->name);
		return -EINVAL;
	}
	if ((ax->seen & K_EXCLUDE) && !a->subscribed) {
		seterr(c, "exclude",
		    "[account %s] lists its folders: exclude applies only to "
		    "folders = * (every subscribed folder)",
		    a->name);
		return -EINVAL;
	}
	/* INBOX is fetched by default, and always with '*'. */
	for (size_t i = 0; i < a->nfolders; i++)
		inbox |= strcasecmp(a->folders[i], "INBOX") == 0;
	if (a->nfolders == 0 || (a->subscribed && !inbox)) {
		a->folders = xrealloc(a->folders,
		    (a->nfolders + 1) * sizeof(*a->folders));
		memmove(a->folders + 1, a->folders,
		    a->nfolders * sizeof(*a->folders));
		a->folders[0] = xstrdup("INBOX");
		a->nfolders++;
	}
	if (a->after == AFTER_MOVE)
		for (size_t i = 0; i < a->nfolders; i++)
			if (config_same_folder(a->folders[i], a->move_to)) {
				seterr(c, "after",
				    "cannot move into '%s', a folder that "
				    "is fetched",
				    a->move_to);
				return -EINVAL;
			}
	return 0;
}

static void
free_actx(struct parse_ctx *c)
{
	free(c->actx);
	c->actx = NULL;
}

static int
finish(struct parse_ctx *c, struct config **out)
{
	int r = 0;

	if (!c->failed && c->cfg->naccounts == 0) {
		c->line = c->line ? c->line : 1;
		seterr(c, NULL, "no [account NAME] section");
	}
	for (size_t i = 0; !c->failed && i < c->cfg->naccounts; i++)
		finish_account(c, &c->cfg->accounts[i], &c->actx[i]);
	free_actx(c);
	if (c->failed) {
		config_free(c->cfg);
		r = -EINVAL;
	} else {
		*out = c->cfg;
	}
	return r;
}

static struct config *
config_new(const char *source)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->source = xstrdup(source);
	cfg->state_dir = xstrdup(CONFIG_DEFAULT_STATE);
	cfg->log = LOG_TARGET_STDERR;
	cfg->command_timeout = 30;
	return cfg;
}

/* The error of a secret: the file, the line and the key it came from. */
static void
secret_error(const struct account *a, const char *why, char *err, size_t errlen)
{
	struct parse_ctx c = { .file = a->secret_src, .line = a->secret_line,
		.err = err, .errlen = errlen };

	seterr(&c, a->password_file ? "password_file" : "password_command",
	    "%s", why);
}

int
config_read_secret_files(struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];
		char why[512];

		if (a->password != NULL || a->password_file == NULL)
			continue;
		if (read_secret_file(a->password_file, &a->password, why,
			sizeof(why)) < 0) {
			secret_error(a, why, err, errlen);
			return -EINVAL;
		}
	}
	return 0;
}

int
config_secret_result(const struct config *cfg, struct account *a, int status,
    const char *out, char *err, size_t errlen)
{
	char why[300];

	if (status == 0) {
		a->password = xstrdup(out);
		return 0;
	}
	if (status == -ETIMEDOUT)
		snprintf(why, sizeof(why),
		    "command did not finish within %u s; killed",
		    cfg->command_timeout);
	else if (status == -ECANCELED)
		snprintf(why, sizeof(why), "command stopped");
	else if (status == -EINTR)
		snprintf(why, sizeof(why), "command killed by a signal");
	else if (status < 0)
		snprintf(why, sizeof(why), "cannot run: %s", err_str(status));
	else
		snprintf(why, sizeof(why), "command failed (exit status %d)",
		    status);
	secret_error(a, why, err, errlen);
	return -EIO;
}

/*
 * config_read_secrets() runs the password_commands the daemon's way
 * (spawn.h), all at once, on a loop of its own that ends with the last
 * of them. In a session of their own the commands no longer get the
 * terminal's ^C, so a stop signal meanwhile kills them.
 */
struct cmd_batch;

struct cmd_run {
	struct cmd_batch *b;
	struct account *a;
	struct spawn *sp; /* NULL once done */
};

struct cmd_batch {
	const struct config *cfg;
	struct cmd_run *runs;
	size_t n, pending;
	uv_signal_t sig[3];
	bool failed;
	char *err;
	size_t errlen;
};

static void
batch_signal_cb(uv_signal_t *h, int signum)
{
	struct cmd_batch *b = h->data;

	(void)signum;
	for (size_t i = 0; i < b->n; i++)
		if (b->runs[i].sp != NULL)
			spawn_cancel(b->runs[i].sp);
}

static void
batch_done_cb(void *ud, int status, const char *out, const char *err_line)
{
	struct cmd_run *q = ud;
	struct cmd_batch *b = q->b;

	q->sp = NULL;
	/* The first failure is the one reported, with what it said. */
	if ((status == 0 || !b->failed) &&
	    config_secret_result(b->cfg, q->a, status, out, b->err,
		b->errlen) < 0) {
		size_t n = strlen(b->err);

		b->failed = true;
		if (err_line[0] != '\0')
			snprintf(b->err + n, b->errlen - n, " (it said: %s)",
			    err_line);
	}
	if (--b->pending > 0)
		return;
	for (size_t i = 0; i < ARRAY_LEN(b->sig); i++)
		uv_close((uv_handle_t *)&b->sig[i], NULL);
}

/* Runs every password_command not yet run; waits for all of them. */
static int
run_secret_commands(struct config *cfg, char *err, size_t errlen)
{
	static const int signums[] = { SIGINT, SIGTERM, SIGHUP };
	struct cmd_batch b = { .cfg = cfg, .err = err, .errlen = errlen };
	uv_loop_t loop;
	int r;

	for (size_t i = 0; i < cfg->naccounts; i++)
		b.pending += cfg->accounts[i].password == NULL &&
		    cfg->accounts[i].password_command != NULL;
	if (b.pending == 0)
		return 0;
	r = uv_loop_init(&loop);
	if (r < 0) {
		snprintf(err, errlen, "cannot run password_command: %s",
		    uv_strerror(r));
		return r;
	}
	for (size_t i = 0; i < ARRAY_LEN(signums); i++) {
		uv_signal_init(&loop, &b.sig[i]);
		b.sig[i].data = &b;
		uv_signal_start(&b.sig[i], batch_signal_cb, signums[i]);
	}
	b.runs = xcalloc(b.pending, sizeof(*b.runs));
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];
		struct cmd_run *q = &b.runs[b.n];

		if (a->password != NULL || a->password_command == NULL)
			continue;
		b.n++;
		q->b = &b;
		q->a = a;
		q->sp = spawn_shell(&loop, a->password_command,
		    (uint64_t)cfg->command_timeout * 1000, batch_done_cb, q);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) < 0)
		fatal("password_command loop still busy");
	free(b.runs);
	return b.failed ? -EINVAL : 0;
}

int
config_read_secrets(struct config *cfg, char *err, size_t errlen)
{
	int r = config_read_secret_files(cfg, err, errlen);

	return r < 0 ? r : run_secret_commands(cfg, err, errlen);
}

/* Parses, then reads the secrets; on error nothing is left allocated. */
static int
with_secrets(int r, struct config **out, char *err, size_t errlen)
{
	if (r < 0)
		return r;
	r = config_read_secrets(*out, err, errlen);
	if (r < 0) {
		config_free(*out);
		*out = NULL;
	}
	return r;
}

int
config_load_file(const char *path, struct config **out, char *err,
    size_t errlen)
{
	return with_secrets(config_parse_file(path, out, err, errlen), out,
	    err, errlen);
}

int
config_load_env(struct config **out, char *err, size_t errlen)
{
	return with_secrets(config_parse_env(out, err, errlen), out, err,
	    errlen);
}

int
config_parse_file(const char *path, struct config **out, char *err,
    size_t errlen)
{
	struct parse_ctx c = { .file = path, .err = err, .errlen = errlen };
	char *buf = NULL;
	size_t cap = 0, n;
	FILE *fp;
	int r;

	fp = fopen(path, "re");
	if (fp == NULL) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	/* All of it: a configuration cut short would drop accounts unseen. */
	do {
		if (c.len == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = xrealloc(buf, cap);
		}
		n = fread(buf + c.len, 1, cap - c.len, fp);
		c.len += n;
	} while (n > 0 && c.len <= CONFIG_MAX_BYTES);
	if (ferror(fp) || c.len > CONFIG_MAX_BYTES) {
		r = ferror(fp) ? -EIO : -EFBIG;
		snprintf(err, errlen, "%s: %s", path,
		    r == -EIO ? "cannot read it" :
				"larger than 64 MiB; split the accounts over "
				"several processes (shard =)");
		fclose(fp);
		OPENSSL_cleanse(buf, c.len);
		free(buf);
		return r;
	}
	c.buf = buf;
	c.cfg = config_new(path);
	ini_allow_multiline = false;
	ini_use_stack = false;
	ini_max_line = 4096;
	r = ini_parse_stream(ini_reader_cb, &c, ini_handler_cb, &c);
	if (r > 0 && !c.failed) {
		c.line = (unsigned)r;
		seterr(&c, NULL,
		    "syntax error (expected 'key = value' or "
		    "'[section]')");
	} else if (r < 0 && !c.failed) {
		seterr(&c, NULL, "cannot parse file");
	}
	if (!c.failed && c.secret_line > 0) {
		char why[512];

		c.line = c.secret_line;
		if (secret_mode_ok(fp, path, "the configuration file",
			run_gid(c.cfg), why, sizeof(why)) < 0)
			seterr(&c, "password", "%s, or move the password to a "
			    "password_file", why);
	}
	fclose(fp);
	OPENSSL_cleanse(buf, c.len);
	free(buf);
	return finish(&c, out);
}

int
config_parse_env(struct config **out, char *err, size_t errlen)
{
	static const struct {
		const char *var, *key;
	} vars[] = {
		{ "IDLEFETCH_STATE_DIR", "state_dir" },
		{ "IDLEFETCH_LOG", "log" },
		{ "IDLEFETCH_USER", "user" },
		{ "IDLEFETCH_GROUP", "group" },
		{ "IDLEFETCH_COMMAND_TIMEOUT", "command_timeout" },
		{ "IDLEFETCH_SHARD", "shard" },
		{ "IDLEFETCH_HOST", "host" },
		{ "IDLEFETCH_PORT", "port" },
		{ "IDLEFETCH_TLS", "tls" },
		{ "IDLEFETCH_USERNAME", "username" },
		{ "IDLEFETCH_PASSWORD", "password" },
		{ "IDLEFETCH_PASSWORD_FILE", "password_file" },
		{ "IDLEFETCH_PASSWORD_COMMAND", "password_command" },
		{ "IDLEFETCH_FOLDERS", "folders" },
		{ "IDLEFETCH_EXCLUDE", "exclude" },
		{ "IDLEFETCH_MAILDIR", "maildir" },
		{ "IDLEFETCH_AFTER", "after" },
		{ "IDLEFETCH_IDLE", "idle" },
		{ "IDLEFETCH_POLL_INTERVAL", "poll_interval" },
		{ "IDLEFETCH_IDLE_REFRESH", "idle_refresh" },
		{ "IDLEFETCH_CA_FILE", "ca_file" },
		{ "IDLEFETCH_TIMEOUT", "timeout" },
		{ "IDLEFETCH_MAX_CONNECTIONS", "max_connections" },
		{ "IDLEFETCH_READ_ONLY", "read_only" },
		{ "IDLEFETCH_TLS_FINGERPRINT", "tls_fingerprint" },
		{ "IDLEFETCH_AUTH", "auth" },
		{ "IDLEFETCH_OAUTH_TOKEN_COMMAND", "oauth_token_command" },
		{ "IDLEFETCH_DELIVER", "deliver" },
		{ "IDLEFETCH_LMTP_RECIPIENT", "lmtp_recipient" },
	};
	enum { NGLOBAL = 6 }; /* the first entries are [global] keys */
	struct parse_ctx c = { .err = err, .errlen = errlen };
	const char *name = getenv("IDLEFETCH_ACCOUNT");
	char section[128];

	c.cfg = config_new("environment");
	snprintf(section, sizeof(section), "account %s",
	    name ? name : "default");
	for (size_t i = 0; i < ARRAY_LEN(vars) && !c.failed; i++) {
		const char *v = getenv(vars[i].var);

		if (v == NULL)
			continue;
		c.file = vars[i].var;
		c.line = 0;
		handle_kv(&c, i < NGLOBAL ? "global" : section, vars[i].key,
		    v);
	}
	c.file = "environment";
	return finish(&c, out);
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];

		free(a->name);
		free(a->host);
		free(a->username);
		secret_free(a->password);
		free(a->password_file);
		free(a->password_command);
		free(a->secret_src);
		free(a->ca_file);
		for (size_t j = 0; j < a->nfolders; j++)
			free(a->folders[j]);
		free(a->folders);
		for (size_t j = 0; j < a->nexclude; j++)
			free(a->exclude[j]);
		free(a->exclude);
		free(a->maildir);
		free(a->move_to);
		free(a->oauth_token_command);
		target_free(&a->target);
	}
	free(cfg->accounts);
	free(cfg->state_dir);
	free(cfg->user);
	free(cfg->group);
	free(cfg->source);
	free(cfg);
}

void
config_print(const struct config *cfg, FILE *fp)
{
	static const char *tls[] = { "implicit", "starttls", "none" };
	static const char *logs[] = { "stderr", "syslog", "json" };

	fprintf(fp, "; effective configuration from %s\n[global]\n",
	    cfg->source);
	fprintf(fp, "state_dir = %s\nlog = %s\n", cfg->state_dir,
	    logs[cfg->log]);
	if (cfg->user)
		fprintf(fp, "user = %s\n", cfg->user);
	if (cfg->group)
		fprintf(fp, "group = %s\n", cfg->group);
	fprintf(fp, "command_timeout = %u\n", cfg->command_timeout);
	if (cfg->shard.count) {
		size_t n = 0;

		fprintf(fp, "shard = %u/%u\n; this replica takes:",
		    cfg->shard.index, cfg->shard.count);
		for (size_t i = 0; i < cfg->naccounts; i++)
			if (shard_has(&cfg->shard, cfg->accounts[i].name))
				fprintf(fp, "%s %s", n++ ? "," : "",
				    cfg->accounts[i].name);
		fprintf(fp, "%s (%zu of %zu)\n", n ? "" : " nothing", n,
		    cfg->naccounts);
	}
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		fprintf(fp, "\n[account %s]\nhost = %s\nport = %u\ntls = %s\n",
		    a->name, a->host, a->port, tls[a->tls]);
		if (a->auth == AUTH_PASSWORD)
			fprintf(fp, "username = %s\npassword = ********\n",
			    a->username);
		else
			fprintf(fp,
			    "username = %s\nauth = %s\n"
			    "oauth_token_command = %s\n",
			    a->username,
			    a->auth == AUTH_XOAUTH2 ? "xoauth2" : "oauthbearer",
			    a->oauth_token_command);
		if (a->ca_file)
			fprintf(fp, "ca_file = %s\n", a->ca_file);
		if (a->pinned) {
			fprintf(fp, "tls_fingerprint = sha256:");
			for (size_t j = 0; j < sizeof(a->pin); j++)
				fprintf(fp, "%s%02x", j ? ":" : "", a->pin[j]);
			fprintf(fp, "\n");
		}
		if (a->read_only)
			fprintf(fp, "read_only = yes\n");
		fprintf(fp, "folders = ");
		for (size_t j = 0; j < a->nfolders; j++)
			fprintf(fp, "%s%s", j ? ", " : "", a->folders[j]);
		if (a->subscribed)
			fprintf(fp, ", *");
		for (size_t j = 0; j < a->nexclude; j++)
			fprintf(fp, "%s%s", j ? ", " : "\nexclude = ",
			    a->exclude[j]);
		if (a->target.kind == TARGET_MAILDIR) {
			fprintf(fp, "\nmaildir = %s\n", a->maildir);
		} else {
			char t[1024];

			target_print(&a->target, t, sizeof(t));
			fprintf(fp, "\ndeliver = %s\n", t);
			if (a->target.recipient)
				fprintf(fp, "lmtp_recipient = %s\n",
				    a->target.recipient);
		}
		if (a->after == AFTER_MOVE)
			fprintf(fp, "after = move:%s\n", a->move_to);
		else
			fprintf(fp, "after = %s\n",
			    a->after == AFTER_KEEP ? "keep" : "delete");
		fprintf(fp,
		    "idle = %s\npoll_interval = %u\nidle_refresh = %u\n"
		    "timeout = %u\nmax_connections = %u\n",
		    a->idle ? "auto" : "off", a->poll_interval, a->idle_refresh,
		    a->timeout, a->max_connections);
	}
}

char *
config_folder_maildir(const struct account *a, const char *folder)
{
	char *sub, *p;

	if (strcasecmp(folder, "INBOX") == 0)
		return xstrdup(a->maildir);
	sub = xasprintf("%s/.%s", a->maildir, folder);
	for (p = sub + strlen(a->maildir) + 2; *p; p++)
		if (*p == '/')
			*p = '.';
	return sub;
}

char *
config_folder_key(const char *folder)
{
	char *out = xmalloc(strlen(folder) * 3 + 1), *o = out;

	for (; *folder; folder++) {
		unsigned char ch = (unsigned char)*folder;

		if (isalnum(ch) || ch == '_' || ch == '-')
			*o++ = (char)ch;
		else
			o += sprintf(o, "%%%02X", ch);
	}
	*o = '\0';
	return out;
}

static int
str_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

int
config_account_equal(const struct account *a, const struct account *b)
{
	if (!str_equal(a->name, b->name) || !str_equal(a->host, b->host) ||
	    a->port != b->port || a->tls != b->tls ||
	    !str_equal(a->username, b->username) ||
	    !str_equal(a->password, b->password) ||
	    !str_equal(a->ca_file, b->ca_file) ||
	    !str_equal(a->maildir, b->maildir) || a->after != b->after ||
	    !str_equal(a->move_to, b->move_to) || a->idle != b->idle ||
	    a->poll_interval != b->poll_interval ||
	    a->idle_refresh != b->idle_refresh || a->timeout != b->timeout ||
	    a->max_connections != b->max_connections ||
	    a->subscribed != b->subscribed || a->read_only != b->read_only ||
	    a->pinned != b->pinned || memcmp(a->pin, b->pin, sizeof(a->pin)) ||
	    a->auth != b->auth || !target_equal(&a->target, &b->target) ||
	    !str_equal(a->oauth_token_command, b->oauth_token_command) ||
	    !strv_equal((const char *const *)a->folders, a->nfolders,
		(const char *const *)b->folders, b->nfolders) ||
	    !strv_equal((const char *const *)a->exclude, a->nexclude,
		(const char *const *)b->exclude, b->nexclude))
		return 0;
	return 1;
}
