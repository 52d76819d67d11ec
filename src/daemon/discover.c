/*
 * discover: lists the subscribed folders (discover.h). It owns struct
 * discovery: the folders found so far in one listing, which command the
 * server accepts, and which clashes it last warned of. It may call conn
 * (to send the listing), folders (to judge each name), state (to see
 * which folder's state claims a Maildir folder) and log; its owner hears
 * of the outcome through the callbacks it passed in.
 */
#include <stdlib.h>
#include <string.h>

#include "idlefetch/discover.h"
#include "idlefetch/folders.h"
#include "idlefetch/log.h"
#include "idlefetch/state.h"
#include "idlefetch/util.h"

struct discovery {
	uv_loop_t *loop;
	struct discovery_opts o;
	struct conn *conn; /* borrowed; while a listing runs */
	const char *folder; /* borrowed; names the log lines */
	struct folder_set found; /* what the server listed */
	bool found_capped; /* ...and it listed over FOLDERS_MAX */
	uint32_t clash_mark; /* folders_clash_mark() last warned of */
	unsigned pass; /* 1: the other of LSUB, LIST (SUBSCRIBED) */
	bool login; /* listing right after login, not a round */
};

#define LOG(d, lvl, ...)                                                       \
	log_msg((lvl), (d)->o.acct->name, (d)->folder, __VA_ARGS__)

static void listed(void *ud, const struct proto_resp *r);
static void list_line(void *ud, const struct proto_resp *r);

struct discovery *
discovery_new(uv_loop_t *loop, const struct discovery_opts *o)
{
	struct discovery *d = xcalloc(1, sizeof(*d));

	d->loop = loop;
	d->o = *o;
	return d;
}

void
discovery_free(struct discovery *d)
{
	if (d == NULL)
		return;
	folders_free(&d->found);
	free(d);
}

bool
discovery_at_login(const struct discovery *d)
{
	return d->login;
}

void
discovery_reset(struct discovery *d)
{
	d->pass = 0;
	folders_free(&d->found);
}

static void
send_list(struct discovery *d)
{
	uint32_t caps = conn_caps(d->conn);

	folders_free(&d->found);
	folders_init(&d->found, d->o.acct);
	d->found_capped = false;
	/*
	 * LIST (SUBSCRIBED) marks a subscribed folder that no longer exists
	 * \NonExistent; LSUB goes on naming it as if it did.
	 */
	conn_cmd(d->conn, HAS_LIST, listed, list_line, d, "%s",
	    (d->pass == 0) != !!(caps & CAP_LIST_EXTENDED) ?
		"LSUB \"\" \"*\"" :
		(caps & CAP_SPECIAL_USE) ?
		"LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE)" :
		"LIST (SUBSCRIBED) \"\" \"*\"");
}

void
discovery_start(struct discovery *d, struct conn *c, bool login,
    const char *folder)
{
	d->conn = c;
	d->login = login;
	d->folder = folder;
	send_list(d);
}

/* A line of the subscribed folders' listing (or NOTIFY's news). */
static void
list_line(void *ud, const struct proto_resp *r)
{
	struct discovery *d = ud;
	enum log_level quiet = d->login ? LOGL_WARN : LOGL_DEBUG;
	char why[512];

	/* Only the subscribed: NOTIFY may slip in news of any other. */
	if (!(r->list_flags & (LISTF_LSUB | LISTF_SUBSCRIBED))) {
		d->o.news(d->o.ud, r);
		return;
	}
	switch (folders_add(&d->found, d->o.acct, r->name, r->list_delim,
	    r->list_flags, why, sizeof(why))) {
	case FOLDERS_BAD_NAME:
		LOG(d, quiet, "not fetching a subscribed folder: %s", why);
		break;
	case FOLDERS_VIRTUAL:
		LOG(d, d->login ? LOGL_INFO : LOGL_DEBUG,
		    "not fetching a subscribed folder: %s", why);
		break;
	case FOLDERS_TOO_MANY:
		if (!d->found_capped)
			LOG(d, quiet,
			    "the server lists more than %d subscribed "
			    "folders; fetching the first %d",
			    FOLDERS_MAX, FOLDERS_MAX);
		d->found_capped = true;
		break;
	default:
		break;
	}
}

/*
 * How strongly a folder's state claims its Maildir++ folder: when the
 * state was last saved (-1: never), since the folder that delivered there
 * last is the one whose mail it holds. Asked only of folders whose names
 * share one, so this stat on the loop is as rare as such names (the
 * account's lock is taken on the loop too).
 */
static int64_t
state_claim(void *ud, const char *wire)
{
	struct discovery *d = ud;
	char *path = state_path(d->o.state_dir, d->o.acct->name, wire);
	int64_t t = -1;
	uv_fs_t req;

	if (uv_fs_stat(d->loop, &req, path, NULL) == 0)
		t = (int64_t)req.statbuf.st_mtim.tv_sec * 1000000000 +
		    req.statbuf.st_mtim.tv_nsec;
	uv_fs_req_cleanup(&req);
	free(path);
	return t;
}

/*
 * Folders whose mail would go into one Maildir++ folder: only its owner
 * is fetched. Warned of after logging in and when the clashes change,
 * not at every round that lists the same ones again.
 */
static void
settle_found(struct discovery *d)
{
	uint32_t mark;
	enum log_level lvl;

	folders_settle(&d->found, d->o.acct, state_claim, d);
	mark = folders_clash_mark(&d->found);
	lvl = d->login || mark != d->clash_mark ? LOGL_WARN : LOGL_DEBUG;
	d->clash_mark = mark;
	for (size_t i = 0; i < d->found.nclashes; i++) {
		const struct folders_clash *c = &d->found.clashes[i];

		LOG(d, lvl,
		    "not fetching '%s': its mail would go into %s with "
		    "that of '%s', %s; rename '%s' on the server to fetch it",
		    c->name, c->dir, c->owner,
		    c->by_state ? "whose Maildir folder it is" :
				  "which sorts first and keeps it",
		    c->name);
	}
}

static void
listed(void *ud, const struct proto_resp *r)
{
	struct discovery *d = ud;
	struct folder_set found;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK && d->pass == 0) {
		d->pass = 1;
		send_list(d);
		return;
	}
	if (r->status == PROTO_OK)
		settle_found(d);
	/* Ours no more: the owner may close the connection (reset) meanwhile. */
	found = d->found;
	memset(&d->found, 0, sizeof(d->found));
	d->o.done(d->o.ud, r,
	    r->status == PROTO_OK ? (const char *const *)found.names : NULL,
	    r->status == PROTO_OK ? found.n : 0);
	folders_free(&found);
}
