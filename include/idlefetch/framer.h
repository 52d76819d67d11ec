/*
 * framer: cuts the IMAP byte stream from the server into complete
 * responses ("units": a line plus any literals it announces). Literals the
 * owner chooses to stream (message bodies) go to a sink chunk by chunk and
 * are replaced in the unit by "{0}\r\n", so memory per connection is bounded
 * by FRAMER_MAX_UNIT whatever the message size.
 */
#ifndef IDLEFETCH_FRAMER_H
#define IDLEFETCH_FRAMER_H

#include <stddef.h>
#include <stdint.h>

#define FRAMER_MAX_LINE (64 * 1024) /* one line, without literals */
#define FRAMER_MAX_UNIT (1024 * 1024) /* a buffered unit, all in */
#define FRAMER_MAX_LITERAL (2ULL * 1024 * 1024 * 1024) /* streamed */

struct framer_ops {
	/*
	 * A literal of size bytes starts; prefix is the unit so far, up to and
	 * including the "{n}\r\n". Return 1 to stream it to literal_data,
	 * 0 to keep it in the unit, or a negative error.
	 */
	int (*literal_begin)(void *ud, const char *prefix, size_t len,
	    uint64_t size);
	int (*literal_data)(void *ud, const char *p, size_t n);
	int (*literal_end)(void *ud);
	/*
	 * A complete unit, CRLF included. Return 0 to go on, a positive value
	 * to stop feeding the rest of the current buffer (framer_push returns
	 * it), or a negative error.
	 */
	int (*unit)(void *ud, const char *p, size_t n);
};

struct framer;

/* ops and ud are borrowed and must outlive the framer. */
struct framer *framer_new(const struct framer_ops *ops, void *ud);
void framer_free(struct framer *f);
/* Forgets any partial unit (after STARTTLS, on reconnect). */
void framer_reset(struct framer *f);
/*
 * Feeds n bytes. Returns 0 when all were consumed, the positive value a
 * unit callback returned (the rest of p is dropped), or a negative error:
 * -EMSGSIZE for an over-long line, unit or literal, IDLEFETCH_EPROTO for a
 * malformed literal, or whatever a callback returned.
 */
int framer_push(struct framer *f, const char *p, size_t n);
/*
 * Bytes of buffer the framer holds: 0 between units, so that an idle
 * connection keeps none.
 */
size_t framer_held(const struct framer *f);
/* 1 while a streamed literal is being received. */
int framer_in_literal(const struct framer *f);

#endif
