/*
 * proto: turns one complete unit from the framer into a flat description
 * (struct proto_resp) using libetpan's parser on memory, and helps encode
 * commands. The session never sees libetpan's types.
 */
#ifndef IDLEFETCH_PROTO_H
#define IDLEFETCH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum proto_kind {
	PROTO_CONTINUE,
	PROTO_UNTAGGED,
	PROTO_TAGGED,
	PROTO_GREETING
};
enum proto_status {
	PROTO_NONE,
	PROTO_OK,
	PROTO_NO,
	PROTO_BAD,
	PROTO_BYE,
	PROTO_PREAUTH
};

/* Capability bits. */
#define CAP_IMAP4REV1 (1u << 0)
#define CAP_IDLE (1u << 1)
#define CAP_STARTTLS (1u << 2)
#define CAP_LOGINDISABLED (1u << 3)
#define CAP_AUTH_PLAIN (1u << 4)
#define CAP_SASL_IR (1u << 5)
#define CAP_UIDPLUS (1u << 6)
#define CAP_MOVE (1u << 7)
#define CAP_LITERALPLUS (1u << 8)
#define CAP_NOTIFY (1u << 9) /* RFC 5465 */
#define CAP_LIST_EXTENDED (1u << 10) /* RFC 5258 */
#define CAP_AUTH_XOAUTH2 (1u << 11)
#define CAP_AUTH_OAUTHBEARER (1u << 12) /* RFC 7628 */
#define CAP_SPECIAL_USE (1u << 13) /* RFC 6154 */

/* Bits in proto_resp.has. */
#define HAS_CAPS (1u << 0)
#define HAS_UIDVALIDITY (1u << 1)
#define HAS_UIDNEXT (1u << 2)
#define HAS_EXISTS (1u << 3)
#define HAS_FETCH (1u << 4)
#define HAS_EXPUNGE (1u << 5)
#define HAS_UID (1u << 6)
#define HAS_SIZE (1u << 7)
#define HAS_BODY (1u << 8)
#define HAS_READONLY (1u << 9)
#define HAS_ALERT (1u << 10) /* [ALERT]: the text must reach the user */
#define HAS_HDR (1u << 11) /* BODY[HEADER.FIELDS (...)]: hdr, hdr_len */
/* "* LIST (...) delim name" or LSUB: name, list_delim, list_flags */
#define HAS_LIST (1u << 12)
#define HAS_STATUS (1u << 13) /* "* STATUS name (...)": name, status_* */
#define HAS_STATUS_UIDNEXT (1u << 14) /* ...and it gave UIDNEXT */
/* [NOTIFICATIONOVERFLOW] (RFC 5465 5.8): NOTIFY has stopped telling */
#define HAS_OVERFLOW (1u << 15)
/*
 * The server is busy, not refusing: [UNAVAILABLE] or [INUSE] (RFC 5530),
 * [THROTTLED], or a text that says it is throttled (Microsoft 365's
 * "Request is throttled. Suggested Backoff Time: N milliseconds", whose
 * N is retry_ms).
 */
#define HAS_BUSY (1u << 16)

/* Bits in proto_resp.list_flags: the LIST flags idlefetch acts on. */
#define LISTF_NOSELECT (1u << 0)
#define LISTF_NONEXISTENT (1u << 1) /* RFC 5258 */
#define LISTF_SUBSCRIBED (1u << 2)
#define LISTF_LSUB (1u << 3) /* an LSUB reply: subscribed by definition */
/*
 * \All, \Flagged, \Important (RFC 6154, 8457): a view of messages kept
 * in other folders (Gmail's All Mail, Starred, Important)
 */
#define LISTF_VIRTUAL (1u << 4)

struct proto_resp {
	enum proto_kind kind;
	enum proto_status status; /* tagged, greeting, untagged OK/NO/BAD/BYE */
	char tag[32];
	char text[256]; /* human-readable text, for logs */
	unsigned has;
	uint32_t caps;
	uint32_t uidvalidity, uidnext, exists;
	uint32_t seq; /* FETCH or EXPUNGE message number */
	uint32_t uid, size;
	const char *hdr; /* HAS_HDR: the fields, inside the parsed unit */
	size_t hdr_len;
	char name[256]; /* HAS_LIST, HAS_STATUS: the mailbox name, printable */
	char list_delim; /* HAS_LIST: hierarchy delimiter, 0 for NIL */
	unsigned list_flags; /* HAS_LIST: LISTF_* */
	uint32_t status_uidnext, status_uidvalidity, status_messages;
	uint32_t retry_ms; /* HAS_BUSY: how long the server asks to wait; 0 */
};

/*
 * Parses one unit (CRLF included). greeting: the first unit of a
 * connection. Returns 0, or IDLEFETCH_EPROTO if the unit cannot be parsed;
 * for tagged and BYE lines a minimal reading is still filled in then.
 */
int proto_parse(const char *unit, size_t len, bool greeting,
    struct proto_resp *out);

/*
 * Writes s as an IMAP quoted string into dst. Returns -EINVAL if s holds
 * bytes a quoted string cannot carry (CR, LF, NUL, 8-bit), -ENOSPC if dst
 * is too small.
 */
int proto_quote(char *dst, size_t cap, const char *s);

/*
 * Writes the sorted UIDs as a compact sequence set ("1:5,9,12:13") into
 * dst. Returns the length, or -ENOSPC.
 */
int proto_uid_set(char *dst, size_t cap, const uint32_t *uids, size_t n);

#endif
