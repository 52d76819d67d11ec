/*
 * metrics: Prometheus' text exposition format on GET /metrics, served
 * from the daemon's loop (no thread), with counters the rest of idlefetch
 * bumps at its events.
 *
 * The event functions name their account and folder by the names the
 * configuration (or the server, with folders = *) gave them, and act on
 * the process's one metrics object: with `metrics` off there is none, and
 * every event function returns at its first line, allocating nothing. So a
 * call site is one line, whichever module it sits in.
 *
 * Bounded: label values are account names (from the configuration),
 * folder names (at most METRICS_FOLDERS_MAX per account; the rest count
 * in the account's totals only) and fixed words (reasons, states). No
 * server text and no secret becomes a label. The endpoint holds at most
 * HTTPD_CLIENTS clients, HTTPD_REQUEST_MAX bytes of request each, and
 * closes a client that has not sent its request, or not read the answer,
 * within HTTPD_DEADLINE_MS (httpd.h).
 */
#ifndef IDLEFETCH_METRICS_H
#define IDLEFETCH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define METRICS_FOLDERS_MAX 1000

struct metrics;
struct metrics_scrape;
struct commit_req;
struct uv_loop_s;

/*
 * Called at each scrape so that the owner adds what it knows at that
 * moment (metrics_scrape_state()).
 */
typedef void metrics_collect_cb(void *ud, struct metrics_scrape *sc);

/*
 * Makes *m match a configuration: addr NULL switches metrics off (frees
 * *m, sets it NULL); otherwise creates it (listening on addr) or, when
 * the address changed, moves the listener; an unchanged address keeps it
 * and its clients. folders: whether per-folder series are served. A
 * listener that cannot be opened is logged and retried at the next
 * reload; counters go on regardless. *m is the caller's, freed with
 * metrics_free().
 */
void metrics_configure(struct metrics **m, struct uv_loop_s *loop,
    const char *addr, bool folders, metrics_collect_cb *collect, void *ud);
/*
 * Closes the listener and its clients (the loop must run on for their
 * close callbacks) and frees m; the event functions do nothing after.
 */
void metrics_free(struct metrics *m);
/* The port the listener got (tests bind port 0); 0: not listening. */
unsigned metrics_port(const struct metrics *m);

/* ---- events (no-ops with metrics off) ---- */

/* The server told of new mail in folder (EXISTS, NOTIFY's STATUS). */
void metrics_news(const char *account, const char *folder);
/*
 * A delivery job of folder ended (commit.h's out fields): delivered,
 * refused and deferred messages, their bytes, the last UID, and the push
 * delay since the news that the batch answers.
 */
void metrics_committed(const char *account, const char *folder,
    const struct commit_req *j);
/* A connection of account failed with err (a negative errno): a reconnect. */
void metrics_reconnect(const char *account, int err);
/* A recovery of a renumbered folder completed. */
void metrics_recovery(const char *account, const char *folder);

/* ---- at scrape time, from the collect callback ---- */

/* One of account's folders is in connection state (a static name). */
void metrics_scrape_state(struct metrics_scrape *sc, const char *account,
    const char *state, bool up);

/* ---- the pure parts, for tests ---- */

/* The reason label of a connection error (a fixed word). */
const char *metrics_reason(int err);
/*
 * The exposition text as of now (the caller frees it); *len its length.
 */
char *metrics_render(struct metrics *m, size_t *len);
/* Appends v to buf as a label value: escaped, valid UTF-8. */
void metrics_escape(char *buf, size_t cap, const char *v);

#endif
