/*
 * foldername: what a folder name may be and the names it becomes on disk
 * (idlefetch/foldername.h). A name from the configuration or the server
 * becomes a Maildir++ directory and a state file name, so whatever could
 * climb out of a directory, or would not fit in a file name, is refused.
 * Owns no state; calls only mutf7 and util.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/foldername.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/util.h"

bool
folder_valid(const char *s)
{
	const char *p;

	if (*s == '\0' || strlen(s) > 200 || *s == '/' || *s == '.')
		return false;
	/* UTF-8 goes to the server as modified UTF-7 (RFC 3501 5.1.3). */
	if (!utf8_valid(s))
		return false;
	for (p = s; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == '"' || ch == '\\')
			return false;
		if ((ch == '/' || ch == '.') &&
		    (p[1] == '\0' || p[1] == '/' || p[1] == '.'))
			return false;
	}
	return true;
}

/*
 * Exactly equal, except that INBOX is case-insensitive in IMAP (RFC 3501
 * 5.1), so "inbox" and "INBOX" would be fetched, and delivered, twice.
 */
bool
folder_same(const char *x, const char *y)
{
	char *wx, *wy;
	bool same;

	if (strcasecmp(x, "INBOX") == 0 && strcasecmp(y, "INBOX") == 0)
		return true;
	/* Entwürfe and Entw&APw-rfe are one folder on the server. */
	wx = mutf7_wire_name(x);
	wy = mutf7_wire_name(y);
	same = wx && wy && strcmp(wx, wy) == 0;
	free(wx);
	free(wy);
	return same;
}

/*
 * A folder becomes two file names: its state file (percent-encoded, plus
 * ".state.tmp" while it is replaced) and its Maildir++ directory (".A.B").
 * Each must fit in a file name (255 bytes), or the folder would pass
 * --check-config and fail when it is first fetched.
 */
bool
folder_ok(const char *f, char *why, size_t len)
{
	char *w, *k;
	size_t state;

	if (!folder_valid(f)) {
		snprintf(why, len,
		    "invalid folder name '%s' (UTF-8 without control "
		    "characters, '\"' or '\\', no leading '/' or '.', "
		    "no empty or '..' parts)",
		    f);
		return false;
	}
	w = mutf7_wire_name(f);
	k = folder_key(w);
	state = strlen(k) + strlen(".state.tmp");
	free(k);
	free(w);
	if (state > 255 || strlen(f) + 1 > 255) {
		snprintf(why, len,
		    "folder name '%.40s...' is too long: its state file name "
		    "would be %zu bytes (at most 255; characters other than "
		    "letters, digits, '_' and '-' take 3 each)",
		    f, state);
		return false;
	}
	return true;
}

char *
folder_maildir(const char *root, const char *folder)
{
	char *sub, *p;

	if (strcasecmp(folder, "INBOX") == 0)
		return xstrdup(root);
	sub = xasprintf("%s/.%s", root, folder);
	for (p = sub + strlen(root) + 2; *p; p++)
		if (*p == '/')
			*p = '.';
	return sub;
}

char *
folder_key(const char *folder)
{
	char *out = xmalloc(strlen(folder) * 3 + 1), *o = out;

	for (; *folder; folder++) {
		unsigned char ch = (unsigned char)*folder;

		if (isalnum(ch) || ch == '_' || ch == '-')
			*o++ = (char)ch;
		else
			o += sprintf(o, "%%%02X", ch);
	}
	*o = '\0';
	return out;
}
