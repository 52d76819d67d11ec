/*
 * rcimport: a fetchmailrc's entries, read from its words (rclex) the way
 * fetchmail's grammar reads them, written out as idlefetch.conf sections.
 *
 * idlefetch.conf has no quoting: a value reaches it as it is or not at
 * all. A control character is refused (rclex), and so is a value that
 * inih would cut at " ;" or trim, or that would be expanded ("${"), but a
 * password, which then goes to a password_file. Any such problem stops the
 * import, naming the line and keyword: a configuration with an account
 * quietly left out would stop that account's mail when fetchmail goes.
 * Whether a value can be held is rcvalue's; rcimport owns the accounts it
 * reads (struct racct), their names and what is written of them.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/rcimport.h"
#include "idlefetch/rclex.h"
#include "idlefetch/rcvalue.h"
#include "idlefetch/secretfile.h"
#include "idlefetch/util.h"

/* Comment bytes per account; what is beyond is counted, not kept. */
#define NOTES_MAX 4096
#define ACCOUNTS_MAX 10000

/* One account: a poll entry's server options with one user's options. */
struct racct {
	char *host, *via, *proto, *user, *pass, *local, *folders, *mda;
	char *sslproto, *sslcertfile, *sslfp, *auth;
	unsigned port, timeout, line;
	int keep; /* -1: not said (fetchmail then deletes) */
	bool ssl, skip, fetchall, idle, sslcertck;
	/* Why idlefetch.conf cannot hold the password as it is, or NULL. */
	const char *pass_why;
	unsigned pass_line;
	char *notes; /* "; ..." lines */
	size_t notes_len, notes_cap;
	unsigned notes_more; /* notes past NOTES_MAX */
};

/*
 * A comment line for the account. Past NOTES_MAX bytes they are only
 * counted: a file of a million unknown words must not give every account
 * a million comment lines.
 */
static void
note(struct racct *a, const char *fmt, ...)
{
	char buf[512];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	n = strlen(buf) + 3;
	if (a->notes_len + n > NOTES_MAX) {
		a->notes_more++;
		return;
	}
	if (a->notes_len + n + 1 > a->notes_cap) {
		a->notes_cap = 2 * (a->notes_len + n + 1);
		a->notes = xrealloc(a->notes, a->notes_cap);
	}
	sprintf(a->notes + a->notes_len, "; %s\n", buf);
	a->notes_len += n;
}

/* Strings are wiped when they go: any of them may be the password. */
static void
set_str(char **dst, const char *v)
{
	secret_free(*dst);
	*dst = v ? xstrdup(v) : NULL;
}

/* The account's strings, for copying and freeing them all. */
static const size_t racct_strs[] = { offsetof(struct racct, host),
	offsetof(struct racct, via), offsetof(struct racct, proto),
	offsetof(struct racct, user), offsetof(struct racct, pass),
	offsetof(struct racct, local), offsetof(struct racct, folders),
	offsetof(struct racct, mda), offsetof(struct racct, sslproto),
	offsetof(struct racct, sslcertfile), offsetof(struct racct, sslfp),
	offsetof(struct racct, auth), offsetof(struct racct, notes) };

static char **
racct_str(struct racct *a, size_t i)
{
	return (char **)((char *)a + racct_strs[i]);
}

/* A deep copy: each string of s duplicated into d. */
static void
racct_copy(struct racct *d, const struct racct *s)
{
	*d = *s;
	for (size_t i = 0; i < ARRAY_LEN(racct_strs); i++)
		if (*racct_str(d, i))
			*racct_str(d, i) = xstrdup(*racct_str(d, i));
	d->notes_cap = d->notes ? d->notes_len + 1 : 0;
}

static void
racct_free(struct racct *a)
{
	for (size_t i = 0; i < ARRAY_LEN(racct_strs); i++)
		secret_free(*racct_str(a, i));
}

/*
 * The password, kept with why the configuration cannot hold it as it is
 * (it then goes to a password_file).
 */
static int
password(struct rclex *lx, const struct rctok *t, struct racct *a,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	const struct rctok *v = rclex_value(lx, t, o->source, err, errlen);

	if (v != NULL && strlen(v->s) > RCVALUE_MAX)
		snprintf(err, errlen,
		    "%s:%u: %s: longer than idlefetch takes "
		    "(%d bytes)",
		    o->source, v->line, t->s, RCVALUE_MAX);
	if (v == NULL || strlen(v->s) > RCVALUE_MAX)
		return -EINVAL;
	set_str(&a->pass, v->s);
	a->pass_line = v->line;
	a->pass_why = rcvalue_unholdable(v->s, false);
	return 0;
}

/* "no keep", "no idle", "no fetchall": w is the word after "no". */
static void
option_no(const struct rctok *w, struct racct *a)
{
	if (rclex_kw(w, "keep"))
		a->keep = 0;
	else if (rclex_kw(w, "idle"))
		a->idle = false;
	else if (rclex_kw(w, "fetchall"))
		a->fetchall = false;
	else if (w)
		note(a, "no %s: idlefetch has no such setting", w->s);
}

/* Options that take a value and that idlefetch has nothing for. */
static bool
no_counterpart(const struct rctok *t)
{
	static const char *const kw[] = { "limit", "fetchlimit", "batchlimit",
		"expunge", "smtphost", "smtpname", "interval", "tracepolls",
		"principal", "envelope", "qvirtual", "preconnect",
		"postconnect", "plugin", "plugout", "localdomains", "bsmtp",
		"lmtp", "antispam", "warnings" };

	for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
		if (rclex_kw(t, kw[i]))
			return true;
	return false;
}

/*
 * A server or user option at t, applied to a. Returns 1 if it was one, 0
 * if t is no option this importer knows (noted and skipped), -EINVAL.
 */
/* folder(s) "A" "B"...: the list replaces one given before. */
static int
folders(struct rclex *lx, const struct rctok *t, struct racct *a,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	char *list = rcvalue_list(lx, t, o->source, err, errlen);

	if (list == NULL)
		return -EINVAL;
	secret_free(a->folders);
	a->folders = list;
	return 0;
}

static int
option(struct rclex *lx, const struct rctok *t, struct racct *a,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	const struct rctok *vt;
	const char *v;

#define VALUE()                                                                \
	do {                                                                   \
		vt = rclex_value(lx, t, o->source, err, errlen);               \
		if (vt == NULL)                                                \
			return -EINVAL;                                        \
		v = vt->s;                                                     \
	} while (0)
#define PLAIN()                                                                \
	do {                                                                   \
		VALUE();                                                       \
		if (rcvalue_plain(o->source, t, vt, false, err, errlen) < 0)   \
			return -EINVAL;                                        \
	} while (0)
	if (rclex_kw(t, "via")) {
		PLAIN();
		set_str(&a->via, v);
	} else if (rclex_kw(t, "protocol") || rclex_kw(t, "proto")) {
		VALUE();
		set_str(&a->proto, v);
	} else if (rclex_kw(t, "port") || rclex_kw(t, "service")) {
		VALUE();
		a->port = (unsigned)strtoul(v, NULL, 10);
	} else if (rclex_kw(t, "timeout")) {
		VALUE();
		a->timeout = (unsigned)strtoul(v, NULL, 10);
	} else if (rclex_kw(t, "auth") || rclex_kw(t, "authenticate")) {
		VALUE();
		set_str(&a->auth, v);
	} else if (rclex_kw(t, "pass") || rclex_kw(t, "password")) {
		if (password(lx, t, a, o, err, errlen) < 0)
			return -EINVAL;
	} else if (rclex_kw(t, "keep")) {
		a->keep = 1;
	} else if (rclex_kw(t, "nokeep")) {
		a->keep = 0;
	} else if (rclex_kw(t, "no")) {
		option_no(rclex_next(lx), a);
	} else if (rclex_kw(t, "fetchall")) {
		a->fetchall = true;
	} else if (rclex_kw(t, "idle")) {
		a->idle = true;
	} else if (rclex_kw(t, "ssl")) {
		a->ssl = true;
	} else if (rclex_kw(t, "sslcertck")) {
		a->sslcertck = true;
	} else if (rclex_kw(t, "sslproto")) {
		VALUE();
		set_str(&a->sslproto, v);
	} else if (rclex_kw(t, "sslcertfile")) {
		PLAIN();
		set_str(&a->sslcertfile, v);
	} else if (rclex_kw(t, "sslfingerprint")) {
		VALUE();
		set_str(&a->sslfp, v);
	} else if (rclex_kw(t, "folder") || rclex_kw(t, "folders")) {
		if (folders(lx, t, a, o, err, errlen) < 0)
			return -EINVAL;
	} else if (rclex_kw(t, "mda")) {
		VALUE();
		set_str(&a->mda, v);
	} else if (no_counterpart(t)) {
		VALUE();
		note(a, "%s %s: no counterpart in idlefetch", t->s, v);
	} else {
		note(a, "%s: no counterpart in idlefetch", t->s);
		return 0;
	}
	return 1;
#undef PLAIN
#undef VALUE
}

/* An account's name from its user: letters, digits, '.', '_', '-'. */
static char *
base_name(const struct racct *a)
{
	const char *u = a->user ? a->user : "";
	char base[64];
	size_t k = 0;

	for (; *u && *u != '@' && k + 1 < sizeof(base); u++)
		base[k++] = (isalnum((unsigned char)*u) || *u == '.' ||
				*u == '_' || *u == '-') ? *u : '_';
	base[k] = '\0';
	return xstrdup(k ? base : "account");
}

static bool
taken(const char *name, char **names, size_t n)
{
	while (n > 0 && strcmp(names[n - 1], name) != 0)
		n--;
	return n > 0;
}

/*
 * Each account's name, unique: a second "alice" is alice-2. last[j] is the
 * number last given to the base of names[j], so that a thousand "alice"
 * do not each count up from 2. The caller frees the array and each name.
 */
static char **
account_names(const struct racct *accts, size_t n)
{
	char **names = xcalloc(n, sizeof(*names));
	char **bases = xcalloc(n, sizeof(*bases));
	unsigned *last = xcalloc(n, sizeof(*last));

	for (size_t i = 0; i < n; i++) {
		size_t j = 0;
		unsigned k;

		bases[i] = base_name(&accts[i]);
		while (j < i && strcmp(bases[j], bases[i]) != 0)
			j++;
		k = last[j];
		do {
			free(names[i]);
			names[i] = k++ == 0 ? xstrdup(bases[i]) :
					      xasprintf("%s-%u", bases[i], k);
		} while (taken(names[i], names, i));
		last[j] = k;
	}
	for (size_t i = 0; i < n; i++)
		free(bases[i]);
	free(bases);
	free(last);
	return names;
}

static bool
is_imap(const struct racct *a)
{
	return a->proto == NULL || strcasecmp(a->proto, "IMAP") == 0 ||
	    strcasecmp(a->proto, "auto") == 0;
}

/* The account's comments, and how many did not fit. */
static void
write_notes(FILE *out, const struct racct *a, const struct rcimport_opts *o)
{
	if (a->notes)
		fputs(a->notes, out);
	if (a->notes_more)
		fprintf(out, "; and %u more options with no counterpart in "
			     "idlefetch: see %s\n",
		    a->notes_more, o->source);
}

/*
 * The password: with --keep-passwords in the configuration, or in the
 * password_file that save_passwords() wrote when the configuration cannot
 * hold it as it is; otherwise a password_file to make, and how.
 */
static void
write_password(FILE *out, const struct racct *a, const char *name,
    const char *c, const struct rcimport_opts *o)
{
	if (a->pass && o->keep_passwords && a->pass_why == NULL) {
		fprintf(out, "%spassword = %s\n", c, a->pass);
	} else if (a->pass && o->keep_passwords) {
		fprintf(out, "%spassword_file = %s/%s.password\n", c,
		    o->secrets_dir, name);
		fprintf(out, "; the password from the fetchmailrc is in that "
			     "file (mode 0600): idlefetch.conf cannot hold it "
			     "as it is (%s)\n",
		    a->pass_why);
	} else {
		fprintf(out, "%spassword_file = %s/%s.password\n", c,
		    o->secrets_dir, name);
		fprintf(out, "; create it with the password%s:\n;   ( umask 077; "
			     "printf '%%s\\n' 'PASSWORD' > %s/%s.password )\n",
		    a->pass ? " from the fetchmailrc" :
			      " (the fetchmailrc has none: fetchmail asked "
			      "or read ~/.netrc)",
		    o->secrets_dir, name);
	}
}

/* The tls = setting fetchmail's options amount to, with why. */
static const char *
tls_mode(FILE *out, const struct racct *a)
{
	const char *tls;

	if (a->sslproto && *a->sslproto == '\0') {
		tls = "none";
		fprintf(out, "; sslproto '': fetchmail used no TLS. idlefetch "
			     "sends the password in clear only with tls = none\n");
	} else if (a->ssl || a->port == 993) {
		tls = "implicit";
	} else {
		tls = "starttls";
		fprintf(out, "; no `ssl`: fetchmail upgraded with STARTTLS when "
			     "offered and went on in clear when not. idlefetch "
			     "insists; write tls = none only if the server has "
			     "no TLS at all\n");
	}
	return tls;
}

/* tls =, ca_file = and what became of fetchmail's other TLS options. */
static void
write_tls(FILE *out, const struct racct *a, const char *c, const char *tls,
    const char *host)
{
	unsigned port = a->port;

	fprintf(out, "%stls = %s\n", c, tls);
	if (a->sslcertfile)
		fprintf(out, "%sca_file = %s\n", c, a->sslcertfile);
	if (a->sslcertck)
		fprintf(out, "; sslcertck: idlefetch always checks the "
			     "certificate and the host name\n");
	if (a->sslproto && *a->sslproto)
		fprintf(out, "; sslproto %s: idlefetch uses TLS 1.2 or newer, "
			     "whatever is asked\n",
		    a->sslproto);
	if (a->sslfp)
		fprintf(out, "; sslfingerprint %s is MD5, which idlefetch does "
			     "not take; pin by SHA-256 instead, from: openssl "
			     "s_client -connect %s:%u </dev/null | openssl x509 "
			     "-noout -fingerprint -sha256\n%s; tls_fingerprint "
			     "= sha256:...\n",
		    a->sslfp, host, port ? port : 993, c);
}

/* after =, and what fetchmail's keep, fetchall and idle meant. */
static void
write_after(FILE *out, const struct racct *a, const char *c)
{
	if (a->keep == 1) {
		fprintf(out, "%safter = keep\n", c);
		if (!a->fetchall)
			fprintf(out,
			    "; keep without fetchall: fetchmail skipped "
			    "messages already read on the server; "
			    "idlefetch fetches every new one, read or "
			    "not\n");
	} else {
		fprintf(out, "%safter = delete\n", c);
		fprintf(out,
		    "; no `keep`: fetchmail deleted what it fetched; so "
		    "does after = delete, once it is safe in the "
		    "Maildir\n");
	}
	if (a->fetchall)
		fprintf(out,
		    "; fetchall: not needed, idlefetch never skips read "
		    "mail\n");
	if (a->idle)
		fprintf(out,
		    "; idle: idlefetch always uses IDLE where the "
		    "server has it, for every folder\n");
}

/* The account's lines; a skipped or non-IMAP one goes out commented. */
static void
write_account(FILE *out, const struct racct *a, const char *name,
    const struct rcimport_opts *o, unsigned daemon)
{
	const char *host = a->via ? a->via : a->host;
	const char *c = a->skip || !is_imap(a) ? "; " : "";
	const char *tls;

	fprintf(out, "\n; from the poll entry for %s at %s:%u\n", a->host,
	    o->source, a->line);
	if (a->skip)
		fprintf(out,
		    "; `skip` in the fetchmailrc: written out but not "
		    "enabled\n");
	if (!is_imap(a))
		fprintf(out,
		    "; protocol %s: idlefetch speaks IMAP only; this "
		    "account is left out\n",
		    a->proto);
	tls = tls_mode(out, a);
	fprintf(out, "%s[account %s]\n%shost = %s\n", c, name, c, host);
	if (a->via)
		fprintf(out,
		    "; via %s: idlefetch connects there, as fetchmail "
		    "did\n",
		    a->via);
	if (a->port)
		fprintf(out, "%sport = %u\n", c, a->port);
	write_tls(out, a, c, tls, host);
	fprintf(out, "%susername = %s\n", c, a->user ? a->user : "");
	if (a->auth && strcasecmp(a->auth, "password") != 0 &&
	    strcasecmp(a->auth, "any") != 0)
		fprintf(out, "; auth %s: idlefetch logs in with a password, or "
			     "with OAuth2 (auth = xoauth2 and "
			     "oauth_token_command)\n",
		    a->auth);
	write_password(out, a, name, c, o);
	fprintf(out, "%sfolders = %s\n", c, a->folders ? a->folders : "INBOX");
	fprintf(out, "%smaildir = %s\n", c, o->maildir);
	if (a->mda)
		fprintf(out, "; mda \"%s\": idlefetch writes the Maildir "
			     "itself; check that the MDA delivered to %s\n"
			     "; (to keep the MDA, replace maildir = with "
			     "deliver = mda:PROGRAM ARGS: no shell, %%F is "
			     "the sender)\n",
		    a->mda, o->maildir);
	if (a->local)
		fprintf(out, "; is %s here: the Maildir above is that user's\n",
		    a->local);
	write_after(out, a, c);
	if (a->timeout)
		fprintf(out, "%stimeout = %u\n", c, a->timeout);
	if (daemon)
		fprintf(out, "%spoll_interval = %u\n", c, daemon);
	write_notes(out, a, o);
}

/* What the whole file gives, as it is read. */
struct import {
	struct rclex *lx;
	struct racct g, defaults, *accts;
	size_t nacct, acap;
	unsigned daemon;
	bool syslog;
	char *logfile;
};

/* `set ...`: what of it is global. */
static int
set_stmt(struct import *im, const struct rcimport_opts *o, char *err,
    size_t errlen)
{
	struct rclex *lx = im->lx;
	const struct rctok *t = rclex_next(lx), *v;

	if (rclex_kw(t, "daemon") || rclex_kw(t, "logfile")) {
		if ((v = rclex_value(lx, t, o->source, err, errlen)) == NULL)
			return -EINVAL;
		if (rclex_kw(t, "daemon"))
			im->daemon = (unsigned)strtoul(v->s, NULL, 10);
		else
			set_str(&im->logfile, v->s);
	} else if (rclex_kw(t, "syslog")) {
		im->syslog = true;
	} else if (rclex_kw(t, "no") || rclex_kw(t, "invisible") ||
	    rclex_kw(t, "showdots")) {
		const struct rctok *w = rclex_kw(t, "no") ? rclex_next(lx) :
							    NULL;

		note(&im->g, "set %s%s%s: no counterpart in idlefetch", t->s,
		    w ? " " : "", w ? w->s : "");
	} else if (t) {
		const struct rctok *w = rclex_peek(lx);

		/* set postmaster "x", set idfile "x", ...: a value follows. */
		if (w && !rclex_starts_entry(w))
			rclex_next(lx);
		note(&im->g, "set %s%s%s: no counterpart in idlefetch", t->s,
		    w && !rclex_starts_entry(w) ? " " : "",
		    w && !rclex_starts_entry(w) ? w->s : "");
	}
	return 0;
}

/* `user NAME` and its options: one account, from the server's srv. */
static int
user(struct import *im, const struct rctok *u, const struct racct *srv,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	struct rclex *lx = im->lx;
	const struct rctok *v = rclex_value(lx, u, o->source, err, errlen);
	struct racct a;
	int r = 0;

	if (v == NULL || rcvalue_plain(o->source, u, v, false, err, errlen) < 0)
		return -EINVAL;
	if (im->nacct == ACCOUNTS_MAX) {
		snprintf(err, errlen, "%s:%u: more than %d accounts: split the "
		    "file", o->source, u->line, ACCOUNTS_MAX);
		return -EINVAL;
	}
	racct_copy(&a, srv);
	set_str(&a.user, v->s);
	while (r == 0 && rclex_peek(lx) &&
	    !rclex_starts_entry(rclex_peek(lx)) &&
	    !rclex_kw(rclex_peek(lx), "user") &&
	    !rclex_kw(rclex_peek(lx), "username")) {
		const struct rctok *w = rclex_next(lx);

		/* "is LOCAL here" names a local user. */
		if (rclex_after(lx, "is"))
			set_str(&a.local, w->s);
		else if (option(lx, w, &a, o, err, errlen) < 0)
			r = -EINVAL;
	}
	if (im->nacct == im->acap) {
		im->acap = im->acap ? im->acap * 2 : 8;
		im->accts = xrealloc(im->accts, im->acap * sizeof(*im->accts));
	}
	im->accts[im->nacct++] = a;
	return r;
}

/* A `poll`, `skip`, `server` or `defaults` entry, t its first word. */
static int
entry(struct import *im, const struct rctok *t, const struct rcimport_opts *o,
    char *err, size_t errlen)
{
	struct rclex *lx = im->lx;
	struct racct srv;
	int r = 0;

	racct_copy(&srv, &im->defaults);
	srv.line = t->line;
	srv.skip = rclex_kw(t, "skip");
	if (!rclex_kw(t, "defaults")) {
		const struct rctok *h = rclex_next(lx);

		if (h == NULL) {
			snprintf(err, errlen, "%s:%u: '%s' needs a host",
			    o->source, t->line, t->s);
			r = -EINVAL;
		} else if (rcvalue_plain(o->source, t, h, false, err, errlen) <
		    0) {
			r = -EINVAL;
		} else {
			set_str(&srv.host, h->s);
		}
	}
	/* Server options, then one block per user. */
	while (r == 0 && rclex_peek(lx) &&
	    !rclex_starts_entry(rclex_peek(lx))) {
		const struct rctok *u = rclex_next(lx);

		if (rclex_kw(u, "user") || rclex_kw(u, "username"))
			r = user(im, u, &srv, o, err, errlen);
		else if (option(lx, u, &srv, o, err, errlen) < 0)
			r = -EINVAL;
	}
	if (rclex_kw(t, "defaults")) {
		racct_free(&im->defaults);
		im->defaults = srv;
	} else {
		racct_free(&srv);
	}
	return r;
}

/* The options' paths go into the configuration as they are. */
static int
check_opts(const struct rcimport_opts *o, char *err, size_t errlen)
{
	const char *m = rcvalue_unholdable(o->maildir, true);
	const char *d = rcvalue_unholdable(o->secrets_dir, true);

	if (m != NULL || d != NULL)
		snprintf(err, errlen, "%s: idlefetch.conf cannot hold it as it "
		    "is: %s", m ? "--maildir" : "--secrets-dir", m ? m : d);
	else if (rcvalue_has_ctl(o->source))
		snprintf(err, errlen, "the fetchmailrc's name holds a control "
		    "character");
	else
		return 0;
	return -EINVAL;
}

/*
 * With --keep-passwords, each password that the configuration cannot hold
 * as it is goes to SECRETS_DIR/NAME.password, before anything is printed.
 */
static int
save_passwords(const struct import *im, char **names,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < im->nacct; i++) {
		const struct racct *a = &im->accts[i];
		char why[512], *name;

		if (!o->keep_passwords || !a->pass || !a->pass_why)
			continue;
		name = xasprintf("%s.password", names[i]);
		if (strstr(o->secrets_dir, "${") != NULL) {
			snprintf(why, sizeof(why), "--secrets-dir names a "
			    "variable, not a directory to write it to");
			r = -EINVAL;
		} else {
			r = secretfile_create(o->secrets_dir, name, a->pass,
			    why, sizeof(why));
		}
		if (r < 0)
			snprintf(err, errlen, "%s:%u: password of '%.100s': "
			    "idlefetch.conf cannot hold it as it is (%s), and "
			    "its password_file cannot be made: %s%s",
			    o->source, a->pass_line, a->user, a->pass_why, why,
			    r == -EEXIST ? " (remove it, or give another "
					   "--secrets-dir)" : "");
		free(name);
	}
	return r;
}

static void
write_conf(FILE *out, const struct import *im, char **names,
    const struct rcimport_opts *o)
{
	fprintf(out,
	    "; idlefetch.conf made by `idlefetch import-fetchmailrc` "
	    "from %s.\n; Read the comments, then check it with: "
	    "idlefetch --check-config --config FILE\n\n[global]\n"
	    "state_dir = /var/lib/idlefetch\n",
	    o->source);
	if (im->syslog)
		fprintf(out, "log = syslog\n");
	if (im->logfile)
		fprintf(out, "; set logfile %s: idlefetch logs to stderr "
			     "(the journal under systemd), syslog or "
			     "JSON lines (log =)\n",
		    im->logfile);
	if (im->daemon)
		fprintf(out, "; set daemon %u: idlefetch waits with IDLE "
			     "and needs no polling; poll_interval = %u "
			     "below is for servers without IDLE\n",
		    im->daemon, im->daemon);
	write_notes(out, &im->g, o);
	for (size_t i = 0; i < im->nacct; i++)
		write_account(out, &im->accts[i], names[i], o, im->daemon);
}

int
rcimport(const char *text, const struct rcimport_opts *o, FILE *out,
    char *err, size_t errlen)
{
	struct import im = { .g = { .keep = -1 }, .defaults = { .keep = -1 } };
	char **names = NULL;
	const struct rctok *t;
	int r = check_opts(o, err, errlen);

	if (r == 0)
		r = rclex_new(text, o->source, &im.lx, err, errlen);
	while (r == 0 && (t = rclex_next(im.lx)) != NULL) {
		if (rclex_kw(t, "set")) {
			r = set_stmt(&im, o, err, errlen);
		} else if (rclex_starts_entry(t)) {
			r = entry(&im, t, o, err, errlen);
		} else {
			snprintf(err, errlen, "%s:%u: '%s' where poll, skip, "
			    "defaults or set was expected", o->source, t->line,
			    t->s);
			r = -EINVAL;
		}
	}
	if (r == 0 && im.nacct == 0) {
		snprintf(err, errlen, "%s: no poll entry with a user",
		    o->source);
		r = -EINVAL;
	}
	if (r == 0) {
		names = account_names(im.accts, im.nacct);
		r = save_passwords(&im, names, o, err, errlen);
	}
	if (r == 0)
		write_conf(out, &im, names, o);
	for (size_t i = 0; i < im.nacct; i++) {
		racct_free(&im.accts[i]);
		free(names ? names[i] : NULL);
	}
	free(names);
	free(im.accts);
	racct_free(&im.defaults);
	racct_free(&im.g);
	free(im.logfile);
	rclex_free(im.lx);
	return r;
}
