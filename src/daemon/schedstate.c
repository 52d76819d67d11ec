/*
 * schedstate: the names of the scheduler's states and what each shows
 * (schedstate.h). It owns the table of names; it holds no state of its
 * own and may call only conn (the connection's state names).
 */
#include "idlefetch/schedstate.h"

static const char *state_names[] = { "PREPARE", "CONNECT", "NOTIFY", "SYNC",
	"IDLE", "POLL_WAIT", "STATUS", "DISCOVER", "LOGOUT", "CLOSING",
	"BACKOFF", "QUEUED", "DONE", "UP", "FINISHING" };

const char *
schedstate_name(enum session_state st)
{
	return state_names[st];
}

const char *
schedstate_shown(enum session_state st, enum conn_state cs)
{
	if (st == S_CONNECT && cs != CONN_CLOSED)
		return conn_state_name(cs);
	if (st == S_IDLE && cs != CONN_READY && cs != CONN_CLOSED)
		return conn_state_name(cs);
	return state_names[st];
}

bool
schedstate_up(enum session_state st, bool alive, bool held, bool cur_up)
{
	switch (st) {
	case S_SYNC:
	case S_IDLE:
	case S_POLL_WAIT:
	case S_STATUS:
		return true;
	case S_DISCOVER:
		/* Between folders the connection stays up. */
		return held || cur_up;
	case S_PREPARE:
		/* A folder found on the server is made ready meanwhile. */
		return alive && (held || cur_up);
	case S_LOGOUT:
	case S_FINISHING:
	case S_DONE:
		/* passing through: no change */
		return cur_up;
	default:
		return false;
	}
}

enum session_activity
schedstate_activity(enum session_state st)
{
	switch (st) {
	case S_IDLE:
		return SESSION_IDLING;
	case S_POLL_WAIT:
		return SESSION_POLLING;
	case S_BACKOFF:
		return SESSION_BACKOFF;
	case S_DONE:
		return SESSION_STOPPED;
	default:
		return SESSION_BUSY;
	}
}
