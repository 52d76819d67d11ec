/*
 * config: reads the INI file with inih, expands ${VAR}, and validates every
 * key as it is seen so that each error can name the file, line and key.
 * Unknown sections and keys are errors: a typo must never silently fall back
 * to a default. What each key is, and how its value is read, printed and
 * compared, is its row in the table of config_keys.c; this file reads the
 * file and the IDLEFETCH_* environment through it, then checks the keys
 * that depend on each other, and reads password_file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctype.h>
#include <grp.h>
#include <pwd.h>

#include <ini.h>
#include <openssl/crypto.h>

#include "idlefetch/config.h"
#include "idlefetch/config_keys.h"
#include "idlefetch/foldername.h"
#include "idlefetch/util.h"

/* A configuration file larger than this is refused, never cut short. */
#define CONFIG_MAX_BYTES (64u << 20)

/* The bit of key k in a set of keys seen, to refuse a key given twice. */
#define KEY_BIT(k) ((uint64_t)1 << config_key_index(k))

struct account_ctx {
	uint64_t seen; /* KEY_BIT()s */
	unsigned line; /* line of the [account] header */
	unsigned folders_line; /* line of its folders =, 0: not given */
};

struct parse_ctx {
	const char *file;
	struct config *cfg;
	struct account_ctx *actx; /* parallel to cfg->accounts */
	size_t cap_accounts; /* room in both */
	uint64_t global_seen;
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
	config_keys_defaults(CONFIG_ACCOUNT, a);
	return a;
}

/* Sets k in obj, a struct config or account; seen: the keys given. */
static int
set_value(struct parse_ctx *c, const struct config_key *k, uint64_t *seen,
    const char *where, void *obj, const char *raw, const char *v)
{
	char why[512];

	if (*seen & KEY_BIT(k)) {
		seterr(c, k->name, "given twice in [%s]", where);
		return -EINVAL;
	}
	*seen |= KEY_BIT(k);
	/*
	 * The shell expands ${NAME} itself, from the environment: a value
	 * pasted into the command line would be run as shell code ("; rm -rf
	 * ~"). expand() only checked that every variable is set.
	 */
	if (k->flags & CONFIG_KEY_SHELL)
		v = raw;
	if (*v == '\0' && !(k->flags & CONFIG_KEY_EMPTY_OK)) {
		seterr(c, k->name, "empty value");
		return -EINVAL;
	}
	/* A password written in the file itself, not taken from a variable. */
	if ((k->flags & CONFIG_KEY_SECRET) && *raw != '\0' &&
	    strstr(raw, "${") == NULL && c->secret_line == 0)
		c->secret_line = c->line;
	if (config_key_set(k, obj, v, why, sizeof(why)) < 0) {
		seterr(c, k->name, "%s", why);
		return -EINVAL;
	}
	if (k->flags & CONFIG_KEY_SECRET_SOURCE) {
		struct account *a = obj;

		free(a->secret_src);
		a->secret_src = xstrdup(c->file);
		a->secret_line = c->line;
	}
	return 0;
}

/*
 * Sets key in its section (the section's name is checked, its ${VAR}s
 * expanded into v): a key of that section, given once, with a value its
 * type takes.
 */
static int
set_key(struct parse_ctx *c, const char *section, const char *key,
    const char *raw, const char *v)
{
	const struct config_key *k;
	struct account_ctx *ax = NULL;
	struct account *a = NULL;
	char where[128];

	if (strcmp(section, "global") == 0) {
		k = config_key_find(CONFIG_GLOBAL, key);
		snprintf(where, sizeof(where), "global");
	} else {
		const char *name = section + 8;

		while (*name == ' ')
			name++;
		if (!valid_account_name(name)) {
			seterr(c, NULL,
			    "invalid account name '%s' (letters, digits, "
			    "'.', '_', '-')",
			    name);
			return -EINVAL;
		}
		a = find_account(c, name, &ax);
		k = config_key_find(CONFIG_ACCOUNT, key);
		snprintf(where, sizeof(where), "account %s", a->name);
	}
	if (k == NULL) {
		seterr(c, key, "unknown key in [%s]", where);
		return -EINVAL;
	}
	if (ax != NULL && strcmp(k->name, "folders") == 0)
		ax->folders_line = c->line;
	return set_value(c, k, ax ? &ax->seen : &c->global_seen, where,
	    a ? (void *)a : (void *)c->cfg, raw, v);
}

static int
handle_kv(struct parse_ctx *c, const char *section, const char *key,
    const char *raw)
{
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
	r = set_key(c, section, key, raw, v);
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

/* Whether the account's section gave key. */
static bool
given(const struct account_ctx *ax, const char *key)
{
	const struct config_key *k = config_key_find(CONFIG_ACCOUNT, key);

	if (k == NULL)
		fatal("no key %s", key);
	return (ax->seen & KEY_BIT(k)) != 0;
}

/* maildir, deliver and lmtp_recipient go together. */
static int
finish_target(struct parse_ctx *c, struct account *a, struct account_ctx *ax)
{
	c->line = ax->line;
	a->target.timeout = a->target.kind == TARGET_MDA ?
	    c->cfg->command_timeout :
	    a->timeout;
	if (a->target.kind == TARGET_MAILDIR && !given(ax, "maildir")) {
		seterr(c, "maildir", "missing in [account %s]", a->name);
		return -EINVAL;
	}
	if (a->target.kind != TARGET_MAILDIR && given(ax, "maildir")) {
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

/* The keys every account needs, and how it logs in. */
static int
finish_login(struct parse_ctx *c, struct account *a, struct account_ctx *ax)
{
	unsigned npass = given(ax, "password") + given(ax, "password_file") +
	    given(ax, "password_command");

	c->line = ax->line;
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];

		if ((k->flags & CONFIG_KEY_REQUIRED) &&
		    !(ax->seen & KEY_BIT(k))) {
			seterr(c, k->name, "missing in [account %s]", a->name);
			return -EINVAL;
		}
	}
	if (a->auth != AUTH_PASSWORD) {
		if (npass != 0 || !given(ax, "oauth_token_command")) {
			seterr(c, "auth",
			    "[account %s] logs in with OAuth2: it needs "
			    "oauth_token_command and no password, "
			    "password_file or password_command",
			    a->name);
			return -EINVAL;
		}
	} else if (given(ax, "oauth_token_command")) {
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
	return 0;
}

/* INBOX is fetched by default, and always with '*'; never moved into. */
static int
finish_folders(struct parse_ctx *c, struct account *a,
    const struct account_ctx *ax)
{
	bool inbox = false;
	char why[512];

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
			if (folder_same(a->folders[i], a->move_to)) {
				seterr(c, "after",
				    "cannot move into '%s', a folder that "
				    "is fetched",
				    a->move_to);
				return -EINVAL;
			}
	if (config_folders_clash(a, why, sizeof(why)) < 0) {
		c->line = ax->folders_line;
		seterr(c, "folders", "%s", why);
		return -EINVAL;
	}
	return 0;
}

/* Checks the keys that depend on each other and fills in defaults. */
static int
finish_account(struct parse_ctx *c, struct account *a, struct account_ctx *ax)
{
	if (finish_login(c, a, ax) < 0 || finish_target(c, a, ax) < 0)
		return -EINVAL;
	c->line = ax->line;
	if (!given(ax, "port"))
		a->port = a->tls == TLS_MODE_IMPLICIT ? 993 : 143;
	/* Inherited here, so that a reload sees a changed [global] one. */
	if (!given(ax, "on_delivery") && c->cfg->on_delivery != NULL)
		a->on_delivery = xstrdup(c->cfg->on_delivery);
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
	if (given(ax, "exclude") && !a->subscribed) {
		seterr(c, "exclude",
		    "[account %s] lists its folders: exclude applies only to "
		    "folders = * (every subscribed folder)",
		    a->name);
		return -EINVAL;
	}
	return finish_folders(c, a, ax);
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
	const char *sd = getenv("STATE_DIRECTORY");

	cfg->source = xstrdup(source);
	config_keys_defaults(CONFIG_GLOBAL, cfg);
	/*
	 * Under systemd the unit's StateDirectory= is the default, so that
	 * each idlefetch@NAME.service keeps its own state. One absolute path
	 * only: a unit with several gets them joined by colons.
	 */
	if (sd != NULL && sd[0] == '/' && strchr(sd, ':') == NULL) {
		free(cfg->state_dir);
		cfg->state_dir = xstrdup(sd);
	}
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

bool
config_wanted(const struct config *cfg, const struct account *a,
    const char *only)
{
	return (only == NULL || strcmp(only, a->name) == 0) &&
	    shard_has(&cfg->shard, a->name);
}

int
config_read_secret_files(struct config *cfg, const char *only, char *err,
    size_t errlen)
{
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];
		char why[512];

		if (a->password != NULL || a->password_file == NULL ||
		    !config_wanted(cfg, a, only))
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

/* One account from the IDLEFETCH_* variable of each key (README). */
int
config_parse_env(struct config **out, char *err, size_t errlen)
{
	struct parse_ctx c = { .err = err, .errlen = errlen };
	const char *name = getenv("IDLEFETCH_ACCOUNT");
	char section[128];

	c.cfg = config_new("environment");
	snprintf(section, sizeof(section), "account %s",
	    name ? name : "default");
	for (size_t i = 0; i < config_nkeys && !c.failed; i++) {
		const struct config_key *k = &config_keys[i];
		const char *v = getenv(k->env);

		if (v == NULL)
			continue;
		c.file = k->env;
		c.line = 0;
		handle_kv(&c, k->section == CONFIG_GLOBAL ? "global" : section,
		    k->name, v);
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
		free(a->secret_src);
		config_keys_free(CONFIG_ACCOUNT, a);
	}
	free(cfg->accounts);
	config_keys_free(CONFIG_GLOBAL, cfg);
	free(cfg->source);
	free(cfg);
}

void
config_print(const struct config *cfg, FILE *fp)
{
	fprintf(fp, "; effective configuration from %s\n[global]\n",
	    cfg->source);
	config_keys_print(CONFIG_GLOBAL, cfg, fp);
	for (size_t i = 0; i < cfg->naccounts; i++) {
		fprintf(fp, "\n[account %s]\n", cfg->accounts[i].name);
		config_keys_print(CONFIG_ACCOUNT, &cfg->accounts[i], fp);
	}
}

int
config_account_equal(const struct account *a, const struct account *b)
{
	return strcmp(a->name, b->name) == 0 &&
	    config_keys_equal(CONFIG_ACCOUNT, a, b);
}
