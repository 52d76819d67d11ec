/*
 * units: the accounts a daemon runs (idlefetch/units.h). Owns struct unit
 * (one per account: its lock, TLS context, status records and writer,
 * OAuth token, sessions) and the configurations they borrow their
 * accounts from; calls session, state (the lock), tls, oauth and status,
 * and tells the daemon through units_ops. The daemon's loop, signals and
 * service manager are daemon.c's.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/gate.h"
#include "idlefetch/hook.h"
#include "idlefetch/log.h"
#include "idlefetch/oauth.h"
#include "idlefetch/session.h"
#include "idlefetch/state.h"
#include "idlefetch/tls.h"
#include "idlefetch/units.h"
#include "idlefetch/util.h"

struct cfgref {
	struct config *cfg;
	unsigned refs;
};

/*
 * Connections in set-up (connect, TLS, login) at once. A thousand
 * accounts log in over a few seconds either way; all at once, a server's
 * login and auth services refuse some of them.
 */
#define GATE_MAX 32

struct units {
	uv_loop_t *loop;
	const struct units_ops *ops;
	void *ud;
	const char *only; /* --account */
	bool once;
	bool stopping;
	struct cfgref *cur; /* the configuration in force */
	struct gate *gate; /* connections set up at once, at most */
	uv_timer_t lockwait; /* retries the locks other processes hold */
	struct status_clock *clock; /* when each status file is written */
	struct unit *units;
	unsigned failed;
};

struct unit {
	struct units *us;
	struct cfgref *cref; /* holds the configuration a points into */
	const struct account *a;
	SSL_CTX *ctx;
	int lock; /* 0: the account's lock is held; -1: not, and no sessions */
	char **names; /* its folders (folders = *: as last listed) */
	struct status_rec *recs; /* one per folder */
	size_t nrecs;
	struct status_writer *w;
	struct oauth *oauth; /* auth = xoauth2 | oauthbearer: the token */
	struct hook *hook; /* on_delivery, or NULL */
	struct session **sessions; /* one per connection */
	size_t n, running;
	bool gave_up; /* a session ended on its own: it needs the user */
	bool lock_wait; /* another process holds the account: try again */
	bool retiring; /* stopping, to be replaced or removed */
	struct unit *next;
};

/* ---- configurations ------------------------------------------------------ */

static struct cfgref *
cfg_new(struct config *cfg)
{
	struct cfgref *c = xcalloc(1, sizeof(*c));

	c->cfg = cfg;
	c->refs = 1;
	return c;
}

static void
cfg_unref(struct cfgref *c)
{
	if (c != NULL && --c->refs == 0) {
		config_free(c->cfg);
		free(c);
	}
}

static bool
wanted(const struct units *us, const struct config *cfg,
    const struct account *a)
{
	return config_wanted(cfg, a, us->only);
}

/* ---- units ------------------------------------------------------------------ */

/*
 * Takes the account's lock: 0, or -1 (logged) when it cannot be had. A
 * daemon that finds another holding it (a replica handing the account
 * over, after the shards changed) returns LOCK_BUSY and tries again.
 */
#define LOCK_BUSY (-2)
#define LOCK_RETRY_MS 5000

static int
lock_account(const struct config *cfg, const struct account *a, bool once,
    bool quiet)
{
	long holder;
	int r = state_lock(cfg->state_dir, a->name, once ? "once" : "daemon",
	    &holder);

	if (r == -EWOULDBLOCK && !once) {
		if (!quiet)
			log_msg(LOGL_WARN, a->name, NULL,
			    "another idlefetch (pid %ld) is fetching this "
			    "account; taking it over once that one lets go",
			    holder);
		return LOCK_BUSY;
	}
	if (r == -EWOULDBLOCK && holder > 0)
		log_msg(LOGL_ERROR, a->name, NULL,
		    "another idlefetch (pid %ld) is fetching this account; "
		    "a second one would deliver its mail twice",
		    holder);
	else if (r == -EWOULDBLOCK)
		log_msg(LOGL_ERROR, a->name, NULL,
		    "another idlefetch is fetching this account; "
		    "a second one would deliver its mail twice");
	else if (r < 0)
		log_msg(LOGL_ERROR, a->name, NULL,
		    "cannot lock the account in %s: %s", cfg->state_dir,
		    err_str(r));
	return r < 0 ? -1 : 0;
}

static void
on_session_done(struct session *s, void *ud, bool ok)
{
	struct unit *u = ud;
	struct units *us = u->us;

	if (!ok)
		us->failed++;
	if (!us->once && !us->stopping && !u->retiring)
		u->gave_up = true;
	if (--u->running == 0)
		us->ops->finished(us->ud);
}

/*
 * The TLS context of another account of the same configuration that trusts
 * the same CA file (or the system's store), with a reference taken: one
 * context holds the parsed trust store, a few hundred KiB for the system's,
 * so a thousand accounts share one instead of loading a thousand. Only
 * units of the current configuration share, so a reload reads CA files
 * afresh for the accounts it starts.
 */
static SSL_CTX *
shared_ctx(struct units *us, const struct account *a)
{
	for (struct unit *u = us->units; u; u = u->next) {
		const char *ca = u->a->ca_file;

		if (u->ctx == NULL || u->cref != us->cur || u->a == a)
			continue;
		if (u->a->pinned != a->pinned ||
		    memcmp(u->a->pin, a->pin, sizeof(a->pin)) != 0)
			continue;
		if ((ca == NULL) != (a->ca_file == NULL))
			continue;
		if (ca != NULL && strcmp(ca, a->ca_file) != 0)
			continue;
		if (SSL_CTX_up_ref(u->ctx) != 1)
			return NULL;
		return u->ctx;
	}
	return NULL;
}

static void on_split(struct session *s, void *ud);
static void
on_folders(struct session *s, void *ud, const char *const *names, size_t n);
static void unit_begin(struct unit *u);
static void unit_stop(struct unit *u);
static void lockwait_cb(uv_timer_t *t);

/* Starts a connection for folders [first, first + n) of the account. */
static void
add_session(struct unit *u, size_t first, size_t n)
{
	const struct config *cfg = u->us->cur->cfg;
	struct session_opts o = {
		.acct = u->a,
		.folders = (const char *const *)u->names + first,
		.nfolders = n,
		.state_dir = cfg->state_dir,
		.ssl_ctx = u->ctx,
		.once = u->us->once,
		.status = &u->recs[first],
		.gate = u->us->gate,
		.done = on_session_done,
		/* Only the account's first connection holds every folder. */
		.split = n == u->nrecs ? on_split : NULL,
		/* The first connection lists the subscribed folders. */
		.listed = first == 0 && u->a->subscribed ? on_folders : NULL,
		.oauth = u->oauth,
		.hook = u->hook,
		.ud = u,
	};
	struct session *s = session_new(u->us->loop, &o);

	u->sessions[u->n++] = s;
	u->running++;
	session_start(s);
}

/*
 * The server has IDLE but no NOTIFY: one connection sees one folder's
 * news. The first folders (INBOX first) get a connection each, up to
 * max_connections; the last connection IDLEs on its first folder and
 * polls the rest with STATUS.
 */
static void
on_split(struct session *s, void *ud)
{
	struct unit *u = ud;
	size_t f = u->nrecs, max = u->a->max_connections, singles;

	if (max <= 1 || f <= 1 || u->retiring || u->us->stopping)
		return;
	singles = f <= max ? f : max - 1;
	session_keep(s, 1);
	for (size_t j = 1; j < singles; j++)
		add_session(u, j, 1);
	if (f > max)
		add_session(u, max - 1, f - (max - 1));
	log_msg(LOGL_INFO, u->a->name, NULL,
	    "the server offers no NOTIFY: %zu connection(s) for %zu "
	    "folder(s)%s",
	    u->n, f,
	    f > max ? "; the last one polls the others with STATUS" : "");
}

/*
 * folders = *: the first connection listed the subscribed folders. Alone,
 * it takes the new set on the spot; spread over several connections, the
 * account starts again, and its first connection spreads the new set.
 */
static void
on_folders(struct session *s, void *ud, const char *const *names, size_t n)
{
	struct unit *u = ud;
	struct status_rec *recs;
	char **own;

	if (strv_equal(names, n, (const char *const *)u->names, u->nrecs) ||
	    u->retiring || u->us->stopping)
		return;
	if (u->n > 1) {
		log_msg(LOGL_INFO, u->a->name, NULL,
		    "the subscribed folders changed: reconnecting to spread "
		    "them over the connections again");
		u->retiring = true;
		unit_stop(u);
		return;
	}
	own = xcalloc(n, sizeof(*own));
	recs = xcalloc(n, sizeof(*recs));
	for (size_t i = 0; i < n; i++) {
		own[i] = xstrdup(names[i]);
		/* What the status said of a folder that stays, stays. */
		for (size_t j = 0; j < u->nrecs; j++)
			if (strcmp(u->names[j], names[i]) == 0) {
				recs[i] = u->recs[j];
				u->recs[j].error = NULL; /* moved */
			}
		recs[i].folder = own[i];
	}
	if (u->w)
		status_writer_set(u->w, recs, n);
	session_set_folders(s, (const char *const *)own, n, recs);
	for (size_t j = 0; j < u->nrecs; j++) {
		status_rec_clear(&u->recs[j]);
		free(u->names[j]);
	}
	free(u->names);
	free(u->recs);
	u->names = own;
	u->recs = recs;
	u->nrecs = n;
	u->sessions = xrealloc(u->sessions, n * sizeof(*u->sessions));
	log_msg(LOGL_INFO, u->a->name, NULL, "fetching %zu folder(s)", n);
}

/* Sets up and starts one account; a unit without sessions if it cannot. */
static struct unit *
unit_start(struct units *us, const struct account *a)
{
	const struct config *cfg = us->cur->cfg;
	struct unit *u = xcalloc(1, sizeof(*u));
	u->us = us;
	u->cref = us->cur;
	u->cref->refs++;
	u->a = a;
	u->next = us->units;
	us->units = u;
	u->lock = lock_account(cfg, a, us->once, false);
	if (u->lock == LOCK_BUSY) {
		u->lock = -1;
		u->lock_wait = true;
		if (!uv_is_active((uv_handle_t *)&us->lockwait))
			uv_timer_start(&us->lockwait, lockwait_cb,
			    LOCK_RETRY_MS, LOCK_RETRY_MS);
		return u;
	}
	unit_begin(u);
	return u;
}

/* The lock is held: the TLS context, the status and the connections. */
static void
unit_begin(struct unit *u)
{
	struct units *us = u->us;
	const struct config *cfg = u->cref->cfg;
	const struct account *a = u->a;
	char err[300];

	if (u->lock >= 0 && a->tls != TLS_MODE_NONE) {
		u->ctx = shared_ctx(us, a);
		if (u->ctx == NULL)
			u->ctx = tls_ctx_new(a->ca_file,
			    a->pinned ? a->pin : NULL, err, sizeof(err));
		if (u->ctx == NULL)
			log_msg(LOGL_ERROR, a->name, NULL, "%s", err);
	}
	if (u->lock < 0 || (a->tls != TLS_MODE_NONE && u->ctx == NULL)) {
		us->failed++;
		u->gave_up = true;
		return;
	}
	if (a->auth != AUTH_PASSWORD)
		u->oauth = oauth_new(us->loop, a->name, a->oauth_token_command,
		    cfg->command_timeout);
	u->hook = hook_new(us->loop, a->name, a->on_delivery, a->maildir,
	    cfg->command_timeout);
	u->names = xcalloc(a->nfolders, sizeof(*u->names));
	u->recs = xcalloc(a->nfolders, sizeof(*u->recs));
	for (size_t j = 0; j < a->nfolders; j++) {
		u->names[j] = xstrdup(a->folders[j]);
		u->recs[j].folder = u->names[j];
	}
	/* A single pass is no daemon: it leaves the daemon's status alone. */
	if (!us->once) {
		u->w = status_writer_new(us->clock, cfg->state_dir, a->name,
		    u->recs, a->nfolders);
		status_writer_hook(u->w, us->ops->changed, us->ud);
	}
	u->nrecs = a->nfolders;
	/* At most one session per folder, however they are spread. */
	u->sessions = xcalloc(a->nfolders, sizeof(*u->sessions));
	add_session(u, 0, a->nfolders);
}

/* Every few seconds: accounts another process held, taken when it lets go. */
static void
lockwait_cb(uv_timer_t *t)
{
	struct units *us = t->data;
	bool waiting = false;

	for (struct unit *u = us->units; u; u = u->next) {
		if (!u->lock_wait || u->retiring || us->stopping)
			continue;
		u->lock = lock_account(u->cref->cfg, u->a, false, true);
		if (u->lock == LOCK_BUSY) {
			u->lock = -1;
			waiting = true;
			continue;
		}
		u->lock_wait = false;
		if (u->lock >= 0)
			log_msg(LOGL_INFO, u->a->name, NULL,
			    "the other idlefetch let go of this account: "
			    "fetching it");
		unit_begin(u);
	}
	if (!waiting)
		uv_timer_stop(t);
}

static void
unit_stop(struct unit *u)
{
	for (size_t j = 0; j < u->n; j++)
		session_stop(u->sessions[j]);
}

/*
 * Only once every session is done; the loop must run on (closes). last:
 * the account is not started again, its status says so.
 */
static void
unit_free(struct unit *u, bool last)
{
	status_writer_free(u->w, last);
	for (size_t j = 0; j < u->n; j++)
		session_free(u->sessions[j]);
	free(u->sessions);
	for (size_t j = 0; j < u->nrecs; j++) {
		status_rec_clear(&u->recs[j]);
		free(u->names[j]);
	}
	free(u->recs);
	free(u->names);
	oauth_free(u->oauth);
	hook_free(u->hook, u->us->once);
	SSL_CTX_free(u->ctx);
	if (u->lock >= 0)
		state_unlock(u->cref->cfg->state_dir, u->a->name);
	cfg_unref(u->cref);
	free(u);
}

static struct unit *
find_unit(struct units *us, const char *name, bool retiring)
{
	for (struct unit *u = us->units; u; u = u->next)
		if (u->retiring == retiring && strcmp(u->a->name, name) == 0)
			return u;
	return NULL;
}

/*
 * Starts every configured account that has no unit. One whose old unit is
 * still stopping waits for it: both would want the account's lock.
 */
static size_t
start_missing(struct units *us)
{
	const struct config *cfg = us->cur->cfg;
	size_t started = 0;

	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		if (!wanted(us, cfg, a) || find_unit(us, a->name, false) ||
		    find_unit(us, a->name, true))
			continue;
		unit_start(us, a);
		started++;
	}
	return started;
}

/* The account of that name in cfg that this process fetches, or NULL. */
static const struct account *
find_account(const struct units *us, const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->naccounts; i++)
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return wanted(us, cfg, &cfg->accounts[i]) ?
			    &cfg->accounts[i] :
			    NULL;
	return NULL;
}

/* ---- what the daemon asks ------------------------------------------------ */

struct units *
units_new(uv_loop_t *loop, const char *only, bool once,
    const struct units_ops *ops, void *ud)
{
	struct units *us = xcalloc(1, sizeof(*us));

	us->loop = loop;
	us->only = only;
	us->once = once;
	us->ops = ops;
	us->ud = ud;
	us->gate = gate_new(GATE_MAX);
	uv_timer_init(loop, &us->lockwait);
	us->lockwait.data = us;
	us->clock = status_clock_new(loop);
	return us;
}

const struct config *
units_config(const struct units *us)
{
	return us->cur ? us->cur->cfg : NULL;
}

void
units_begin(struct units *us, struct config *cfg, size_t *accounts,
    size_t *folders)
{
	us->cur = cfg_new(cfg);
	start_missing(us);
	*accounts = *folders = 0;
	for (struct unit *u = us->units; u; u = u->next)
		if (u->n > 0 || u->lock_wait) {
			(*accounts)++;
			*folders += u->nrecs;
		}
}

void
units_reload(struct units *us, struct config *cfg, struct units_reload *out)
{
	memset(out, 0, sizeof(*out));
	for (struct unit *u = us->units; u; u = u->next) {
		const struct account *a;

		if (u->retiring)
			continue;
		a = find_account(us, cfg, u->a->name);
		if (a && !u->gave_up && config_account_equal(a, u->a) &&
		    strcmp(cfg->state_dir, u->cref->cfg->state_dir) == 0) {
			out->kept++;
			continue;
		}
		log_msg(LOGL_INFO, u->a->name, NULL, "%s",
		    a == NULL      ? "no longer configured: stopping" :
			u->gave_up ? "starting again" :
				     "settings changed: reconnecting");
		if (a == NULL)
			out->removed++;
		else
			out->restarted++;
		u->retiring = true;
		unit_stop(u);
		if (u->running == 0)
			us->ops->finished(us->ud);
	}
	cfg_unref(us->cur);
	us->cur = cfg_new(cfg);
	out->added = start_missing(us);
}

void
units_stop(struct units *us)
{
	us->stopping = true;
	for (struct unit *u = us->units; u; u = u->next)
		unit_stop(u);
}

bool
units_reap(struct units *us)
{
	struct unit **p = &us->units, *u;
	bool busy = false;

	while ((u = *p) != NULL) {
		if (u->running == 0 && (u->retiring || us->stopping)) {
			*p = u->next;
			unit_free(u,
			    us->stopping ||
				!find_account(us, us->cur->cfg, u->a->name));
		} else {
			p = &u->next;
		}
	}
	if (!us->stopping && us->cur != NULL && start_missing(us) > 0)
		busy = true;
	for (u = us->units; u && !busy; u = u->next)
		busy = u->running > 0 ||
		    (u->lock_wait && !u->retiring && !us->stopping);
	return busy;
}

void
units_each(const struct units *us, units_each_cb *cb, void *ud)
{
	for (const struct unit *u = us->units; u; u = u->next) {
		unsigned k[SESSION_ACTIVITIES] = { 0 }, told = 0;

		for (size_t j = 0; j < u->n; j++)
			session_tally(u->sessions[j], k);
		for (int i = 0; i < SESSION_ACTIVITIES; i++)
			told += k[i];
		/* Folders no session holds yet: about to connect. */
		if (told < u->nrecs)
			k[SESSION_BUSY] += (unsigned)u->nrecs - told;
		cb(ud, u->a->name, u->recs, u->nrecs, k, u->retiring);
	}
}

unsigned
units_failed(const struct units *us)
{
	return us->failed;
}

void
units_close(struct units *us)
{
	uv_close((uv_handle_t *)&us->lockwait, NULL);
	status_clock_close(us->clock);
}

void
units_free_all(struct units *us)
{
	while (us->units) {
		struct unit *u = us->units;

		us->units = u->next;
		unit_free(u, true);
	}
}

void
units_free(struct units *us)
{
	cfg_unref(us->cur);
	gate_free(us->gate);
	status_clock_free(us->clock);
	free(us);
}
