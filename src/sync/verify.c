/*
 * verify: the check of the last delivered UID (verify.h). It owns the one
 * FETCH of that UID and what the server said of it, from the command
 * until its reply; it calls only the connection (conn_cmd) and the
 * recovery's fingerprint, and reports to the callback it was given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/header.h"
#include "idlefetch/recovery.h"
#include "idlefetch/util.h"
#include "idlefetch/verify.h"

struct verify {
	uint32_t uid;
	const struct state_fp *was; /* borrowed */
	bool found; /* the server still has the UID */
	struct state_fp now; /* ...and this is what it says of it */
	verify_done_cb *done;
	void *ud;
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

	if (r != NULL) /* NULL: the connection closed; nobody waits now */
		v->done(v->ud, r, r->status == PROTO_OK ?
		    differs(v, what, sizeof(what)) : NULL);
	free(v);
}

void
verify_start(struct conn *c, uint32_t uid, const struct state_fp *was,
    verify_done_cb *done, void *ud)
{
	struct verify *v = xcalloc(1, sizeof(*v)); /* freed at its reply */

	v->uid = uid;
	v->was = was;
	v->done = done;
	v->ud = ud;
	conn_cmd(c, HAS_FETCH, verify_done, verify_line, v,
	    "UID FETCH %u (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")])",
	    uid);
}
