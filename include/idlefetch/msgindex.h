/*
 * msgindex: what a folder's Maildir holds of what is still on the server,
 * as a key (idlefetch/header.h) and the server's size for each message,
 * so that a folder the server renumbered can be matched against it
 * without fetching it all again.
 *
 * One line per delivered message, "UIDVALIDITY UID SIZE KEY FILE" (FILE:
 * the unique start of its Maildir name, up to its tag), appended to
 * STATE_DIR/ACCOUNT/FOLDER-KEY.index by each delivery; it is not fsynced
 * (it costs no flush per message). A message the user deleted from the
 * Maildir stays in it while the server has it, so a recovery does not
 * bring it back.
 *
 * It stays proportional to the server's folder: msgindex_compact() drops
 * the lines of messages no longer on the server (deleted or moved after
 * delivery), and a recovery keeps only the lines it matched. Both rewrite
 * the file whole (write a temporary file, fsync, rename) with a first line
 * "# complete SECONDS": every file of the folder named before then (less
 * an hour, for a clock set back) is in the index or was dropped on
 * purpose. Files named after it that the index lacks (a lost tail, a crash
 * between the rename into new/ and the append; every file, for an index
 * that has no such line) are read from the Maildir.
 *
 * Memory: the index is read as a stream, one line at a time, and never
 * held. A recovery holds its msgindex_set, 24 bytes per message on the
 * server; a compaction 5 bytes per UID on the server; both 9 bytes per
 * file of the folder named since the index was last complete.
 *
 * Blocking: the session calls these from the threadpool, except
 * msgindex_set_add() and msgindex_set_free().
 */
#ifndef IDLEFETCH_MSGINDEX_H
#define IDLEFETCH_MSGINDEX_H
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

/* The index file's size in bytes; 0 when it is missing or unreadable. */
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
 * Then rewrites the index with the matched lines only, under the server's
 * uidvalidity and UIDs. On return m->v is sorted by UID, each message's
 * `by` set if it matched. Returns 0 or -errno with err filled; the index
 * is unchanged then.
 */
int
msgindex_recover(struct msgindex_set *m, const char *path, const char *maildir,
    uint32_t tag, uint32_t uidvalidity, char *err, size_t errlen);

void msgindex_set_free(struct msgindex_set *m);

/*
 * Rewrites the index at path with the lines of the n UIDs the server
 * holds under uidvalidity (uids: sorted here), one each, and the files of
 * tag in maildir it lacks among them; the others are dropped. Returns 0
 * or -errno with err filled; the index is unchanged then.
 */
int msgindex_compact(const char *path, const char *maildir, uint32_t tag,
    uint32_t uidvalidity, uint32_t *uids, size_t n, struct msgindex_counts *out,
    char *err, size_t errlen);

#endif
