/*
 * folderset: the mailboxes of one account's folders, made alike, and the
 * change from one set of folders to the next (folderset.h). It owns struct
 * folderset; it may call mailbox (to make, rename and detach them), watch
 * (which holds them), mutf7 (after = move:'s target) and log.
 */
#include <stdlib.h>
#include <string.h>

#include "idlefetch/folderset.h"
#include "idlefetch/log.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/util.h"

struct folderset {
	uv_loop_t *loop;
	struct folderset_opts o;
	char *move_wire; /* after = move: its target, as the server spells it */
};

struct folderset *
folderset_new(uv_loop_t *loop, const struct folderset_opts *o)
{
	struct folderset *fs = xcalloc(1, sizeof(*fs));

	fs->loop = loop;
	fs->o = *o;
	if (o->acct->move_to) {
		fs->move_wire = mutf7_wire_name(o->acct->move_to);
		if (fs->move_wire == NULL)
			fatal("folder name '%s' is not UTF-8",
			    o->acct->move_to);
	}
	return fs;
}

void
folderset_free(struct folderset *fs)
{
	if (fs == NULL)
		return;
	free(fs->move_wire);
	free(fs);
}

struct mailbox *
folderset_mailbox(struct folderset *fs, const char *name,
    struct status_rec *rec)
{
	return mailbox_new(fs->loop,
	    &(struct mailbox_opts){ .acct = fs->o.acct,
		.state_dir = fs->o.state_dir,
		.name = name,
		.status = rec,
		.move_wire = fs->move_wire,
		.ops = fs->o.ops,
		.ud = fs->o.ud });
}

/* The folder worked on, for log lines; NULL while the folders change. */
static const char *
cur_name(struct mailbox *const *cur)
{
	return *cur ? mailbox_name(*cur) : NULL;
}

/*
 * The folder named moves from old to w with what is known of it, or a
 * new one is made ready and synced: true when it is new.
 */
static bool
keep_or_add(struct folderset *fs, struct watch *w, struct watch *old,
    const char *name, struct status_rec *rec, bool sync_new,
    struct mailbox **cur)
{
	struct mailbox *moved = watch_move(w, old, name, rec);

	if (moved != NULL) {
		/* Log lines name no folder while the folders change. */
		if (moved == *cur)
			*cur = NULL;
		return false;
	}
	watch_add(w, folderset_mailbox(fs, name, rec), sync_new);
	log_msg(LOGL_INFO, fs->o.acct->name, cur_name(cur),
	    "now fetching folder %s too", name);
	return true;
}

struct watch *
folderset_change(struct folderset *fs, struct watch *old,
    const char *const *names, size_t n, struct status_rec *recs, bool sync_new,
    struct mailbox **cur, bool *added)
{
	struct watch *w = watch_new();

	if (n == 0)
		fatal("session_set_folders(%zu)", n);
	*added = false;
	watch_set_notify(w, watch_notify(old));
	for (size_t i = 0; i < n; i++)
		*added |=
		    keep_or_add(fs, w, old, names[i], &recs[i], sync_new, cur);
	for (size_t j = 0; j < watch_count(old); j++) {
		struct mailbox *gone = watch_at(old, j);

		log_msg(LOGL_INFO, fs->o.acct->name, cur_name(cur),
		    "folder %s is no longer subscribed or no longer "
		    "exists: not fetching it any more",
		    mailbox_name(gone));
		mailbox_detach(gone);
	}
	return w;
}
