/*
 * folders: which folders an account fetches when it says `folders = *`:
 * the named ones (INBOX first), then every subscribed folder the server
 * lists, but those that match an `exclude` pattern, the `after = move:`
 * target, and those idlefetch cannot fetch. Pure: the session feeds it
 * the server's LSUB (or LIST) replies.
 */
#ifndef IDLEFETCH_FOLDERS_H
#define IDLEFETCH_FOLDERS_H

#include <stdbool.h>
#include <stddef.h>

#include "idlefetch/config.h"

/*
 * At most this many folders from folders = *: a server that lists a
 * million would otherwise have idlefetch make a million Maildirs.
 */
#define FOLDERS_MAX 1000

struct folder_set {
	char **names; /* owned; UTF-8, as `folders =` would name them */
	char **wires; /* owned; each as the server spells it */
	size_t n, cap;
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

#endif
