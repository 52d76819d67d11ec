/*
 * state: what has been delivered from one account+folder, kept in a small
 * text file that is replaced atomically (write tmp, fsync, rename, fsync
 * the directory). Blocking: the session calls it from the threadpool.
 */
#ifndef IDLEFETCH_STATE_H
#define IDLEFETCH_STATE_H

#include <stdint.h>

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
};

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
 * UIDs and deliver them twice. state_lock() creates STATE_DIR/ACCOUNT/ and
 * takes an exclusive open-file-description lock (F_OFD_SETLK) on its "lock"
 * file, which the kernel releases when the process ends in any way (kill -9
 * included): no stale lock. It writes "PID MODE" into the file. Returns the descriptor to keep open
 * (the caller closes it at exit), -EWOULDBLOCK when another process holds
 * it (*holder: its pid, 0 when unknown), or another -errno.
 */
int state_lock(const char *state_dir, const char *account, const char *mode,
    long *holder);
/*
 * Whether some process holds the account's lock: 1 (pid and mode filled
 * when known), 0 (nobody), or -errno.
 */
int state_lock_holder(const char *state_dir, const char *account, long *pid,
    char *mode, size_t modelen);

#endif
