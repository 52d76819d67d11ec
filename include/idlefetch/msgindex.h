/*
 * msgindex: what a folder's Maildir holds, as a key (idlefetch/header.h)
 * and the server's size for each message, so that a folder the server
 * renumbered can be matched against it without fetching it all again.
 *
 * One line per delivered message, "UIDVALIDITY UID SIZE KEY FILE" (FILE:
 * the unique start of its Maildir name, up to its tag), appended to
 * STATE_DIR/ACCOUNT/FOLDER-KEY.index by each delivery; it is not fsynced
 * (it costs no flush per message): msgindex_load() completes it from the
 * Maildir's files of this folder that it lacks. A message the user deleted
 * from the Maildir stays in it, so a recovery does not bring it back.
 *
 * Blocking: the session calls these from the threadpool.
 */
#ifndef IDLEFETCH_MSGINDEX_H
#define IDLEFETCH_MSGINDEX_H
#include <stddef.h>
#include <stdint.h>

struct msgindex_ent {
	uint64_t key; /* header_key(); 0: nothing identifies it */
	uint32_t size; /* RFC822.SIZE: with CRLF line ends */
	uint32_t uidvalidity, uid;
	uint32_t used; /* msgindex_match() paired it with a server message */
	const char *file; /* msgindex_append(): the FILE part */
	uint64_t file_hash; /* ...as read back: which file it is */
};

struct msgindex {
	struct msgindex_ent *v; /* sorted by key, then size */
	size_t n, cap;
	unsigned from_maildir; /* entries read from files the index lacked */
};

/* The index next to a state file ("X.state" -> "X.index"); caller frees. */
char *msgindex_path(const char *state_path);

/* Appends n entries; best effort (msgindex_load() repairs a lost tail). */
int msgindex_append(const char *path, const struct msgindex_ent *e, size_t n);

/*
 * Reads the index at path and the files of tag in maildir that it lacks
 * (their header parsed, their size counted with CRLF line ends), appends
 * those to the index and sorts all for msgindex_match(). Returns 0 or
 * -errno with err filled; *ix is then empty. msgindex_free() frees it.
 */
int msgindex_load(struct msgindex *ix, const char *path, const char *maildir,
    uint32_t tag, char *err, size_t errlen);

/*
 * One delivered file's key and server size, and its Message-ID into msgid
 * (STATE_MSGID_MAX bytes; may be NULL). 0, 1 if the file is gone, or
 * -errno.
 */
int msgindex_read_file(const char *path, struct msgindex_ent *e, char *msgid);

/*
 * Whether an unused entry has this key and size; marks it used, so n
 * copies on the server match n copies in the Maildir, not more.
 */
int msgindex_match(struct msgindex *ix, uint64_t key, uint32_t size);

void msgindex_free(struct msgindex *ix);

#endif
