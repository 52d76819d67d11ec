/*
 * rclex: the words of a fetchmailrc (see idlefetch/rclex.h). Every word's
 * text goes to one buffer that the file's length bounds, so that memory
 * follows the file and not the number of its words times its length.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "idlefetch/rclex.h"
#include "idlefetch/util.h"

struct rclex {
	struct rctok *v;
	size_t n, cap, pos;
	char *buf; /* every word's text, NUL-terminated, one after another */
	size_t buflen;
};

static const char *const noise[] = { "and", "with", "has", "wants", "options",
	"=", "here", "there", "to", "is" };

static bool
is_noise(const struct rctok *t)
{
	if (t->quoted)
		return false;
	for (size_t i = 0; i < ARRAY_LEN(noise); i++)
		if (strcasecmp(t->s, noise[i]) == 0)
			return true;
	return false;
}

static void
push(struct rclex *lx, const char *s, unsigned line, bool quoted)
{
	if (lx->n == lx->cap) {
		lx->cap = lx->cap ? lx->cap * 2 : 64;
		lx->v = xrealloc(lx->v, lx->cap * sizeof(*lx->v));
	}
	lx->v[lx->n++] = (struct rctok){ s, line, quoted };
}

/*
 * The last word must hold no control character: whatever it is, it ends
 * up in the output, and there a line break starts a line of its own.
 */
static int
no_ctl(const struct rclex *lx, const char *source, char *err, size_t errlen)
{
	const struct rctok *t = &lx->v[lx->n - 1], *k = NULL;
	const unsigned char *c = (const unsigned char *)t->s;

	while (*c >= 0x20 && *c != 0x7f)
		c++;
	if (*c == '\0')
		return 0;
	/* The keyword it belongs to: the last plain word before it. */
	for (size_t i = lx->n - 1; i-- > 0 && k == NULL;)
		if (!lx->v[i].quoted && !is_noise(&lx->v[i]))
			k = &lx->v[i];
	snprintf(err, errlen,
	    "%s:%u: %s%s%s holds a control character "
	    "(0x%02x), which idlefetch.conf cannot hold",
	    source, t->line, k ? "the value after '" : "a word", k ? k->s : "",
	    k ? "'" : "", *c);
	return -EINVAL;
}

/*
 * The quoted string at p (just past its opening quote q) copied into d
 * without its escapes; returns the end of its text (at q, or at the NUL
 * if it is not closed) and counts the lines it spans.
 */
static const char *
unquote(const char *p, char q, char *d, unsigned *line)
{
	while (*p && *p != q) {
		if (*p == '\\' && p[1])
			p++;
		if (*p == '\n')
			(*line)++;
		*d++ = *p++;
	}
	*d = '\0';
	return p;
}

/*
 * A word takes no more of lx->buf than it spans in p, and its NUL the
 * separator, quote or comment after it (the last one, a byte more).
 */
static int
lex(struct rclex *lx, const char *p, const char *source, char *err,
    size_t errlen)
{
	unsigned line = 1;
	char *d = lx->buf;

	while (*p) {
		if (*p == '\n')
			line++;
		if (isspace((unsigned char)*p) || *p == ',' || *p == ':' ||
		    *p == ';') {
			p++;
			continue;
		} else if (*p == '#') {
			while (*p && *p != '\n')
				p++;
			continue;
		} else if (*p == '"' || *p == '\'') {
			unsigned at = line;
			char q = *p++;

			p = unquote(p, q, d, &line);
			if (*p != q) {
				snprintf(err, errlen,
				    "%s:%u: a quoted string "
				    "is not closed",
				    source, at);
				return -EINVAL;
			}
			p++;
			push(lx, d, at, true);
		} else {
			size_t k = strcspn(p, " \t\r\n,:;#\"'");

			/* "=" stands alone as noise, or ends a word. */
			memcpy(d, p, k);
			d[k] = '\0';
			push(lx, d, line, false);
			p += k;
		}
		d += strlen(d) + 1;
		if (no_ctl(lx, source, err, errlen) < 0)
			return -EINVAL;
	}
	return 0;
}

int
rclex_new(const char *text, const char *source, struct rclex **out, char *err,
    size_t errlen)
{
	struct rclex *lx = xcalloc(1, sizeof(*lx));
	int r;

	lx->buflen = strlen(text) + 2;
	lx->buf = xmalloc(lx->buflen);
	r = lex(lx, text, source, err, errlen);
	if (r < 0) {
		rclex_free(lx);
		return r;
	}
	*out = lx;
	return 0;
}

void
rclex_free(struct rclex *lx)
{
	if (lx == NULL)
		return;
	OPENSSL_cleanse(lx->buf, lx->buflen);
	free(lx->buf);
	free(lx->v);
	free(lx);
}

const struct rctok *
rclex_next(struct rclex *lx)
{
	while (lx->pos < lx->n && is_noise(&lx->v[lx->pos]))
		lx->pos++;
	return lx->pos < lx->n ? &lx->v[lx->pos++] : NULL;
}

const struct rctok *
rclex_peek(struct rclex *lx)
{
	size_t at = lx->pos;
	const struct rctok *t = rclex_next(lx);

	lx->pos = at;
	return t;
}

const struct rctok *
rclex_value(struct rclex *lx, const struct rctok *k, const char *source,
    char *err, size_t errlen)
{
	const struct rctok *v = rclex_next(lx);

	if (v == NULL)
		snprintf(err, errlen, "%s:%u: '%s' needs a value", source,
		    k->line, k->s);
	return v;
}

bool
rclex_after(const struct rclex *lx, const char *word)
{
	return lx->pos >= 2 && rclex_kw(&lx->v[lx->pos - 2], word);
}

bool
rclex_kw(const struct rctok *t, const char *word)
{
	return t && !t->quoted && strcasecmp(t->s, word) == 0;
}

bool
rclex_is_keyword(const struct rctok *t)
{
	static const char *const words[] = { "via", "protocol", "proto", "port",
		"service", "timeout", "auth", "authenticate", "pass",
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

bool
rclex_starts_entry(const struct rctok *t)
{
	return rclex_kw(t, "poll") || rclex_kw(t, "skip") ||
	    rclex_kw(t, "server") || rclex_kw(t, "defaults") ||
	    rclex_kw(t, "set");
}
