/*
 * gate: how many connections of a process are set up at once (connect,
 * TLS, login). A thousand accounts starting together log in a few dozen
 * at a time instead of all at once, which a server's login service copes
 * with, and which leaves the heap less fragmented by the handshakes'
 * short-lived allocations.
 *
 * A waiter asks for a slot with gate_enter(); when none is free it is
 * queued, and its callback runs once a slot is its own, in the order the
 * waiters asked. A NULL gate has no limit: every waiter enters at once.
 */
#ifndef IDLEFETCH_GATE_H
#define IDLEFETCH_GATE_H

#include <stdbool.h>

struct gate;
struct gate_waiter;

/* A queued waiter now holds a slot (called from gate_leave()). */
typedef void gate_cb(void *ud);

/* A gate of max (>= 1) slots. */
struct gate *gate_new(unsigned max);
/* Only when no waiter holds a slot or waits. */
void gate_free(struct gate *g);

/* A waiter, neither holding a slot nor queued. */
struct gate_waiter *gate_waiter_new(gate_cb *cb, void *ud);
/* Leaves the queue first; it must hold no slot (gate_leave()). */
void gate_waiter_free(struct gate *g, struct gate_waiter *w);

/*
 * True when w holds a slot: one was free, or w held one already. Else w
 * is queued (once, however often it asks) and its callback runs when a
 * slot becomes its own.
 */
bool gate_enter(struct gate *g, struct gate_waiter *w);
/*
 * w gives its slot back, if it holds one: the first waiter queued takes
 * it, and its callback runs before this returns.
 */
void gate_leave(struct gate *g, struct gate_waiter *w);
/* w leaves the queue, if it is in it; its callback will not run. */
void gate_cancel(struct gate *g, struct gate_waiter *w);

#endif
