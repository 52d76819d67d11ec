/*
 * daemon: owns the loop, the account locks (one fetcher per account), the
 * TLS contexts (one per account, shared by its folders' connections) and
 * the sessions. A first SIGTERM/SIGINT asks every
 * session to stop gracefully; a second one exits at once, which is still
 * safe because delivery never depends on a clean shutdown.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/daemon.h"
#include "idlefetch/log.h"
#include "idlefetch/session.h"
#include "idlefetch/state.h"
#include "idlefetch/status.h"
#include "idlefetch/tls.h"
#include "idlefetch/util.h"

struct daemon {
	uv_loop_t *loop;
	uv_signal_t sigterm, sigint;
	struct session **sessions;
	size_t nsessions, running;
	unsigned failed;
	unsigned signals;
};

static void
close_signals(struct daemon *d)
{
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
}

static void
on_session_done(struct session *s, void *ud, bool ok)
{
	struct daemon *d = ud;

	if (!ok)
		d->failed++;
	if (--d->running == 0)
		close_signals(d);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (++d->signals > 1) {
		log_msg(LOGL_WARN, NULL, NULL, "second signal: exiting now");
		_exit(1);
	}
	log_msg(LOGL_INFO, NULL, NULL, "%s: stopping",
	    signum == SIGTERM ? "SIGTERM" : "SIGINT");
	for (size_t i = 0; i < d->nsessions; i++)
		session_stop(d->sessions[i]);
}

/* Takes the account's lock; -1 (logged) when it cannot be had. */
static int
lock_account(const struct config *cfg, const struct account *a, bool once)
{
	long holder;
	int fd = state_lock(cfg->state_dir, a->name, once ? "once" : "daemon",
	    &holder);

	if (fd == -EWOULDBLOCK && holder > 0)
		log_msg(LOGL_ERROR, a->name, NULL,
		    "another idlefetch (pid %ld) is fetching this account; "
		    "a second one would deliver its mail twice",
		    holder);
	else if (fd == -EWOULDBLOCK)
		log_msg(LOGL_ERROR, a->name, NULL,
		    "another idlefetch is fetching this account; "
		    "a second one would deliver its mail twice");
	else if (fd < 0)
		log_msg(LOGL_ERROR, a->name, NULL, "cannot lock %s/%s/lock: %s",
		    cfg->state_dir, a->name, err_str(fd));
	return fd < 0 ? -1 : fd;
}

int
daemon_run(const struct config *cfg, const char *account, bool once)
{
	struct daemon d = { .loop = uv_default_loop() };
	SSL_CTX **ctxs = xcalloc(cfg->naccounts, sizeof(*ctxs));
	int *locks = xmalloc(cfg->naccounts * sizeof(*locks));
	struct status_rec **recs = xcalloc(cfg->naccounts, sizeof(*recs));
	struct status_writer **writers =
	    xcalloc(cfg->naccounts, sizeof(*writers));
	char err[300];
	int code = 0;

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		locks[i] = -1;
		if (account && strcmp(account, a->name) != 0)
			continue;
		locks[i] = lock_account(cfg, a, once);
		if (locks[i] < 0) {
			d.failed++;
			continue;
		}
		if (a->tls != TLS_MODE_NONE) {
			ctxs[i] = tls_ctx_new(a->ca_file, err, sizeof(err));
			if (ctxs[i] == NULL) {
				log_msg(LOGL_ERROR, a->name, NULL, "%s", err);
				d.failed++;
				continue;
			}
		}
		recs[i] = xcalloc(a->nfolders, sizeof(*recs[i]));
		for (size_t j = 0; j < a->nfolders; j++)
			recs[i][j].folder = a->folders[j];
		/* A single pass is no daemon: it leaves the daemon's status alone. */
		if (!once)
			writers[i] = status_writer_new(d.loop, cfg->state_dir,
			    a->name, recs[i], a->nfolders);
		for (size_t j = 0; j < a->nfolders; j++) {
			struct session_opts o = {
				.acct = a,
				.folder = a->folders[j],
				.state_dir = cfg->state_dir,
				.ssl_ctx = ctxs[i],
				.once = once,
				.status = &recs[i][j],
				.done = on_session_done,
				.ud = &d,
			};

			d.sessions = xrealloc(d.sessions,
			    (d.nsessions + 1) * sizeof(*d.sessions));
			d.sessions[d.nsessions++] = session_new(d.loop, &o);
		}
	}
	if (d.nsessions == 0) {
		log_msg(LOGL_ERROR, NULL, NULL, "nothing to do: no account %s",
		    account ? account : "could be set up");
		code = 1;
		goto out;
	}
	log_msg(LOGL_INFO, NULL, NULL,
	    "idlefetch %s starting: %zu connection(s)%s", IDLEFETCH_VERSION,
	    d.nsessions, once ? ", single pass" : "");
	uv_signal_init(d.loop, &d.sigterm);
	uv_signal_init(d.loop, &d.sigint);
	d.sigterm.data = d.sigint.data = &d;
	uv_signal_start(&d.sigterm, on_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_signal, SIGINT);
	d.running = d.nsessions;
	for (size_t i = 0; i < d.nsessions; i++)
		session_start(d.sessions[i]);
	uv_run(d.loop, UV_RUN_DEFAULT);

	for (size_t i = 0; i < cfg->naccounts; i++)
		status_writer_free(writers[i]);
	for (size_t i = 0; i < d.nsessions; i++)
		session_free(d.sessions[i]);
	uv_run(d.loop, UV_RUN_DEFAULT); /* let the close callbacks run */
	uv_loop_close(d.loop);
	if (once)
		code = d.failed ? 1 : 0;
	else
		code = d.signals ? 0 : 1; /* else every session gave up */
	log_msg(LOGL_INFO, NULL, NULL, "exiting with status %d", code);
out:
	for (size_t i = 0; i < cfg->naccounts; i++) {
		SSL_CTX_free(ctxs[i]);
		free(recs[i]);
		if (locks[i] >= 0)
			close(locks[i]);
	}
	free(writers);
	free(recs);
	free(locks);
	free(ctxs);
	free(d.sessions);
	return code;
}
