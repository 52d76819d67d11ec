/*
 * proto: reads the server's responses into a flat struct.
 *
 * idlefetch needs a small part of IMAP's response grammar: tagged and
 * untagged status responses with a few response codes, CAPABILITY, EXISTS,
 * EXPUNGE, and FETCH with UID, RFC822.SIZE and a body literal. It is read
 * here by hand, strictly, with every number checked against 32 bits;
 * anything else is skipped by its syntax. The framer has already cut each
 * unit complete, capped its size and replaced message bodies by "{0}".
 *
 * libetpan 1.9.4's parser is not used on server input: fuzzing showed it
 * crashing on "a1 OK [PERMANENTFLAGS (\\]", leaking on malformed FETCH
 * items (so a hostile server could grow our memory one response at a
 * time), wrapping numbers past 2^32 and rejecting Gmail's X-GM-LABELS.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/proto.h"
#include "idlefetch/util.h"

/* A cursor over one unit; parse functions advance it. */
struct cur {
	const char *p, *end;
};

/*
 * Copies one line of server text, keeping only printable ASCII so that it
 * is safe to log.
 */
static void
copy_text(char *dst, size_t cap, const char *src, const char *end)
{
	size_t o = 0;

	for (; src < end && *src != '\r' && *src != '\n' && o + 1 < cap; src++)
		dst[o++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
	dst[o] = '\0';
}

static bool
is_atom_char(char c)
{
	return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c);
}

/* Reads an atom (with ']' allowed only if brackets are) into buf. */
static bool
atom(struct cur *c, char *buf, size_t cap)
{
	size_t n = 0;

	while (c->p < c->end && is_atom_char(*c->p)) {
		if (n + 1 >= cap)
			return false;
		buf[n++] = *c->p++;
	}
	buf[n] = '\0';
	return n > 0;
}

static bool
sp(struct cur *c)
{
	if (c->p < c->end && *c->p == ' ') {
		c->p++;
		return true;
	}
	return false;
}

/* An unsigned 32-bit number; anything larger is a protocol error. */
static bool
number(struct cur *c, uint32_t *out)
{
	uint64_t v = 0;
	const char *start = c->p;

	while (c->p < c->end && isdigit((unsigned char)*c->p)) {
		v = v * 10 + (uint64_t)(*c->p++ - '0');
		if (v > UINT32_MAX)
			return false;
	}
	*out = (uint32_t)v;
	return c->p > start;
}

static uint32_t
cap_bit(const char *name)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{ "IMAP4rev1", CAP_IMAP4REV1 },
		{ "IDLE", CAP_IDLE },
		{ "STARTTLS", CAP_STARTTLS },
		{ "LOGINDISABLED", CAP_LOGINDISABLED },
		{ "SASL-IR", CAP_SASL_IR },
		{ "UIDPLUS", CAP_UIDPLUS },
		{ "MOVE", CAP_MOVE },
		{ "LITERAL+", CAP_LITERALPLUS },
		{ "NOTIFY", CAP_NOTIFY },
		{ "SPECIAL-USE", CAP_SPECIAL_USE },
		{ "LIST-EXTENDED", CAP_LIST_EXTENDED },
		{ "AUTH=PLAIN", CAP_AUTH_PLAIN },
		{ "AUTH=XOAUTH2", CAP_AUTH_XOAUTH2 },
		{ "AUTH=OAUTHBEARER", CAP_AUTH_OAUTHBEARER },
	};

	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (strcasecmp(name, names[i].name) == 0)
			return names[i].bit;
	return 0;
}

/* Reads "SP atom" repeatedly: a capability list. */
static void
capabilities(struct cur *c, struct proto_resp *out)
{
	char name[128];

	out->has |= HAS_CAPS;
	out->caps = 0;
	while (sp(c)) {
		if (!atom(c, name, sizeof(name)))
			break;
		out->caps |= cap_bit(name);
	}
}

/*
 * "[" code "]" SP: the codes the session uses are read, others skipped up
 * to the closing bracket.
 */
static int
resp_code(struct cur *c, struct proto_resp *out)
{
	char name[64];

	c->p++; /* '[' */
	if (!atom(c, name, sizeof(name)))
		return IDLEFETCH_EPROTO;
	if (strcasecmp(name, "CAPABILITY") == 0) {
		capabilities(c, out);
	} else if (strcasecmp(name, "UIDVALIDITY") == 0) {
		if (!sp(c) || !number(c, &out->uidvalidity) ||
		    out->uidvalidity == 0)
			return IDLEFETCH_EPROTO;
		out->has |= HAS_UIDVALIDITY;
	} else if (strcasecmp(name, "UIDNEXT") == 0) {
		if (!sp(c) || !number(c, &out->uidnext))
			return IDLEFETCH_EPROTO;
		out->has |= HAS_UIDNEXT;
	} else if (strcasecmp(name, "READ-ONLY") == 0) {
		out->has |= HAS_READONLY;
	} else if (strcasecmp(name, "ALERT") == 0) {
		out->has |= HAS_ALERT;
	} else if (strcasecmp(name, "NOTIFICATIONOVERFLOW") == 0) {
		out->has |= HAS_OVERFLOW;
	} else if (strcasecmp(name, "UNAVAILABLE") == 0 ||
	    strcasecmp(name, "INUSE") == 0 ||
	    strcasecmp(name, "THROTTLED") == 0) {
		out->has |= HAS_BUSY;
	}
	while (c->p < c->end && *c->p != ']' && *c->p != '\r')
		c->p++;
	if (c->p == c->end || *c->p != ']')
		return IDLEFETCH_EPROTO;
	c->p++;
	sp(c);
	return 0;
}

/*
 * "throttled" in the text; "Backoff Time: N milliseconds" (or seconds)
 * gives retry_ms, at most 10 minutes.
 */
static void
busy_text(struct proto_resp *out)
{
	const char *b;
	unsigned long long n = 0;

	if (strcasestr(out->text, "throttled") == NULL)
		return;
	out->has |= HAS_BUSY;
	b = strcasestr(out->text, "backoff time:");
	if (b == NULL)
		return;
	for (b += 13; *b == ' '; b++)
		;
	for (; *b >= '0' && *b <= '9' && n < 1000000000ull; b++)
		n = n * 10 + (unsigned long long)(*b - '0');
	while (*b == ' ')
		b++;
	if (strncasecmp(b, "ms", 2) != 0 && strncasecmp(b, "milli", 5) != 0)
		n *= 1000;
	out->retry_ms = (uint32_t)(n > 600000 ? 600000 : n);
}

/* After "OK"/"NO"/...: optional SP, optional [code], text. */
static int
resp_text(struct cur *c, struct proto_resp *out)
{
	int r = 0;

	sp(c);
	if (c->p < c->end && *c->p == '[')
		r = resp_code(c, out);
	copy_text(out->text, sizeof(out->text), c->p, c->end);
	busy_text(out);
	return r;
}

static enum proto_status
status_word(const char *w)
{
	static const struct {
		const char *w;
		enum proto_status st;
	} words[] = {
		{ "OK", PROTO_OK },
		{ "NO", PROTO_NO },
		{ "BAD", PROTO_BAD },
		{ "BYE", PROTO_BYE },
		{ "PREAUTH", PROTO_PREAUTH },
	};

	for (size_t i = 0; i < ARRAY_LEN(words); i++)
		if (strcasecmp(w, words[i].w) == 0)
			return words[i].st;
	return PROTO_NONE;
}

/*
 * "{n}" or "{n+}", CRLF, then n bytes the framer kept in the unit: sets
 * *p and *n to those bytes and moves past them.
 */
static bool
literal(struct cur *c, const char **p, size_t *n)
{
	uint32_t len;

	c->p++; /* '{' */
	if (!number(c, &len))
		return false;
	if (c->p < c->end && *c->p == '+')
		c->p++;
	if (c->end - c->p < 3 || memcmp(c->p, "}\r\n", 3) != 0)
		return false;
	c->p += 3;
	if ((size_t)(c->end - c->p) < len)
		return false;
	*p = c->p;
	*n = len;
	c->p += len;
	return true;
}

/* Skips one IMAP value: atom, number, NIL, quoted, literal or (list). */
static bool
skip_value(struct cur *c, int depth)
{
	const char *lit;
	size_t n;

	if (c->p >= c->end || depth > 32)
		return false;
	switch (*c->p) {
	case '"':
		for (c->p++; c->p < c->end && *c->p != '"'; c->p++)
			if (*c->p == '\\' && c->p + 1 < c->end)
				c->p++;
		if (c->p >= c->end)
			return false;
		c->p++;
		return true;
	case '{':
		return literal(c, &lit, &n);
	case '(':
		c->p++;
		while (c->p < c->end && *c->p != ')') {
			if (*c->p == ' ')
				c->p++;
			else if (!skip_value(c, depth + 1))
				return false;
		}
		if (c->p >= c->end)
			return false;
		c->p++;
		return true;
	default:
		/* An atom, possibly with a [section] and <partial> (BODY[1]<0>). */
		if (!is_atom_char(*c->p) && *c->p != '\\')
			return false;
		while (c->p < c->end && *c->p != ' ' && *c->p != ')' &&
		    *c->p != '(') {
			if (*c->p == '[') {
				while (c->p < c->end && *c->p != ']')
					c->p++;
				if (c->p >= c->end)
					return false;
			}
			c->p++;
		}
		return true;
	}
}

/*
 * The value of a header-fields item: a literal (kept in the unit by the
 * framer), a quoted string or NIL. Sets *p and *n; false if malformed.
 */
static bool
string_value(struct cur *c, const char **p, size_t *n)
{
	if (c->end - c->p >= 3 && strncasecmp(c->p, "NIL", 3) == 0) {
		c->p += 3;
		*p = c->p;
		*n = 0;
		return true;
	}
	if (c->p < c->end && *c->p == '"') {
		*p = c->p + 1;
		if (!skip_value(c, 0))
			return false;
		*n = (size_t)(c->p - 1 - *p);
		return true;
	}
	if (c->p >= c->end || *c->p != '{')
		return false;
	return literal(c, p, n);
}

/*
 * "* n FETCH (item value ...)": reads UID, RFC822.SIZE, where the header
 * fields asked for are, and whether a message body (BODY[] or RFC822) came
 * as a literal; skips anything else
 * (FLAGS, MODSEQ, INTERNALDATE, X-GM-LABELS, ...) by its syntax.
 */
static int
parse_fetch(struct cur *c, struct proto_resp *out)
{
	char name[64];

	out->has |= HAS_FETCH;
	if (!sp(c) || c->p >= c->end || *c->p != '(')
		return IDLEFETCH_EPROTO;
	c->p++;
	while (c->p < c->end && *c->p != ')') {
		size_t n = 0;

		bool in_section = false;

		/* An item name, with a [section] that may hold spaces. */
		while (c->p < c->end && (in_section || *c->p != ' ')) {
			if (n + 1 >= sizeof(name) || *c->p == '\r')
				return IDLEFETCH_EPROTO;
			if (*c->p == '[')
				in_section = true;
			else if (*c->p == ']')
				in_section = false;
			name[n++] = *c->p++;
		}
		name[n] = '\0';
		if (in_section || n == 0 || !sp(c))
			return IDLEFETCH_EPROTO;
		if (strcasecmp(name, "UID") == 0) {
			if (!number(c, &out->uid) || out->uid == 0)
				return IDLEFETCH_EPROTO;
			out->has |= HAS_UID;
		} else if (strcasecmp(name, "RFC822.SIZE") == 0) {
			if (!number(c, &out->size))
				return IDLEFETCH_EPROTO;
			out->has |= HAS_SIZE;
		} else if (strncasecmp(name, "BODY[HEADER.FIELDS", 18) == 0) {
			const char *v;
			size_t vn;

			if (!string_value(c, &v, &vn))
				return IDLEFETCH_EPROTO;
			out->hdr = v;
			out->hdr_len = vn;
			out->has |= HAS_HDR;
		} else {
			if ((strcasecmp(name, "BODY[]") == 0 ||
				strcasecmp(name, "RFC822") == 0) &&
			    *c->p == '{')
				out->has |= HAS_BODY;
			if (!skip_value(c, 0))
				return IDLEFETCH_EPROTO;
		}
		sp(c);
	}
	if (c->p >= c->end || c->p + 1 != c->end)
		return IDLEFETCH_EPROTO;
	return 0;
}

/*
 * A mailbox name (RFC 3501 mailbox: astring) into out->name, as a quoted
 * string, an atom or a literal; kept only if printable and short (else
 * left empty: not a name we could have configured).
 */
static int
read_name(struct cur *c, struct proto_resp *out)
{
	const char *v;
	size_t n;
	bool quoted;

	out->name[0] = '\0';
	if (c->p >= c->end)
		return IDLEFETCH_EPROTO;
	quoted = *c->p == '"';
	if (*c->p == '"' || *c->p == '{') {
		if (!string_value(c, &v, &n))
			return IDLEFETCH_EPROTO;
	} else {
		v = c->p;
		if (!skip_value(c, 0))
			return IDLEFETCH_EPROTO;
		n = (size_t)(c->p - v);
	}
	if (n == 0 || n >= sizeof(out->name))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] >= 0x7f)
			return 0;
	memcpy(out->name, v, n);
	out->name[n] = '\0';
	/* Quoted: undo the two escapes a quoted string may hold. */
	if (quoted) {
		char *w = out->name;

		for (char *r = out->name; *r; r++) {
			if (*r == '\\' && r[1])
				r++;
			*w++ = *r;
		}
		*w = '\0';
	}
	return 0;
}

/*
 * "* STATUS name (MESSAGES n UIDNEXT n UIDVALIDITY n ...)" (RFC 3501
 * 7.2.4), the answer to STATUS and, with NOTIFY (RFC 5465 5.2), news of a
 * folder that is not selected.
 */
static int
parse_status(struct cur *c, struct proto_resp *out)
{
	char item[32];
	uint32_t v;

	if (!sp(c) || read_name(c, out) < 0 || !sp(c) || c->p >= c->end ||
	    *c->p != '(')
		return IDLEFETCH_EPROTO;
	c->p++;
	while (c->p < c->end && *c->p != ')') {
		if (!atom(c, item, sizeof(item)) || !sp(c) || !number(c, &v))
			return IDLEFETCH_EPROTO;
		if (strcasecmp(item, "UIDNEXT") == 0) {
			out->status_uidnext = v;
			out->has |= HAS_STATUS_UIDNEXT;
		} else if (strcasecmp(item, "UIDVALIDITY") == 0) {
			out->status_uidvalidity = v;
		} else if (strcasecmp(item, "MESSAGES") == 0) {
			out->status_messages = v;
		}
		if (c->p < c->end && *c->p == ' ')
			c->p++;
	}
	if (c->p >= c->end || c->p + 1 != c->end)
		return IDLEFETCH_EPROTO;
	if (out->name[0])
		out->has |= HAS_STATUS;
	return 0;
}

/*
 * "* LIST (flags) delim name" (RFC 3501 7.2.2): the name as a quoted
 * string, an atom or a literal, kept only if printable and short.
 */
static int
parse_list(struct cur *c, struct proto_resp *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} flags[] = {
		{ "\\Noselect", LISTF_NOSELECT },
		{ "\\NonExistent", LISTF_NONEXISTENT },
		{ "\\Subscribed", LISTF_SUBSCRIBED },
		{ "\\All", LISTF_VIRTUAL },
		{ "\\Flagged", LISTF_VIRTUAL },
		{ "\\Important", LISTF_VIRTUAL },
	};
	const char *start;

	if (!sp(c) || c->p >= c->end || *c->p != '(')
		return IDLEFETCH_EPROTO;
	start = c->p;
	if (!skip_value(c, 0) || !sp(c))
		return IDLEFETCH_EPROTO;
	/* The flags: words between the parentheses (RFC 3501 7.2.2). */
	for (const char *p = start + 1; p < c->p - 2;) {
		const char *e = p;

		while (e < c->p - 2 && *e != ' ')
			e++;
		for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
			if ((size_t)(e - p) == strlen(flags[i].name) &&
			    strncasecmp(p, flags[i].name, (size_t)(e - p)) == 0)
				out->list_flags |= flags[i].bit;
		p = e + 1;
	}
	if (c->end - c->p >= 3 && strncasecmp(c->p, "NIL", 3) == 0) {
		out->list_delim = 0;
		c->p += 3;
	} else if (c->end - c->p >= 3 && c->p[0] == '"' && c->p[2] == '"') {
		out->list_delim = c->p[1];
		c->p += 3;
	} else if (c->end - c->p >= 4 && c->p[0] == '"' && c->p[1] == '\\' &&
	    c->p[3] == '"') {
		out->list_delim = c->p[2];
		c->p += 4;
	} else {
		return IDLEFETCH_EPROTO;
	}
	if (!sp(c) || read_name(c, out) < 0)
		return IDLEFETCH_EPROTO;
	if (out->name[0])
		out->has |= HAS_LIST;
	return 0;
}

/* "* n WORD ...": EXISTS, EXPUNGE, FETCH; others (RECENT) are ignored. */
static int
numbered(struct cur *c, struct proto_resp *out)
{
	char word[32];

	if (!number(c, &out->seq) || !sp(c) || !atom(c, word, sizeof(word)))
		return IDLEFETCH_EPROTO;
	if (strcasecmp(word, "EXISTS") == 0) {
		out->exists = out->seq;
		out->has |= HAS_EXISTS;
		return 0;
	}
	if (strcasecmp(word, "EXPUNGE") == 0) {
		if (out->seq == 0)
			return IDLEFETCH_EPROTO;
		out->has |= HAS_EXPUNGE;
		return 0;
	}
	if (strcasecmp(word, "FETCH") == 0)
		return parse_fetch(c, out);
	return 0;
}

int
proto_parse(const char *unit, size_t len, bool greeting, struct proto_resp *out)
{
	struct cur c = { unit, unit + len };
	char word[64];

	memset(out, 0, sizeof(*out));
	if (len < 3 || unit[len - 2] != '\r' || unit[len - 1] != '\n')
		return IDLEFETCH_EPROTO;
	c.end = unit + len - 2;
	if (unit[0] == '+' && !greeting) {
		out->kind = PROTO_CONTINUE;
		copy_text(out->text, sizeof(out->text), unit + 1, c.end);
		return 0;
	}
	if (unit[0] == '*') {
		out->kind = greeting ? PROTO_GREETING : PROTO_UNTAGGED;
		c.p++;
		if (!sp(&c))
			return IDLEFETCH_EPROTO;
		if (isdigit((unsigned char)*c.p))
			return greeting ? IDLEFETCH_EPROTO : numbered(&c, out);
		if (!atom(&c, word, sizeof(word)))
			return IDLEFETCH_EPROTO;
		out->status = status_word(word);
		if (out->status != PROTO_NONE)
			return resp_text(&c, out);
		if (greeting)
			return IDLEFETCH_EPROTO;
		if (strcasecmp(word, "CAPABILITY") == 0)
			capabilities(&c, out);
		if (strcasecmp(word, "LSUB") == 0)
			out->list_flags |= LISTF_LSUB;
		if (strcasecmp(word, "LIST") == 0 ||
		    strcasecmp(word, "LSUB") == 0)
			return parse_list(&c, out);
		if (strcasecmp(word, "STATUS") == 0)
			return parse_status(&c, out);
		return 0; /* FLAGS, SEARCH, ...: nothing we use */
	}
	if (greeting)
		return IDLEFETCH_EPROTO;
	out->kind = PROTO_TAGGED;
	if (!atom(&c, out->tag, sizeof(out->tag)) || !sp(&c) ||
	    !atom(&c, word, sizeof(word)))
		return IDLEFETCH_EPROTO;
	out->status = status_word(word);
	if (out->status != PROTO_OK && out->status != PROTO_NO &&
	    out->status != PROTO_BAD)
		return IDLEFETCH_EPROTO;
	return resp_text(&c, out);
}

int
proto_quote(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	if (cap < 3)
		return -ENOSPC;
	dst[o++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\r' || c == '\n' || c >= 0x80)
			return -EINVAL;
		if (o + 4 > cap)
			return -ENOSPC;
		if (c == '"' || c == '\\')
			dst[o++] = '\\';
		dst[o++] = (char)c;
	}
	dst[o++] = '"';
	dst[o] = '\0';
	return 0;
}

int
proto_uid_set(char *dst, size_t cap, const uint32_t *uids, size_t n)
{
	size_t o = 0, i = 0;

	if (cap == 0)
		return -ENOSPC;
	dst[0] = '\0';
	while (i < n) {
		size_t j = i;
		int w;

		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (j > i)
			w = snprintf(dst + o, cap - o, "%s%u:%u", o ? "," : "",
			    uids[i], uids[j]);
		else
			w = snprintf(dst + o, cap - o, "%s%u", o ? "," : "",
			    uids[i]);
		if (w < 0 || (size_t)w >= cap - o)
			return -ENOSPC;
		o += (size_t)w;
		i = j + 1;
	}
	return (int)o;
}
