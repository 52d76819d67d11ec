/*
 * header: what identifies a message across a renumbered folder, read from
 * its header block: the Message-ID and the Date (by libetpan's RFC 5322
 * envelope parser, behind a guard), and a hash of the From and Subject
 * lines. The same message read from the server (BODY[HEADER.FIELDS ...],
 * CRLF) and from the Maildir (LF) gives the same key.
 */
#ifndef IDLEFETCH_HEADER_H
#define IDLEFETCH_HEADER_H
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/state.h"

/* Header blocks longer than this are not parsed (no Message-ID, no Date). */
#define HEADER_MAX (256 * 1024)
/* ... nor those whose parentheses nest deeper (libetpan recurses). */
#define HEADER_NEST_MAX 500

/* The header fields a server is asked for: the key uses no others. */
#define HEADER_FIELDS "MESSAGE-ID DATE FROM SUBJECT"

struct header_info {
	char msgid[STATE_MSGID_MAX]; /* "<id>"; "": none, or not usable */
	int64_t date; /* seconds since the epoch, UTC; 0: none */
	uint64_t lines; /* hash of the From and Subject lines; 0: none */
};

/*
 * Reads the header block at the start of p[0..n) (a whole message will
 * do: it stops at the first empty line). Returns 0, or -E2BIG (longer than
 * HEADER_MAX), -ELOOP (nested too deep) or -EINVAL (a NUL byte, or not a
 * header block): *out is then empty but for what needs no parser.
 */
int header_parse(const char *p, size_t n, struct header_info *out);

/*
 * The message's key: by Message-ID where it has one, else by its Date and
 * the From and Subject lines. 0 when none of them is known.
 */
uint64_t header_key(const struct header_info *h);

/* Envelope senders longer than this are not used. */
#define HEADER_SENDER_MAX 256

/*
 * The address of the first Return-Path field of the header block at the
 * start of p[0..n), read with the same guarded parser, into out (without
 * its angle brackets; "" for the null path "<>"). Returns 0, -ENOENT (no
 * Return-Path), or -EINVAL (not one plain ASCII address in "<...>"), or
 * header_parse()'s errors; out is "" unless 0.
 */
int header_return_path(const char *p, size_t n, char out[HEADER_SENDER_MAX]);

/* Where the header block of p[0..n) ends (after its empty line, or n). */
size_t header_block_len(const char *p, size_t n);

#endif
