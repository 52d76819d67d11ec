/*
 * daemon: owns the loop and one unit per account: the account's lock (one
 * fetcher per account), its TLS context (shared by its connections and
 * those of other accounts trusting the same CA), its status records (one
 * per folder) and writer, and its sessions: one holding every folder, or,
 * when the server has no NOTIFY, up to max_connections (on_split).
 *
 * Signals: a first SIGTERM/SIGINT asks every session to stop gracefully; a
 * second one exits at once, which is still safe because delivery never
 * depends on a clean shutdown. SIGHUP reads the configuration again: the
 * accounts whose settings changed, that are gone, or that stopped for good
 * are stopped gracefully and, where still configured, started again with
 * the new settings; the others keep their connections. A configuration
 * with an error changes nothing.
 *
 * Sessions borrow their account from a configuration, so a configuration
 * lives as long as the units made from it (a reference count).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/daemon.h"
#include "idlefetch/folders.h"
#include "idlefetch/gate.h"
#include "idlefetch/log.h"
#include "idlefetch/notify.h"
#include "idlefetch/oauth.h"
#include "idlefetch/session.h"
#include "idlefetch/spawn.h"
#include "idlefetch/state.h"
#include "idlefetch/status.h"
#include "idlefetch/tls.h"
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

struct unit {
	struct daemon *d;
	struct cfgref *cref; /* holds the configuration a points into */
	const struct account *a;
	SSL_CTX *ctx;
	int lock; /* 0: the account's lock is held; -1: not, and no sessions */
	char **names; /* its folders (folders = *: as last listed) */
	struct status_rec *recs; /* one per folder */
	size_t nrecs;
	struct status_writer *w;
	struct oauth *oauth; /* auth = xoauth2 | oauthbearer: the token */
	struct session **sessions; /* one per connection */
	size_t n, running;
	bool gave_up; /* a session ended on its own: it needs the user */
	bool lock_wait; /* another process holds the account: try again */
	bool retiring; /* stopping, to be replaced or removed */
	struct unit *next;
};

struct daemon {
	uv_loop_t *loop;
	uv_signal_t sigterm, sigint, sighup;
	uv_signal_t sigstall; /* debug_stall_signal: SIGUSR2 */
	uv_timer_t reap; /* frees finished units outside their callbacks */
	uv_timer_t bar; /* --once on a terminal: the progress bar */
	uv_timer_t watchdog; /* WATCHDOG=1 to the service manager */
	uv_timer_t trim; /* hands freed heap back to the system */
	uv_timer_t lockwait; /* retries the locks other processes hold */
	struct gate *gate; /* connections set up at once, at most */
	uint64_t changes, trimmed_at; /* status changes: all, at the last trim */
	bool ready; /* READY=1 sent */
	char told[160]; /* the last STATUS= sent */
	struct cfgref *cur; /* the configuration in force */
	daemon_load_cb *load;
	void *load_ud;
	const char *only; /* --account */
	bool once;
	bool stopping;
	bool closed; /* handles closed: the loop ends */
	struct unit *units;
	unsigned failed;
	unsigned signals;
	uint64_t first_signal_ms; /* loop time of the first stop signal */
	struct secrets *secrets; /* password_commands running, or NULL */
	int exit_code; /* -1: decided by the sessions' results */
};

/* A second stop signal within this time repeats the first one. */
#define SECOND_SIGNAL_MS 1000

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
wanted(const struct daemon *d, const struct config *cfg,
    const struct account *a)
{
	return config_wanted(cfg, a, d->only);
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

static void schedule_reap(struct daemon *d);
static void tell(void *ud);

static void
on_session_done(struct session *s, void *ud, bool ok)
{
	struct unit *u = ud;
	struct daemon *d = u->d;

	if (!ok)
		d->failed++;
	if (!d->once && !d->stopping && !u->retiring)
		u->gave_up = true;
	if (--u->running == 0)
		schedule_reap(d);
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
shared_ctx(struct daemon *d, const struct account *a)
{
	for (struct unit *u = d->units; u; u = u->next) {
		const char *ca = u->a->ca_file;

		if (u->ctx == NULL || u->cref != d->cur || u->a == a)
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
static void on_folders(struct session *s, void *ud, const char *const *names,
    size_t n);
static void unit_begin(struct unit *u);
static void unit_stop(struct unit *u);
static void lockwait_cb(uv_timer_t *t);

/* Starts a connection for folders [first, first + n) of the account. */
static void
add_session(struct unit *u, size_t first, size_t n)
{
	const struct config *cfg = u->d->cur->cfg;
	struct session_opts o = {
		.acct = u->a,
		.folders = (const char *const *)u->names + first,
		.nfolders = n,
		.state_dir = cfg->state_dir,
		.ssl_ctx = u->ctx,
		.once = u->d->once,
		.status = &u->recs[first],
		.gate = u->d->gate,
		.done = on_session_done,
		/* Only the account's first connection holds every folder. */
		.split = n == u->nrecs ? on_split : NULL,
		/* The first connection lists the subscribed folders. */
		.listed = first == 0 && u->a->subscribed ? on_folders : NULL,
		.oauth = u->oauth,
		.ud = u,
	};
	struct session *s = session_new(u->d->loop, &o);

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

	if (max <= 1 || f <= 1 || u->retiring || u->d->stopping)
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
	    u->retiring || u->d->stopping)
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
			if (strcmp(u->names[j], names[i]) == 0)
				recs[i] = u->recs[j];
		recs[i].folder = own[i];
	}
	if (u->w)
		status_writer_set(u->w, recs, n);
	session_set_folders(s, (const char *const *)own, n, recs);
	for (size_t j = 0; j < u->nrecs; j++)
		free(u->names[j]);
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
unit_start(struct daemon *d, const struct account *a)
{
	const struct config *cfg = d->cur->cfg;
	struct unit *u = xcalloc(1, sizeof(*u));
	u->d = d;
	u->cref = d->cur;
	u->cref->refs++;
	u->a = a;
	u->next = d->units;
	d->units = u;
	u->lock = lock_account(cfg, a, d->once, false);
	if (u->lock == LOCK_BUSY) {
		u->lock = -1;
		u->lock_wait = true;
		if (!uv_is_active((uv_handle_t *)&d->lockwait))
			uv_timer_start(&d->lockwait, lockwait_cb, LOCK_RETRY_MS,
			    LOCK_RETRY_MS);
		return u;
	}
	unit_begin(u);
	return u;
}

/* The lock is held: the TLS context, the status and the connections. */
static void
unit_begin(struct unit *u)
{
	struct daemon *d = u->d;
	const struct config *cfg = u->cref->cfg;
	const struct account *a = u->a;
	char err[300];

	if (u->lock >= 0 && a->tls != TLS_MODE_NONE) {
		u->ctx = shared_ctx(d, a);
		if (u->ctx == NULL)
			u->ctx = tls_ctx_new(a->ca_file,
			    a->pinned ? a->pin : NULL, err, sizeof(err));
		if (u->ctx == NULL)
			log_msg(LOGL_ERROR, a->name, NULL, "%s", err);
	}
	if (u->lock < 0 || (a->tls != TLS_MODE_NONE && u->ctx == NULL)) {
		d->failed++;
		u->gave_up = true;
		return;
	}
	if (a->auth != AUTH_PASSWORD)
		u->oauth = oauth_new(d->loop, a->name, a->oauth_token_command,
		    cfg->command_timeout);
	u->names = xcalloc(a->nfolders, sizeof(*u->names));
	u->recs = xcalloc(a->nfolders, sizeof(*u->recs));
	for (size_t j = 0; j < a->nfolders; j++) {
		u->names[j] = xstrdup(a->folders[j]);
		u->recs[j].folder = u->names[j];
	}
	/* A single pass is no daemon: it leaves the daemon's status alone. */
	if (!d->once) {
		u->w = status_writer_new(d->loop, cfg->state_dir, a->name,
		    u->recs, a->nfolders);
		status_writer_hook(u->w, tell, d);
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
	struct daemon *d = t->data;
	bool waiting = false;

	for (struct unit *u = d->units; u; u = u->next) {
		if (!u->lock_wait || u->retiring || d->stopping)
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
	free(u->recs);
	for (size_t j = 0; j < u->nrecs; j++)
		free(u->names[j]);
	free(u->names);
	oauth_free(u->oauth);
	SSL_CTX_free(u->ctx);
	if (u->lock >= 0)
		state_unlock(u->cref->cfg->state_dir, u->a->name);
	cfg_unref(u->cref);
	free(u);
}

static struct unit *
find_unit(struct daemon *d, const char *name, bool retiring)
{
	for (struct unit *u = d->units; u; u = u->next)
		if (u->retiring == retiring && strcmp(u->a->name, name) == 0)
			return u;
	return NULL;
}

/*
 * Starts every configured account that has no unit. One whose old unit is
 * still stopping waits for it: both would want the account's lock.
 */
static size_t
start_missing(struct daemon *d)
{
	const struct config *cfg = d->cur->cfg;
	size_t started = 0;

	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		if (!wanted(d, cfg, a) || find_unit(d, a->name, false) ||
		    find_unit(d, a->name, true))
			continue;
		unit_start(d, a);
		started++;
	}
	return started;
}

/* The account of that name in cfg that this process fetches, or NULL. */
static const struct account *
find_account(const struct daemon *d, const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->naccounts; i++)
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return wanted(d, cfg, &cfg->accounts[i]) ?
			    &cfg->accounts[i] :
			    NULL;
	return NULL;
}

/* ---- the service manager ------------------------------------------------- */

/*
 * Whether every account has finished its first sync or failed it: a
 * folder that synced, met an error or gave up. An account that could not
 * start (its lock, its TLS set-up) has failed it.
 */
static bool
all_settled(const struct daemon *d)
{
	for (const struct unit *u = d->units; u; u = u->next)
		for (size_t j = 0; j < u->nrecs; j++) {
			const struct status_rec *r = &u->recs[j];

			if (r->last_sync == 0 && r->error_at == 0 &&
			    !r->gave_up)
				return false;
		}
	return true;
}

/* "2 accounts, 5 folders: 4 idling, 1 in backoff" */
static void
summary(const struct daemon *d, char *buf, size_t len)
{
	enum { NKINDS = SESSION_ACTIVITIES };
	static const char *names[NKINDS] = { "idling", "polling",
		"in backoff", "stopped", "connecting or syncing" };
	unsigned accounts = 0, folders = 0, k[NKINDS] = { 0 };
	size_t o;

	for (const struct unit *u = d->units; u; u = u->next) {
		unsigned told = 0;

		if (u->retiring)
			continue;
		accounts++;
		folders += (unsigned)u->nrecs;
		for (size_t j = 0; j < u->n; j++)
			session_tally(u->sessions[j], k);
		for (int i = 0; i < NKINDS; i++)
			told += k[i];
		/* Folders no session holds yet: about to connect. */
		if (told < folders)
			k[SESSION_BUSY] += folders - told;
	}
	o = (size_t)snprintf(buf, len, "%u account%s, %u folder%s", accounts,
	    accounts == 1 ? "" : "s", folders, folders == 1 ? "" : "s");
	for (int i = 0; i < NKINDS && o < len; i++)
		if (k[i] > 0)
			o += (size_t)snprintf(buf + o, len - o, "%s%u %s",
			    strchr(buf, ':') ? ", " : ": ", k[i], names[i]);
}

/* Tells the service manager what changed: STATUS=, and READY=1 once. */
static void
tell(void *ud)
{
	struct daemon *d = ud;
	char line[sizeof(d->told)], msg[sizeof(line) + 32];

	d->changes++;
	if (!notify_enabled() || d->once || d->stopping)
		return;
	summary(d, line, sizeof(line));
	if (!d->ready && all_settled(d)) {
		d->ready = true;
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", line);
	} else if (strcmp(line, d->told) != 0) {
		snprintf(msg, sizeof(msg), "STATUS=%s", line);
	} else {
		return;
	}
	snprintf(d->told, sizeof(d->told), "%s", line);
	notify_send(msg);
}

/*
 * Connecting, TLS handshakes and syncs churn the heap; what they free in
 * the middle of it stays resident, since glibc gives back only its top.
 * After anything changed (a connection came up or went down, a folder
 * synced), return the free pages: with a thousand TLS accounts this is a
 * quarter of the resident memory. A few milliseconds at most every 10 s.
 */
#define TRIM_MS 10000

static void
trim_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;

	if (d->changes == d->trimmed_at)
		return;
	d->trimmed_at = d->changes;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static void
watchdog_cb(uv_timer_t *t)
{
	notify_send("WATCHDOG=1");
}

/* ---- loop ------------------------------------------------------------------- */

#define BAR_WIDTH 30
#define BAR_MS 200

static void
bar_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	uint64_t done = 0, total = 0;
	char bar[BAR_WIDTH + 1], line[200];
	size_t fill;

	for (struct unit *u = d->units; u; u = u->next)
		for (size_t j = 0; j < u->nrecs; j++) {
			done += u->recs[j].delivered;
			total += u->recs[j].queued;
		}
	if (total == 0)
		return;
	if (done > total)
		done = total;
	fill = (size_t)(done * BAR_WIDTH / total);
	memset(bar, '#', fill);
	memset(bar + fill, '.', BAR_WIDTH - fill);
	bar[BAR_WIDTH] = '\0';
	snprintf(line, sizeof(line),
	    "[%s] %" PRIu64 "/%" PRIu64 " messages %3d%%", bar, done, total,
	    (int)(done * 100 / total));
	log_progress(line);
}

static void
close_handles(struct daemon *d)
{
	sigset_t stop, was;

	d->closed = true;
	if (uv_is_active((uv_handle_t *)&d->bar)) {
		bar_cb(&d->bar); /* the final count stays on the screen */
		log_progress(NULL);
	}
	uv_close((uv_handle_t *)&d->bar, NULL);
	/*
	 * Closing the handles gives the signals back their default action:
	 * a stop signal sent again now (a supervisor repeating itself) would
	 * kill a process that is already on its way out cleanly. They are
	 * held back while the handles close and ignored from then on (no
	 * other thread takes them: start_threadpool).
	 */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, &was);
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	pthread_sigmask(SIG_SETMASK, &was, NULL);
	uv_close((uv_handle_t *)&d->sighup, NULL);
	uv_close((uv_handle_t *)&d->sigstall, NULL);
	uv_close((uv_handle_t *)&d->reap, NULL);
	uv_close((uv_handle_t *)&d->watchdog, NULL);
	uv_close((uv_handle_t *)&d->trim, NULL);
	uv_close((uv_handle_t *)&d->lockwait, NULL);
}

static void
reap_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	struct unit **p = &d->units, *u;
	bool busy = false;

	while ((u = *p) != NULL) {
		if (u->running == 0 && (u->retiring || d->stopping)) {
			*p = u->next;
			unit_free(u,
			    d->stopping ||
				!find_account(d, d->cur->cfg, u->a->name));
		} else {
			busy = busy || u->running > 0 ||
			    (u->lock_wait && !u->retiring && !d->stopping);
			p = &u->next;
		}
	}
	if (!d->stopping && d->cur != NULL && start_missing(d) > 0)
		busy = true;
	tell(d);
	for (u = d->units; u && !busy; u = u->next)
		busy = u->running > 0 ||
		    (u->lock_wait && !u->retiring && !d->stopping);
	busy = busy || d->secrets != NULL; /* passwords still being read */
	/* Nothing runs any more: stopped, a pass done, or every folder gave up. */
	if (!busy && !d->closed)
		close_handles(d);
}

static void
schedule_reap(struct daemon *d)
{
	if (!d->closed)
		uv_timer_start(&d->reap, reap_cb, 0, 0);
}

/*
 * RELOADING=1 with the time, as systemd's notify-reload protocol wants it
 * (older managers ignore the extra line).
 */
static void
tell_reloading(void)
{
	struct timespec ts;
	char msg[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
	    (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
	notify_send(msg);
}

/* A reloaded configuration, its secrets read: apply it. */
static void
apply_reload(struct daemon *d, struct config *cfg)
{
	unsigned kept = 0, restarted = 0, removed = 0;

	for (struct unit *u = d->units; u; u = u->next) {
		const struct account *a;

		if (u->retiring)
			continue;
		a = find_account(d, cfg, u->a->name);
		if (a && !u->gave_up && config_account_equal(a, u->a) &&
		    strcmp(cfg->state_dir, u->cref->cfg->state_dir) == 0) {
			kept++;
			continue;
		}
		log_msg(LOGL_INFO, u->a->name, NULL, "%s",
		    a == NULL      ? "no longer configured: stopping" :
			u->gave_up ? "starting again" :
				     "settings changed: reconnecting");
		if (a == NULL)
			removed++;
		else
			restarted++;
		u->retiring = true;
		unit_stop(u);
		if (u->running == 0)
			schedule_reap(d);
	}
	cfg_unref(d->cur);
	d->cur = cfg_new(cfg);
	log_msg(LOGL_INFO, NULL, NULL,
	    "SIGHUP: configuration reloaded: %u account(s) unchanged, "
	    "%u restarted, %u removed, %zu new",
	    kept, restarted, removed, start_missing(d));
	/* Reloaded; the new accounts report through STATUS= as they go. */
	notify_send("READY=1");
	d->told[0] = '\0';
}

/* ---- secrets ---------------------------------------------------------------- */

/*
 * password_command runs off the loop (config_secrets_new), each with a
 * time limit: a slow or hung command delays only the start or the reload
 * it belongs to, and signals are handled meanwhile.
 */
struct secrets {
	struct daemon *d;
	struct config *cfg; /* owned until handed on */
	bool reload;
	struct config_secrets *batch; /* frees itself after secrets_done */
};

static void begin(struct daemon *d, struct config *cfg);

static void
secrets_done(void *ud, int r, const char *err)
{
	struct secrets *set = ud;
	struct daemon *d = set->d;
	struct config *cfg = set->cfg;

	d->secrets = NULL;
	if (d->stopping) {
		config_free(cfg); /* the commands were killed: nothing to say */
		if (!set->reload)
			d->exit_code = 0;
		schedule_reap(d);
	} else if (r < 0) {
		if (set->reload)
			log_msg(LOGL_ERROR, NULL, NULL,
			    "SIGHUP: %s; keeping the running configuration",
			    err);
		else
			log_msg(LOGL_ERROR, NULL, NULL, "%s", err);
		config_free(cfg);
		if (set->reload) {
			notify_send("READY=1");
		} else {
			/* Nothing started: a configuration error. */
			d->exit_code = 2;
			schedule_reap(d);
		}
	} else if (set->reload) {
		apply_reload(d, cfg);
	} else {
		begin(d, cfg);
	}
	free(set);
}

static void
secret_said(void *ud, const struct account *a, int status, const char *line)
{
	(void)ud;
	log_msg(status == 0 ? LOGL_INFO : LOGL_WARN, a->name, NULL,
	    "password_command said: %s", line);
}

static const struct config_secrets_ops secrets_ops = { secret_said,
	secrets_done };

/*
 * Reads cfg's secrets: the files at once, the commands in the background.
 * Then begins (reload false) or applies the reload; on failure logs the
 * error naming file, line and key. Takes ownership of cfg.
 */
static void
secrets_start(struct daemon *d, struct config *cfg, bool reload)
{
	struct secrets *set = xcalloc(1, sizeof(*set));

	set->d = d;
	set->cfg = cfg;
	set->reload = reload;
	d->secrets = set;
	set->batch = config_secrets_new(d->loop, cfg, d->only, &secrets_ops,
	    set);
	config_secrets_run(set->batch); /* set may be gone now */
}

/* A stop while commands run: they are killed, and their results dropped. */
static void
secrets_cancel(struct daemon *d)
{
	if (d->secrets != NULL)
		config_secrets_cancel(d->secrets->batch);
}

static void
reload(struct daemon *d)
{
	struct config *cfg;
	char err[1024];

	if (d->secrets != NULL) {
		log_msg(LOGL_INFO, NULL, NULL,
		    "SIGHUP: the previous start or reload is still reading "
		    "passwords; ignored");
		return;
	}
	tell_reloading();
	if (d->load(d->load_ud, &cfg, err, sizeof(err)) < 0) {
		notify_send("READY=1");
		log_msg(LOGL_ERROR, NULL, NULL,
		    "SIGHUP: %s; keeping the running configuration", err);
		return;
	}
	secrets_start(d, cfg, true);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (signum == SIGHUP) {
		if (d->once)
			log_msg(LOGL_INFO, NULL, NULL,
			    "SIGHUP: a single pass has nothing to reload");
		else if (!d->stopping && d->cur != NULL)
			reload(d);
		return;
	}
	/*
	 * A second signal means "now" only when a person sent it: GNU timeout
	 * and some supervisors signal the process and its group at once, and
	 * those two copies must not skip the clean stop.
	 */
	uv_update_time(d->loop);
	if (d->signals > 0 &&
	    uv_now(d->loop) - d->first_signal_ms < SECOND_SIGNAL_MS) {
		log_msg(LOGL_DEBUG, NULL, NULL,
		    "signal %d again within %d ms: the same request", signum,
		    SECOND_SIGNAL_MS);
		return;
	}
	if (++d->signals > 1) {
		log_msg(LOGL_WARN, NULL, NULL, "second signal: exiting now");
		_exit(1);
	}
	d->first_signal_ms = uv_now(d->loop);
	log_msg(LOGL_INFO, NULL, NULL, "%s: stopping",
	    signum == SIGTERM ? "SIGTERM" : "SIGINT");
	d->stopping = true;
	notify_send("STOPPING=1");
	secrets_cancel(d);
	for (struct unit *u = d->units; u; u = u->next)
		unit_stop(u);
	schedule_reap(d);
}

/*
 * debug_stall_signal: the loop stops answering for good, as a bug that
 * blocked it would, so that a service manager's watchdog can be tried on
 * the shipped binary. Deliberately blocks the loop; only a kill ends it.
 */
static void
on_stall(uv_signal_t *h, int signum)
{
	log_msg(LOGL_WARN, NULL, NULL,
	    "SIGUSR2 (debug_stall_signal): the event loop stops here until "
	    "the process is killed");
	for (;;)
		pause();
}

static void
signal_start(struct daemon *d, uv_signal_t *h, int signum)
{
	uv_signal_init(d->loop, h);
	h->data = d;
	uv_signal_start(h, on_signal, signum);
}

/*
 * Each connection holds a socket and a delivery a file or two (the account
 * locks share 16 files); the usual soft limit of 1,024 open files stops
 * a few hundred accounts short, and then deliveries fail for want of a
 * descriptor while the sockets stay up. Take the soft limit up to the hard
 * one, as a daemon may, and say at start-up when even that is too few:
 * room for every connection and for half of them delivering at once.
 */
static void
raise_fd_limit(const struct config *cfg, const char *only)
{
	struct rlimit rl;
	uint64_t need = 64, conns = 0, n;

	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		if (only && strcmp(a->name, only) != 0)
			continue;
		/* Without NOTIFY an account may use max_connections. */
		n = a->nfolders < a->max_connections ? a->nfolders :
						       a->max_connections;
		conns += n;
	}
	need += conns + conns / 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < need) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = was;
		else
			log_msg(LOGL_DEBUG, NULL, NULL,
			    "open-file limit raised from %llu to %llu",
			    (unsigned long long)was,
			    (unsigned long long)rl.rlim_cur);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_msg(LOGL_WARN, NULL, NULL,
		    "%llu connection(s) need about %llu open files, but the "
		    "limit is %llu: some accounts will fail to connect or "
		    "deliver (raise LimitNOFILE= in the unit, or ulimit -n)",
		    (unsigned long long)conns, (unsigned long long)need,
		    (unsigned long long)rl.rlim_cur);
}

/* The configuration's secrets are read: start every account. */
static void
begin(struct daemon *d, struct config *cfg)
{
	size_t accounts = 0, folders = 0;

	raise_fd_limit(cfg, d->only);
	d->cur = cfg_new(cfg);
	start_missing(d);
	for (struct unit *u = d->units; u; u = u->next)
		if (u->n > 0 || u->lock_wait) {
			accounts++;
			folders += u->nrecs;
		}
	if (accounts == 0)
		log_msg(LOGL_ERROR, NULL, NULL, "nothing to do: no account %s",
		    d->only ? d->only : "could be set up");
	else
		log_msg(LOGL_INFO, NULL, NULL,
		    "idlefetch %s starting: %zu account(s), %zu folder(s)%s",
		    IDLEFETCH_VERSION, accounts, folders,
		    d->once ? ", single pass" : "");
	schedule_reap(d); /* ends at once when nothing could start */
}

static void
warmup_work(uv_work_t *w)
{
	(void)w;
}

static void
warmup_done(uv_work_t *w, int status)
{
	(void)status;
	free(w);
}

/*
 * Starts libuv's threadpool with the stop signals blocked, so that its
 * threads, which inherit the mask, never take one: they all go to the
 * loop's thread, which can hold them back while it exits (close_handles).
 * SIGCHLD too (libuv's handler, there once a command has run): on a pool
 * thread it would cut an LMTP connect() or recv() that has a socket
 * timeout short with EINTR, which SA_RESTART does not restart.
 */
static void
start_threadpool(uv_loop_t *loop)
{
	uv_work_t *w = xcalloc(1, sizeof(*w));
	sigset_t stop, was;
	int r;

	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	sigaddset(&stop, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &stop, &was);
	r = uv_queue_work(loop, w, warmup_work, warmup_done);
	pthread_sigmask(SIG_SETMASK, &was, NULL);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
}

int
daemon_run(struct config *cfg, const char *account, bool once,
    daemon_load_cb *load, void *load_ud)
{
	struct daemon d = { .loop = uv_default_loop(), .exit_code = -1 };
	int code;

	d.once = once;
	d.only = account;
	d.load = load;
	d.load_ud = load_ud;
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	signal(SIGPIPE, SIG_IGN);
	start_threadpool(d.loop);
	uv_timer_init(d.loop, &d.reap);
	d.reap.data = &d;
	uv_timer_init(d.loop, &d.bar);
	d.bar.data = &d;
	if (once && cfg->log == LOG_TARGET_STDERR && isatty(STDERR_FILENO))
		uv_timer_start(&d.bar, bar_cb, BAR_MS / 2, BAR_MS);
	uv_timer_init(d.loop, &d.watchdog);
	if (!once && notify_watchdog_usec() > 0) {
		/* Half the interval, as systemd advises; from the loop itself. */
		uint64_t ms = notify_watchdog_usec() / 2000;

		uv_timer_start(&d.watchdog, watchdog_cb, 0, ms > 0 ? ms : 1);
		uv_unref((uv_handle_t *)&d.watchdog);
	}
	uv_timer_init(d.loop, &d.trim);
	d.trim.data = &d;
	d.gate = gate_new(GATE_MAX);
	uv_timer_init(d.loop, &d.lockwait);
	d.lockwait.data = &d;
	if (!once) {
		uv_timer_start(&d.trim, trim_cb, TRIM_MS, TRIM_MS);
		uv_unref((uv_handle_t *)&d.trim);
	}
	signal_start(&d, &d.sigterm, SIGTERM);
	signal_start(&d, &d.sigint, SIGINT);
	signal_start(&d, &d.sighup, SIGHUP);
	uv_signal_init(d.loop, &d.sigstall);
	if (cfg->debug_stall_signal)
		uv_signal_start(&d.sigstall, on_stall, SIGUSR2);
	secrets_start(&d, cfg, false); /* then begin() */
	uv_run(d.loop, UV_RUN_DEFAULT);

	while (d.units) {
		struct unit *u = d.units;

		d.units = u->next;
		unit_free(u, true);
	}
	uv_run(d.loop, UV_RUN_DEFAULT); /* the closes and last status writes */
	uv_loop_close(d.loop);
	gate_free(d.gate);
	cfg_unref(d.cur);
	if (d.exit_code >= 0)
		code = d.exit_code;
	else if (once)
		code = d.failed ? 1 : 0;
	else
		code = d.signals ? 0 : 1; /* else every session gave up */
	log_msg(LOGL_INFO, NULL, NULL, "exiting with status %d", code);
	return code;
}
