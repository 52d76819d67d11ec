/*
 * target: where a fetched message goes when it is not a Maildir of
 * idlefetch's own. Two kinds:
 *
 *   deliver = mda:PROGRAM ARG...   a program run without a shell, the
 *       message (LF line ends) on its standard input. Exit 0: delivered;
 *       75 (EX_TEMPFAIL), a signal or the time limit: try again later;
 *       anything else: refused, the message stays on the server. In each
 *       word %F becomes the envelope sender (the message's Return-Path,
 *       "" when it has none), %a the account, %f the folder, %% a "%".
 *       It is started by spawn (spawn.h) and judged by its exit status;
 *       a child it leaves running does not hold the delivery.
 *   deliver = lmtp:HOST:PORT | lmtp:/PATH
 *       LMTP (RFC 2033) over TCP or a Unix socket, MAIL FROM the
 *       Return-Path (<> when none), RCPT TO lmtp_recipient, commands
 *       pipelined where the server offers PIPELINING. 2xx: delivered;
 *       4xx: try again later; 5xx: refused. Every line end of the
 *       message, a bare CR included, goes as CRLF. Each reply must come
 *       whole, all its lines, within the timeout and in at most 100
 *       lines, or the delivery is tried again later; a reply line's
 *       first 511 bytes count, the rest of a longer one is dropped.
 *
 * The calls block (connect, write, wait for the program): the commit
 * side runs them on the libuv threadpool, one message at a time, in UID
 * order, so that the state can record each acceptance before the next
 * message is handed over.
 */
#ifndef IDLEFETCH_TARGET_H
#define IDLEFETCH_TARGET_H

#include <stdbool.h>
#include <stddef.h>

enum target_kind { TARGET_MAILDIR, TARGET_MDA, TARGET_LMTP };

/* What a target answered for one message. */
enum target_answer {
	TARGET_ACCEPTED,
	TARGET_DEFERRED, /* 4xx, EX_TEMPFAIL, killed, timed out, unreachable */
	TARGET_REFUSED /* 5xx, another exit status */
};

struct target {
	enum target_kind kind;
	char **argv; /* MDA: the template's words, NULL-terminated */
	char *host; /* LMTP over TCP, with port */
	char *port;
	char *path; /* LMTP over a Unix socket */
	char *recipient; /* LMTP: RCPT TO */
	unsigned timeout; /* seconds for a program, or for each whole reply */
};

/*
 * Parses the value of deliver = into t (zeroed first; "maildir" is
 * TARGET_MAILDIR). Returns 0, or -EINVAL with why filled.
 */
int target_parse(struct target *t, const char *value, char *why,
    size_t whylen);
void target_free(struct target *t);
/* Whether two targets deliver the same way. */
int target_equal(const struct target *a, const struct target *b);
/* Prints the value deliver = was given (for config_print). */
void target_print(const struct target *t, char *buf, size_t len);

/* What a message's delivery knows of it. */
struct target_msg {
	int fd; /* the message, read from offset 0 */
	const char *sender; /* envelope sender, "" for none */
	const char *account;
	const char *folder;
};

/* One delivery session: an LMTP connection kept across a batch. */
struct target_conn;

/*
 * Opens a session (for LMTP: connects, reads the greeting, says LHLO);
 * *out is the caller's to close. Returns TARGET_ACCEPTED, or
 * TARGET_DEFERRED with why filled.
 */
enum target_answer target_open(const struct target *t,
    struct target_conn **out, char *why, size_t whylen);
/* Hands one message over; why says what a refusal or deferral was. */
enum target_answer target_send(struct target_conn *c,
    const struct target_msg *m, char *why, size_t whylen);
/*
 * After TARGET_DEFERRED: whether the target said so (a 4xx, exit 75, a
 * program that could not start), so that it surely does not have the
 * message; false when its answer was lost (a connection cut after the
 * data, a program killed), and it may.
 */
bool target_answered(const struct target_conn *c);
/* Ends the session (LMTP QUIT) and frees it. NULL is ignored. */
void target_close(struct target_conn *c);

#endif
