/*
 * selection: a folder's SELECT step (selection.h). It owns the SELECT
 * command, the lookups by name around it, what the selected folder's
 * untagged replies said, and the decision, from the saved state, of what
 * the sync does next. It calls only the connection (conn_cmd) and the
 * lookup, and reports to the callback it was given; the mailbox that owns
 * it changes its own state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/log.h"
#include "idlefetch/lookup.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/selection.h"
#include "idlefetch/util.h"

struct selection {
	const struct account *a; /* borrowed */
	const char *name; /* borrowed; UTF-8 */
	char *wire; /* the name as the server spells it: modified UTF-7 */
	const char *move_wire; /* borrowed: after = move:'s target */
	struct lookup *lk; /* a folder looked for by name */
	char *err; /* SELECT's refusal, while LIST looks for it */
	struct conn *c; /* during a SELECT */
	const struct state_rec *st; /* borrowed: the saved state */
	selection_done_cb *done;
	void *ud;
	uint32_t uidvalidity; /* from SELECT */
	uint32_t uidnext; /* from SELECT, 0 when it gave none */
	uint32_t exists;
	bool move_checked; /* the move: target was found on the server */
};

#define LOG(s, lvl, ...) log_msg((lvl), (s)->a->name, (s)->name, __VA_ARGS__)

size_t
selection_size(void)
{
	return sizeof(struct selection);
}

struct selection *
selection_init(void *mem, const struct account *acct, const char *name,
    const char *move_wire)
{
	struct selection *s = mem;

	memset(s, 0, sizeof(*s));
	s->a = acct;
	s->name = name;
	s->wire = mutf7_wire_name(name);
	if (s->wire == NULL)
		fatal("folder name '%s' is not UTF-8", name);
	s->move_wire = move_wire;
	s->lk = lookup_new();
	return s;
}

void
selection_fini(struct selection *s)
{
	lookup_free(s->lk);
	free(s->err);
	free(s->wire);
}

void
selection_rename(struct selection *s, const char *name)
{
	s->name = name;
}

static void __attribute__((format(printf, 4, 5)))
end(struct selection *s, enum selection_end e, bool final, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->done(s->ud, e, final, why);
}

/*
 * Words kept from a reply for a later log line (a refused SELECT's): on
 * the heap only while held, not in every idle connection.
 */
static void
set_err(struct selection *s, const char *src)
{
	free(s->err);
	s->err = src ? xstrdup(src) : NULL;
}

/*
 * A move: target the server does not have fails only after delivery, on
 * every sync. Ask first: look it up by name (lookup.c), which also names
 * what the server calls it: INBOX.Archive for Archive on Courier and
 * Cyrus. A refused SELECT is looked for the same way, to say what the
 * server calls the folder.
 */
static void
looked_up(void *ud, const struct proto_resp *r, bool found, const char *guess);
static const char *send_select(struct selection *s);

static const char *
look_for(struct selection *s, const char *name, bool wide)
{
	lookup_start(s->lk, s->c, name, wide, looked_up, s);
	return "looking for a folder by name";
}

/* A refused SELECT, looked for by name: say what the server calls it. */
static void
select_refused(struct selection *s, const char *guess)
{
	char why[512];

	if (guess)
		snprintf(why, sizeof(why),
		    "cannot open folder %s: %s; the server has '%s' "
		    "(write it so in folders =)",
		    s->name, s->err, guess);
	else
		snprintf(why, sizeof(why), "cannot open folder %s: %s", s->name,
		    s->err);
	set_err(s, NULL);
	s->done(s->ud, SELECTION_REFUSED, false, why);
}

static void
looked_up(void *ud, const struct proto_resp *r, bool found, const char *guess)
{
	struct selection *s = ud;

	if (r->status != PROTO_OK) {
		end(s, SELECTION_FAILED, false, "LIST failed: %s", r->text);
		return;
	}
	if (s->err) {
		select_refused(s, guess);
		return;
	}
	if (found) {
		s->move_checked = true;
		send_select(s);
		return;
	}
	if (guess)
		end(s, SELECTION_FAILED, true,
		    "after = move:%s: the server has no folder of that name; it "
		    "has '%s' (write after = move:%s)",
		    s->a->move_to, guess, guess);
	else
		end(s, SELECTION_FAILED, true,
		    "after = move:%s: the server has no folder of that name; "
		    "create it, or name one it has",
		    s->a->move_to);
}

static void
selected(struct selection *s)
{
	if (s->uidvalidity == 0) {
		end(s, SELECTION_FAILED, false,
		    "server sent no UIDVALIDITY for %s", s->name);
		return;
	}
	/* A changed UIDVALIDITY is the sync's to recover from. */
	LOG(s, LOGL_INFO,
	    "selected: %u message(s), UIDVALIDITY %u, last "
	    "delivered UID %u",
	    s->exists, s->uidvalidity, s->st->last_uid);
	s->done(s->ud, SELECTION_OK, false, NULL);
}

static void
select_done(void *ud, const struct proto_resp *r)
{
	struct selection *s = ud;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK) {
		/* Look for a name ending in it: INBOX.Lists for Lists. */
		set_err(s, r->text[0] ? r->text : "refused");
		look_for(s, s->wire, true);
		return;
	}
	selected(s);
}

static const char *
send_select(struct selection *s)
{
	char mbox[512];

	if (s->a->after == AFTER_MOVE && !s->move_checked)
		return look_for(s, s->move_wire, false);
	/* The configuration allows only names a quoted string can carry. */
	if (proto_quote(mbox, sizeof(mbox), s->wire) < 0)
		fatal("folder name '%s' cannot be quoted", s->wire);
	s->uidvalidity = 0;
	s->uidnext = 0;
	s->exists = 0;
	/*
	 * SELECT even for `keep`: BODY.PEEK[] leaves \Seen alone either way,
	 * and Courier-IMAP saves a folder's UID list only when a client
	 * SELECTs it; with EXAMINE alone its UIDs shift after a restart
	 * (the same UIDVALIDITY, other messages) and mail is lost and
	 * duplicated. SELECT may clear \Recent, which no flag-based reader
	 * of the Maildir relies on. read_only (after = keep) asks for
	 * EXAMINE: Courier's UIDs may then shift, which the sync recovers
	 * from by itself.
	 */
	conn_cmd(s->c, 0, select_done, NULL, s, "%s %s",
	    s->a->read_only ? "EXAMINE" : "SELECT", mbox);
	return "opening the folder";
}

const char *
selection_start(struct selection *s, struct conn *c, const struct state_rec *st,
    selection_done_cb *done, void *ud)
{
	s->c = c;
	s->st = st;
	s->done = done;
	s->ud = ud;
	return send_select(s);
}

void
selection_detach(struct selection *s)
{
	s->c = NULL;
	set_err(s, NULL);
}

bool
selection_untagged(struct selection *s, const struct proto_resp *r)
{
	bool grew = false;

	if (r->has & HAS_UIDVALIDITY)
		s->uidvalidity = r->uidvalidity;
	if (r->has & HAS_UIDNEXT)
		s->uidnext = r->uidnext;
	if ((r->has & HAS_EXPUNGE) && s->exists > 0)
		s->exists--;
	if (r->has & HAS_EXISTS) {
		grew = r->exists > s->exists;
		s->exists = r->exists;
	}
	return grew;
}

/*
 * The folder was just SELECTed: files a crash left in new/ unrecorded are
 * found first (once per folder and process), then last_uid is checked,
 * then new mail is listed and fetched.
 */
enum selection_next
selection_check(const struct selection *s, const struct state_rec *st,
    bool reconciled)
{
	if (st->recovering) {
		LOG(s, LOGL_WARN,
		    "a recovery of this folder was cut short; doing it again");
		return SELECTION_RECOVER;
	}
	if (st->uidvalidity != 0 && st->uidvalidity != s->uidvalidity) {
		LOG(s, LOGL_WARN,
		    "UIDVALIDITY changed from %u to %u: the server renumbered "
		    "this folder. Matching its messages against the Maildir "
		    "instead of fetching them all again",
		    st->uidvalidity, s->uidvalidity);
		return SELECTION_RECOVER;
	}
	if (!reconciled)
		return SELECTION_RECONCILE;
	return selection_check_last(s, st);
}

/*
 * Before trusting last_uid, ask the server what UID last_uid holds now:
 * a server that renumbered its messages without changing UIDVALIDITY
 * (Courier-IMAP after a restart, when only EXAMINE had touched a folder)
 * would otherwise have us skip new mail and deliver old mail again.
 */
enum selection_next
selection_check_last(const struct selection *s, const struct state_rec *st)
{
	const struct state_fp *fp = &st->last;

	if (s->uidnext != 0 && st->last_uid >= s->uidnext &&
	    st->uidvalidity == s->uidvalidity) {
		/* UIDs only grow: this is another numbering. */
		LOG(s, LOGL_WARN,
		    "the server's next UID is %u, yet UID %u was delivered: it "
		    "renumbered this folder without changing UIDVALIDITY %u. "
		    "Matching its messages against the Maildir instead of "
		    "trusting the UIDs",
		    s->uidnext, st->last_uid, s->uidvalidity);
		return SELECTION_RECOVER;
	}
	if (st->last_uid == 0 || st->uidvalidity != s->uidvalidity ||
	    (fp->size == 0 && fp->msgid[0] == '\0'))
		return SELECTION_LIST; /* nothing to check against */
	return SELECTION_VERIFY;
}

const char *
selection_wire(const struct selection *s)
{
	return s->wire;
}

uint32_t
selection_uidvalidity(const struct selection *s)
{
	return s->uidvalidity;
}

uint32_t
selection_uidnext(const struct selection *s)
{
	return s->uidnext;
}

uint32_t
selection_exists(const struct selection *s)
{
	return s->exists;
}
