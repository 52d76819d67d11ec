/*
 * recovery: one recovery of a renumbered folder (recovery.h). It owns the
 * listing set until a MATCH job takes it, the counts and the highest UID
 * listed, and whether a recovery is under way; it sends its own listing
 * (conn_cmd), calls msgindex (the set), header (the fingerprint) and
 * uidlist (what to fetch), logs what it found, and says what comes next.
 * Every state change, and every disk job, is the mailbox's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/conn.h"
#include "idlefetch/header.h"
#include "idlefetch/log.h"
#include "idlefetch/metrics.h"
#include "idlefetch/recovery.h"
#include "idlefetch/util.h"

struct recovery {
	const struct account *a; /* borrowed */
	const char *name; /* borrowed; UTF-8 */
	bool active; /* under way on this connection */
	bool cut; /* its listing went over UIDLIST_MAX */
	struct msgindex_set *set; /* what it listed, until it is matched */
	unsigned matched, fresh, noid;
	uint32_t max, last; /* highest UID listed; the last line's */
	struct state_fp max_fp; /* ...and what UID max holds */
	bool over; /* it listed over MSGINDEX_SET_MAX messages */
	recovery_listed_cb *done; /* the listing's owner, with ud */
	void *ud;
};

#define LOG(rc, lvl, ...) \
	log_msg((lvl), (rc)->a->name, (rc)->name, __VA_ARGS__)

struct recovery *
recovery_new(const struct account *acct, const char *name)
{
	struct recovery *rc = xcalloc(1, sizeof(struct recovery));

	rc->a = acct;
	rc->name = name;
	return rc;
}

void
recovery_rename(struct recovery *rc, const char *name)
{
	rc->name = name;
}

void
recovery_set_free(struct msgindex_set *m)
{
	if (m == NULL)
		return;
	msgindex_set_free(m);
	free(m);
}

static void
drop_set(struct recovery *rc)
{
	recovery_set_free(rc->set);
	rc->set = NULL;
}

void
recovery_drop(struct recovery *rc)
{
	if (rc == NULL)
		return;
	rc->active = false;
	drop_set(rc);
}

void
recovery_free(struct recovery *rc)
{
	if (rc == NULL)
		return;
	drop_set(rc);
	free(rc);
}

/*
 * The listing is kept (24 bytes a message) and matched against the index
 * on the threadpool once it is complete, so that the index, which may be
 * far larger than the folder, is never held in memory.
 */
static void
recovery_begin(struct recovery *rc)
{
	drop_set(rc);
	rc->set = xcalloc(1, sizeof(*rc->set));
	rc->active = true;
	rc->cut = false;
	rc->over = false;
	rc->matched = rc->noid = 0;
	rc->max = rc->last = 0;
	memset(&rc->max_fp, 0, sizeof(rc->max_fp));
}

void
recovery_fingerprint(const struct proto_resp *r, struct state_fp *fp,
    uint64_t *key)
{
	struct header_info h;

	fp->size = (r->has & HAS_SIZE) ? r->size : 0;
	if (!(r->has & HAS_HDR)) {
		fp->msgid[0] = '\0';
		if (key)
			*key = 0;
		return;
	}
	(void)header_parse(r->hdr, r->hdr_len, &h);
	memcpy(fp->msgid, h.msgid, sizeof(fp->msgid));
	if (key)
		*key = header_key(&h);
}

static void
recovery_line(void *ud, const struct proto_resp *r)
{
	struct recovery *rc = ud;
	struct state_fp fp;
	uint64_t key;

	if (!(r->has & HAS_UID) || r->uid == rc->last || rc->set == NULL)
		return; /* a repeated line, or a failed listing */
	rc->last = r->uid;
	recovery_fingerprint(r, &fp, &key);
	if (r->uid > rc->max) {
		rc->max = r->uid;
		rc->max_fp = fp;
	}
	if (fp.msgid[0] == '\0')
		rc->noid++;
	if (msgindex_set_add(rc->set, r->uid, key, fp.size) < 0) {
		drop_set(rc);
		rc->over = true;
	}
}

static void
recovery_listed_all(void *ud, const struct proto_resp *r)
{
	struct recovery *rc = ud;
	char why[512];

	if (r == NULL || !rc->active)
		return; /* the connection closed, or the mailbox left it */
	if (r->status != PROTO_OK)
		snprintf(why, sizeof(why), "listing new messages failed: %s",
		    r->text);
	else if (rc->over)
		snprintf(why, sizeof(why), "the server listed over %d "
		    "messages for a recovery; closing the connection",
		    MSGINDEX_SET_MAX);
	else
		why[0] = '\0';
	rc->done(rc->ud, why[0] != '\0' ? why : NULL);
}

void
recovery_list(struct recovery *rc, struct conn *c, recovery_listed_cb *done,
    void *ud)
{
	recovery_begin(rc);
	rc->done = done;
	rc->ud = ud;
	conn_cmd(c, HAS_FETCH, recovery_listed_all, recovery_line, rc,
	    "UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS ("
	    HEADER_FIELDS ")])");
}

bool
recovery_active(const struct recovery *rc)
{
	return rc != NULL && rc->active;
}

struct msgindex_set *
recovery_take_set(struct recovery *rc)
{
	struct msgindex_set *m = rc->set;

	rc->set = NULL;
	return m;
}

/* Only the messages without a delivered file are fetched. */
void
recovery_matched(struct recovery *rc, struct msgindex_set *m,
    struct uidlist *ul)
{
	if (m->from_maildir)
		LOG(rc, LOGL_INFO,
		    "read %u message(s) of the Maildir missing from its index",
		    m->from_maildir);
	rc->matched = m->matched;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].by == 0)
			uidlist_add(ul, m->v[i].uid, m->v[i].size);
	recovery_set_free(m);
}

void
recovery_listed(struct recovery *rc, bool cut, unsigned fresh)
{
	if (!recovery_active(rc))
		return;
	rc->cut = cut;
	rc->fresh = fresh;
}

bool
recovery_synced(struct recovery *rc, bool incomplete)
{
	if (!recovery_active(rc))
		return false;
	rc->active = false;
	return !incomplete && !rc->cut;
}

uint32_t
recovery_max(const struct recovery *rc, struct state_fp *fp)
{
	*fp = rc->max_fp;
	return rc->max;
}

/*
 * Every message the recovery listed is delivered or matched: the state
 * took the folder's UIDVALIDITY and its highest UID.
 */
void
recovery_done(const struct recovery *rc, const struct state_rec *st)
{
	metrics_recovery(rc->a->name, rc->name);
	LOG(rc, LOGL_WARN,
	    "recovered the renumbered folder: %u message(s) matched the "
	    "Maildir, %u new delivered, %u without a Message-ID (matched by "
	    "Date, From, Subject and size); nothing was deleted or moved on "
	    "the server. UIDVALIDITY %u, last UID %u",
	    rc->matched, rc->fresh, rc->noid, st->uidvalidity, st->last_uid);
}
