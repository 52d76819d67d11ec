/*
 * metrics: counters of deliveries, reconnects and recoveries per account
 * (and per folder), and a small HTTP endpoint on the daemon's loop that
 * serves them in Prometheus' text format.
 *
 * Delivery never waits for it: the event functions only add to counters
 * (a hash lookup by name), and the endpoint is a handful of libuv handles
 * whose every cost is capped (metrics.h): a client that floods, trickles
 * or never reads is closed, and more clients than the cap are closed as
 * they are accepted. The answer is rendered into one buffer and handed to
 * uv_write, so a scrape costs one pass over the counters.
 *
 * The process has at most one metrics object (the daemon's); the event
 * functions find it in `cur`, which is NULL while metrics are off.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "idlefetch/commit.h"
#include "idlefetch/httpd.h"
#include "idlefetch/log.h"
#include "idlefetch/metrics.h"
#include "idlefetch/util.h"

/* Reasons for a reconnect: a fixed set, never words from the server. */
enum reason {
	R_EOF,
	R_TIMEOUT,
	R_CONNECT,
	R_TLS,
	R_LOGIN,
	R_PROTOCOL,
	R_CAPABILITY,
	R_DISK,
	R_TARGET,
	R_OTHER,
	NREASONS
};
static const char *reason_names[NREASONS] = { "eof", "timeout", "connect",
	"tls", "login", "protocol", "capability", "disk", "target", "other" };

/* Push delay buckets, seconds: a LAN push is ~10 ms, a slow disk seconds. */
static const double buckets[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
	10, 30 };
#define NBUCKETS ARRAY_LEN(buckets)

/* Distinct connection state names counted per account (conn's + session's). */
#define NSTATES 24
#define HASH_SIZE 512

struct mfolder {
	struct mfolder *next; /* in its account, in order of appearance */
	struct mfolder *hnext;
	struct macct *a;
	char *name;
	uint64_t delivered, bytes;
	uint32_t last_uid;
	int64_t last_time; /* Unix time of its last delivery; 0: none */
	uint64_t news_at; /* loop ms of the oldest news not yet delivered */
};

struct macct {
	struct macct *next, *hnext;
	char *name;
	uint64_t delivered, bytes, refused, deferred, login_failures;
	uint64_t recoveries;
	uint64_t reconnects[NREASONS];
	uint64_t hist[NBUCKETS], hist_count;
	double hist_sum;
	struct mfolder *folders, **ftail;
	size_t nfolders;
	/* Filled during a scrape by the collect callback. */
	const char *states[NSTATES];
	unsigned state_n[NSTATES];
	size_t nstates;
	unsigned up;
};

struct metrics {
	uv_loop_t *loop;
	struct macct *accts, **atail;
	struct macct *ah[HASH_SIZE];
	struct mfolder *fh[HASH_SIZE];
	bool folders; /* per-folder series served */
	metrics_collect_cb *collect;
	void *ud;
	struct httpd *httpd; /* NULL: not listening */
	char *addr; /* as configured */
};

struct metrics_scrape {
	struct metrics *m;
};

static struct metrics *cur;

/* ---- a growing text buffer ------------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void
sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void __attribute__((format(printf, 2, 3)))
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at p (0: not one). */
static size_t
utf8_len(const unsigned char *p)
{
	size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;

	if (p[0] > 0xf4)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong, surrogates, above U+10FFFF. */
	if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) ||
	    (n == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
	    (n == 4 && p[0] == 0xf0 && p[1] < 0x90) ||
	    (n == 4 && p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return n;
}

/*
 * A label value as the format wants it: \, " and newline escaped. A byte
 * that is not UTF-8 or a control character becomes '?': Prometheus drops
 * a whole scrape over one invalid label, and folder names are the server's.
 */
static void
sb_label(struct sbuf *b, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;

	while (*p) {
		size_t n = *p < 0x80 ? 1 : utf8_len(p);

		if (*p == '\\' || *p == '"')
			sb_put(b, *p == '\\' ? "\\\\" : "\\\"", 2);
		else if (*p == '\n')
			sb_put(b, "\\n", 2);
		else if (n == 0 || *p < 0x20 || *p == 0x7f)
			sb_put(b, "?", 1);
		else
			sb_put(b, (const char *)p, n);
		p += n ? n : 1;
	}
}

void
metrics_escape(char *buf, size_t cap, const char *v)
{
	struct sbuf b = { 0 };

	sb_put(&b, "", 0);
	sb_label(&b, v);
	snprintf(buf, cap, "%s", b.p);
	free(b.p);
}

/* ---- the registry ------------------------------------------------------------- */

static unsigned
hash(const char *s, unsigned h)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static struct macct *
account(struct metrics *m, const char *name)
{
	unsigned h = hash(name, 2166136261u) % HASH_SIZE;
	struct macct *a;

	for (a = m->ah[h]; a; a = a->hnext)
		if (strcmp(a->name, name) == 0)
			return a;
	a = xcalloc(1, sizeof(*a));
	a->name = xstrdup(name);
	a->ftail = &a->folders;
	a->hnext = m->ah[h];
	m->ah[h] = a;
	*m->atail = a;
	m->atail = &a->next;
	return a;
}

/* The folder's entry, or NULL past the cap (its account still counts). */
static struct mfolder *
folder(struct metrics *m, struct macct *a, const char *name)
{
	unsigned h = hash(name, hash(a->name, 2166136261u)) % HASH_SIZE;
	struct mfolder *f;

	for (f = m->fh[h]; f; f = f->hnext)
		if (f->a == a && strcmp(f->name, name) == 0)
			return f;
	if (a->nfolders >= METRICS_FOLDERS_MAX)
		return NULL;
	f = xcalloc(1, sizeof(*f));
	f->a = a;
	f->name = xstrdup(name);
	f->hnext = m->fh[h];
	m->fh[h] = f;
	*a->ftail = f;
	a->ftail = &f->next;
	a->nfolders++;
	return f;
}

static void
registry_free(struct metrics *m)
{
	struct macct *a, *an;
	struct mfolder *f, *fn;

	for (a = m->accts; a; a = an) {
		an = a->next;
		for (f = a->folders; f; f = fn) {
			fn = f->next;
			free(f->name);
			free(f);
		}
		free(a->name);
		free(a);
	}
}

/* ---- events ------------------------------------------------------------------- */

const char *
metrics_reason(int err)
{
	switch (err) {
	case UV_EOF:
	case UV_ECONNRESET:
	case UV_EPIPE:
		return reason_names[R_EOF];
	case UV_ETIMEDOUT:
		return reason_names[R_TIMEOUT];
	case UV_ECONNREFUSED:
	case UV_EHOSTUNREACH:
	case UV_ENETUNREACH:
	case UV_EAI_NONAME:
	case UV_EAI_AGAIN:
		return reason_names[R_CONNECT];
	case IDLEFETCH_ETLS:
		return reason_names[R_TLS];
	case IDLEFETCH_EAUTH:
	case -EKEYEXPIRED:
		return reason_names[R_LOGIN];
	case IDLEFETCH_EPROTO:
		return reason_names[R_PROTOCOL];
	case IDLEFETCH_ECAPA:
		return reason_names[R_CAPABILITY];
	case IDLEFETCH_ELOST:
	case -ENOSPC:
	case -EDQUOT:
	case -EIO:
	case -EROFS:
	case -EACCES:
		return reason_names[R_DISK];
	case -EAGAIN:
		return reason_names[R_TARGET];
	default:
		return reason_names[R_OTHER];
	}
}

void
metrics_reconnect(const char *account_name, int err)
{
	struct macct *a;
	const char *why;

	if (cur == NULL)
		return;
	a = account(cur, account_name);
	why = metrics_reason(err);
	for (size_t i = 0; i < NREASONS; i++)
		if (reason_names[i] == why)
			a->reconnects[i]++;
	if (err == IDLEFETCH_EAUTH)
		a->login_failures++;
}

void
metrics_news(const char *account_name, const char *folder_name)
{
	struct mfolder *f;

	if (cur == NULL)
		return;
	f = folder(cur, account(cur, account_name), folder_name);
	/* The oldest unanswered news: the batch's first message waited longest. */
	if (f != NULL && f->news_at == 0)
		f->news_at = uv_now(cur->loop) + 1;
}

static void
observe(struct macct *a, double secs, uint64_t n)
{
	for (size_t i = 0; i < NBUCKETS; i++)
		if (secs <= buckets[i])
			a->hist[i] += n;
	a->hist_count += n;
	a->hist_sum += secs * (double)n;
}

void
metrics_committed(const char *account_name, const char *folder_name,
    const struct commit_req *j)
{
	struct macct *a;
	struct mfolder *f;
	uint64_t ok, bytes = 0;

	if (cur == NULL)
		return;
	a = account(cur, account_name);
	f = folder(cur, a, folder_name);
	a->refused += j->nrefused;
	if (j->result == -EAGAIN)
		a->deferred++;
	if (j->ncommit <= j->nrefused)
		return;
	ok = j->ncommit - j->nrefused;
	for (size_t i = 0; i < j->ncommit && i < j->nfiles; i++)
		bytes += j->files[i].bytes;
	bytes -= j->refused_bytes <= bytes ? j->refused_bytes : bytes;
	a->delivered += ok;
	a->bytes += bytes;
	if (f == NULL)
		return;
	f->delivered += ok;
	f->bytes += bytes;
	f->last_uid = j->files[j->ncommit - 1].uid;
	f->last_time = (int64_t)time(NULL);
	if (f->news_at != 0) {
		uint64_t now = uv_now(cur->loop) + 1;

		observe(a, (double)(now - f->news_at) / 1000.0, ok);
		f->news_at = 0;
	}
}

void
metrics_recovery(const char *account_name, const char *folder_name)
{
	(void)folder_name;
	if (cur != NULL)
		account(cur, account_name)->recoveries++;
}

void
metrics_scrape_state(struct metrics_scrape *sc, const char *account_name,
    const char *state, bool up)
{
	struct macct *a = account(sc->m, account_name);
	size_t i;

	a->up += up;
	for (i = 0; i < a->nstates; i++)
		if (strcmp(a->states[i], state) == 0)
			break;
	if (i == a->nstates) {
		if (a->nstates == NSTATES)
			return;
		a->states[a->nstates++] = state;
	}
	a->state_n[i]++;
}

/* ---- rendering ---------------------------------------------------------------- */

enum field {
	F_DELIVERED,
	F_BYTES,
	F_REFUSED,
	F_DEFERRED,
	F_LOGIN,
	F_RECOVERIES,
	F_UP
};

static uint64_t
acct_field(const struct macct *a, enum field f)
{
	switch (f) {
	case F_DELIVERED:
		return a->delivered;
	case F_BYTES:
		return a->bytes;
	case F_REFUSED:
		return a->refused;
	case F_DEFERRED:
		return a->deferred;
	case F_LOGIN:
		return a->login_failures;
	case F_RECOVERIES:
		return a->recoveries;
	case F_UP:
		return a->up;
	default:
		fatal("bad metrics field %d", (int)f);
	}
}

static void
family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
series_begin(struct sbuf *b, const char *name, const struct macct *a)
{
	sb_printf(b, "%s{account=\"", name);
	sb_label(b, a->name);
	sb_put(b, "\"", 1);
}

static void
per_account(struct sbuf *b, struct metrics *m, const char *name,
    const char *type, enum field f, const char *help)
{
	family(b, name, type, help);
	for (struct macct *a = m->accts; a; a = a->next) {
		series_begin(b, name, a);
		sb_printf(b, "} %" PRIu64 "\n", acct_field(a, f));
	}
}

static void
render_labelled(struct sbuf *b, struct metrics *m)
{
	struct macct *a;

	family(b, "idlefetch_reconnects_total", "counter",
	    "Connections lost or refused, by reason.");
	for (a = m->accts; a; a = a->next)
		for (size_t i = 0; i < NREASONS; i++)
			if (a->reconnects[i] > 0) {
				series_begin(b, "idlefetch_reconnects_total",
				    a);
				sb_printf(b, ",reason=\"%s\"} %" PRIu64 "\n",
				    reason_names[i], a->reconnects[i]);
			}
	family(b, "idlefetch_connection_state", "gauge",
	    "Folders of the account whose connection is in this state.");
	for (a = m->accts; a; a = a->next)
		for (size_t i = 0; i < a->nstates; i++) {
			series_begin(b, "idlefetch_connection_state", a);
			sb_put(b, ",state=\"", 8);
			sb_label(b, a->states[i]);
			sb_printf(b, "\"} %u\n", a->state_n[i]);
		}
}

static void
render_histogram(struct sbuf *b, struct metrics *m)
{
	const char *n = "idlefetch_push_delay_seconds";

	family(b, n, "histogram",
	    "From the server's news of a message (IDLE's EXISTS, NOTIFY's "
	    "STATUS) to its file being durable.");
	for (struct macct *a = m->accts; a; a = a->next) {
		for (size_t i = 0; i < NBUCKETS; i++) {
			series_begin(b, "idlefetch_push_delay_seconds_bucket",
			    a);
			sb_printf(b, ",le=\"%g\"} %" PRIu64 "\n", buckets[i],
			    a->hist[i]);
		}
		series_begin(b, "idlefetch_push_delay_seconds_bucket", a);
		sb_printf(b, ",le=\"+Inf\"} %" PRIu64 "\n", a->hist_count);
		series_begin(b, "idlefetch_push_delay_seconds_sum", a);
		sb_printf(b, "} %.6f\n", a->hist_sum);
		series_begin(b, "idlefetch_push_delay_seconds_count", a);
		sb_printf(b, "} %" PRIu64 "\n", a->hist_count);
	}
}

static void
folder_series(struct sbuf *b, const char *name, const struct mfolder *f)
{
	series_begin(b, name, f->a);
	sb_put(b, ",folder=\"", 9);
	sb_label(b, f->name);
	sb_put(b, "\"} ", 3);
}

/* The k-th per-folder value (render_folders' names). */
static uint64_t
folder_field(const struct mfolder *f, size_t k)
{
	switch (k) {
	case 0:
		return f->delivered;
	case 1:
		return f->bytes;
	case 2:
		return f->last_uid;
	default:
		return (uint64_t)f->last_time;
	}
}

static void
render_folders(struct sbuf *b, struct metrics *m)
{
	static const char *names[] = {
		"idlefetch_folder_messages_delivered_total",
		"idlefetch_folder_delivered_bytes_total",
		"idlefetch_folder_last_delivered_uid",
		"idlefetch_folder_last_delivery_timestamp_seconds",
	};
	static const char *help[] = { "Messages delivered from the folder.",
		"Bytes delivered from the folder.",
		"The UID of the folder's last delivered message.",
		"When the folder's last message was delivered (Unix time)." };

	for (size_t k = 0; k < ARRAY_LEN(names); k++) {
		family(b, names[k], k < 2 ? "counter" : "gauge", help[k]);
		for (struct macct *a = m->accts; a; a = a->next)
			for (struct mfolder *f = a->folders; f; f = f->next) {
				folder_series(b, names[k], f);
				sb_printf(b, "%" PRIu64 "\n",
				    folder_field(f, k));
			}
	}
}

/*
 * The process's own figures, read at scrape time from /proc/self: procfs
 * is memory, not disk, so reading it on the loop never waits for a device.
 */
static void
render_process(struct sbuf *b, struct metrics *m)
{
	struct rusage ru;
	struct rlimit rl;
	unsigned long pages = 0, resident = 0;
	unsigned fds = 0;
	FILE *fp = fopen("/proc/self/statm", "r");
	DIR *dir = opendir("/proc/self/fd");

	if (fp != NULL) {
		if (fscanf(fp, "%lu %lu", &pages, &resident) != 2)
			resident = 0;
		fclose(fp);
	}
	if (dir != NULL) {
		for (struct dirent *e; (e = readdir(dir)) != NULL;)
			fds += e->d_name[0] != '.';
		fds--; /* the directory's own */
		closedir(dir);
	}
	getrusage(RUSAGE_SELF, &ru);
	family(b, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	sb_printf(b, "process_resident_memory_bytes %lu\n",
	    resident * (unsigned long)sysconf(_SC_PAGESIZE));
	family(b, "process_open_fds", "gauge", "Open file descriptors.");
	sb_printf(b, "process_open_fds %u\n", fds);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		family(b, "process_max_fds", "gauge",
		    "The limit of open file descriptors.");
		sb_printf(b, "process_max_fds %" PRIu64 "\n",
		    (uint64_t)rl.rlim_cur);
	}
	family(b, "process_cpu_seconds_total", "counter",
	    "User and system CPU time in seconds.");
	sb_printf(b, "process_cpu_seconds_total %.3f\n",
	    (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	family(b, "idlefetch_metrics_clients_refused_total", "counter",
	    "Clients of this endpoint closed at once: too many at a time.");
	sb_printf(b, "idlefetch_metrics_clients_refused_total %" PRIu64 "\n",
	    httpd_refused(m->httpd));
}

char *
metrics_render(struct metrics *m, size_t *len)
{
	struct metrics_scrape sc = { m };
	struct sbuf b = { 0 };

	for (struct macct *a = m->accts; a; a = a->next) {
		a->nstates = 0;
		a->up = 0;
	}
	if (m->collect != NULL)
		m->collect(m->ud, &sc);
	per_account(&b, m, "idlefetch_messages_delivered_total", "counter",
	    F_DELIVERED, "Messages delivered and durable.");
	per_account(&b, m, "idlefetch_delivered_bytes_total", "counter",
	    F_BYTES, "Bytes of the messages delivered.");
	per_account(&b, m, "idlefetch_messages_refused_total", "counter",
	    F_REFUSED,
	    "Messages the delivery target refused (left on the "
	    "server).");
	per_account(&b, m, "idlefetch_deliveries_deferred_total", "counter",
	    F_DEFERRED, "Deliveries the target deferred (tried again).");
	per_account(&b, m, "idlefetch_login_failures_total", "counter", F_LOGIN,
	    "Logins the server refused.");
	per_account(&b, m, "idlefetch_recoveries_total", "counter",
	    F_RECOVERIES, "Recoveries of a renumbered folder completed.");
	per_account(&b, m, "idlefetch_folders_up", "gauge", F_UP,
	    "Folders logged in and synced.");
	render_labelled(&b, m);
	render_histogram(&b, m);
	if (m->folders)
		render_folders(&b, m);
	render_process(&b, m);
	*len = b.len;
	return b.p;
}

/* ---- lifetime ------------------------------------------------------------------ */

static char *
serve(void *ud, size_t *len)
{
	return metrics_render(ud, len);
}

/* Opens the listener on m->addr; logged when it cannot be. */
static void
listen_on(struct metrics *m)
{
	struct sockaddr_storage ss;
	char why[256];
	int r;

	r = httpd_parse_address(m->addr, &ss, why, sizeof(why));
	if (r == 0)
		r = httpd_new(m->loop, (struct sockaddr *)&ss, "/metrics",
		    serve, m, &m->httpd);
	if (r < 0) {
		log_msg(LOGL_ERROR, NULL, NULL,
		    "metrics: cannot listen on %s: %s; no metrics served",
		    m->addr, r == -EINVAL ? why : uv_strerror(r));
		return;
	}
	log_msg(LOGL_INFO, NULL, NULL, "metrics: serving /metrics on %s",
	    m->addr);
}

void
metrics_configure(struct metrics **mp, uv_loop_t *loop, const char *addr,
    bool folders, metrics_collect_cb *collect, void *ud)
{
	struct metrics *m = *mp;

	if (addr == NULL) {
		metrics_free(m);
		*mp = NULL;
		return;
	}
	if (m == NULL) {
		m = xcalloc(1, sizeof(*m));
		m->loop = loop;
		m->atail = &m->accts;
		*mp = m;
		cur = m;
	}
	m->folders = folders;
	m->collect = collect;
	m->ud = ud;
	if (m->addr != NULL && strcmp(m->addr, addr) == 0 && m->httpd != NULL)
		return;
	httpd_free(m->httpd);
	m->httpd = NULL;
	free(m->addr);
	m->addr = xstrdup(addr);
	listen_on(m);
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (cur == m)
		cur = NULL;
	httpd_free(m->httpd);
	registry_free(m);
	free(m->addr);
	free(m);
}

unsigned
metrics_port(const struct metrics *m)
{
	return m != NULL ? httpd_port(m->httpd) : 0;
}
