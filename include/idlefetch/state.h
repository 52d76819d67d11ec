/*
 * state: what has been delivered from one account+folder, kept in a small
 * text file that is replaced atomically (write tmp, fsync, rename, fsync
 * the directory). Blocking: the session calls it from the threadpool.
 */
#ifndef IDLEFETCH_STATE_H
#define IDLEFETCH_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Refused UIDs a folder's state keeps at most. */
#define STATE_REFUSED_MAX 32

/* Message-IDs longer than this are not kept (no fingerprint by ID). */
#define STATE_MSGID_MAX 200

/*
 * What the server said of a delivered message, to check on the next
 * SELECT that its UID still holds it (a server that renumbers its UIDs
 * without changing UIDVALIDITY, as Courier-IMAP can).
 */
struct state_fp {
	uint32_t size; /* RFC822.SIZE; 0: unknown */
	char msgid[STATE_MSGID_MAX]; /* printable, no spaces; "": unknown */
};

struct state_rec {
	uint32_t uidvalidity; /* 0: never synced */
	uint32_t last_uid; /* every UID <= this is delivered */
	struct state_fp last; /* of the message last_uid; zero: unknown */
	/*
	 * A recovery (the folder renumbered) matched the server's messages
	 * up to this UID against the Maildir: after = delete or move leaves
	 * them on the server, since a match is not a delivery.
	 */
	uint32_t keep_to;
	/* A recovery began and did not finish: the next sync does it again. */
	uint32_t recovering;
	/*
	 * When the last recovery began (microseconds since the epoch): files
	 * named as delivered before it may carry the old numbering of this
	 * UIDVALIDITY, and say nothing of what the UIDs hold now.
	 */
	uint64_t recovered_at;
	/*
	 * An MDA or LMTP target was handed this UID and its answer is not
	 * recorded: a crash then may have delivered it, and it is fetched
	 * and handed over again (the one duplicate such a target allows).
	 */
	uint32_t pending;
	/*
	 * UIDs the target refused (5xx, an MDA's failure): passed, but left
	 * on the server by after = delete or move. At most
	 * STATE_REFUSED_MAX; a folder with more stops.
	 */
	uint32_t nrefused;
	uint32_t refused[STATE_REFUSED_MAX];
};

/* Whether uid is among st's refused UIDs. */
bool state_refused(const struct state_rec *st, uint32_t uid);

/* STATE_DIR/ACCOUNT/FOLDER-KEY.state; the caller frees it. */
char *
state_path(const char *state_dir, const char *account, const char *folder);
/* Creates the directory that holds path. */
int state_prepare(const char *path);
/* Returns 0, -ENOENT (no file yet: *st zeroed) or -EINVAL (corrupt). */
int state_load(const char *path, struct state_rec *st);
int state_save(const char *path, const struct state_rec *st);

/*
 * One fetcher per account: two on the same state would both fetch the same
 * UIDs and deliver them twice, be they two replicas on a shared state
 * volume or a --once beside the daemon. The lock is an exclusive
 * open-file-description lock (F_OFD_SETLK) on the byte at
 * state_lock_offset(ACCOUNT) of the shared file STATE_DIR/.accounts.lock.X,
 * X the offset's top 4 of 62 bits in hex (0-f); the kernel releases it
 * when the process ends in any way (kill -9 included): no stale lock. A
 * process opens each of these files twice (see state.c) however many
 * accounts it locks, so an idle account holds no descriptor but its
 * connection.
 *
 * The holder's "PID MODE" is recorded in STATE_DIR/ACCOUNT/lock, a symlink
 * whose target is that text. Earlier versions locked that path as a
 * regular file: state_lock() also takes such a file's lock and replaces
 * it by the symlink, which an earlier version cannot open, so one still
 * running keeps its accounts and one started later fetches none of ours.
 */
#define STATE_LOCK_FILE ".accounts.lock" /* no account name starts with '.' */
#define STATE_LOCK_FILES 16

/*
 * The account's byte in the lock file: the top 62 bits of splitmix64's
 * finaliser over the 64-bit FNV-1a hash of the name. Two names with the
 * same offset (about one chance in 10^11 among 10,000 accounts) would only
 * exclude each other, never share a lock.
 */
uint64_t state_lock_offset(const char *account);
/*
 * Takes the account's lock for this process; mode ("daemon", "once") is
 * recorded beside the pid. Returns 0, -EWOULDBLOCK when a process (this
 * one included) holds it (*holder: its pid, 0 when unknown), or -errno.
 */
int state_lock(const char *state_dir, const char *account, const char *mode,
    long *holder);
/* Lets go of an account this process locked with state_lock(). */
void state_unlock(const char *state_dir, const char *account);
/*
 * Whether some process holds the account's lock: 1 (pid and mode filled
 * when known), 0 (nobody), or -errno. Also sees an earlier version's lock.
 */
int state_lock_holder(const char *state_dir, const char *account, long *pid,
    char *mode, size_t modelen);

/*
 * The state and the Maildir it describes know each other: a random id in
 * STATE_DIR/ACCOUNT/maildir-id and in a marker file at the Maildir's root
 * (MAILDIR/idlefetch-ACCOUNT.id). A Maildir unmounted (its empty mount
 * point), replaced or moved, or a state directory lost or replaced, no
 * longer match, and the account stops instead of delivering elsewhere or
 * deleting on the server what a lost state no longer knows.
 */
#define STATE_ID_LEN 32

/* MAILDIR/idlefetch-ACCOUNT.id; the caller frees it. */
char *state_marker_path(const char *maildir, const char *account);
/*
 * Checks (or, the first time, makes) the binding of the state that holds
 * state_path to the marker. id (STATE_ID_LEN + 1 bytes) gets the id.
 * Returns 0, IDLEFETCH_ELOST (err says which side is lost and what to do)
 * or -errno. Blocking.
 */
int state_bind(const char *state_path, const char *marker, char *id,
    char *err, size_t errlen);
/* Whether a binding was made (and finished) for this state. */
bool state_bound(const char *state_path);
/* Whether the marker still holds id: 0, or IDLEFETCH_ELOST with err. */
int state_bind_check(const char *marker, const char *id, char *err,
    size_t errlen);

#endif
