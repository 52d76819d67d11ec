/*
 * login: what an IMAP connection does between the greeting and READY,
 * decided without a socket. Given the greeting, a tagged reply to
 * CAPABILITY, STARTTLS or the login command, a "+" during the login or a
 * token from oauth_token_command, it says what the connection must do
 * next (struct login_next): go to a step, fail, write a line. It keeps
 * what only the login needs: the OAuth2 token about to be sent, which
 * token a login sent and whether the command had just printed it, and the
 * server's reasons for refusing it. The connection stays the one that
 * changes its state, writes on the wire and owns the transport.
 */
#ifndef IDLEFETCH_LOGIN_H
#define IDLEFETCH_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/log.h"
#include "idlefetch/proto.h"

struct login;
struct oauth;

/* Where the connection goes next (its states of the same names). */
enum login_step {
	LOGIN_STEP_TLS,
	LOGIN_STEP_GREETING,
	LOGIN_STEP_STARTTLS,
	LOGIN_STEP_CAPABILITY,
	LOGIN_STEP_TOKEN,
	LOGIN_STEP_AUTH,
	LOGIN_STEP_CAPS_AGAIN,
	LOGIN_STEP_READY,
};

enum login_act {
	LOGIN_ENTER, /* enter step, for reason */
	LOGIN_FAIL, /* close, and tell the owner err, final and msg */
	LOGIN_SEND, /* write line, untagged */
	LOGIN_CMD, /* send line as the login command, tagged */
};

/* What the connection must do next; a note, if any, is logged first. */
struct login_next {
	enum login_act act;
	enum login_step step; /* LOGIN_ENTER */
	const char *reason; /* LOGIN_ENTER: for the log; static */
	int err; /* LOGIN_FAIL: negative errno or IDLEFETCH_E* */
	bool final; /* LOGIN_FAIL: retrying cannot help */
	char msg[512]; /* LOGIN_FAIL: one line, no secret */
	/*
	 * LOGIN_SEND, LOGIN_CMD: the line, the connection's to wipe and free
	 * (secret_free); secret: it holds credentials, not to be logged.
	 */
	char *line;
	bool secret;
	enum log_level note_lvl;
	char note[1024]; /* "": nothing to log */
};

/* The token arrived, or could not be had: what to do now. */
typedef void login_token_cb(void *ud, const struct login_next *nx);

/* a and oauth (NULL for auth = password) are borrowed, must outlive it. */
struct login *login_new(const struct account *a, struct oauth *oauth);
/* Touches not the oauth, which may be gone: login_reset() first. */
void login_free(struct login *l);
/* The connection closed: no token awaited, no refusal remembered. */
void login_reset(struct login *l);

/* TCP is up: TLS first (tls = implicit), else the greeting. */
void login_connected(struct login *l, struct login_next *nx);
/*
 * TLS is up: the greeting (tls = implicit), else, after STARTTLS, the
 * capabilities again (RFC 3501: those said in plaintext do not count).
 */
void login_tls_up(struct login *l, struct login_next *nx);
/*
 * The greeting (pr < 0: it could not be parsed). tls: the transport
 * is TLS already.
 */
void login_greeting(struct login *l, int pr, const struct proto_resp *r,
    bool tls, struct login_next *nx);
/* The capabilities are known (caps): STARTTLS, a token, or the login. */
void
login_caps(struct login *l, uint32_t caps, bool tls, struct login_next *nx);
/* Runs oauth_token_command; cb gets what to do once it is done. */
void login_fetch(struct login *l, login_token_cb *cb, void *ud);
/* The login command for caps, with the token login_caps() or a fetch had. */
void login_auth(struct login *l, uint32_t caps, struct login_next *nx);
/*
 * A "+" to the login command: the response that waited for it, else
 * the answer to an OAuth2 refusal.
 */
void login_continue(struct login *l, const char *text, struct login_next *nx);
/*
 * The tagged reply to the command the connection sent at step at
 * (STARTTLS, CAPABILITY, CAPS_AGAIN or AUTH); caps: the capabilities
 * known now; tls: the transport is TLS.
 */
void login_reply(struct login *l, enum login_step at,
    const struct proto_resp *r, uint32_t caps, bool tls, struct login_next *nx);

#endif
