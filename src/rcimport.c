/*
 * rcimport: a fetchmailrc read the way fetchmail's own grammar reads it
 * (keywords, quoted strings, "noise" words such as `with` and `and`, and
 * `,` `:` `;` as spaces), and written out as idlefetch.conf sections (see
 * idlefetch/rcimport.h).
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
#include "idlefetch/util.h"

struct tok {
	char *s;
	unsigned line;
	bool quoted;
};

struct lexer {
	struct tok *v;
	size_t n, cap, pos;
};

/* One account: a poll entry's server options with one user's options. */
struct racct {
	char *host, *via, *proto, *user, *pass, *local, *folders, *mda;
	char *sslproto, *sslcertfile, *sslfp, *auth;
	unsigned port, timeout, line;
	int keep; /* -1: not said (fetchmail then deletes) */
	bool ssl, skip, fetchall, idle, sslcertck;
	char *notes; /* "; ..." lines */
};

static void
push(struct lexer *lx, char *s, unsigned line, bool quoted)
{
	if (lx->n == lx->cap) {
		lx->cap = lx->cap ? lx->cap * 2 : 64;
		lx->v = xrealloc(lx->v, lx->cap * sizeof(*lx->v));
	}
	lx->v[lx->n++] = (struct tok){ s, line, quoted };
}

static int
lex(struct lexer *lx, const char *p, const struct rcimport_opts *o,
    char *err, size_t errlen)
{
	unsigned line = 1;

	while (*p) {
		if (*p == '\n')
			line++;
		if (isspace((unsigned char)*p) || *p == ',' || *p == ':' ||
		    *p == ';') {
			p++;
		} else if (*p == '#') {
			while (*p && *p != '\n')
				p++;
		} else if (*p == '"' || *p == '\'') {
			char q = *p++, *s = xmalloc(strlen(p) + 1);
			size_t k = 0;
			unsigned at = line;

			while (*p && *p != q) {
				if (*p == '\\' && p[1])
					p++;
				if (*p == '\n')
					line++;
				s[k++] = *p++;
			}
			if (*p != q) {
				free(s);
				snprintf(err, errlen, "%s:%u: a quoted string "
				    "is not closed", o->source, at);
				return -EINVAL;
			}
			p++;
			s[k] = '\0';
			push(lx, s, at, true);
		} else {
			size_t k = strcspn(p, " \t\r\n,:;#\"'");

			/* "=" stands alone as noise, or ends a word. */
			push(lx, xstrndup(p, k), line, false);
			p += k;
		}
	}
	return 0;
}

static const char *const noise[] = { "and", "with", "has", "wants",
	"options", "=", "here", "there", "to", "is" };

static bool
is_noise(const struct tok *t)
{
	if (t->quoted)
		return false;
	for (size_t i = 0; i < ARRAY_LEN(noise); i++)
		if (strcasecmp(t->s, noise[i]) == 0)
			return true;
	return false;
}

/* The next token that is not noise, or NULL. */
static struct tok *
next(struct lexer *lx)
{
	while (lx->pos < lx->n && is_noise(&lx->v[lx->pos]))
		lx->pos++;
	return lx->pos < lx->n ? &lx->v[lx->pos++] : NULL;
}

static struct tok *
peek(struct lexer *lx)
{
	size_t at = lx->pos;
	struct tok *t = next(lx);

	lx->pos = t ? lx->pos - 1 : at;
	return t;
}

static bool
kw(const struct tok *t, const char *word)
{
	return t && !t->quoted && strcasecmp(t->s, word) == 0;
}

static void
note(struct racct *a, const char *fmt, ...)
{
	char buf[512];
	size_t n = a->notes ? strlen(a->notes) : 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	a->notes = xrealloc(a->notes, n + strlen(buf) + 4);
	sprintf(a->notes + n, "; %s\n", buf);
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
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
}

static void
racct_free(struct racct *a)
{
	for (size_t i = 0; i < ARRAY_LEN(racct_strs); i++)
		free(*racct_str(a, i));
}

/* A keyword's value: the next token, which must exist. */
static const char *
value(struct lexer *lx, const struct tok *k, const struct rcimport_opts *o,
    char *err, size_t errlen)
{
	struct tok *v = next(lx);

	if (v == NULL) {
		snprintf(err, errlen, "%s:%u: '%s' needs a value", o->source,
		    k->line, k->s);
		return NULL;
	}
	return v->s;
}

/* Words with a meaning here: a folder list ends before one. */
static bool
is_keyword(const struct tok *t)
{
	static const char *const words[] = { "via", "protocol", "proto",
		"port", "service", "timeout", "auth", "authenticate", "pass",
		"password", "keep", "nokeep", "no", "fetchall", "idle", "ssl",
		"sslcertck", "sslproto", "sslcertfile", "sslfingerprint",
		"folder", "folders", "mda", "user", "username", "limit",
		"fetchlimit", "poll", "skip", "server", "defaults", "set" };

	if (t == NULL || t->quoted)
		return false;
	for (size_t i = 0; i < ARRAY_LEN(words); i++)
		if (strcasecmp(t->s, words[i]) == 0)
			return true;
	return false;
}

static bool
starts_entry(const struct tok *t)
{
	return kw(t, "poll") || kw(t, "skip") || kw(t, "server") ||
	    kw(t, "defaults") || kw(t, "set");
}

/*
 * A server or user option at t, applied to a. Returns 1 if it was one, 0
 * if t is no option this importer knows (noted and skipped), -EINVAL.
 */
static int
option(struct lexer *lx, struct tok *t, struct racct *a,
    const struct rcimport_opts *o, char *err, size_t errlen)
{
	const char *v;

#define VALUE()                                              \
	do {                                                 \
		v = value(lx, t, o, err, errlen);            \
		if (v == NULL)                               \
			return -EINVAL;                      \
	} while (0)
	if (kw(t, "via")) {
		VALUE();
		set_str(&a->via, v);
	} else if (kw(t, "protocol") || kw(t, "proto")) {
		VALUE();
		set_str(&a->proto, v);
	} else if (kw(t, "port") || kw(t, "service")) {
		VALUE();
		a->port = (unsigned)strtoul(v, NULL, 10);
	} else if (kw(t, "timeout")) {
		VALUE();
		a->timeout = (unsigned)strtoul(v, NULL, 10);
	} else if (kw(t, "auth") || kw(t, "authenticate")) {
		VALUE();
		set_str(&a->auth, v);
	} else if (kw(t, "pass") || kw(t, "password")) {
		VALUE();
		set_str(&a->pass, v);
	} else if (kw(t, "keep")) {
		a->keep = 1;
	} else if (kw(t, "nokeep")) {
		a->keep = 0;
	} else if (kw(t, "no")) {
		struct tok *w = next(lx);

		if (kw(w, "keep"))
			a->keep = 0;
		else if (kw(w, "idle"))
			a->idle = false;
		else if (kw(w, "fetchall"))
			a->fetchall = false;
		else if (w)
			note(a, "no %s: idlefetch has no such setting", w->s);
	} else if (kw(t, "fetchall")) {
		a->fetchall = true;
	} else if (kw(t, "idle")) {
		a->idle = true;
	} else if (kw(t, "ssl")) {
		a->ssl = true;
	} else if (kw(t, "sslcertck")) {
		a->sslcertck = true;
	} else if (kw(t, "sslproto")) {
		VALUE();
		set_str(&a->sslproto, v);
	} else if (kw(t, "sslcertfile")) {
		VALUE();
		set_str(&a->sslcertfile, v);
	} else if (kw(t, "sslfingerprint")) {
		VALUE();
		set_str(&a->sslfp, v);
	} else if (kw(t, "folder") || kw(t, "folders")) {
		/* One or more names, up to the next keyword. */
		char buf[1024] = "";

		VALUE();
		snprintf(buf, sizeof(buf), "%s", v);
		while (peek(lx) && !is_keyword(peek(lx))) {
			size_t n = strlen(buf);

			snprintf(buf + n, sizeof(buf) - n, ", %s", next(lx)->s);
		}
		set_str(&a->folders, buf);
	} else if (kw(t, "mda")) {
		VALUE();
		set_str(&a->mda, v);
	} else if (kw(t, "limit") || kw(t, "fetchlimit") ||
	    kw(t, "batchlimit") || kw(t, "expunge") || kw(t, "smtphost") ||
	    kw(t, "smtpname") || kw(t, "interval") || kw(t, "tracepolls") ||
	    kw(t, "principal") || kw(t, "envelope") || kw(t, "qvirtual") ||
	    kw(t, "preconnect") || kw(t, "postconnect") || kw(t, "plugin") ||
	    kw(t, "plugout") || kw(t, "localdomains") || kw(t, "bsmtp") ||
	    kw(t, "lmtp") || kw(t, "antispam") || kw(t, "warnings")) {
		VALUE();
		note(a, "%s %s: no counterpart in idlefetch", t->s, v);
	} else {
		note(a, "%s: no counterpart in idlefetch", t->s);
		return 0;
	}
	return 1;
#undef VALUE
}

/* Account names: letters, digits, '.', '_', '-'. */
static char *
account_name(const struct racct *a, char **used, size_t nused)
{
	const char *u = a->user ? a->user : "account";
	char base[64], *name;
	size_t k = 0;

	for (; *u && *u != '@' && k + 1 < sizeof(base); u++)
		base[k++] = (isalnum((unsigned char)*u) || *u == '.' ||
				*u == '_' || *u == '-') ? *u : '_';
	base[k] = '\0';
	name = xstrdup(k ? base : "account");
	for (unsigned i = 2;; i++) {
		bool dup = false;

		for (size_t j = 0; j < nused; j++)
			dup |= strcmp(used[j], name) == 0;
		if (!dup)
			return name;
		free(name);
		name = xasprintf("%s-%u", base, i);
	}
}

static bool
is_imap(const struct racct *a)
{
	return a->proto == NULL || strcasecmp(a->proto, "IMAP") == 0 ||
	    strcasecmp(a->proto, "auto") == 0;
}

/* The account's lines; a skipped or non-IMAP one goes out commented. */
static void
write_account(FILE *out, const struct racct *a, const char *name,
    const struct rcimport_opts *o, unsigned daemon)
{
	const char *host = a->via ? a->via : a->host;
	const char *c = a->skip || !is_imap(a) ? "; " : "";
	bool imap = is_imap(a);
	const char *tls;
	unsigned port = a->port;

	fprintf(out, "\n; from the poll entry for %s at %s:%u\n", a->host,
	    o->source, a->line);
	if (a->skip)
		fprintf(out, "; `skip` in the fetchmailrc: written out but not "
			     "enabled\n");
	if (!imap) {
		fprintf(out, "; protocol %s: idlefetch speaks IMAP only; this "
			     "account is left out\n",
		    a->proto);
		c = "; ";
	}
	if (a->sslproto && *a->sslproto == '\0') {
		tls = "none";
		fprintf(out, "; sslproto '': fetchmail used no TLS. idlefetch "
			     "sends the password in clear only with tls = none\n");
	} else if (a->ssl || port == 993) {
		tls = "implicit";
	} else {
		tls = "starttls";
		fprintf(out, "; no `ssl`: fetchmail upgraded with STARTTLS when "
			     "offered and went on in clear when not. idlefetch "
			     "insists; write tls = none only if the server has "
			     "no TLS at all\n");
	}
	fprintf(out, "%s[account %s]\n%shost = %s\n", c, name, c, host);
	if (a->via)
		fprintf(out, "; via %s: idlefetch connects there, as fetchmail "
			     "did\n",
		    a->via);
	if (port)
		fprintf(out, "%sport = %u\n", c, port);
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
	fprintf(out, "%susername = %s\n", c, a->user ? a->user : "");
	if (a->auth && strcasecmp(a->auth, "password") != 0 &&
	    strcasecmp(a->auth, "any") != 0)
		fprintf(out, "; auth %s: idlefetch logs in with a password, or "
			     "with OAuth2 (auth = xoauth2 and "
			     "oauth_token_command)\n",
		    a->auth);
	if (a->pass && o->keep_passwords) {
		fprintf(out, "%spassword = %s\n", c, a->pass);
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
	if (a->keep == 1) {
		fprintf(out, "%safter = keep\n", c);
		if (!a->fetchall)
			fprintf(out, "; keep without fetchall: fetchmail skipped "
				     "messages already read on the server; "
				     "idlefetch fetches every new one, read or "
				     "not\n");
	} else {
		fprintf(out, "%safter = delete\n", c);
		fprintf(out, "; no `keep`: fetchmail deleted what it fetched; so "
			     "does after = delete, once it is safe in the "
			     "Maildir\n");
	}
	if (a->fetchall)
		fprintf(out, "; fetchall: not needed, idlefetch never skips read "
			     "mail\n");
	if (a->idle)
		fprintf(out, "; idle: idlefetch always uses IDLE where the "
			     "server has it, for every folder\n");
	if (a->timeout)
		fprintf(out, "%stimeout = %u\n", c, a->timeout);
	if (daemon)
		fprintf(out, "%spoll_interval = %u\n", c, daemon);
	if (a->notes)
		fputs(a->notes, out);
}

/* `set ...`: what of it is global. */
static int
set_stmt(struct lexer *lx, struct racct *g, unsigned *daemon, bool *syslog,
    char **logfile, const struct rcimport_opts *o, char *err, size_t errlen)
{
	struct tok *t = next(lx);
	const char *v;

	if (kw(t, "daemon")) {
		if ((v = value(lx, t, o, err, errlen)) == NULL)
			return -EINVAL;
		*daemon = (unsigned)strtoul(v, NULL, 10);
	} else if (kw(t, "syslog")) {
		*syslog = true;
	} else if (kw(t, "logfile")) {
		if ((v = value(lx, t, o, err, errlen)) == NULL)
			return -EINVAL;
		set_str(logfile, v);
	} else if (kw(t, "no") || kw(t, "invisible") || kw(t, "showdots")) {
		struct tok *w = kw(t, "no") ? next(lx) : NULL;

		note(g, "set %s%s%s: no counterpart in idlefetch", t->s,
		    w ? " " : "", w ? w->s : "");
	} else if (t) {
		struct tok *w = peek(lx);

		/* set postmaster "x", set idfile "x", ...: a value follows. */
		if (w && !starts_entry(w))
			next(lx);
		note(g, "set %s%s%s: no counterpart in idlefetch", t->s,
		    w && !starts_entry(w) ? " " : "",
		    w && !starts_entry(w) ? w->s : "");
	}
	return 0;
}

int
rcimport(const char *text, const struct rcimport_opts *o, FILE *out,
    char *err, size_t errlen)
{
	struct lexer lx = { 0 };
	struct racct g = { .keep = -1 }, defaults = { .keep = -1 }, srv, *accts = NULL;
	size_t nacct = 0;
	unsigned daemon = 0;
	bool syslog = false;
	char *logfile = NULL, **names;
	struct tok *t;
	int r = lex(&lx, text, o, err, errlen);

	while (r == 0 && (t = next(&lx)) != NULL) {
		if (kw(t, "set")) {
			r = set_stmt(&lx, &g, &daemon, &syslog, &logfile, o, err,
			    errlen);
			continue;
		}
		if (!kw(t, "poll") && !kw(t, "skip") && !kw(t, "server") &&
		    !kw(t, "defaults")) {
			snprintf(err, errlen,
			    "%s:%u: '%s' where poll, skip, defaults or set "
			    "was expected",
			    o->source, t->line, t->s);
			r = -EINVAL;
			break;
		}
		racct_copy(&srv, &defaults);
		srv.line = t->line;
		srv.skip = kw(t, "skip");
		if (!kw(t, "defaults")) {
			struct tok *h = next(&lx);

			if (h == NULL) {
				snprintf(err, errlen, "%s:%u: '%s' needs a host",
				    o->source, t->line, t->s);
				racct_free(&srv);
				r = -EINVAL;
				break;
			}
			set_str(&srv.host, h->s);
		}
		/* Server options, then one block per user. */
		while (r >= 0 && peek(&lx) && !starts_entry(peek(&lx))) {
			struct tok *u = next(&lx);

			if (kw(u, "user") || kw(u, "username")) {
				struct racct a;
				const char *v = value(&lx, u, o, err, errlen);

				if (v == NULL) {
					r = -EINVAL;
					break;
				}
				racct_copy(&a, &srv);
				set_str(&a.user, v);
				while (r >= 0 && peek(&lx) &&
				    !starts_entry(peek(&lx)) &&
				    !kw(peek(&lx), "user") &&
				    !kw(peek(&lx), "username")) {
					struct tok *w = next(&lx);

					/* "is LOCAL here" names a local user. */
					if (lx.pos >= 2 &&
					    kw(&lx.v[lx.pos - 2], "is")) {
						set_str(&a.local, w->s);
						continue;
					}
					if (option(&lx, w, &a, o, err, errlen) < 0)
						r = -EINVAL;
				}
				accts = xrealloc(accts,
				    (nacct + 1) * sizeof(*accts));
				accts[nacct++] = a;
				continue;
			}
			if (option(&lx, u, &srv, o, err, errlen) < 0)
				r = -EINVAL;
		}
		if (kw(t, "defaults")) {
			racct_free(&defaults);
			defaults = srv;
		} else {
			racct_free(&srv);
		}
	}
	if (r >= 0 && nacct == 0) {
		snprintf(err, errlen, "%s: no poll entry with a user", o->source);
		r = -EINVAL;
	}
	if (r >= 0) {
		fprintf(out,
		    "; idlefetch.conf made by `idlefetch import-fetchmailrc` "
		    "from %s.\n; Read the comments, then check it with: "
		    "idlefetch --check-config --config FILE\n\n[global]\n"
		    "state_dir = /var/lib/idlefetch\n",
		    o->source);
		if (syslog)
			fprintf(out, "log = syslog\n");
		if (logfile)
			fprintf(out, "; set logfile %s: idlefetch logs to stderr "
				     "(the journal under systemd), syslog or "
				     "JSON lines (log =)\n",
			    logfile);
		if (daemon)
			fprintf(out, "; set daemon %u: idlefetch waits with IDLE "
				     "and needs no polling; poll_interval = %u "
				     "below is for servers without IDLE\n",
			    daemon, daemon);
		if (g.notes)
			fputs(g.notes, out);
		names = xcalloc(nacct, sizeof(*names));
		for (size_t i = 0; i < nacct; i++) {
			names[i] = account_name(&accts[i], names, i);
			write_account(out, &accts[i], names[i], o, daemon);
		}
		for (size_t i = 0; i < nacct; i++)
			free(names[i]);
		free(names);
	}
	for (size_t i = 0; i < nacct; i++)
		racct_free(&accts[i]);
	free(accts);
	racct_free(&defaults);
	racct_free(&g);
	free(logfile);
	for (size_t i = 0; i < lx.n; i++)
		free(lx.v[i].s);
	free(lx.v);
	return r < 0 ? r : 0;
}
