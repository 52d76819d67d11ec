/*
 * discover: folders = *, the listing of an account's subscribed folders
 * on a logged-in connection. It sends LSUB, or LIST (SUBSCRIBED) where
 * LSUB is refused (IMAP4rev2 has no LSUB), feeds the replies to folders.h,
 * leaves out folders whose Maildir++ folder another keeps, warns of what
 * it leaves out, and hands the names to its owner. What follows (which
 * folders to fetch, what to do next) is the owner's decision.
 */
#ifndef IDLEFETCH_DISCOVER_H
#define IDLEFETCH_DISCOVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/proto.h"

struct discovery;

/*
 * The listing is over: r is its tagged reply (borrowed). When the server
 * listed the folders, names are the account's folders as they now are
 * (borrowed for the call); when it refused both commands, names is NULL.
 * Not called when the connection closes first.
 */
typedef void discovery_done_cb(void *ud, const struct proto_resp *r,
    const char *const *names, size_t n);
/*
 * A LIST line of a folder that is not subscribed: NOTIFY's news of a
 * folder created or removed, which may slip in while the listing runs.
 */
typedef void discovery_news_cb(void *ud, const struct proto_resp *r);

struct discovery_opts {
	const struct account *acct; /* borrowed, must outlive the discovery */
	const char *state_dir; /* borrowed */
	discovery_done_cb *done;
	discovery_news_cb *news;
	void *ud;
};

struct discovery *
discovery_new(uv_loop_t *loop, const struct discovery_opts *o);
void discovery_free(struct discovery *d);
/*
 * Lists the subscribed folders on c (borrowed, logged in). login: right
 * after logging in, when what is left out is worth a warning. folder
 * names the log lines (borrowed until the done callback; may be NULL).
 */
void discovery_start(struct discovery *d, struct conn *c, bool login,
    const char *folder);
/* Whether the last listing started was the one right after login. */
bool discovery_at_login(const struct discovery *d);
/* The connection closed: the next one tries LSUB first again. */
void discovery_reset(struct discovery *d);

#endif
