/*
 * config_secret: reads a configuration's secrets, one way for all: the
 * batch (config_secrets_new) that the daemon runs on its loop at start
 * and on SIGHUP, and config_read_secrets() that runs the same batch on a
 * loop of its own for --check-config and the tests. Only the accounts
 * this process fetches (config_wanted): another replica's secrets may not
 * be mounted here. Each command is judged by config_secret_result().
 *
 * The commands run at most CONFIG_SECRETS_AT_ONCE at a time: each holds
 * three pipes until it ends, and a few hundred at once would run out of
 * descriptors under the usual limit of 1,024, before the daemon has
 * raised it (it does so only once it knows the passwords).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/spawn.h"
#include "idlefetch/util.h"

struct cmd_run {
	struct config_secrets *b;
	struct account *a;
	struct spawn *sp; /* NULL unless running */
};

struct config_secrets {
	uv_loop_t *loop;
	struct config *cfg;
	const char *only; /* --account, or NULL */
	const struct config_secrets_ops *ops;
	void *ud;
	struct cmd_run *runs; /* the wanted commands, in account order */
	size_t n, next, running;
	bool failed; /* the first failure is in err */
	bool cancelled; /* start nothing more */
	char err[1024];
};

struct config_secrets *
config_secrets_new(uv_loop_t *loop, struct config *cfg, const char *only,
    const struct config_secrets_ops *ops, void *ud)
{
	struct config_secrets *b = xcalloc(1, sizeof(*b));

	b->loop = loop;
	b->cfg = cfg;
	b->only = only;
	b->ops = ops;
	b->ud = ud;
	b->runs = xcalloc(cfg->naccounts + 1, sizeof(*b->runs));
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];

		if (a->password != NULL || a->password_command == NULL ||
		    !config_wanted(cfg, a, only))
			continue;
		b->runs[b->n].b = b;
		b->runs[b->n++].a = a;
	}
	return b;
}

static void
batch_end(struct config_secrets *b)
{
	b->ops->done(b->ud, b->failed ? -EINVAL : 0, b->err);
	free(b->runs);
	free(b);
}

static void run_done_cb(void *ud, int status, const char *out,
    const char *err_line);

/* Starts commands while there are some left and room for them. */
static void
batch_fill(struct config_secrets *b)
{
	while (!b->failed && !b->cancelled && b->next < b->n &&
	    b->running < CONFIG_SECRETS_AT_ONCE) {
		struct cmd_run *q = &b->runs[b->next++];

		b->running++;
		q->sp = spawn_shell(b->loop, q->a->password_command,
		    (uint64_t)b->cfg->command_timeout * 1000, run_done_cb, q);
	}
}

static void
run_done_cb(void *ud, int status, const char *out, const char *err_line)
{
	struct cmd_run *q = ud;
	struct config_secrets *b = q->b;

	q->sp = NULL;
	b->running--;
	if (err_line[0] != '\0' && b->ops->said != NULL)
		b->ops->said(b->ud, q->a, status, err_line);
	if ((status == 0 || !b->failed) &&
	    config_secret_result(b->cfg, q->a, status, out, b->err,
		sizeof(b->err)) < 0) {
		size_t n = strlen(b->err);

		b->failed = true;
		if (err_line[0] != '\0')
			snprintf(b->err + n, sizeof(b->err) - n,
			    " (it said: %s)", err_line);
	}
	batch_fill(b);
	if (b->running == 0)
		batch_end(b);
}

void
config_secrets_run(struct config_secrets *b)
{
	/* The files first, at once; a failure there starts no command. */
	if (config_read_secret_files(b->cfg, b->only, b->err,
		sizeof(b->err)) < 0)
		b->failed = true;
	batch_fill(b);
	if (b->running == 0)
		batch_end(b);
}

void
config_secrets_cancel(struct config_secrets *b)
{
	b->cancelled = true;
	for (size_t i = 0; i < b->next; i++)
		if (b->runs[i].sp != NULL)
			spawn_cancel(b->runs[i].sp);
}

/*
 * config_read_secrets(): the batch on a loop of its own, which ends with
 * it. In a process group of their own the commands no longer get the
 * terminal's ^C, so a stop signal meanwhile cancels the batch.
 */
struct own_loop {
	struct config_secrets *b; /* NULL once done */
	uv_signal_t sig[3];
	size_t nsig; /* initialised */
	int r;
	char *err;
	size_t errlen;
};

static void
own_close_signals(struct own_loop *o)
{
	for (size_t i = 0; i < o->nsig; i++)
		uv_close((uv_handle_t *)&o->sig[i], NULL);
	o->nsig = 0;
}

static void
own_signal_cb(uv_signal_t *h, int signum)
{
	struct own_loop *o = h->data;

	(void)signum;
	if (o->b != NULL)
		config_secrets_cancel(o->b);
}

static void
own_done(void *ud, int r, const char *err)
{
	struct own_loop *o = ud;

	o->b = NULL;
	o->r = r;
	if (r < 0)
		snprintf(o->err, o->errlen, "%s", err);
	own_close_signals(o);
}

static const struct config_secrets_ops own_ops = { NULL, own_done };

/* Watches the stop signals; 0, or a libuv error with them all closed. */
static int
own_signals(uv_loop_t *loop, struct own_loop *o)
{
	static const int signums[] = { SIGINT, SIGTERM, SIGHUP };
	int r = 0;

	for (size_t i = 0; r == 0 && i < ARRAY_LEN(signums); i++) {
		r = uv_signal_init(loop, &o->sig[i]);
		if (r < 0)
			break;
		o->nsig++;
		o->sig[i].data = o;
		r = uv_signal_start(&o->sig[i], own_signal_cb, signums[i]);
	}
	if (r < 0)
		own_close_signals(o);
	return r;
}

int
config_read_secrets(struct config *cfg, const char *only, char *err,
    size_t errlen)
{
	struct own_loop o = { .err = err, .errlen = errlen };
	uv_loop_t loop;
	int r = uv_loop_init(&loop);

	if (r < 0) {
		snprintf(err, errlen, "cannot run password_command: %s",
		    uv_strerror(r));
		return r;
	}
	r = own_signals(&loop, &o);
	if (r < 0) {
		snprintf(err, errlen, "cannot watch for stop signals: %s",
		    uv_strerror(r));
		uv_run(&loop, UV_RUN_DEFAULT); /* the closes */
		if (uv_loop_close(&loop) < 0)
			fatal("password_command loop still busy");
		return r;
	}
	o.b = config_secrets_new(&loop, cfg, only, &own_ops, &o);
	config_secrets_run(o.b);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) < 0)
		fatal("password_command loop still busy");
	return o.r;
}

/* Parses, then reads the secrets; on error nothing is left allocated. */
static int
with_secrets(int r, struct config **out, char *err, size_t errlen)
{
	if (r < 0)
		return r;
	r = config_read_secrets(*out, NULL, err, errlen);
	if (r < 0) {
		config_free(*out);
		*out = NULL;
	}
	return r;
}

int
config_load_file(const char *path, struct config **out, char *err,
    size_t errlen)
{
	return with_secrets(config_parse_file(path, out, err, errlen), out,
	    err, errlen);
}

int
config_load_env(struct config **out, char *err, size_t errlen)
{
	return with_secrets(config_parse_env(out, err, errlen), out, err,
	    errlen);
}
