/*
 * msgindex: what a folder's Maildir holds of what is still on the server,
 * as a key (idlefetch/header.h) and the server's size for each message,
 * so that a folder the server renumbered can be matched against it
 * without fetching it all again.
 *
 * One line per delivered message, "UIDVALIDITY UID SIZE KEY FILE" (FILE:
 * the unique start of its Maildir name, up to its tag), appended to
 * STATE_DIR/ACCOUNT/FOLDER-KEY.index by each delivery and fsynced with it
 * (one flush per batch). A message the user deleted from the Maildir stays
 * in it while the server has it, so a recovery does not bring it back.
 *
 * A recovery renumbers the lines it matched and keeps the others as not
 * on the server (UID 0, their old UIDVALIDITY): a folder recreated empty
 * and later restored from a backup is still matched. Only a compaction,
 * after a listing of the folder's UIDs that is complete (sync.c), drops
 * lines: those of UIDs of its UIDVALIDITY the server no longer holds
 * (deleted or moved after delivery), and those of messages not on the
 * server whose file is gone from the Maildir. Both rewrite the file whole
 * (write a temporary file, fsync, rename) with a first line
 * "# complete SECONDS KEPT": every file of the folder named before SECONDS
 * (the latest file name the rewrite saw, less an hour) is in the index or
 * was dropped on purpose, and KEPT bytes are lines a compaction kept of
 * messages not on the server, which msgindex_bytes() leaves out (a
 * recovery's are counted: the compaction they make due sheds those whose
 * file is gone). Files named after the mark that the index lacks (a crash
 * between the rename into new/ and the append; every file, for an index
 * that has no such line) are read from the Maildir.
 *
 * Memory: the index is read as a stream, one line at a time, and never
 * held. A recovery holds its msgindex_set, 24 bytes per message on the
 * server, and 9 bytes per file of the folder named since the mark; a
 * compaction 5 bytes per UID on the server and 9 per file of the folder.
 *
 * Blocking: the session calls these from the threadpool, except
 * msgindex_set_add() and msgindex_set_free().
 */
#ifndef IDLEFETCH_MSGINDEX_H
#define IDLEFETCH_MSGINDEX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A recovery holds at most this many of the server's messages (24 MB): a
 * server that lists more, or repeats its lines, is refused.
 */
#define MSGINDEX_SET_MAX 1000000

struct msgindex_ent {
	uint64_t key; /* header_key(); 0: nothing identifies it */
	uint32_t size; /* RFC822.SIZE: with CRLF line ends */
	uint32_t uidvalidity, uid;
	const char *file; /* msgindex_append(): the FILE part */
};

/* One message the server listed in a recovery. */
struct msgindex_srv {
	uint64_t key;
	uint32_t size, uid;
	uint64_t by; /* which delivered file it matched; 0: none */
};

/* The server's side of a recovery. */
struct msgindex_set {
	struct msgindex_srv *v;
	size_t n, cap;
	unsigned matched; /* how many of v have a delivered file */
	unsigned from_maildir; /* files read that the index lacked */
};

/* What a compaction kept and dropped. */
struct msgindex_counts {
	unsigned kept, dropped, from_maildir;
};

/* The index next to a state file ("X.state" -> "X.index"); caller frees. */
char *msgindex_path(const char *state_path);

/* Appends n entries; best effort (a lost line is read from its file). */
int msgindex_append(const char *path, const struct msgindex_ent *e, size_t n);

/*
 * The index's bytes a compaction may shed: its size less its lines of
 * messages not on the server; 0 when it is missing or unreadable.
 */
uint64_t msgindex_bytes(const char *path);

/*
 * One delivered file's key and server size, and its Message-ID into msgid
 * (STATE_MSGID_MAX bytes; may be NULL). 0, 1 if the file is gone, or
 * -errno.
 */
int msgindex_read_file(const char *path, struct msgindex_ent *e, char *msgid);

/* One listed message; -E2BIG past MSGINDEX_SET_MAX. */
int msgindex_set_add(struct msgindex_set *m, uint32_t uid, uint64_t key,
    uint32_t size);

/*
 * Matches the listed messages against the index at path and the files of
 * tag in maildir it lacks, by key and size: n copies on the server match
 * n delivered files, not more, and a line appended twice counts once.
 * Then rewrites the index: the matched lines under the server's
 * uidvalidity and UIDs, the others as not on the server. On return m->v is
 * sorted by UID, each message's `by` set if it matched. Returns 0 or
 * -errno with err filled; the index is unchanged then, unless only the
 * fsync of its directory failed after the new one took its place.
 */
int
msgindex_recover(struct msgindex_set *m, const char *path, const char *maildir,
    uint32_t tag, uint32_t uidvalidity, char *err, size_t errlen);

void msgindex_set_free(struct msgindex_set *m);

/*
 * Rewrites the index at path with the lines of the n UIDs the server
 * holds under uidvalidity (uids: sorted here; the caller vouches that they
 * are all), one each, and the lines of messages not on the server whose
 * file is still in maildir; the others are dropped. Files of tag the index
 * lacks are read for it. Returns 0 or -errno with err filled; the index
 * is unchanged then, unless only the fsync of its directory failed.
 */
int msgindex_compact(const char *path, const char *maildir, uint32_t tag,
    uint32_t uidvalidity, uint32_t *uids, size_t n, struct msgindex_counts *out,
    char *err, size_t errlen);

/*
 * The rewrite that recovery and compaction share (msgindex.c): it scans
 * the files of tag in maildir (all of them, or those named since the
 * index's mark), then calls ops->line for each line of the index at path
 * and ops->file for each scanned file no line named, and puts the lines
 * they keep, through msgindex_rewrite_put(), in a fresh index in place of
 * path. Returns 0 or -errno with err filled (a callback's negative return
 * stops it); the index is unchanged then, unless only the fsync of its
 * directory failed.
 */
struct msgindex_rewrite; /* opaque: one rewrite under way */

struct msgindex_rewrite_ops {
	/*
	 * A line; hash names its file (never 0). present: the scan saw that
	 * file; dup: an earlier line named it (a line appended twice).
	 */
	int (*line)(void *ud, struct msgindex_rewrite *rw,
	    const struct msgindex_ent *e, uint64_t hash, bool present,
	    bool dup);
	/* A file no line named: e has its name's UIDVALIDITY, UID and FILE. */
	int (*file)(void *ud, struct msgindex_rewrite *rw, const char *path,
	    struct msgindex_ent *e, uint64_t hash);
};

int
msgindex_rewrite(const char *path, const char *maildir, uint32_t tag, bool all,
    const struct msgindex_rewrite_ops *ops, void *ud, char *err, size_t errlen);
/* Writes e into the fresh index; kept: a line no compaction sheds. */
void msgindex_rewrite_put(struct msgindex_rewrite *rw,
    const struct msgindex_ent *e, bool kept);

#endif
