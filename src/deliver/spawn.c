/*
 * spawn: one uv_process and two pipes. The spawn is finished when the
 * process has exited (or was killed at the time limit) and both pipes are
 * closed, or 200 ms after it exited, whichever comes first; only then does
 * the callback run, and the struct is freed after every handle's close
 * callback. Output beyond the first 4 KiB is read and dropped, so a chatty
 * command cannot block on a full pipe. spawn_run is the same machinery on
 * a loop of its own, for a caller that may block (a threadpool thread), so
 * that every command idlefetch starts is started, timed and judged alike.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "idlefetch/cmdline.h"
#include "idlefetch/spawn.h"
#include "idlefetch/util.h"

#define SPAWN_KEEP 4096
/* How long output may still come after the command exited. */
#define SPAWN_DRAIN_MS 200

struct spawn {
	uv_process_t proc;
	uv_pipe_t out, err;
	uv_timer_t timer;
	spawn_done_cb *done;
	void *ud;
	char obuf[SPAWN_KEEP], ebuf[512];
	size_t olen, elen;
	int status;
	int *signal_out; /* spawn_run: where the ending signal goes */
	unsigned open; /* handles not yet closed */
	unsigned busy; /* exit and the two EOFs still to come */
	bool timed_out, cancelled, exited;
	char rbuf[4096]; /* read buffer, shared: reads are serial */
};

static void
closed_cb(uv_handle_t *h)
{
	struct spawn *sp = h->data;

	if (--sp->open == 0) {
		OPENSSL_cleanse(sp->obuf, sizeof(sp->obuf));
		OPENSSL_cleanse(sp->rbuf, sizeof(sp->rbuf));
		free(sp);
	}
}

static void
close_handle(struct spawn *sp, uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, closed_cb);
}

/* The first line of buf, in place (NUL-terminated). */
static const char *
first_line(char *buf, size_t len, size_t cap)
{
	if (len >= cap)
		len = cap - 1;
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf;
}

static void
finish(struct spawn *sp)
{
	const char *out = NULL, *err;
	int status = sp->status;

	if (--sp->busy > 0)
		return;
	uv_timer_stop(&sp->timer);
	if (sp->cancelled)
		status = -ECANCELED;
	else if (sp->timed_out)
		status = -ETIMEDOUT;
	err = first_line(sp->ebuf, sp->elen, sizeof(sp->ebuf));
	for (char *p = sp->ebuf; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (status == 0)
		out = first_line(sp->obuf, sp->olen, sizeof(sp->obuf));
	sp->done(sp->ud, status, out, err);
	close_handle(sp, (uv_handle_t *)&sp->timer);
	close_handle(sp, (uv_handle_t *)&sp->proc);
}

static void
alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct spawn *sp = h->data;

	buf->base = sp->rbuf;
	buf->len = sizeof(sp->rbuf);
}

/* Keeps what fits of n bytes read from st; the read buffer is wiped. */
static void
keep(struct spawn *sp, uv_stream_t *st, char *p, size_t n)
{
	bool is_out = st == (uv_stream_t *)&sp->out;
	char *dst = is_out ? sp->obuf : sp->ebuf;
	size_t cap = is_out ? sizeof(sp->obuf) : sizeof(sp->ebuf);
	size_t *len = is_out ? &sp->olen : &sp->elen;
	size_t k = n;

	if (k > cap - 1 - *len)
		k = cap - 1 - *len;
	memcpy(dst + *len, p, k);
	*len += k;
	OPENSSL_cleanse(p, n);
}

static void
read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct spawn *sp = st->data;

	if (n > 0) {
		keep(sp, st, buf->base, (size_t)n);
		return;
	}
	if (n == 0)
		return;
	/* EOF or an error: this pipe is done. */
	uv_read_stop(st);
	close_handle(sp, (uv_handle_t *)st);
	finish(sp);
}

/*
 * A pipe still open once the command is gone: stop waiting for it. What
 * the command wrote before it exited may still sit in the pipe when the
 * loop was held up past the grace: take it first (the pipe does not block),
 * at most a buffer's worth, since only the first line counts.
 */
static void
end_pipe(struct spawn *sp, uv_pipe_t *p)
{
	uv_os_fd_t fd;
	ssize_t n;

	if (uv_is_closing((uv_handle_t *)p))
		return;
	if (uv_fileno((uv_handle_t *)p, &fd) == 0) {
		do
			n = read(fd, sp->rbuf, sizeof(sp->rbuf));
		while (n < 0 && errno == EINTR);
		if (n > 0)
			keep(sp, (uv_stream_t *)p, sp->rbuf, (size_t)n);
	}
	uv_read_stop((uv_stream_t *)p);
	close_handle(sp, (uv_handle_t *)p);
	finish(sp);
}

/*
 * The command has exited, but something it started in the background
 * (an agent, say) may hold its output open: what was written by now is
 * all there is.
 */
static void
drain_cb(uv_timer_t *t)
{
	struct spawn *sp = t->data;

	sp->busy++; /* end_pipe must not free under our feet */
	end_pipe(sp, &sp->out);
	end_pipe(sp, &sp->err);
	finish(sp);
}

static void
exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
	struct spawn *sp = p->data;

	sp->exited = true;
	sp->status = term_signal ? -EINTR : (int)exit_status;
	if (sp->signal_out != NULL)
		*sp->signal_out = term_signal;
	if (sp->busy > 1)
		uv_timer_start(&sp->timer, drain_cb, SPAWN_DRAIN_MS, 0);
	finish(sp);
}

/* The whole process group: a shell may have started children. */
static void
kill_group(struct spawn *sp)
{
	if (uv_kill(-sp->proc.pid, SIGKILL) < 0)
		uv_process_kill(&sp->proc, SIGKILL);
}

static void
timer_cb(uv_timer_t *t)
{
	struct spawn *sp = t->data;

	if (!sp->exited) {
		sp->timed_out = true;
		kill_group(sp);
	}
}

/* A command that could not start: done runs from the loop all the same. */
static void
failed_cb(uv_timer_t *t)
{
	struct spawn *sp = t->data;

	sp->busy = 1;
	finish(sp);
}

/* How a command starts: its words, environment and standard input. */
struct spawn_how {
	char **args;
	char **env; /* NULL: ours */
	int in_fd; /* -1: /dev/null */
	bool out; /* read standard output (else it goes to /dev/null) */
	int *signal_out;
};

/* Starts how's command on loop; done runs from the loop (spawn_shell). */
static struct spawn *
spawn_start(uv_loop_t *loop, const struct spawn_how *how, uint64_t timeout_ms,
    spawn_done_cb *done, void *ud)
{
	struct spawn *sp = xcalloc(1, sizeof(*sp));
	uv_stdio_container_t stdio[3];
	uv_process_options_t o = { 0 };
	int r;

	sp->done = done;
	sp->ud = ud;
	sp->signal_out = how->signal_out;
	uv_timer_init(loop, &sp->timer);
	sp->timer.data = sp;
	uv_pipe_init(loop, &sp->out, 0);
	uv_pipe_init(loop, &sp->err, 0);
	sp->out.data = sp->err.data = sp->proc.data = sp;
	sp->open = 4;
	stdio[0].flags = how->in_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
	stdio[0].data.fd = how->in_fd;
	stdio[1].flags = how->out ? UV_CREATE_PIPE | UV_WRITABLE_PIPE :
				    UV_IGNORE; /* /dev/null */
	stdio[1].data.stream = (uv_stream_t *)&sp->out;
	stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[2].data.stream = (uv_stream_t *)&sp->err;
	o.file = how->args[0];
	o.args = how->args;
	o.env = how->env;
	o.exit_cb = exit_cb;
	o.stdio = stdio;
	o.stdio_count = 3;
	/* Its own session and process group, so that a kill reaches all. */
	o.flags = UV_PROCESS_DETACHED;
	r = uv_spawn(loop, &sp->proc, &o);
	if (r < 0) {
		/* The process handle must be closed even when spawn failed. */
		sp->status = r;
		close_handle(sp, (uv_handle_t *)&sp->out);
		close_handle(sp, (uv_handle_t *)&sp->err);
		uv_timer_start(&sp->timer, failed_cb, 0, 0);
		return sp;
	}
	sp->busy = 3;
	if (!how->out ||
	    uv_read_start((uv_stream_t *)&sp->out, alloc_cb, read_cb) < 0)
		end_pipe(sp, &sp->out);
	if (uv_read_start((uv_stream_t *)&sp->err, alloc_cb, read_cb) < 0)
		end_pipe(sp, &sp->err);
	uv_timer_start(&sp->timer, timer_cb, timeout_ms, 0);
	return sp;
}

/* cmd with no shell unless it needs one (cmdline.h). */
static struct spawn *
spawn_cmd(uv_loop_t *loop, const char *cmd, struct spawn_how *how,
    uint64_t timeout_ms, spawn_done_cb *done, void *ud)
{
	char *shell[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	char **argv = NULL;
	struct spawn *sp;

	/*
	 * Given an environment of its own, a $ is the shell's to expand from
	 * it: cmdline would take ${NAME} from ours.
	 */
	if (how->env == NULL || strchr(cmd, '$') == NULL)
		argv = cmdline_shell_free(cmd);
	how->args = argv ? argv : shell;
	sp = spawn_start(loop, how, timeout_ms, done, ud);
	cmdline_free(argv);
	return sp;
}

struct spawn *
spawn_shell(uv_loop_t *loop, const char *cmd, uint64_t timeout_ms,
    spawn_done_cb *done, void *ud)
{
	struct spawn_how how = { .in_fd = -1, .out = true };

	return spawn_cmd(loop, cmd, &how, timeout_ms, done, ud);
}

struct spawn *
spawn_env(uv_loop_t *loop, const char *cmd, char **env, uint64_t timeout_ms,
    spawn_done_cb *done, void *ud)
{
	struct spawn_how how = { .env = env, .in_fd = -1 };

	return spawn_cmd(loop, cmd, &how, timeout_ms, done, ud);
}

char **
spawn_environ(const char *const *vars)
{
	/* What programs look for; never the rest (a ${VAR} may be a secret). */
	static const char *keep[] = { "PATH", "HOME", "USER", "LOGNAME", "LANG",
		"TZ" };
	size_t nvars = 0, n = 0;
	char **env;

	while (vars != NULL && vars[nvars] != NULL)
		nvars++;
	env = xcalloc(ARRAY_LEN(keep) + nvars + 1, sizeof(*env));
	for (size_t i = 0; i < ARRAY_LEN(keep); i++) {
		const char *v = getenv(keep[i]);

		if (v != NULL)
			env[n++] = xasprintf("%s=%s", keep[i], v);
		else if (i == 0)
			env[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	}
	for (size_t i = 0; i < nvars; i++)
		env[n++] = xstrdup(vars[i]);
	return env;
}

static void
run_done(void *ud, int status, const char *out, const char *err_line)
{
	struct spawn_end *end = ud;

	(void)out;
	end->status = status;
	snprintf(end->err_line, sizeof(end->err_line), "%s", err_line);
}

void
spawn_run(char **argv, char **env, int in_fd, uint64_t timeout_ms,
    struct spawn_end *end)
{
	struct spawn_how how = { .args = argv, .env = env, .in_fd = in_fd,
		.signal_out = &end->signal };
	uv_loop_t loop;
	int r;

	memset(end, 0, sizeof(*end));
	r = uv_loop_init(&loop);
	if (r < 0) {
		end->status = r;
		return;
	}
	(void)spawn_start(&loop, &how, timeout_ms, run_done, end);
	/* It ends when the spawn has closed its last handle. */
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fatal("spawn_run: a handle outlived its spawn");
}

void
spawn_cancel(struct spawn *sp)
{
	sp->cancelled = true;
	if (!sp->exited && sp->busy > 0)
		kill_group(sp);
}
