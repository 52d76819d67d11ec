/*
 * lookup: a folder looked for by name (lookup.h). It owns the LIST
 * commands of one lookup and what their lines named; it calls only the
 * connection (conn_cmd) and proto's quoting, and reports to the callback
 * it was given.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/lookup.h"
#include "idlefetch/util.h"

struct lookup {
	struct conn *c;
	const char *name; /* borrowed: what LIST looks for */
	bool wide; /* listing "*NAME" (else NAME) */
	bool found; /* a LIST reply named it exactly */
	char *guess; /* a name the server has that ends in it */
	lookup_done_cb *done;
	void *ud;
};

struct lookup *
lookup_new(void)
{
	return xcalloc(1, sizeof(struct lookup));
}

void
lookup_free(struct lookup *lk)
{
	if (lk == NULL)
		return;
	free(lk->guess);
	free(lk);
}

/*
 * Whether a name the server listed, with its hierarchy delimiter, is the
 * configured name below some prefix: the configured levels, separated by
 * '/' or '.', are the last levels of the listed name (compared without
 * case), so Archive is INBOX.Archive and Lists/dev is INBOX.Lists.dev, but
 * Archive is not MyArchive.
 */
static bool
names_same_folder(const char *listed, char delim, const char *want)
{
	size_t n = strlen(listed), m = strlen(want);

	if (n <= m)
		return false;
	if (delim == 0 || listed[n - m - 1] != delim)
		return false;
	for (size_t i = 0; i < m; i++) {
		char l = listed[n - m + i], w = want[i];
		bool lsep = l == delim, wsep = w == '/' || w == '.';

		if (lsep || wsep) {
			if (lsep != wsep)
				return false;
		} else if (tolower((unsigned char)l) != tolower((unsigned char)w))
			return false;
	}
	return true;
}

static void send_list(struct lookup *lk);

static void
list_done(void *ud, const struct proto_resp *r)
{
	struct lookup *lk = ud;

	if (r == NULL)
		return;
	if (r->status == PROTO_OK && !lk->found && !lk->wide) {
		lk->wide = true;
		free(lk->guess);
		lk->guess = NULL;
		send_list(lk);
		return;
	}
	lk->done(lk->ud, r, lk->found, lk->guess);
}

/* A line of LIST looking for the folder. */
static void
list_line(void *ud, const struct proto_resp *r)
{
	struct lookup *lk = ud;

	if (strcmp(r->name, lk->name) == 0)
		lk->found = true;
	else if (lk->guess == NULL &&
	    names_same_folder(r->name, r->list_delim, lk->name))
		lk->guess = xstrdup(r->name);
}

static void
send_list(struct lookup *lk)
{
	char mbox[512], pattern[300];

	snprintf(pattern, sizeof(pattern), "%s%s", lk->wide ? "*" : "",
	    lk->name);
	if (lk->wide)
		for (char *p = pattern; *p; p++)
			if (*p == '/' || *p == '.')
				*p = '*';
	if (proto_quote(mbox, sizeof(mbox), pattern) < 0)
		fatal("folder name '%s' cannot be quoted", lk->name);
	lk->found = false;
	conn_cmd(lk->c, HAS_LIST, list_done, list_line, lk, "LIST \"\" %s",
	    mbox);
}

void
lookup_start(struct lookup *lk, struct conn *c, const char *name, bool wide,
    lookup_done_cb *done, void *ud)
{
	lk->c = c;
	lk->name = name;
	lk->wide = wide;
	lk->done = done;
	lk->ud = ud;
	free(lk->guess);
	lk->guess = NULL;
	send_list(lk);
}
