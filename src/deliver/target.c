/*
 * target: an MDA program or an LMTP server as the place a message goes
 * (see idlefetch/target.h). Blocking; runs on the threadpool.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "idlefetch/cmdline.h"
#include "idlefetch/spawn.h"
#include "idlefetch/target.h"
#include "idlefetch/util.h"

/* EX_TEMPFAIL of sysexits.h: the MDA asks to be tried again later. */
#define EXIT_TEMPFAIL 75
/*
 * An LMTP reply line longer than this is cut: its start, with the code,
 * counts, and the rest up to its LF is read and dropped.
 */
#define REPLY_MAX 512
/*
 * The most lines one reply may have (an LHLO reply has about ten): with
 * the reply's deadline, what keeps a server that never ends a reply from
 * holding the delivery.
 */
#define REPLY_LINES_MAX 100
/* Room for an address in a command line (config and header bound them). */
#define ADDR_MAX 320

struct target_conn {
	const struct target *t;
	int fd; /* LMTP: the socket; -1 when broken */
	bool pipelining, eightbit;
	bool answered; /* the last deferral was the target's own answer */
	char rbuf[4096];
	size_t rlen;
};

/* ---- the value of deliver = ------------------------------------------------ */

static int
parse_mda(struct target *t, const char *cmd, char *why, size_t whylen)
{
	char bad;

	t->argv = cmdline_split(cmd, false, &bad);
	if (bad != 0) {
		snprintf(why, whylen,
		    "mda: runs its program without a shell, and '%c' needs "
		    "one: put the command in a script and name the script",
		    bad == '\n' ? ' ' : bad);
		return -EINVAL;
	}
	if (t->argv == NULL) {
		snprintf(why, whylen, "mda: names no program");
		return -EINVAL;
	}
	for (size_t i = 0; t->argv[i]; i++)
		for (const char *p = strchr(t->argv[i], '%'); p;
		     p = strchr(p + 2, '%'))
			if (p[1] == '\0' || strchr("Faf%", p[1]) == NULL) {
				snprintf(why, whylen,
				    "'%%%c' in mda: is not one of %%F (sender), "
				    "%%a (account), %%f (folder), %%%%",
				    p[1] ? p[1] : ' ');
				return -EINVAL;
			}
	if (strchr(t->argv[0], '%') != NULL) {
		snprintf(why, whylen, "mda: the program's name cannot hold %%");
		return -EINVAL;
	}
	return 0;
}

static int
parse_lmtp(struct target *t, const char *v, char *why, size_t whylen)
{
	const char *colon = strrchr(v, ':');
	char *end;
	unsigned long port;

	if (v[0] == '/') {
		if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(why, whylen, "the socket path is too long");
			return -EINVAL;
		}
		t->path = xstrdup(v);
		return 0;
	}
	if (colon == NULL || colon == v) {
		snprintf(why, whylen, "lmtp: needs HOST:PORT or /PATH");
		return -EINVAL;
	}
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || colon[1] == '\0' || port < 1 || port > 65535) {
		snprintf(why, whylen, "'%s' is not a port number", colon + 1);
		return -EINVAL;
	}
	/* [::1]:24 */
	if (v[0] == '[' && colon[-1] == ']')
		t->host = xstrndup(v + 1, (size_t)(colon - v) - 2);
	else
		t->host = xstrndup(v, (size_t)(colon - v));
	t->port = xstrdup(colon + 1);
	return 0;
}

int
target_parse(struct target *t, const char *value, char *why, size_t whylen)
{
	int r;

	memset(t, 0, sizeof(*t));
	if (strcmp(value, "maildir") == 0)
		return 0;
	if (strncmp(value, "mda:", 4) == 0) {
		t->kind = TARGET_MDA;
		r = parse_mda(t, value + 4, why, whylen);
	} else if (strncmp(value, "lmtp:", 5) == 0) {
		t->kind = TARGET_LMTP;
		r = parse_lmtp(t, value + 5, why, whylen);
	} else {
		snprintf(why, whylen,
		    "'%s' is not one of maildir, mda:PROGRAM ARGS, "
		    "lmtp:HOST:PORT, lmtp:/PATH",
		    value);
		r = -EINVAL;
	}
	if (r < 0)
		target_free(t);
	return r;
}

void
target_free(struct target *t)
{
	cmdline_free(t->argv);
	free(t->host);
	free(t->port);
	free(t->path);
	free(t->recipient);
	memset(t, 0, sizeof(*t));
}

static bool
same(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* How many words a NULL-terminated argv (or NULL) holds. */
static size_t
words(char *const *argv)
{
	size_t n = 0;

	while (argv && argv[n])
		n++;
	return n;
}

int
target_equal(const struct target *a, const struct target *b)
{
	return a->kind == b->kind && same(a->host, b->host) &&
	    same(a->port, b->port) && same(a->path, b->path) &&
	    same(a->recipient, b->recipient) && a->timeout == b->timeout &&
	    strv_equal((const char *const *)a->argv, words(a->argv),
		(const char *const *)b->argv, words(b->argv));
}

void
target_print(const struct target *t, char *buf, size_t len)
{
	size_t n;

	switch (t->kind) {
	case TARGET_MAILDIR:
		snprintf(buf, len, "maildir");
		return;
	case TARGET_MDA:
		n = (size_t)snprintf(buf, len, "mda:");
		for (size_t i = 0; t->argv[i] && n < len; i++)
			n += (size_t)snprintf(buf + n, len - n, "%s%s",
			    i ? " " : "", t->argv[i]);
		return;
	case TARGET_LMTP:
		if (t->path)
			snprintf(buf, len, "lmtp:%s", t->path);
		else
			snprintf(buf, len, strchr(t->host, ':') ?
				"lmtp:[%s]:%s" : "lmtp:%s:%s",
			    t->host, t->port);
		return;
	default:
		fatal("bad target kind");
	}
}

/* ---- MDA ------------------------------------------------------------------- */

/* One word of the template with %F, %a, %f and %% replaced. */
static char *
expand(const char *w, const struct target_msg *m)
{
	size_t cap = strlen(w) + 1, n = 0;
	char *out = xmalloc(cap);

	for (; *w; w++) {
		const char *add = NULL;
		size_t k;

		if (*w == '%' && w[1] != '\0' && strchr("Faf%", w[1])) {
			w++;
			add = *w == 'F' ? m->sender :
			    *w == 'a'   ? m->account :
			    *w == 'f'   ? m->folder :
					  "%";
		}
		k = add ? strlen(add) : 1;
		if (n + k + 1 > cap) {
			cap = (n + k + 1) * 2;
			out = xrealloc(out, cap);
		}
		memcpy(out + n, add ? add : w, k);
		n += k;
	}
	out[n] = '\0';
	return out;
}

/* The environment a program gets: spawn's, and the message's. */
static char **
mda_env(const struct target_msg *m)
{
	char *vars[4];
	char **env;

	vars[0] = xasprintf("IDLEFETCH_ACCOUNT=%s", m->account);
	vars[1] = xasprintf("IDLEFETCH_FOLDER=%s", m->folder);
	vars[2] = xasprintf("IDLEFETCH_SENDER=%s", m->sender);
	vars[3] = NULL;
	env = spawn_environ((const char *const *)vars);
	for (size_t i = 0; i < 3; i++)
		free(vars[i]);
	return env;
}

/*
 * Runs the program through spawn, so that it starts and ends as every
 * command does: its own process group, killed whole at the time limit,
 * and judged by its exit status once it has exited (a child it left in
 * the background holding standard error open does not make a delivered
 * message look hung, which would hand it over again).
 */
static enum target_answer
mda_send(struct target_conn *c, const struct target_msg *m, char *why,
    size_t whylen)
{
	const char *prog = c->t->argv[0];
	size_t n = words(c->t->argv);
	struct spawn_end end;
	char **argv, **env;

	argv = xcalloc(n + 1, sizeof(*argv));
	for (size_t i = 0; i < n; i++)
		argv[i] = expand(c->t->argv[i], m);
	env = mda_env(m);
	spawn_run(argv, env, m->fd, (uint64_t)c->t->timeout * 1000u, &end);
	cmdline_free(argv);
	cmdline_free(env);
	if (end.status == 0)
		return TARGET_ACCEPTED;
	if (end.status == -ETIMEDOUT) {
		snprintf(why, whylen, "%s took longer than %u s and was killed",
		    prog, c->t->timeout);
		return TARGET_DEFERRED;
	}
	if (end.signal != 0) {
		snprintf(why, whylen, "%s was ended by signal %d%s%s", prog,
		    end.signal, end.err_line[0] ? ": " : "", end.err_line);
		return TARGET_DEFERRED;
	}
	c->answered = true; /* its own exit status, or it never started */
	if (end.status < 0) {
		snprintf(why, whylen, "cannot run %s: %s", prog,
		    strerror(-end.status));
		return TARGET_DEFERRED;
	}
	snprintf(why, whylen, "%s exited with status %d%s%s", prog, end.status,
	    end.err_line[0] ? ": " : "", end.err_line);
	return end.status == EXIT_TEMPFAIL ? TARGET_DEFERRED : TARGET_REFUSED;
}

/* ---- LMTP ------------------------------------------------------------------ */

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int
set_timeouts(int fd, unsigned seconds)
{
	struct timeval tv = { (time_t)seconds, 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/* A connected socket, or a negative errno. */
static int
lmtp_connect(const struct target *t)
{
	struct addrinfo hints = { 0 }, *res = NULL, *ai;
	int fd = -1, r;

	if (t->path) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", t->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (set_timeouts(fd, t->timeout) < 0 ||
		    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
			r = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
			close(fd);
			return r;
		}
		return fd;
	}
	hints.ai_socktype = SOCK_STREAM;
	r = getaddrinfo(t->host, t->port, &hints, &res);
	if (r != 0)
		return r == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	r = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		/*
		 * No Nagle delay: a command or the final dot would wait for
		 * the server's delayed ACK of the last write (40 ms each).
		 */
		if (set_timeouts(fd, t->timeout) == 0 &&
		    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 },
			sizeof(int)) == 0 &&
		    connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		/* A connect cut short by SO_SNDTIMEO says EINPROGRESS. */
		r = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd >= 0 ? fd : r;
}

static int
lmtp_write(struct target_conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Waits for the socket to be readable until the deadline. */
static int
lmtp_wait(int fd, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		uint64_t now = now_ms();
		int r;

		if (now >= deadline)
			return -ETIME;
		r = poll(&p, 1, (int)(deadline - now));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* Copies the first k bytes of a line to line (len bytes), cut to fit. */
static void
keep_head(char *line, size_t len, const char *p, size_t k)
{
	if (k >= len)
		k = len - 1;
	memcpy(line, p, k);
	line[k] = '\0';
}

/*
 * One line (without CRLF, cut to len) from the socket, by the deadline.
 * A line longer than the buffer keeps its start and drops the rest up to
 * its LF: the start holds the code, and a line taken by its end would be
 * no reply at all.
 */
static int
lmtp_line(struct target_conn *c, char *line, size_t len, uint64_t deadline)
{
	bool cut = false;

	for (;;) {
		char *nl = memchr(c->rbuf, '\n', c->rlen);
		ssize_t got;
		int r;

		if (nl != NULL) {
			size_t k = (size_t)(nl - c->rbuf);
			bool crlf = k > 0 && c->rbuf[k - 1] == '\r';

			if (!cut)
				keep_head(line, len, c->rbuf, crlf ? k - 1 : k);
			memmove(c->rbuf, nl + 1, c->rlen - k - 1);
			c->rlen -= k + 1;
			return 0;
		}
		if (c->rlen == sizeof(c->rbuf)) {
			if (!cut)
				keep_head(line, len, c->rbuf, c->rlen);
			cut = true;
			c->rlen = 0;
		}
		r = lmtp_wait(c->fd, deadline);
		if (r < 0)
			return r;
		got = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen,
		    0);
		if (got == 0)
			return -ECONNRESET;
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0)
			return -errno;
		c->rlen += (size_t)got;
	}
}

/*
 * One reply, multi-line ones whole: its code (200..599), or a negative
 * errno: -ETIME when the whole reply did not come within the timeout
 * (one deadline for all its lines, so that a server trickling lines
 * cannot hold the delivery), -EMSGSIZE past REPLY_LINES_MAX lines.
 * text gets the last line, printable; on_line sees every line.
 */
static int
lmtp_reply(struct target_conn *c, char *text, size_t len,
    void (*on_line)(struct target_conn *, const char *))
{
	uint64_t deadline = now_ms() + (uint64_t)c->t->timeout * 1000u;
	char line[REPLY_MAX];
	int r, code, lines = 0;

	for (;;) {
		if (++lines > REPLY_LINES_MAX)
			return -EMSGSIZE;
		r = lmtp_line(c, line, sizeof(line), deadline);
		if (r < 0)
			return r;
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' ||
		    line[2] > '9' || (line[3] != '\0' && line[3] != ' ' &&
					 line[3] != '-'))
			return -EPROTO;
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
		    (line[2] - '0');
		if (on_line)
			on_line(c, line + 4 - (line[3] == '\0'));
		if (line[3] != '-')
			break;
	}
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = '?';
	snprintf(text, len, "%s", line);
	return code;
}

static void
lhlo_line(struct target_conn *c, const char *ext)
{
	if (strncasecmp(ext, "PIPELINING", 10) == 0)
		c->pipelining = true;
	if (strncasecmp(ext, "8BITMIME", 8) == 0)
		c->eightbit = true;
}

static enum target_answer
lmtp_broken(struct target_conn *c, int r, const char *doing, char *why,
    size_t whylen)
{
	if (r == -EPROTO)
		snprintf(why, whylen, "LMTP %s: the server's reply is not LMTP",
		    doing);
	else if (r == -ETIME)
		snprintf(why, whylen, "LMTP %s: no whole reply within %u s",
		    doing, c->t->timeout);
	else if (r == -EMSGSIZE)
		snprintf(why, whylen,
		    "LMTP %s: the server's reply runs over %d lines", doing,
		    REPLY_LINES_MAX);
	else
		snprintf(why, whylen, "LMTP %s: %s", doing, strerror(-r));
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	return TARGET_DEFERRED;
}

static enum target_answer
lmtp_open(struct target_conn *c, char *why, size_t whylen)
{
	char text[REPLY_MAX], host[256] = "localhost";
	int r;

	c->fd = lmtp_connect(c->t);
	if (c->fd < 0) {
		r = c->fd;
		c->fd = -1;
		return lmtp_broken(c, r, "cannot connect", why, whylen);
	}
	r = lmtp_reply(c, text, sizeof(text), NULL);
	if (r != 220)
		return r < 0 ? lmtp_broken(c, r, "greeting", why, whylen) :
			       lmtp_broken(c, -EPROTO, "greeting", why, whylen);
	gethostname(host, sizeof(host) - 1);
	snprintf(text, sizeof(text), "LHLO %s\r\n", host);
	r = lmtp_write(c, text, strlen(text));
	if (r == 0)
		r = lmtp_reply(c, text, sizeof(text), lhlo_line);
	if (r < 0)
		return lmtp_broken(c, r, "LHLO", why, whylen);
	if (r / 100 != 2) {
		snprintf(why, whylen, "LMTP server refused LHLO: %s", text);
		close(c->fd);
		c->fd = -1;
		return TARGET_DEFERRED;
	}
	return TARGET_ACCEPTED;
}

/*
 * Writes the message as LMTP DATA: every line end becomes CRLF, a
 * leading dot is doubled, and the ending dot line follows. A CR not
 * followed by LF is a line end too (RFC 5321 2.3.8 forbids sending it
 * bare): a receiver that takes it as one would otherwise see a line the
 * dot-stuffing never saw, and "\r.\r\n" could end the data early. A CR
 * is held back until the next byte, which may come in the next read.
 */
static int
lmtp_data(struct target_conn *c, int fd)
{
	char in[16384], out[2 * sizeof(in) + 8];
	bool bol = true, cr = false;
	ssize_t got;
	size_t n;
	int r;

	while ((got = read(fd, in, sizeof(in))) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		n = 0;
		for (ssize_t i = 0; i < got; i++) {
			char ch = in[i];

			if (cr) {
				/* CR LF, or a bare CR: a line end either way. */
				out[n++] = '\r';
				out[n++] = '\n';
				bol = true;
				cr = false;
				if (ch == '\n')
					continue;
			}
			if (ch == '\r') {
				cr = true;
				continue;
			}
			if (bol && ch == '.')
				out[n++] = '.';
			if (ch == '\n')
				out[n++] = '\r';
			out[n++] = ch;
			bol = ch == '\n';
		}
		r = lmtp_write(c, out, n);
		if (r < 0)
			return r;
	}
	if (cr)
		return lmtp_write(c, "\r\n.\r\n", 5);
	return bol ? lmtp_write(c, ".\r\n", 3) : lmtp_write(c, "\r\n.\r\n", 5);
}

/* The three commands before the data; the first refusal decides. */
static int
lmtp_envelope(struct target_conn *c, const struct target_msg *m,
    char *text, size_t len, int *step)
{
	char cmd[3][ADDR_MAX + 64];
	int r = 0, code = 0;
	bool failed = false;

	snprintf(cmd[0], sizeof(cmd[0]), "MAIL FROM:<%s>%s\r\n", m->sender,
	    c->eightbit ? " BODY=8BITMIME" : "");
	snprintf(cmd[1], sizeof(cmd[1]), "RCPT TO:<%s>\r\n", c->t->recipient);
	snprintf(cmd[2], sizeof(cmd[2]), "DATA\r\n");
	if (c->pipelining) {
		char all[sizeof(cmd)];

		snprintf(all, sizeof(all), "%s%s%s", cmd[0], cmd[1], cmd[2]);
		r = lmtp_write(c, all, strlen(all));
	}
	for (int i = 0; i < 3 && r == 0; i++) {
		char t[REPLY_MAX];

		if (!c->pipelining && failed)
			break;
		if (!c->pipelining)
			r = lmtp_write(c, cmd[i], strlen(cmd[i]));
		if (r == 0)
			r = lmtp_reply(c, t, sizeof(t), NULL);
		if (r < 0)
			break;
		if (!failed && (i == 2 ? r != 354 : r / 100 != 2)) {
			failed = true;
			code = r;
			*step = i;
			snprintf(text, len, "%s", t);
		}
		r = 0;
	}
	if (r < 0)
		return r;
	return failed ? code : 354;
}

static enum target_answer
lmtp_send(struct target_conn *c, const struct target_msg *m, char *why,
    size_t whylen)
{
	static const char *steps[] = { "MAIL FROM", "RCPT TO", "DATA" };
	char text[REPLY_MAX];
	int r, step = 0;

	if (c->fd < 0 && lmtp_open(c, why, whylen) != TARGET_ACCEPTED) {
		c->answered = true; /* nothing was sent */
		return TARGET_DEFERRED;
	}
	r = lmtp_envelope(c, m, text, sizeof(text), &step);
	if (r < 0)
		return lmtp_broken(c, r, "envelope", why, whylen);
	if (r != 354) {
		bool permanent = r / 100 == 5;

		snprintf(why, whylen, "LMTP server refused %s: %s",
		    steps[step], text);
		r = lmtp_write(c, "RSET\r\n", 6);
		if (r == 0)
			r = lmtp_reply(c, text, sizeof(text), NULL);
		if (r < 0) {
			close(c->fd);
			c->fd = -1;
		}
		c->answered = true; /* no data was sent */
		return permanent ? TARGET_REFUSED : TARGET_DEFERRED;
	}
	r = lmtp_data(c, m->fd);
	if (r == 0)
		r = lmtp_reply(c, text, sizeof(text), NULL);
	if (r < 0)
		return lmtp_broken(c, r, "message data", why, whylen);
	if (r / 100 == 2)
		return TARGET_ACCEPTED;
	snprintf(why, whylen, "LMTP server refused the message: %s", text);
	c->answered = true;
	return r / 100 == 5 ? TARGET_REFUSED : TARGET_DEFERRED;
}

/* ---- sessions -------------------------------------------------------------- */

enum target_answer
target_open(const struct target *t, struct target_conn **out, char *why,
    size_t whylen)
{
	struct target_conn *c = xcalloc(1, sizeof(*c));

	c->t = t;
	c->fd = -1;
	*out = c;
	if (t->kind == TARGET_LMTP)
		return lmtp_open(c, why, whylen);
	return TARGET_ACCEPTED;
}

enum target_answer
target_send(struct target_conn *c, const struct target_msg *m, char *why,
    size_t whylen)
{
	why[0] = '\0';
	c->answered = false;
	switch (c->t->kind) {
	case TARGET_MDA:
		return mda_send(c, m, why, whylen);
	case TARGET_LMTP:
		return lmtp_send(c, m, why, whylen);
	default:
		fatal("bad target kind");
	}
}

bool
target_answered(const struct target_conn *c)
{
	return c->answered;
}

void
target_close(struct target_conn *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0) {
		char text[REPLY_MAX];

		if (lmtp_write(c, "QUIT\r\n", 6) == 0)
			(void)lmtp_reply(c, text, sizeof(text), NULL);
		close(c->fd);
	}
	free(c);
}
