/*
 * foldername: the rules for a folder's name, and what it becomes on disk:
 * its Maildir++ directory and the key its state and index files are named
 * by. Storage (state, msgindex) names files with it, so it knows nothing
 * of the configuration: callers pass the strings it needs.
 */
#ifndef IDLEFETCH_FOLDERNAME_H
#define IDLEFETCH_FOLDERNAME_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Whether s is a name that cannot climb out of a directory: UTF-8
 * without '"' or '\', no leading '/' or '.', no empty or '..' parts.
 */
bool folder_valid(const char *s);
/*
 * Whether a folder name can be fetched: folder_valid() and short enough
 * for its file names. If not, why says so.
 */
bool folder_ok(const char *f, char *why, size_t len);
/* Whether two names are one mailbox on the server (INBOX, UTF-7). */
bool folder_same(const char *x, const char *y);
/*
 * Maildir directory for a folder under the Maildir at root: root itself
 * for INBOX, a Maildir++ subfolder (".A.B") for anything else. Caller
 * frees.
 */
char *folder_maildir(const char *root, const char *folder);
/* File-name-safe, collision-free encoding of a folder name. Caller frees. */
char *folder_key(const char *folder);

#endif
