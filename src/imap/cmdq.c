/*
 * cmdq: the table of commands waiting for their tagged reply. A connection
 * has a handful at a time, so a small array searched from the oldest is
 * the right shape; removal moves the newest into the gap, which keeps the
 * order of all but the moved one and costs nothing. An idle connection
 * has one command waiting (IDLE) for hours: the array grows from one slot
 * and is given back whenever nothing waits.
 */
#include <stdlib.h>
#include <string.h>

#include "idlefetch/cmdq.h"
#include "idlefetch/util.h"

/* A command sent and not yet answered. */
struct pending {
	unsigned tag;
	unsigned want; /* HAS_* its untagged callback takes */
	cmdq_done_cb *done;
	cmdq_untagged_cb *untagged;
	void *ud;
	char *secret; /* AUTHENTICATE's response, sent after "+" */
};

struct cmdq {
	unsigned next_tag;
	struct pending *cmds;
	size_t ncmds, capcmds;
};

struct cmdq *
cmdq_new(void)
{
	return xcalloc(1, sizeof(struct cmdq));
}

void
cmdq_free(struct cmdq *q)
{
	if (q == NULL)
		return;
	for (size_t i = 0; i < q->ncmds; i++)
		secret_free(q->cmds[i].secret);
	free(q->cmds);
	free(q);
}

unsigned
cmdq_add(struct cmdq *q, unsigned want, cmdq_done_cb *done,
    cmdq_untagged_cb *untagged, void *ud)
{
	if (q->ncmds == q->capcmds) {
		q->capcmds = q->capcmds ? q->capcmds * 2 : 1;
		q->cmds = xrealloc(q->cmds, q->capcmds * sizeof(*q->cmds));
	}
	q->cmds[q->ncmds++] = (struct pending){ .tag = ++q->next_tag,
		.want = want,
		.done = done,
		.untagged = untagged,
		.ud = ud };
	return q->next_tag;
}

static struct pending *
find_tag(struct cmdq *q, unsigned tag)
{
	for (size_t i = 0; i < q->ncmds; i++)
		if (q->cmds[i].tag == tag)
			return &q->cmds[i];
	return NULL;
}

void
cmdq_set_secret(struct cmdq *q, unsigned tag, const char *secret)
{
	struct pending *p = find_tag(q, tag);

	if (p == NULL)
		fatal("cmdq_set_secret: no command a%u", tag);
	secret_free(p->secret);
	p->secret = xstrdup(secret);
}

bool
cmdq_has_secret(const struct cmdq *q)
{
	return q->ncmds > 0 && q->cmds[q->ncmds - 1].secret != NULL;
}

char *
cmdq_take_secret(struct cmdq *q)
{
	char *s;

	if (q->ncmds == 0)
		return NULL;
	s = q->cmds[q->ncmds - 1].secret;
	q->cmds[q->ncmds - 1].secret = NULL;
	return s;
}

bool
cmdq_finish(struct cmdq *q, const char *tag, cmdq_done_cb **done, void **ud)
{
	struct pending *p;
	unsigned n;
	char *end;

	if (tag[0] != 'a')
		return false;
	n = (unsigned)strtoul(tag + 1, &end, 10);
	if (*end != '\0')
		return false;
	p = find_tag(q, n);
	if (p == NULL)
		return false;
	*done = p->done;
	*ud = p->ud;
	secret_free(p->secret);
	*p = q->cmds[--q->ncmds];
	if (q->ncmds == 0) {
		free(q->cmds);
		q->cmds = NULL;
		q->capcmds = 0;
	}
	return true;
}

static struct pending *
wanting(const struct cmdq *q, unsigned has)
{
	for (size_t i = 0; i < q->ncmds; i++)
		if (q->cmds[i].untagged && (has & q->cmds[i].want))
			return &q->cmds[i];
	return NULL;
}

bool
cmdq_wants(const struct cmdq *q, unsigned has)
{
	return wanting(q, has) != NULL;
}

bool
cmdq_untagged(struct cmdq *q, const struct proto_resp *r)
{
	struct pending *p = wanting(q, r->has);

	if (p == NULL)
		return false;
	p->untagged(p->ud, r);
	return true;
}

void
cmdq_cancel(struct cmdq *q, const void *skip)
{
	struct pending *cmds = q->cmds;
	size_t n = q->ncmds;

	/* Their owners free what they held; nothing is sent any more. */
	q->cmds = NULL;
	q->ncmds = q->capcmds = 0;
	for (size_t i = 0; i < n; i++) {
		secret_free(cmds[i].secret);
		if (cmds[i].done && cmds[i].ud != skip)
			cmds[i].done(cmds[i].ud, NULL);
	}
	free(cmds);
}

size_t
cmdq_len(const struct cmdq *q)
{
	return q->ncmds;
}

size_t
cmdq_held(const struct cmdq *q)
{
	return q->capcmds * sizeof(*q->cmds);
}
