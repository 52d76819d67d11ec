/*
 * daemon: owns the loop, the signals, reloading the configuration and what
 * the service manager is told (READY=1, STATUS=, the watchdog); the
 * accounts it runs are units.c's, driven through units.h, which tells it
 * back through units_ops. Calls units, config (reading secrets), notify,
 * log and util.
 *
 * Signals: a first SIGTERM/SIGINT asks every session to stop gracefully; a
 * second one exits at once, which is still safe because delivery never
 * depends on a clean shutdown. SIGHUP reads the configuration again: the
 * accounts whose settings changed, that are gone, or that stopped for good
 * are stopped gracefully and, where still configured, started again with
 * the new settings; the others keep their connections. A configuration
 * with an error changes nothing.
 */
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

#include <uv.h>

#include "idlefetch/daemon.h"
#include "idlefetch/log.h"
#include "idlefetch/metrics.h"
#include "idlefetch/notify.h"
#include "idlefetch/status.h"
#include "idlefetch/units.h"
#include "idlefetch/util.h"

struct daemon {
	uv_loop_t *loop;
	uv_signal_t sigterm, sigint, sighup;
	uv_signal_t sigstall; /* debug_stall_signal: SIGUSR2 */
	uv_timer_t reap; /* frees finished units outside their callbacks */
	uv_timer_t bar; /* --once on a terminal: the progress bar */
	uv_timer_t watchdog; /* WATCHDOG=1 to the service manager */
	uv_timer_t trim; /* hands freed heap back to the system */
	uint64_t changes, trimmed_at; /* status changes: all, at the last trim */
	bool ready; /* READY=1 sent */
	char told[160]; /* the last STATUS= sent */
	daemon_load_cb *load;
	void *load_ud;
	const char *only; /* --account */
	bool once;
	bool stopping;
	bool closed; /* handles closed: the loop ends */
	struct units *units; /* the accounts */
	unsigned signals;
	uint64_t first_signal_ms; /* loop time of the first stop signal */
	struct secrets *secrets; /* password_commands running, or NULL */
	int exit_code; /* -1: decided by the sessions' results */
	struct metrics *metrics; /* NULL: metrics = off */
};

/* A second stop signal within this time repeats the first one. */
#define SECOND_SIGNAL_MS 1000

static void schedule_reap(struct daemon *d);

/* ---- metrics --------------------------------------------------------------- */

static void
scrape_account(void *ud, const char *account, const struct status_rec *recs,
    size_t n, const unsigned k[SESSION_ACTIVITIES], bool retiring)
{
	struct metrics_scrape *sc = ud;

	(void)k;
	for (size_t i = 0; !retiring && i < n; i++)
		if (recs[i].state != NULL)
			metrics_scrape_state(sc, account, recs[i].state,
			    recs[i].up);
}

/*
 * At each scrape: the connection state of every folder, as `idlefetch
 * status` shows it (a static name), read from the status records.
 */
static void
metrics_states(void *ud, struct metrics_scrape *sc)
{
	const struct daemon *d = ud;

	units_each(d->units, scrape_account, sc);
}

/* ---- the service manager ------------------------------------------------- */

/* What the service manager is told of the accounts' folders. */
enum { NKINDS = SESSION_ACTIVITIES };

struct tally {
	unsigned accounts, folders, k[NKINDS];
	/*
	 * Whether every account has finished its first sync or failed it: a
	 * folder that synced, met an error or gave up. An account that could
	 * not start (its lock, its TLS set-up) has failed it.
	 */
	bool settled;
};

static void
tally_account(void *ud, const char *account, const struct status_rec *recs,
    size_t n, const unsigned k[SESSION_ACTIVITIES], bool retiring)
{
	struct tally *t = ud;

	(void)account;
	for (size_t j = 0; j < n; j++)
		if (recs[j].last_sync == 0 && recs[j].error_at == 0 &&
		    !recs[j].gave_up)
			t->settled = false;
	if (retiring)
		return;
	t->accounts++;
	t->folders += (unsigned)n;
	for (int i = 0; i < NKINDS; i++)
		t->k[i] += k[i];
}

/* "2 accounts, 5 folders: 4 idling, 1 in backoff" */
static void
summary(const struct tally *t, char *buf, size_t len)
{
	static const char *names[NKINDS] = { "idling", "polling", "in backoff",
		"stopped", "connecting or syncing" };
	size_t o;

	o = (size_t)snprintf(buf, len, "%u account%s, %u folder%s", t->accounts,
	    t->accounts == 1 ? "" : "s", t->folders,
	    t->folders == 1 ? "" : "s");
	for (int i = 0; i < NKINDS && o < len; i++)
		if (t->k[i] > 0)
			o += (size_t)snprintf(buf + o, len - o, "%s%u %s",
			    strchr(buf, ':') ? ", " : ": ", t->k[i], names[i]);
}

/* Tells the service manager what changed: STATUS=, and READY=1 once. */
static void
tell(void *ud)
{
	struct daemon *d = ud;
	char line[sizeof(d->told)], msg[sizeof(line) + 32];
	struct tally t = { .settled = true };

	d->changes++;
	if (!notify_enabled() || d->once || d->stopping)
		return;
	units_each(d->units, tally_account, &t);
	summary(&t, line, sizeof(line));
	if (!d->ready && t.settled) {
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

/* The messages delivered and queued so far: [0] and [1]. */
static void
bar_count(void *ud, const char *account, const struct status_rec *recs,
    size_t n, const unsigned k[SESSION_ACTIVITIES], bool retiring)
{
	uint64_t *count = ud;

	(void)account, (void)k, (void)retiring;
	for (size_t j = 0; j < n; j++) {
		count[0] += recs[j].delivered;
		count[1] += recs[j].queued;
	}
}

static void
bar_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	uint64_t count[2] = { 0, 0 }, done, total;
	char bar[BAR_WIDTH + 1], line[200];
	size_t fill;

	units_each(d->units, bar_count, count);
	done = count[0];
	total = count[1];
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
	metrics_configure(&d->metrics, d->loop, NULL, false, NULL, NULL);
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
	units_close(d->units);
}

static void
reap_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	bool busy = units_reap(d->units);

	tell(d);
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
	struct units_reload n;

	metrics_configure(&d->metrics, d->loop, cfg->metrics,
	    cfg->metrics_folders, metrics_states, d);
	units_reload(d->units, cfg, &n);
	log_msg(LOGL_INFO, NULL, NULL,
	    "SIGHUP: configuration reloaded: %u account(s) unchanged, "
	    "%u restarted, %u removed, %zu new",
	    n.kept, n.restarted, n.removed, n.added);
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
		else if (!d->stopping && units_config(d->units) != NULL)
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
	units_stop(d->units);
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
	size_t accounts, folders;

	raise_fd_limit(cfg, d->only);
	metrics_configure(&d->metrics, d->loop, cfg->metrics,
	    cfg->metrics_folders, metrics_states, d);
	units_begin(d->units, cfg, &accounts, &folders);
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

static void
unit_finished(void *ud)
{
	schedule_reap(ud);
}

static const struct units_ops units_ops = { tell, unit_finished };

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
	d.units = units_new(d.loop, account, once, &units_ops, &d);
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

	units_free_all(d.units);
	uv_run(d.loop, UV_RUN_DEFAULT); /* the closes and last status writes */
	uv_loop_close(d.loop);
	if (d.exit_code >= 0)
		code = d.exit_code;
	else if (once)
		code = units_failed(d.units) ? 1 : 0;
	else
		code = d.signals ? 0 : 1; /* else every session gave up */
	units_free(d.units);
	log_msg(LOGL_INFO, NULL, NULL, "exiting with status %d", code);
	return code;
}
