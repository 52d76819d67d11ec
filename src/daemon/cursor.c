/*
 * cursor: one account's folders as its scheduler works through them
 * (cursor.h). It owns struct cursor: the folderset that makes the
 * mailboxes, the watch that holds them in configuration order, the folder
 * worked on and the one selected on the connection. It may call
 * folderset, watch, mailbox (select, list again, detach, prepare, their
 * status records) and conn (only to name the folder worked on); it holds
 * no state of the scheduler's and changes none.
 */
#include <stdlib.h>

#include "idlefetch/cursor.h"
#include "idlefetch/util.h"

struct cursor {
	struct folderset *fs; /* makes the folders' mailboxes */
	struct watch *w; /* the folders, in configuration order */
	struct mailbox *cur; /* the one worked on */
	struct mailbox *selected; /* on the connection (SELECT sent or done) */
	bool back_to_first; /* selecting the first folder again, to wait */
};

struct cursor *
cursor_new(uv_loop_t *loop, const struct folderset_opts *fo,
    const char *const *names, size_t n, struct status_rec *recs)
{
	struct cursor *c = xcalloc(1, sizeof(*c));

	c->fs = folderset_new(loop, fo);
	c->w = watch_new();
	for (size_t i = 0; i < n; i++)
		watch_add(c->w, folderset_mailbox(c->fs, names[i], &recs[i]),
		    false);
	c->cur = watch_at(c->w, 0);
	return c;
}

void
cursor_release(struct cursor *c)
{
	watch_free(c->w);
	c->w = NULL;
}

void
cursor_free(struct cursor *c)
{
	folderset_free(c->fs);
	free(c);
}

struct watch *
cursor_watch(const struct cursor *c)
{
	return c->w;
}

struct mailbox *
cursor_cur(const struct cursor *c)
{
	return c->cur;
}

const char *
cursor_name(const struct cursor *c)
{
	return c->cur ? mailbox_name(c->cur) : NULL;
}

struct mailbox *
cursor_selected(const struct cursor *c)
{
	return c->selected;
}

void
cursor_use(struct cursor *c, struct mailbox *mb, struct conn *conn)
{
	c->cur = mb;
	conn_set_folder(conn, mailbox_name(mb));
}

void
cursor_use_first(struct cursor *c, struct conn *conn)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		if (!mailbox_dead(watch_at(c->w, i))) {
			cursor_use(c, watch_at(c->w, i), conn);
			return;
		}
}

bool
cursor_prepare_next(struct cursor *c, struct conn *conn)
{
	size_t i = watch_index(c->w, c->cur) + 1;

	if (i >= watch_count(c->w))
		return false;
	cursor_use(c, watch_at(c->w, i), conn);
	mailbox_prepare(c->cur);
	return true;
}

void
cursor_forget(struct cursor *c)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		mailbox_detach(watch_at(c->w, i));
	c->selected = NULL;
	c->back_to_first = false;
	watch_set_notify(c->w, false);
}

enum cursor_step
cursor_next(struct cursor *c, struct conn *conn)
{
	struct mailbox *next = watch_next(c->w, c->selected);

	if (next == NULL)
		return CURSOR_SYNCED;
	cursor_use(c, next, conn);
	/* Found on the server since: its Maildir and state first. */
	return mailbox_prepared(next) ? CURSOR_SYNC : CURSOR_PREPARE;
}

/*
 * Without NOTIFY, IDLE tells only of the selected folder: the wait is on
 * the first one (INBOX, as a rule) and the others are asked with STATUS.
 * A folder the server would not open left none selected: the first that
 * opens is.
 */
enum cursor_wait
cursor_wait(struct cursor *c, bool idles, struct conn *conn)
{
	for (size_t i = 0; i < watch_count(c->w); i++) {
		struct mailbox *first = watch_at(c->w, i);

		if (!watch_usable(c->w, first))
			continue;
		if (first != c->selected && !c->back_to_first &&
		    (idles || c->selected == NULL)) {
			c->back_to_first = true;
			cursor_use(c, first, conn);
			return CURSOR_FIRST;
		}
		break;
	}
	if (c->selected == NULL)
		return CURSOR_NONE;
	c->back_to_first = false;
	cursor_use(c, c->selected, conn);
	return CURSOR_WAIT;
}

void
cursor_sync(struct cursor *c, struct conn *conn)
{
	struct mailbox *mb = c->cur;

	watch_set_pending(c->w, mb, false);
	if (mb == c->selected) {
		mailbox_again(mb);
		return;
	}
	if (c->selected != NULL)
		mailbox_detach(c->selected);
	c->selected = mb;
	mailbox_select(mb, conn);
}

bool
cursor_skip(struct cursor *c, struct mailbox *mb, const char *why)
{
	c->selected = NULL;
	if (watch_usable_besides(c->w, mb) == 0)
		return false;
	watch_skip(c->w, mb);
	status_error(mailbox_status(mb), why);
	return true;
}

void
cursor_woke(struct cursor *c)
{
	if (c->selected && watch_usable(c->w, c->selected))
		watch_set_pending(c->w, c->selected, true);
}

void
cursor_keep(struct cursor *c, size_t n, struct conn *conn)
{
	if (n == 0 || n > watch_count(c->w) || c->selected != NULL)
		fatal("cursor_keep(%zu) of %zu folders", n, watch_count(c->w));
	if (watch_index(c->w, c->cur) >= n)
		c->cur = NULL; /* its mailbox is released */
	watch_keep(c->w, n);
	if (c->cur == NULL)
		cursor_use(c, watch_at(c->w, 0), conn);
}

bool
cursor_set_folders(struct cursor *c, const char *const *names, size_t n,
    struct status_rec *recs, bool sync_new, struct conn *conn)
{
	struct watch *old = c->w;
	struct mailbox *cur = c->cur, *sel = c->selected;
	bool added, sel_kept = false;

	c->w = folderset_change(c->fs, old, names, n, recs, sync_new, &c->cur,
	    &added);
	/* folderset_change() leaves c->cur NULL when it stays. */
	c->cur = c->cur == NULL ? cur : watch_at(c->w, 0);
	for (size_t i = 0; i < n; i++)
		sel_kept |= sel != NULL && watch_at(c->w, i) == sel;
	c->selected = sel_kept ? sel : NULL;
	watch_free(old); /* releases the folders gone */
	cursor_use(c, c->cur, conn);
	return added;
}

bool
cursor_quiet(const struct cursor *c)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		if (!mailbox_quiet(watch_at(c->w, i)))
			return false;
	return true;
}

bool
cursor_settle(struct cursor *c)
{
	bool busy = false;

	for (size_t i = 0; i < watch_count(c->w); i++)
		busy |= !mailbox_settle(watch_at(c->w, i));
	return !busy;
}

void
cursor_stop(struct cursor *c)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		mailbox_stop(watch_at(c->w, i));
}

void
cursor_show(const struct cursor *c, const char *state, bool up)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		status_set_state(mailbox_status(watch_at(c->w, i)), state, up);
}

void
cursor_error(const struct cursor *c, const char *why)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		if (!mailbox_dead(watch_at(c->w, i)))
			status_error(mailbox_status(watch_at(c->w, i)), why);
}

void
cursor_gave_up(const struct cursor *c)
{
	for (size_t i = 0; i < watch_count(c->w); i++) {
		mailbox_status(watch_at(c->w, i))->gave_up = true;
		status_changed(mailbox_status(watch_at(c->w, i)));
	}
}

bool
cursor_synced_ok(const struct cursor *c)
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		if (!mailbox_dead(watch_at(c->w, i)) &&
		    !mailbox_sync_ok(watch_at(c->w, i)))
			return false;
	return true;
}

void
cursor_tally(const struct cursor *c, enum session_activity a,
    unsigned k[SESSION_ACTIVITIES])
{
	for (size_t i = 0; i < watch_count(c->w); i++)
		k[mailbox_status(watch_at(c->w, i))->gave_up ? SESSION_STOPPED :
							     a]++;
}
