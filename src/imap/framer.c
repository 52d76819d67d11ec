/*
 * framer: a small state machine over the server's bytes.
 *
 *   LINE      accumulate until CRLF; if the line ends in "{n}" or "{n+}" a
 *             literal follows, otherwise the unit is complete.
 *   LITERAL   n bytes kept in the unit buffer (small literals: LIST names,
 *             quoted-string substitutes).
 *   STREAM    n bytes handed to the sink; the unit gets "{0}" instead.
 *
 * Sizes from the server are parsed here with overflow checks and caps
 * before anything else sees them.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/framer.h"
#include "idlefetch/util.h"

enum fstate { F_LINE, F_LITERAL, F_STREAM };

/*
 * Most units are a short line: the buffer starts small, grows for a long
 * one and is given back once a unit that needed more than FRAMER_KEEP is
 * handed over. A framer that holds no partial unit when the bytes of a
 * read are consumed holds no buffer at all: an idle connection waits for
 * days between units, and ten thousand of them would keep 10 MiB of empty
 * buffers. The next read takes one again (one malloc per read, not per
 * unit).
 */
#define FRAMER_START 1024
#define FRAMER_KEEP (16 * 1024)

struct framer {
	const struct framer_ops *ops;
	void *ud;
	enum fstate state;
	char *buf; /* the unit being assembled */
	size_t len, cap;
	size_t line_start; /* where the current line begins */
	uint64_t remaining; /* literal bytes still to come */
};

struct framer *
framer_new(const struct framer_ops *ops, void *ud)
{
	struct framer *f = xcalloc(1, sizeof(*f));

	f->ops = ops;
	f->ud = ud;
	return f;
}

void
framer_free(struct framer *f)
{
	if (f == NULL)
		return;
	free(f->buf);
	free(f);
}

/* Nothing buffered; a buffer larger than keep is given back. */
static void
empty(struct framer *f, size_t keep)
{
	f->len = 0;
	f->line_start = 0;
	if (f->cap > keep) {
		free(f->buf);
		f->buf = NULL;
		f->cap = 0;
	}
}

void
framer_reset(struct framer *f)
{
	f->state = F_LINE;
	f->remaining = 0;
	/* A unit of a previous connection may have grown the buffer. */
	/*
	 * It may run inside a unit callback that still reads the buffer:
	 * a small one stays until framer_push returns.
	 */
	empty(f, FRAMER_START);
}

size_t
framer_held(const struct framer *f)
{
	return f->cap;
}

int
framer_in_literal(const struct framer *f)
{
	return f->state == F_STREAM;
}

static int
append(struct framer *f, const char *p, size_t n)
{
	if (f->len + n > FRAMER_MAX_UNIT)
		return -EMSGSIZE;
	if (n == 0)
		return 0;
	if (f->len + n > f->cap) {
		if (f->cap == 0)
			f->cap = FRAMER_START;
		while (f->len + n > f->cap)
			f->cap *= 2;
		f->buf = xrealloc(f->buf, f->cap);
	}
	memcpy(f->buf + f->len, p, n);
	f->len += n;
	return 0;
}

/*
 * Looks for "{digits}" or "{digits+}" right before the CRLF that ends the
 * line [s, e). Returns 1 and the size, 0 if there is none, or an error.
 */
static int
literal_size(const char *s, const char *e, uint64_t *size, size_t *open_at)
{
	const char *p = e;
	uint64_t v = 0, mul = 1;
	bool digits = false;

	if (p == s || p[-1] != '}')
		return 0;
	p--;
	if (p > s && p[-1] == '+')
		p--;
	while (p > s && p[-1] >= '0' && p[-1] <= '9') {
		if (mul > 1000000000000ULL)
			return -EMSGSIZE; /* more digits than any sane size */
		v += (uint64_t)(p[-1] - '0') * mul;
		mul *= 10;
		digits = true;
		p--;
	}
	if (p == s || p[-1] != '{')
		return 0;
	if (!digits)
		return IDLEFETCH_EPROTO;
	*size = v;
	*open_at = (size_t)(p - 1 - s);
	return 1;
}

/* A line ended (CRLF appended). Decide between literal and end of unit. */
static int
end_of_line(struct framer *f)
{
	const char *line = f->buf + f->line_start;
	const char *end = f->buf + f->len - 2;
	size_t open_at;
	uint64_t size;
	int r;

	r = literal_size(line, end, &size, &open_at);
	if (r < 0)
		return r;
	if (r == 0) {
		r = f->ops->unit(f->ud, f->buf, f->len);
		/* An idle connection keeps no large buffer resident. */
		empty(f, FRAMER_KEEP);
		return r;
	}
	if (size > FRAMER_MAX_LITERAL)
		return -EMSGSIZE;
	r = f->ops->literal_begin(f->ud, f->buf, f->len, size);
	if (r < 0)
		return r;
	f->remaining = size;
	if (r == 1) {
		/* Replace "{n}" (or "{n+}") by "{0}" so the parser sees no bytes. */
		f->len = f->line_start + open_at;
		append(f, "{0}\r\n", 5);
		f->state = F_STREAM;
	} else {
		if (size > FRAMER_MAX_UNIT)
			return -EMSGSIZE;
		f->state = F_LITERAL;
	}
	if (size == 0) {
		r = f->state == F_STREAM ? f->ops->literal_end(f->ud) : 0;
		f->state = F_LINE;
		f->line_start = f->len;
		return r;
	}
	return 0;
}

static int
push_line(struct framer *f, const char **pp, const char *end)
{
	const char *p = *pp, *nl;
	size_t n;
	int r;

	nl = memchr(p, '\n', (size_t)(end - p));
	n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
	if (f->len - f->line_start + n > FRAMER_MAX_LINE)
		return -EMSGSIZE;
	r = append(f, p, n);
	if (r < 0)
		return r;
	*pp = p + n;
	if (nl == NULL)
		return 0;
	/* Tolerate a bare LF from sloppy servers by treating it as CRLF. */
	if (f->len < 2 || f->buf[f->len - 2] != '\r') {
		f->buf[f->len - 1] = '\r';
		r = append(f, "\n", 1);
		if (r < 0)
			return r;
	}
	return end_of_line(f);
}

int
framer_push(struct framer *f, const char *p, size_t n)
{
	const char *end = p + n;
	int r = 0;

	while (p < end) {
		size_t take;

		switch (f->state) {
		case F_LINE:
			r = push_line(f, &p, end);
			break;
		case F_LITERAL:
		case F_STREAM:
			take = (size_t)(end - p) < f->remaining ?
			    (size_t)(end - p) :
			    (size_t)f->remaining;
			if (f->state == F_LITERAL)
				r = append(f, p, take);
			else
				r = f->ops->literal_data(f->ud, p, take);
			p += take;
			f->remaining -= take;
			if (r == 0 && f->remaining == 0) {
				if (f->state == F_STREAM)
					r = f->ops->literal_end(f->ud);
				f->state = F_LINE;
				f->line_start = f->len;
			}
			break;
		default:
			fatal("framer: bad state %d", f->state);
		}
		if (r != 0)
			break;
	}
	/* Between units (a literal or a partial line keeps it). */
	if (f->state == F_LINE && f->len == 0)
		empty(f, 0);
	return r;
}
