/*
 * conn: one IMAP connection. It owns the transport, TLS, the framer, tags
 * and capabilities; it reads the greeting, starts TLS (implicit or
 * STARTTLS), logs in (LOGIN, AUTHENTICATE PLAIN, XOAUTH2, OAUTHBEARER),
 * IDLEs, bounds every answer by the account's timeout and says LOGOUT.
 *
 * Every command carries its own completion: conn_cmd() takes the callback
 * that receives its tagged reply, and, for the untagged responses it asks
 * for (FETCH, LIST, STATUS), the callback that receives those. Untagged
 * responses nobody asked for (EXISTS, EXPUNGE, NOTIFY's STATUS and LIST,
 * ALERT, UIDVALIDITY ...) and message literals go to the owner through
 * the ops it registered. The connection never decides to reconnect: it
 * closes itself and tells the owner why, once.
 */
#ifndef IDLEFETCH_CONN_H
#define IDLEFETCH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/proto.h"

enum conn_state {
	CONN_CLOSED,
	CONN_CONNECT,
	CONN_TLS,
	CONN_GREETING,
	CONN_STARTTLS,
	CONN_CAPABILITY,
	CONN_TOKEN, /* waiting for oauth_token_command */
	CONN_AUTH,
	CONN_CAPS_AGAIN, /* logged in; asking the capabilities once more */
	CONN_READY, /* logged in: the owner's commands */
	CONN_IDLE_START,
	CONN_IDLE_CANCEL, /* IDLE sent, to be ended as soon as it starts */
	CONN_IDLE,
	CONN_IDLE_DONE,
	CONN_LOGOUT,
};

struct conn;
struct oauth;

/*
 * A command's tagged reply, or r == NULL when the connection closed before
 * it came (the callback then only frees what ud holds).
 */
typedef void conn_done_cb(void *ud, const struct proto_resp *r);
/* An untagged response the command asked for. */
typedef void conn_untagged_cb(void *ud, const struct proto_resp *r);

struct conn_ops {
	/* Logged in, capabilities known: commands may be sent. */
	void (*ready)(void *ud);
	/*
	 * The connection failed and is closed already. err is a negative
	 * errno or IDLEFETCH_E*; final: retrying cannot help (credentials
	 * LOGIN cannot carry). why is one line for the log, no secret.
	 */
	void (*failed)(void *ud, int err, bool final, const char *why);
	/* An untagged response no command asked for. */
	void (*untagged)(void *ud, const struct proto_resp *r);
	/* A chunk of bytes read was handled (a stop may close now). */
	void (*read)(void *ud);
	/* The connection changed state (conn_state_name() says to what). */
	void (*changed)(void *ud);
};

/*
 * Where message bodies go: registered by the folder that reads from the
 * connection (conn_set_sink), not by the owner.
 */
struct conn_sink {
	/*
	 * Each response after the greeting, parsed (pr < 0: it could not
	 * be) or not, before the connection acts on it: a message's FETCH
	 * whose literal the sink took. Returns false when the sink failed
	 * the connection.
	 */
	bool (*unit)(void *ud, int pr, const struct proto_resp *r,
	    const char *p, size_t n);
	/* Message literals, as struct framer_ops has them. */
	int (*literal_begin)(void *ud, const char *prefix, size_t len,
	    uint64_t size);
	int (*literal_data)(void *ud, const char *p, size_t n);
	int (*literal_end)(void *ud);
};

struct conn_opts {
	const struct account *acct; /* borrowed; host, port, tls, auth... */
	SSL_CTX *ssl_ctx; /* borrowed; NULL when tls = none */
	struct oauth *oauth; /* borrowed; for auth = xoauth2, oauthbearer */
	const struct conn_ops *ops; /* borrowed */
	void *ud;
};

/* A closed connection; o and what it points to are borrowed. */
struct conn *conn_new(uv_loop_t *loop, const struct conn_opts *o);
/* Closes it if open; memory goes once libuv is done with its timer. */
void conn_free(struct conn *c);
/* Connects and logs in: ops->ready, or ops->failed. */
int conn_open(struct conn *c);
/* Closes at once; commands still waiting get r == NULL. No callback after. */
void conn_close(struct conn *c);
/* The folder named in its log lines (borrowed; NULL: none). */
void conn_set_folder(struct conn *c, const char *folder);
/*
 * Message bodies and each response go to k (borrowed) from now on; NULL:
 * to nobody (literals are then kept, bounded, like any other).
 */
void conn_set_sink(struct conn *c, const struct conn_sink *k, void *ud);

/*
 * Sends "aN <fmt...>" (CONN_READY only). done gets the tagged reply;
 * untagged (may be NULL) gets the untagged responses of kinds want
 * (HAS_FETCH, HAS_LIST, HAS_STATUS) while the command waits. Returns the
 * tag.
 */
unsigned conn_cmd(struct conn *c, unsigned want, conn_done_cb *done,
    conn_untagged_cb *untagged, void *ud, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/*
 * IDLE until the server ends it, conn_idle_done() is called, or wait_ms
 * passes (then DONE is sent: NAT state, and proof that the peer lives);
 * done gets IDLE's tagged reply, the connection READY again.
 */
void conn_idle(struct conn *c, uint64_t wait_ms, conn_done_cb *done,
    void *ud);
/* Ends an IDLE (at once, or as soon as the server accepted it). */
void conn_idle_done(struct conn *c);
/* LOGOUT; done runs once the connection is closed (r may be NULL). */
void conn_logout(struct conn *c, conn_done_cb *done, void *ud);
/* Stops or resumes reading (a slow disk); the answer timeout waits too. */
void conn_pause(struct conn *c, bool pause);

enum conn_state conn_state(const struct conn *c);
const char *conn_state_name(enum conn_state st);
/* Connected (TCP up) and not closed. */
bool conn_alive(const struct conn *c);
uint32_t conn_caps(const struct conn *c);
/* Commands sent and not answered. */
size_t conn_pending(const struct conn *c);
/* The server's BYE text since conn_open (kept after it closed); NULL: none. */
const char *conn_bye(const struct conn *c);
/* A busy server's suggested wait (ms) since the last call; 0: none. */
uint32_t conn_take_retry_ms(struct conn *c);

#endif
