/*
 * after: the after-delivery actions of one folder (after.h). It owns the
 * queue of UIDs waiting for their action and the one action in flight; it
 * calls only the connection (conn_cmd) and proto's quoting, and tells its
 * owner through the ops it was given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/after.h"
#include "idlefetch/proto.h"
#include "idlefetch/util.h"

/* UIDs in one action: keeps the command line well under servers' limits. */
#define AFTER_MAX_MSGS 100

struct after {
	enum after_mode mode;
	const char *move_wire; /* borrowed */
	const struct after_ops *ops;
	void *ud;
	uint32_t *wait; /* delivered, their action not yet sent */
	size_t nwait, capwait;
	unsigned pending; /* commands sent, not answered */
	unsigned expunges; /* "* n EXPUNGE" since the action was sent */
	bool short_seen; /* an action removed fewer than it was sent */
	unsigned again; /* syncs listed again for that, in a row */
};

/*
 * A command in flight: the UIDs it acts on (a COPY's, to delete once
 * copied) and how many "* n EXPUNGE" it should bring.
 */
struct after_cmd {
	struct after *af;
	struct conn *c;
	uint32_t *uids; /* COPY only */
	size_t n;
};

static void copied(void *ud, const struct proto_resp *r);
static void expunged(void *ud, const struct proto_resp *r);
static void stored(void *ud, const struct proto_resp *r);

struct after *
after_new(enum after_mode mode, const char *move_wire,
    const struct after_ops *ops, void *ud)
{
	struct after *af = xcalloc(1, sizeof(*af));

	af->mode = mode;
	af->move_wire = move_wire;
	af->ops = ops;
	af->ud = ud;
	return af;
}

void
after_free(struct after *af)
{
	if (af == NULL)
		return;
	free(af->wait);
	free(af);
}

/* The UIDs as an IMAP sequence set; the caller frees it. */
static char *
uid_set(const uint32_t *uids, size_t n)
{
	char *set = xmalloc(n * 24 + 1);

	if (proto_uid_set(set, n * 24 + 1, uids, n) < 0)
		fatal("uid set overflow");
	return set;
}

static struct after_cmd *
cmd_new(struct after *af, struct conn *c, const uint32_t *uids, size_t n)
{
	struct after_cmd *ac = xcalloc(1, sizeof(*ac));

	ac->af = af;
	ac->c = c;
	ac->n = n;
	if (uids) {
		ac->uids = xmalloc(n * sizeof(*uids));
		memcpy(ac->uids, uids, n * sizeof(*uids));
	}
	af->pending++;
	return ac;
}

/* \Deleted, then expunge just those UIDs where UIDPLUS allows. */
static void
send_delete(struct after *af, struct conn *c, const char *set, size_t n)
{
	struct after_cmd *ac = cmd_new(af, c, NULL, n);

	af->pending++;
	conn_cmd(c, 0, stored, NULL, af,
	    "UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
	/* ac->n: how many "* n EXPUNGE" to expect at least */
	if (conn_caps(c) & CAP_UIDPLUS)
		conn_cmd(c, 0, expunged, NULL, ac, "UID EXPUNGE %s", set);
	else
		conn_cmd(c, 0, expunged, NULL, ac, "EXPUNGE");
	af->expunges = 0;
}

static void
send_action(struct after *af, struct conn *c, const uint32_t *uids, size_t n)
{
	char mbox[512];
	char *set = uid_set(uids, n);

	/* The configuration allows only names a quoted string can carry. */
	if (af->mode == AFTER_MOVE &&
	    proto_quote(mbox, sizeof(mbox), af->move_wire) < 0)
		fatal("folder name '%s' cannot be quoted", af->move_wire);
	if (af->mode == AFTER_DELETE) {
		send_delete(af, c, set, n);
	} else if (conn_caps(c) & CAP_MOVE) {
		conn_cmd(c, 0, expunged, NULL, cmd_new(af, c, NULL, n),
		    "UID MOVE %s %s", set, mbox);
		af->expunges = 0;
	} else {
		/* No MOVE: copy, and delete the originals once copied. */
		conn_cmd(c, 0, copied, NULL, cmd_new(af, c, uids, n),
		    "UID COPY %s %s", set, mbox);
	}
	free(set);
}

/*
 * One action (a STORE + EXPUNGE pair, a MOVE, a COPY and its delete) at a
 * time, for at most AFTER_MAX_MSGS messages: Dovecot runs pipelined
 * commands in parallel, and a STORE \Deleted that overlapped an earlier
 * EXPUNGE was answered OK and lost (100 of 1,500 messages stayed).
 */
void
after_kick(struct after *af, struct conn *c)
{
	size_t k;

	if (af->pending > 0 || af->nwait == 0 || c == NULL || !conn_alive(c))
		return;
	k = af->nwait < AFTER_MAX_MSGS ? af->nwait : AFTER_MAX_MSGS;
	send_action(af, c, af->wait, k);
	memmove(af->wait, af->wait + k, (af->nwait - k) * sizeof(*af->wait));
	af->nwait -= k;
	if (af->nwait == 0) { /* an idle folder keeps no buffer */
		free(af->wait);
		af->wait = NULL;
		af->capwait = 0;
	}
}

void
after_queue(struct after *af, struct conn *c, const uint32_t *uids,
    size_t n)
{
	if (n == 0 || c == NULL || !conn_alive(c))
		return; /* below last_uid: the next sync lists them again */
	if (af->nwait + n > af->capwait) {
		af->capwait = (af->nwait + n) * 2;
		af->wait = xrealloc(af->wait, af->capwait * sizeof(*af->wait));
	}
	memcpy(af->wait + af->nwait, uids, n * sizeof(*uids));
	af->nwait += n;
	after_kick(af, c);
}

/*
 * The reply to an action. A refusal: the messages are delivered and
 * recorded, so nothing is lost; the action is tried again at the next
 * sync (the UIDs are below last_uid). A failure, not a quiet log line:
 * --once exits 1 and status shows it. Returns whether it went.
 */
static bool
reply(struct after *af, const struct proto_resp *r)
{
	char why[600];

	af->pending--;
	if (r->status == PROTO_OK)
		return true;
	snprintf(why, sizeof(why),
	    "after-delivery action failed (messages stay on the server): %s",
	    r->text);
	af->ops->failed(af->ud, why);
	return false;
}

static void
stored(void *ud, const struct proto_resp *r)
{
	struct after *af = ud;

	if (r && reply(af, r))
		af->ops->progress(af->ud);
}

/* EXPUNGE or MOVE: answered OK, yet did the messages go? */
static void
expunged(void *ud, const struct proto_resp *r)
{
	struct after_cmd *ac = ud;
	struct after *af = ac->af;
	size_t n = ac->n;

	free(ac);
	if (r == NULL || !reply(af, r))
		return;
	if (af->expunges < n)
		af->short_seen = true;
	af->ops->progress(af->ud);
}

/* COPY succeeded: now the originals may go. */
static void
copied(void *ud, const struct proto_resp *r)
{
	struct after_cmd *ac = ud;
	struct after *af = ac->af;

	if (r != NULL && reply(af, r)) {
		char *set = uid_set(ac->uids, ac->n);

		send_delete(af, ac->c, set, ac->n);
		free(set);
		af->ops->progress(af->ud);
	}
	free(ac->uids);
	free(ac);
}

bool
after_idle(const struct after *af)
{
	return af->pending == 0 && af->nwait == 0;
}

void
after_expunge_seen(struct after *af)
{
	af->expunges++;
}

bool
after_again(struct after *af, bool stopping)
{
	bool again = af->short_seen && af->again < AFTER_AGAIN_MAX && !stopping;

	af->short_seen = false;
	af->again = again ? af->again + 1 : 0;
	return again;
}

void
after_reset(struct after *af)
{
	af->pending = 0;
	af->nwait = 0; /* redone at the next sync: they are below last_uid */
	free(af->wait);
	af->wait = NULL;
	af->capwait = 0;
}
