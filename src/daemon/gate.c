/*
 * gate: a counter of busy slots and a FIFO of waiters (gate.h). It owns
 * struct gate and struct gate_waiter; it calls nothing but the waiters'
 * callbacks, so any module may use it. A waiter is a small heap node of
 * its owner's, which keeps the queue's links out of the owner's struct.
 */
#include <stdlib.h>

#include "idlefetch/gate.h"
#include "idlefetch/util.h"

struct gate_waiter {
	gate_cb *cb;
	void *ud;
	struct gate_waiter *next; /* in the gate's queue */
	bool held; /* one of the gate's slots is this waiter's */
	bool queued;
};

struct gate {
	unsigned busy, max;
	struct gate_waiter *head, *tail; /* waiting for a slot, in order */
};

struct gate *
gate_new(unsigned max)
{
	struct gate *g = xcalloc(1, sizeof(*g));

	if (max == 0)
		fatal("gate_new(0)");
	g->max = max;
	return g;
}

void
gate_free(struct gate *g)
{
	if (g == NULL)
		return;
	if (g->busy > 0 || g->head != NULL)
		fatal("gate_free with %u slots held", g->busy);
	free(g);
}

struct gate_waiter *
gate_waiter_new(gate_cb *cb, void *ud)
{
	struct gate_waiter *w = xcalloc(1, sizeof(*w));

	w->cb = cb;
	w->ud = ud;
	return w;
}

void
gate_waiter_free(struct gate *g, struct gate_waiter *w)
{
	if (w == NULL)
		return;
	/* Not gate_leave(): the next waiter's callback must not run here. */
	if (w->held)
		fatal("gate_waiter_free while it holds a slot");
	gate_cancel(g, w);
	free(w);
}

bool
gate_enter(struct gate *g, struct gate_waiter *w)
{
	if (g == NULL || w->held)
		return true;
	if (w->queued)
		return false;
	if (g->busy >= g->max) {
		w->queued = true;
		w->next = NULL;
		if (g->tail)
			g->tail->next = w;
		else
			g->head = w;
		g->tail = w;
		return false;
	}
	g->busy++;
	w->held = true;
	return true;
}

void
gate_cancel(struct gate *g, struct gate_waiter *w)
{
	struct gate_waiter **p;

	if (g == NULL || !w->queued)
		return;
	for (p = &g->head; *p != w; p = &(*p)->next)
		;
	*p = w->next;
	if (g->tail == w) {
		g->tail = NULL;
		for (struct gate_waiter *q = g->head; q; q = q->next)
			g->tail = q;
	}
	w->next = NULL;
	w->queued = false;
}

void
gate_leave(struct gate *g, struct gate_waiter *w)
{
	struct gate_waiter *next;

	if (g == NULL || !w->held)
		return;
	w->held = false;
	g->busy--;
	next = g->head;
	if (next == NULL)
		return;
	gate_cancel(g, next);
	g->busy++;
	next->held = true;
	next->cb(next->ud);
}
