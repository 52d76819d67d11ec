/*
 * verify: the check of the last delivered UID (verify.h). It owns the one
 * FETCH of that UID and what the server said of it, from the command
 * until its reply; it calls only the connection (conn_cmd) and the
 * recovery's fingerprint, logs a renumbering, and reports to the callback
 * it was given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/header.h"
#include "idlefetch/log.h"
#include "idlefetch/recovery.h"
#include "idlefetch/util.h"
#include "idlefetch/verify.h"

struct verify {
	uint32_t uid, uidvalidity;
	const struct state_fp *was; /* borrowed */
	bool found; /* the server still has the UID */
	struct state_fp now; /* ...and this is what it says of it */
	verify_done_cb *done;
	void *ud;
	const char *account; /* borrowed */
	char folder[]; /* for its log line: the name when it started */
};

static void
verify_line(void *ud, const struct proto_resp *r)
{
	struct verify *v = ud;

	if (!(r->has & HAS_UID) || r->uid != v->uid)
		return;
	v->found = true;
	recovery_fingerprint(r, &v->now, NULL);
}

/* Gone (deleted, moved): nothing to compare, nothing renumbered. */
static const char *
differs(const struct verify *v, char *what, size_t size)
{
	const struct state_fp *was = v->was, *now = &v->now;

	if (v->found && was->msgid[0] && now->msgid[0] &&
	    strcmp(was->msgid, now->msgid) != 0)
		snprintf(what, size, "Message-ID %s, was %s",
		    now->msgid, was->msgid);
	else if (v->found && was->size && now->size &&
	    was->size != now->size)
		snprintf(what, size, "size %u, was %u",
		    now->size, was->size);
	else
		return NULL;
	return what;
}

static void
verify_done(void *ud, const struct proto_resp *r)
{
	struct verify *v = ud;
	/* On the stack: the callback reads it only during the call. */
	char what[2 * STATE_MSGID_MAX + 64];
	const char *diff;

	if (r == NULL) { /* the connection closed; nobody waits now */
		free(v);
		return;
	}
	if (r->status != PROTO_OK) {
		snprintf(what, sizeof(what), "checking UID %u failed: %s",
		    v->uid, r->text);
		v->done(v->ud, what, false);
		free(v);
		return;
	}
	diff = differs(v, what, sizeof(what));
	if (diff != NULL)
		log_msg(LOGL_WARN, v->account, v->folder,
		    "UID %u no longer holds the message delivered under it "
		    "(%s): the server renumbered this folder without "
		    "changing UIDVALIDITY %u. Matching its messages against "
		    "the Maildir instead of trusting the UIDs",
		    v->uid, diff, v->uidvalidity);
	v->done(v->ud, NULL, diff != NULL);
	free(v);
}

void
verify_start(struct conn *c, const struct account *acct, const char *folder,
    const struct state_rec *st, uint32_t uidvalidity, verify_done_cb *done,
    void *ud)
{
	size_t len = strlen(folder) + 1;
	/* Freed at its reply. */
	struct verify *v = xcalloc(1, sizeof(*v) + len);

	v->uid = st->last_uid;
	v->uidvalidity = uidvalidity;
	v->was = &st->last;
	v->done = done;
	v->ud = ud;
	v->account = acct->name;
	memcpy(v->folder, folder, len);
	conn_cmd(c, HAS_FETCH, verify_done, verify_line, v,
	    "UID FETCH %u (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")])",
	    v->uid);
}
