/*
 * watch: the folders of one connection and their news (watch.h). It owns
 * struct watch and the per-folder record in it; it holds the folders'
 * mailboxes, and may call mailbox (names, whether a folder is dead),
 * selection (what a folder's SELECT said, its name on the wire), conn
 * (to send NOTIFY and STATUS) and proto (to quote names). It logs
 * nothing: the scheduler, which decides what news leads to, does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/selection.h"
#include "idlefetch/util.h"
#include "idlefetch/watch.h"

struct folder {
	struct mailbox *mb; /* owned */
	bool pending; /* to sync: at login, after news of it */
	bool skipped; /* the server would not open it, this connection */
	uint32_t uidnext; /* the last UIDNEXT seen, 0: unknown */
	uint32_t uidvalidity; /* ...and UIDVALIDITY with it */
};

struct watch {
	struct folder *v; /* in configuration order */
	size_t n, cap;
	bool notify; /* NOTIFY SET accepted: the server tells of every folder */
};

/* A folder's name as the server spells it (modified UTF-7). */
static const char *
wire(const struct mailbox *mb)
{
	return selection_wire(mailbox_selection(mb));
}

struct watch *
watch_new(void)
{
	return xcalloc(1, sizeof(struct watch));
}

void
watch_free(struct watch *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++)
		mailbox_release(w->v[i].mb);
	free(w->v);
	free(w);
}

static struct folder *
append(struct watch *w)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 4;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	w->v[w->n] = (struct folder){ 0 };
	return &w->v[w->n++];
}

void
watch_add(struct watch *w, struct mailbox *mb, bool pending)
{
	struct folder *f = append(w);

	f->mb = mb;
	f->pending = pending;
}

struct mailbox *
watch_move(struct watch *to, struct watch *from, const char *name,
    struct status_rec *rec)
{
	for (size_t j = 0; j < from->n; j++) {
		struct folder *old = &from->v[j];
		struct mailbox *mb = old->mb;

		if (strcmp(mailbox_name(mb), name) != 0)
			continue;
		*append(to) = *old;
		mailbox_rename(mb, name, rec);
		memmove(old, old + 1, (from->n - j - 1) * sizeof(*old));
		from->n--;
		return mb;
	}
	return NULL;
}

void
watch_keep(struct watch *w, size_t n)
{
	if (n > w->n)
		fatal("watch_keep(%zu) of %zu folders", n, w->n);
	for (size_t i = n; i < w->n; i++)
		mailbox_release(w->v[i].mb);
	w->n = n;
}

size_t
watch_count(const struct watch *w)
{
	return w->n;
}

struct mailbox *
watch_at(const struct watch *w, size_t i)
{
	if (i >= w->n)
		fatal("watch_at(%zu) of %zu folders", i, w->n);
	return w->v[i].mb;
}

size_t
watch_index(const struct watch *w, const struct mailbox *mb)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].mb == mb)
			return i;
	fatal("a mailbox the session does not hold");
}

static struct folder *
folder_of(const struct watch *w, const struct mailbox *mb)
{
	return &w->v[watch_index(w, mb)];
}

static bool
usable(const struct folder *f)
{
	return !mailbox_dead(f->mb) && !f->skipped;
}

bool
watch_usable(const struct watch *w, const struct mailbox *mb)
{
	return usable(folder_of(w, mb));
}

size_t
watch_live(const struct watch *w)
{
	size_t n = 0;

	for (size_t i = 0; i < w->n; i++)
		n += !mailbox_dead(w->v[i].mb);
	return n;
}

size_t
watch_usable_besides(const struct watch *w, const struct mailbox *mb)
{
	size_t n = 0;

	for (size_t i = 0; i < w->n; i++)
		n += usable(&w->v[i]) && w->v[i].mb != mb;
	return n;
}

bool
watch_pending(const struct watch *w, const struct mailbox *mb)
{
	return folder_of(w, mb)->pending;
}

void
watch_set_pending(struct watch *w, struct mailbox *mb, bool pending)
{
	folder_of(w, mb)->pending = pending;
}

void
watch_skip(struct watch *w, struct mailbox *mb)
{
	struct folder *f = folder_of(w, mb);

	f->skipped = true;
	f->pending = false;
}

struct mailbox *
watch_next(const struct watch *w, const struct mailbox *selected)
{
	if (selected != NULL && folder_of(w, selected)->pending)
		return (struct mailbox *)selected;
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].pending && usable(&w->v[i]))
			return w->v[i].mb;
	return NULL;
}

void
watch_login(struct watch *w)
{
	for (size_t i = 0; i < w->n; i++) {
		w->v[i].skipped = false;
		w->v[i].pending = !mailbox_dead(w->v[i].mb);
		mailbox_reset_ok(w->v[i].mb);
	}
}

void
watch_synced(struct watch *w, const struct mailbox *mb)
{
	struct folder *f = folder_of(w, mb);

	f->uidnext = selection_uidnext(mailbox_selection(mb));
	f->uidvalidity = selection_uidvalidity(mailbox_selection(mb));
}

void
watch_set_notify(struct watch *w, bool on)
{
	w->notify = on;
}

bool
watch_notify(const struct watch *w)
{
	return w->notify;
}

/*
 * RFC 5465 5.8: the server tells of nothing more until NOTIFY is set
 * again. Every folder is synced, as news may have been lost.
 */
void
watch_overflow(struct watch *w)
{
	w->notify = false;
	for (size_t i = 0; i < w->n; i++)
		if (usable(&w->v[i]))
			w->v[i].pending = true;
}

/*
 * Whether NOTIFY tells of the folder. Dovecot 2.3 matches and names
 * folders in NOTIFY in UTF-8 instead of modified UTF-7, so it never tells
 * of one whose name is not ASCII: those are asked with STATUS.
 */
static bool
told_of(const struct watch *w, const struct folder *f)
{
	return w->notify &&
	    strcmp(wire(f->mb), mailbox_name(f->mb)) == 0;
}

bool
watch_polls_others(const struct watch *w)
{
	size_t n = 0;

	for (size_t i = 0; i < w->n; i++)
		n += usable(&w->v[i]) && !told_of(w, &w->v[i]);
	return w->notify ? n > 0 : n > 1;
}

/* A folder's name as the server spells it, quoted into q. */
static void
quote(char *q, size_t len, const struct mailbox *mb)
{
	if (proto_quote(q, len, wire(mb)) < 0)
		fatal("folder name '%s' cannot be quoted", wire(mb));
}

/*
 * NOTIFY (RFC 5465): news of the selected folder as EXISTS, of the others
 * as STATUS with their UIDNEXT, on this one connection.
 */
void
watch_send_notify(const struct watch *w, struct conn *c, bool again,
    bool listed, conn_done_cb *done, void *ud)
{
	size_t cap = 128, len;
	char *line = xmalloc(cap), q[512];

	/*
	 * Dovecot 2.3 tells nothing more after a second NOTIFY SET on one
	 * connection, but does after NOTIFY NONE and SET again.
	 */
	if (again)
		conn_cmd(c, 0, NULL, NULL, NULL, "NOTIFY NONE");
	/*
	 * Set again (new folders, an overflow): mail that came while the
	 * server changed over may have gone untold. STATUS has it tell every
	 * folder's UIDNEXT at once (RFC 5465 3.1); those that moved are synced.
	 */
	len = (size_t)snprintf(line, cap,
	    "NOTIFY SET %s(selected (MessageNew MessageExpunge)) (mailboxes (",
	    again ? "STATUS " : "");
	for (size_t i = 0; i < w->n; i++) {
		quote(q, sizeof(q), w->v[i].mb);
		if (len + strlen(q) + 128 > cap) {
			cap = 2 * (len + strlen(q) + 128);
			line = xrealloc(line, cap);
		}
		len += (size_t)snprintf(line + len, cap - len, "%s%s",
		    i ? " " : "", q);
	}
	/*
	 * folders = *: news of folders created, removed or (un)subscribed,
	 * as "* LIST", to list them again at once (RFC 5465 5.4, 5.5).
	 */
	snprintf(line + len, cap - len, ") (MessageNew MessageExpunge))%s",
	    listed ? " (personal (MailboxName SubscriptionChange))" : "");
	conn_cmd(c, 0, done, NULL, ud, "%s", line);
	free(line);
}

unsigned
watch_poll(const struct watch *w, struct conn *c,
    const struct mailbox *selected, conn_done_cb *done, conn_untagged_cb *line,
    void *ud)
{
	unsigned sent = 0;
	char q[512];

	for (size_t i = 0; i < w->n; i++) {
		const struct folder *f = &w->v[i];

		if (!usable(f) || f->mb == selected || f->pending ||
		    told_of(w, f))
			continue;
		quote(q, sizeof(q), f->mb);
		conn_cmd(c, HAS_STATUS, done, line, ud,
		    "STATUS %s (UIDNEXT UIDVALIDITY)", q);
		sent++;
	}
	return sent;
}

static struct folder *
find(const struct watch *w, const char *name)
{
	for (size_t i = 0; i < w->n; i++) {
		const char *n = wire(w->v[i].mb);

		/* INBOX is the one name without case (RFC 3501 5.1). */
		if (strcmp(n, name) == 0 ||
		    (strcasecmp(n, "INBOX") == 0 && strcasecmp(name, n) == 0))
			return &w->v[i];
	}
	return NULL;
}

struct mailbox *
watch_news(struct watch *w, const struct proto_resp *r,
    const struct mailbox *selected, bool *fresh)
{
	struct folder *f = find(w, r->name);

	*fresh = false;
	if (f == NULL || !usable(f) || f->mb == selected)
		return NULL;
	if ((r->has & HAS_STATUS_UIDNEXT) && f->uidnext != 0 &&
	    r->status_uidnext == f->uidnext &&
	    r->status_uidvalidity == f->uidvalidity)
		return NULL;
	*fresh = !f->pending;
	f->pending = true;
	return f->mb;
}
