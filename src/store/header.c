/*
 * header: Message-ID, Date and a hash of From and Subject from a header
 * block (see idlefetch/header.h).
 *
 * libetpan's envelope parser reads the Message-ID and the Date. Of its
 * RFC 5322 parsers it is the one that held under fuzzing, and only behind
 * the guard below: the header block alone, capped in size, no NUL byte (a
 * NUL silently cuts a value short, or ends the parse without an error),
 * and parentheses (comments, which it parses by recursion) nested no
 * deeper than HEADER_NEST_MAX.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libetpan/mailimf.h>

#include "idlefetch/header.h"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * FNV_PRIME;
	return h;
}

size_t
header_block_len(const char *p, size_t n)
{
	size_t i = 0;

	/* At each line's start: an empty line ends the block. */
	while (i < n) {
		const char *nl;

		if (p[i] == '\n')
			return i + 1;
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
			return i + 2;
		nl = memchr(p + i, '\n', n - i);
		if (nl == NULL)
			return n;
		i = (size_t)(nl - p) + 1;
	}
	return n;
}

/* Whether a field's name (up to the colon) is one the hash covers. */
static bool
hashed_field(const char *p, size_t n)
{
	return (n == 4 && strncasecmp(p, "from", 4) == 0) ||
	    (n == 7 && strncasecmp(p, "subject", 7) == 0);
}

/*
 * The From and Subject fields in their order, names in lower case, each
 * value unfolded with its runs of white space made one space: the same
 * whether the lines end in CRLF (a server) or LF (the Maildir).
 */
static uint64_t
hash_lines(const char *p, size_t n)
{
	uint64_t h = FNV_OFFSET;
	bool any = false;
	size_t i = 0;

	while (i < n) {
		size_t name = i, colon;
		bool space = false, lead = true;

		while (i < n && p[i] != ':' && p[i] != '\n')
			i++;
		colon = i;
		if (i >= n || p[i] != ':' || !hashed_field(p + name, colon - name)) {
			/* Not one of ours: skip it with its folded lines. */
			for (;;) {
				const char *nl = memchr(p + i, '\n', n - i);

				i = nl ? (size_t)(nl - p) + 1 : n;
				if (i >= n || (p[i] != ' ' && p[i] != '\t'))
					break;
			}
			continue;
		}
		any = true;
		for (size_t k = name; k < colon; k++) {
			char c = (char)(p[k] | 0x20);

			h = fnv(h, &c, 1);
		}
		h = fnv(h, ":", 1);
		for (i = colon + 1; i < n; i++) {
			char c = p[i];

			if (c == '\n') {
				if (i + 1 >= n || (p[i + 1] != ' ' && p[i + 1] != '\t'))
					break; /* the field ends */
				space = !lead;
				continue;
			}
			if (c == '\r')
				continue;
			if (c == ' ' || c == '\t') {
				space = !lead;
				continue;
			}
			if (space)
				h = fnv(h, " ", 1);
			h = fnv(h, &c, 1);
			space = lead = false;
		}
		h = fnv(h, "\n", 1);
		i++;
	}
	return any ? (h ? h : 1) : 0;
}

/* The deepest nesting of parentheses; stops counting past the limit. */
static bool
nesting_ok(const char *p, size_t n)
{
	unsigned depth = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '(' && ++depth > HEADER_NEST_MAX)
			return false;
		if (p[i] == ')' && depth > 0)
			depth--;
	}
	return true;
}

/* Seconds since the epoch, or 0 for a date out of range. */
static int64_t
date_seconds(const struct mailimf_date_time *d)
{
	struct tm tm;
	int zone = d->dt_zone, zh, zm;
	time_t t;

	if (d->dt_year < 1970 || d->dt_year > 9999 || d->dt_month < 1 ||
	    d->dt_month > 12 || d->dt_day < 1 || d->dt_day > 31 ||
	    d->dt_hour < 0 || d->dt_hour > 23 || d->dt_min < 0 ||
	    d->dt_min > 59 || d->dt_sec < 0 || d->dt_sec > 60 ||
	    zone < -9959 || zone > 9959)
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = d->dt_year - 1900;
	tm.tm_mon = d->dt_month - 1;
	tm.tm_mday = d->dt_day;
	tm.tm_hour = d->dt_hour;
	tm.tm_min = d->dt_min;
	tm.tm_sec = d->dt_sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return 0;
	zh = (zone < 0 ? -zone : zone) / 100;
	zm = (zone < 0 ? -zone : zone) % 100;
	return (int64_t)t - (zone < 0 ? -1 : 1) * (zh * 3600 + zm * 60);
}

/* A Message-ID kept as "<id>": printable, no white space, short enough. */
static void
keep_msgid(const char *id, struct header_info *out)
{
	size_t n = strlen(id);

	if (n == 0 || n + 3 > sizeof(out->msgid))
		return;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f)
			return;
	snprintf(out->msgid, sizeof(out->msgid), "<%s>", id);
}

/*
 * libetpan's envelope parser on a header block of len bytes, behind the
 * guard: not too long, no NUL, not nested too deep. *f is the caller's
 * to free (mailimf_fields_free) when 0 is returned.
 */
static int
guarded_parse(const char *p, size_t len, struct mailimf_fields **f)
{
	size_t idx = 0;

	if (len > HEADER_MAX)
		return -E2BIG;
	if (memchr(p, '\0', len) != NULL)
		return -EINVAL;
	if (!nesting_ok(p, len))
		return -ELOOP;
	if (mailimf_envelope_and_optional_fields_parse(p, len, &idx, f) !=
	    MAILIMF_NO_ERROR)
		return -EINVAL;
	return 0;
}

int
header_parse(const char *p, size_t n, struct header_info *out)
{
	struct mailimf_fields *f = NULL;
	size_t len = header_block_len(p, n);
	clistiter *it;
	int r;

	memset(out, 0, sizeof(*out));
	out->lines = hash_lines(p, len);
	r = guarded_parse(p, len, &f);
	if (r < 0)
		return r;
	for (it = clist_begin(f->fld_list); it; it = clist_next(it)) {
		struct mailimf_field *fl = clist_content(it);

		if (fl->fld_type == MAILIMF_FIELD_MESSAGE_ID &&
		    out->msgid[0] == '\0' && fl->fld_data.fld_message_id &&
		    fl->fld_data.fld_message_id->mid_value)
			keep_msgid(fl->fld_data.fld_message_id->mid_value, out);
		else if (fl->fld_type == MAILIMF_FIELD_ORIG_DATE &&
		    out->date == 0 && fl->fld_data.fld_orig_date &&
		    fl->fld_data.fld_orig_date->dt_date_time)
			out->date = date_seconds(
			    fl->fld_data.fld_orig_date->dt_date_time);
	}
	mailimf_fields_free(f);
	return 0;
}

/* "<addr>" with folding white space around it; addr plain ASCII. */
static int
path_addr(const char *v, char out[HEADER_SENDER_MAX])
{
	size_t n = strlen(v), i = 0, k;

	while (i < n && strchr(" \t\r\n", v[i]) != NULL)
		i++;
	while (n > i && strchr(" \t\r\n", v[n - 1]) != NULL)
		n--;
	if (n - i < 2 || v[i] != '<' || v[n - 1] != '>')
		return -EINVAL;
	i++;
	n--;
	if (n - i >= HEADER_SENDER_MAX)
		return -EINVAL;
	for (k = i; k < n; k++)
		if ((unsigned char)v[k] <= 0x20 || (unsigned char)v[k] >= 0x7f ||
		    v[k] == '<' || v[k] == '>')
			return -EINVAL;
	memcpy(out, v + i, n - i);
	out[n - i] = '\0';
	return 0;
}

int
header_return_path(const char *p, size_t n, char out[HEADER_SENDER_MAX])
{
	struct mailimf_fields *f = NULL;
	clistiter *it;
	int r;

	out[0] = '\0';
	r = guarded_parse(p, header_block_len(p, n), &f);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (it = clist_begin(f->fld_list); it; it = clist_next(it)) {
		struct mailimf_field *fl = clist_content(it);
		struct mailimf_optional_field *o = fl->fld_data.fld_optional_field;

		if (fl->fld_type == MAILIMF_FIELD_OPTIONAL_FIELD && o &&
		    o->fld_name && o->fld_value &&
		    strcasecmp(o->fld_name, "Return-Path") == 0) {
			r = path_addr(o->fld_value, out);
			break;
		}
	}
	mailimf_fields_free(f);
	if (r < 0)
		out[0] = '\0';
	return r;
}

uint64_t
header_key(const struct header_info *h)
{
	uint64_t k;

	if (h->msgid[0] != '\0') {
		k = fnv(fnv(FNV_OFFSET, "M", 1), h->msgid, strlen(h->msgid));
	} else if (h->date != 0 || h->lines != 0) {
		k = fnv(FNV_OFFSET, "D", 1);
		k = fnv(k, &h->date, sizeof(h->date));
		k = fnv(k, &h->lines, sizeof(h->lines));
	} else {
		return 0;
	}
	return k ? k : 1;
}
