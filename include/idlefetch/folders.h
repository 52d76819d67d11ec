/*
 * folders: which folders an account fetches when it says `folders = *`:
 * the named ones (INBOX first), then every subscribed folder the server
 * lists, but those that match an `exclude` pattern, the `after = move:`
 * target, those idlefetch cannot fetch, and those whose Maildir++ folder
 * another keeps. Pure: the session feeds it the server's LSUB (or LIST)
 * replies, and tells it which folder's state claims a Maildir folder.
 */
#ifndef IDLEFETCH_FOLDERS_H
#define IDLEFETCH_FOLDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"

/*
 * At most this many folders from folders = *: a server that lists a
 * million would otherwise have idlefetch make a million Maildirs.
 */
#define FOLDERS_MAX 1000

/*
 * A folder left out because a Maildir target would deliver it into the
 * Maildir++ folder of another (see folders_settle()).
 */
struct folders_clash {
	char *name; /* owned; the folder left out (UTF-8) */
	char *owner; /* owned; the one that keeps the Maildir folder */
	char *dir; /* owned; the Maildir folder both map to */
	bool by_state; /* owner's state claims it; else its name sorts first */
};

struct folder_set {
	char **names; /* owned; UTF-8, as `folders =` would name them */
	char **wires; /* owned; each as the server spells it */
	size_t n, cap;
	struct folders_clash *clashes; /* owned; folders_settle()'s */
	size_t nclashes;
};

/* Starts fs with the account's named folders. */
void folders_init(struct folder_set *fs, const struct account *a);
void folders_free(struct folder_set *fs);

enum folders_verdict {
	FOLDERS_ADDED,
	FOLDERS_KNOWN, /* named already, or listed twice */
	FOLDERS_UNUSABLE, /* \Noselect, \NonExistent */
	FOLDERS_EXCLUDED, /* an exclude pattern, or the move target */
	/* \All, \Flagged, \Important: copies of other folders' mail */
	FOLDERS_VIRTUAL,
	FOLDERS_BAD_NAME, /* why says what is wrong with it */
	FOLDERS_TOO_MANY, /* FOLDERS_MAX reached: left out */
};

/*
 * One mailbox the server listed: its name as the server spells it
 * (modified UTF-7), the hierarchy delimiter (0: none) and its LISTF_*
 * flags. why (may be NULL) explains FOLDERS_BAD_NAME.
 */
enum folders_verdict folders_add(struct folder_set *fs, const struct account *a,
    const char *wire, char delim, unsigned flags, char *why, size_t len);

/*
 * Whether an exclude pattern of a matches name (UTF-8). '*' matches any
 * run of characters, hierarchy levels included; letters match without
 * case; '/' and '.' in a pattern match the server's delimiter; a pattern
 * also matches below "INBOX<delim>", so Trash excludes INBOX.Trash.
 */
bool folders_excluded(const struct account *a, const char *name, char delim);

/*
 * How strongly the state of a folder (named as the server spells it)
 * claims the Maildir++ folder it maps to: -1 when it has no state, else
 * the time it was last saved; the larger, the stronger.
 */
typedef int64_t folders_claim_fn(void *ud, const char *wire);

/*
 * A Maildir target delivers each folder but INBOX into the Maildir++
 * folder its name maps to, both '/' and '.' becoming '.': a.b and a/b
 * would share .a.b and mix their mail. Of the folders in fs that share
 * one, the owner keeps it: the one whose state claim() finds strongest
 * (the one that delivered there last), or, on a tie (no state at all),
 * the one whose server name sorts first (bytes, as strcmp). Neither the
 * order of LIST nor a restart changes who that is. The others leave the
 * set and are recorded in fs->clashes; named folders are judged alike.
 * claim() is asked only of folders that share a Maildir folder. Nothing
 * is done for an account without a Maildir target. Returns how many left.
 */
size_t folders_settle(struct folder_set *fs, const struct account *a,
    folders_claim_fn *claim, void *ud);

/*
 * A digest of fs->clashes that does not depend on their order: what a
 * caller compares with the last listing's, to warn of a new clash.
 * 0 when there is none.
 */
uint32_t folders_clash_mark(const struct folder_set *fs);

#endif
