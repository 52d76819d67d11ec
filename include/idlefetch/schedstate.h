/*
 * schedstate: the scheduler's states (session.h's one account), their
 * names, and what each means to `idlefetch status` and to the service
 * manager's summary. Which state the scheduler is in, and the one function
 * that changes it, are the scheduler's; this module only reads a state.
 */
#ifndef IDLEFETCH_SCHEDSTATE_H
#define IDLEFETCH_SCHEDSTATE_H

#include <stdbool.h>

#include "idlefetch/conn.h"
#include "idlefetch/session.h"

/*
 * The scheduler's states. CONNECT and IDLE are the connection's (conn.h)
 * phases: `idlefetch status` shows the connection's state name there.
 */
enum session_state {
	S_PREPARE,
	S_CONNECT, /* the connection logs in */
	S_NOTIFY,
	S_SYNC, /* the mailbox selects and syncs the folder (mailbox.h) */
	S_IDLE, /* the connection IDLEs */
	S_POLL_WAIT,
	S_STATUS, /* asking the other folders for UIDNEXT */
	S_DISCOVER, /* folders = *: listing the subscribed folders */
	S_LOGOUT,
	S_CLOSING,
	S_BACKOFF,
	S_QUEUED, /* waiting for a slot at the gate */
	S_DONE,
	S_UP, /* logged in: the cycle's state is shown (cycle.h) */
	S_FINISHING, /* done once the folders' disk work is (session_finish) */
};

/* Its name in log lines and in `idlefetch status` ("POLL_WAIT"). */
const char *schedstate_name(enum session_state st);
/*
 * What `idlefetch status` shows: while the connection (in state cs) logs
 * in or IDLEs, its own state (GREETING, AUTH, IDLE ...).
 */
const char *schedstate_shown(enum session_state st, enum conn_state cs);
/*
 * Logged in and synced, for `idlefetch status`. alive: the connection is;
 * held: a folder is selected; cur_up: the folder worked on was up.
 */
bool schedstate_up(enum session_state st, bool alive, bool held, bool cur_up);
/* What a folder of a scheduler in st is doing, for the summary. */
enum session_activity schedstate_activity(enum session_state st);

#endif
