/*
 * folders: the folder set of `folders = *` (see folders.h). Pure: what
 * it needs of the disk (whose state claims a Maildir folder) it asks the
 * caller through a callback.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/folders.h"
#include "idlefetch/foldername.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/proto.h"
#include "idlefetch/util.h"

/* Takes wire (the server's spelling) over. */
static void
push(struct folder_set *fs, const char *name, char *wire)
{
	if (fs->n == fs->cap) {
		fs->cap = fs->cap ? 2 * fs->cap : 8;
		fs->names = xrealloc(fs->names, fs->cap * sizeof(*fs->names));
		fs->wires = xrealloc(fs->wires, fs->cap * sizeof(*fs->wires));
	}
	fs->names[fs->n] = xstrdup(name);
	fs->wires[fs->n++] = wire;
}

void
folders_init(struct folder_set *fs, const struct account *a)
{
	memset(fs, 0, sizeof(*fs));
	for (size_t i = 0; i < a->nfolders; i++) {
		char *w = mutf7_wire_name(a->folders[i]);

		if (w == NULL) /* the configuration checked it */
			fatal("folder name '%s' is not UTF-8", a->folders[i]);
		push(fs, a->folders[i], w);
	}
}

void
folders_free(struct folder_set *fs)
{
	for (size_t i = 0; i < fs->n; i++) {
		free(fs->names[i]);
		free(fs->wires[i]);
	}
	for (size_t i = 0; i < fs->nclashes; i++) {
		free(fs->clashes[i].name);
		free(fs->clashes[i].owner);
		free(fs->clashes[i].dir);
	}
	free(fs->names);
	free(fs->wires);
	free(fs->clashes);
	memset(fs, 0, sizeof(*fs));
}

/* Whether the server's name is one of the set: INBOX in any case. */
static bool
known(const struct folder_set *fs, const char *wire)
{
	bool inbox = strcasecmp(wire, "INBOX") == 0;

	for (size_t i = 0; i < fs->n; i++)
		if (strcmp(fs->wires[i], wire) == 0 ||
		    (inbox && strcasecmp(fs->wires[i], "INBOX") == 0))
			return true;
	return false;
}

/* A pattern byte against a name byte: letters without case, separators. */
static bool
same_char(char p, char n, char delim)
{
	bool psep = p == '/' || (p == '.' && delim == '.'),
	     nsep = delim != 0 && n == delim;

	if (psep || nsep)
		return psep && nsep;
	return tolower((unsigned char)p) == tolower((unsigned char)n);
}

/*
 * '*' matches any run. Iterative, with one point to come back to: the
 * last '*' seen, so a long name and many stars stay linear per star.
 */
static bool
glob(const char *pat, const char *name, char delim)
{
	const char *star = NULL, *resume = NULL;

	while (*name) {
		if (*pat == '*') {
			star = ++pat;
			resume = name;
		} else if (*pat && same_char(*pat, *name, delim)) {
			pat++;
			name++;
		} else if (star) {
			pat = star;
			name = ++resume;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

bool
folders_excluded(const struct account *a, const char *name, char delim)
{
	const char *below = NULL;

	/* Courier and Cyrus keep every folder below "INBOX.". */
	if (delim && strncasecmp(name, "INBOX", 5) == 0 && name[5] == delim &&
	    name[6])
		below = name + 6;
	for (size_t i = 0; i < a->nexclude; i++)
		if (glob(a->exclude[i], name, delim) ||
		    (below && glob(a->exclude[i], below, delim)))
			return true;
	return false;
}

enum folders_verdict
folders_add(struct folder_set *fs, const struct account *a, const char *wire,
    char delim, unsigned flags, char *why, size_t len)
{
	enum folders_verdict v = FOLDERS_ADDED;
	char *name, *back = NULL, buf[512];

	if (why == NULL) {
		why = buf;
		len = sizeof(buf);
	}
	if (flags & (LISTF_NOSELECT | LISTF_NONEXISTENT))
		return FOLDERS_UNUSABLE;
	if (known(fs, wire))
		return FOLDERS_KNOWN;
	/* Before any work: a server may list millions. */
	if (fs->n >= FOLDERS_MAX)
		return FOLDERS_TOO_MANY;
	name = mutf7_decode(wire);
	if (name == NULL) {
		snprintf(why, len,
		    "the server's folder name '%s' is not valid modified "
		    "UTF-7",
		    wire);
		return FOLDERS_BAD_NAME;
	}
	/* It must come back as the same wire name, or SELECT would miss. */
	back = mutf7_wire_name(name);
	if (back == NULL || strcmp(back, wire) != 0) {
		snprintf(why, len,
		    "the server's folder name '%s' is spelt in a way idlefetch "
		    "would not send back unchanged",
		    wire);
		v = FOLDERS_BAD_NAME;
	} else if (!folder_ok(name, why, len)) {
		v = FOLDERS_BAD_NAME;
	} else if (a->move_to && folder_same(name, a->move_to)) {
		v = FOLDERS_EXCLUDED; /* fetching it would deliver twice */
	} else if (folders_excluded(a, name, delim)) {
		v = FOLDERS_EXCLUDED;
	} else if (flags & LISTF_VIRTUAL) {
		/* Gmail's All Mail: each message again, from INBOX too. */
		snprintf(why, len,
		    "'%s' shows messages kept in other folders (\\All, "
		    "\\Flagged or \\Important): fetching it would deliver "
		    "them twice; name it in folders = to fetch it anyway",
		    name);
		v = FOLDERS_VIRTUAL;
	}
	if (v == FOLDERS_ADDED) {
		push(fs, name, back);
		back = NULL;
	}
	free(back);
	free(name);
	return v;
}

/* A folder of the set and the Maildir folder it would be delivered to. */
struct slot {
	char *dir;
	size_t i;
};

/* By Maildir folder, then by place in the set: qsort is not stable. */
static int
by_dir(const void *x, const void *y)
{
	const struct slot *p = x, *q = y;
	int c = strcmp(p->dir, q->dir);

	if (c != 0)
		return c;
	return p->i < q->i ? -1 : p->i > q->i;
}

/* Of the n folders in g that share one Maildir folder, the owner's index. */
static size_t
owner_of(const struct folder_set *fs, const struct slot *g, size_t n,
    folders_claim_fn *claim, void *ud, bool *by_state)
{
	size_t best = g[0].i;
	int64_t top = claim(ud, fs->wires[best]);

	for (size_t k = 1; k < n; k++) {
		size_t i = g[k].i;
		int64_t c = claim(ud, fs->wires[i]);

		if (c > top ||
		    (c == top && strcmp(fs->wires[i], fs->wires[best]) < 0)) {
			best = i;
			top = c;
		}
	}
	*by_state = top >= 0;
	return best;
}

/* Records the folder at i as left out for owner, and takes it out of fs. */
static void
leave_out(struct folder_set *fs, size_t i, size_t owner, const char *dir,
    bool by_state, bool *gone)
{
	struct folders_clash *c;

	fs->clashes =
	    xrealloc(fs->clashes, (fs->nclashes + 1) * sizeof(*fs->clashes));
	c = &fs->clashes[fs->nclashes++];
	c->name = xstrdup(fs->names[i]);
	c->owner = xstrdup(fs->names[owner]);
	c->dir = xstrdup(dir);
	c->by_state = by_state;
	gone[i] = true;
}

/* Drops the folders marked gone, keeping the others in their order. */
static void
compact(struct folder_set *fs, const bool *gone)
{
	size_t j = 0;

	for (size_t i = 0; i < fs->n; i++) {
		if (gone[i]) {
			free(fs->names[i]);
			free(fs->wires[i]);
			continue;
		}
		fs->names[j] = fs->names[i];
		fs->wires[j++] = fs->wires[i];
	}
	fs->n = j;
}

size_t
folders_settle(struct folder_set *fs, const struct account *a,
    folders_claim_fn *claim, void *ud)
{
	struct slot *s;
	bool *gone;
	size_t lo, hi, n = fs->n, left = fs->nclashes;

	/* An MDA or LMTP target keeps every folder apart by its state. */
	if (a->maildir == NULL || n < 2)
		return 0;
	s = xcalloc(n, sizeof(*s));
	gone = xcalloc(n, sizeof(*gone));
	for (size_t i = 0; i < n; i++) {
		s[i].dir = folder_maildir(a->maildir, fs->names[i]);
		s[i].i = i;
	}
	qsort(s, n, sizeof(*s), by_dir);
	for (lo = 0; lo < n; lo = hi) {
		size_t owner;
		bool by_state;

		for (hi = lo + 1; hi < n && strcmp(s[hi].dir, s[lo].dir) == 0;
		     hi++)
			;
		if (hi - lo < 2)
			continue;
		owner = owner_of(fs, s + lo, hi - lo, claim, ud, &by_state);
		for (size_t k = lo; k < hi; k++)
			if (s[k].i != owner)
				leave_out(fs, s[k].i, owner, s[k].dir, by_state,
				    gone);
	}
	compact(fs, gone);
	for (size_t i = 0; i < n; i++)
		free(s[i].dir);
	free(s);
	free(gone);
	return fs->nclashes - left;
}

uint32_t
folders_clash_mark(const struct folder_set *fs)
{
	uint32_t m = 0;

	/* XOR: the same clashes listed in another order give the same mark. */
	for (size_t i = 0; i < fs->nclashes; i++) {
		const struct folders_clash *c = &fs->clashes[i];
		uint32_t h = fnv1a(2166136261u, c->name, strlen(c->name) + 1);

		m ^= fnv1a(h, c->owner, strlen(c->owner));
	}
	return fs->nclashes > 0 && m == 0 ? 1 : m;
}
