/*
 * config_secret: config_read_secrets() and the config_load_*() pair, for
 * --check-config and the tests: the password_commands run the daemon's
 * way (spawn.h), all at once, on a loop of their own that ends with the
 * last of them, and each is judged by config_secret_result() as the
 * daemon judges it. In a session of their own the commands no longer get
 * the terminal's ^C, so a stop signal meanwhile kills them.
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

struct cmd_batch;

struct cmd_run {
	struct cmd_batch *b;
	struct account *a;
	struct spawn *sp; /* NULL once done */
};

struct cmd_batch {
	const struct config *cfg;
	struct cmd_run *runs;
	size_t n, pending;
	uv_signal_t sig[3];
	bool failed;
	char *err;
	size_t errlen;
};

static void
batch_signal_cb(uv_signal_t *h, int signum)
{
	struct cmd_batch *b = h->data;

	(void)signum;
	for (size_t i = 0; i < b->n; i++)
		if (b->runs[i].sp != NULL)
			spawn_cancel(b->runs[i].sp);
}

static void
batch_done_cb(void *ud, int status, const char *out, const char *err_line)
{
	struct cmd_run *q = ud;
	struct cmd_batch *b = q->b;

	q->sp = NULL;
	/* The first failure is the one reported, with what it said. */
	if ((status == 0 || !b->failed) &&
	    config_secret_result(b->cfg, q->a, status, out, b->err,
		b->errlen) < 0) {
		size_t n = strlen(b->err);

		b->failed = true;
		if (err_line[0] != '\0')
			snprintf(b->err + n, b->errlen - n, " (it said: %s)",
			    err_line);
	}
	if (--b->pending > 0)
		return;
	for (size_t i = 0; i < ARRAY_LEN(b->sig); i++)
		uv_close((uv_handle_t *)&b->sig[i], NULL);
}

/* Runs every password_command not yet run; waits for all of them. */
static int
run_secret_commands(struct config *cfg, char *err, size_t errlen)
{
	static const int signums[] = { SIGINT, SIGTERM, SIGHUP };
	struct cmd_batch b = { .cfg = cfg, .err = err, .errlen = errlen };
	uv_loop_t loop;
	int r;

	for (size_t i = 0; i < cfg->naccounts; i++)
		b.pending += cfg->accounts[i].password == NULL &&
		    cfg->accounts[i].password_command != NULL;
	if (b.pending == 0)
		return 0;
	r = uv_loop_init(&loop);
	if (r < 0) {
		snprintf(err, errlen, "cannot run password_command: %s",
		    uv_strerror(r));
		return r;
	}
	for (size_t i = 0; i < ARRAY_LEN(signums); i++) {
		uv_signal_init(&loop, &b.sig[i]);
		b.sig[i].data = &b;
		uv_signal_start(&b.sig[i], batch_signal_cb, signums[i]);
	}
	b.runs = xcalloc(b.pending, sizeof(*b.runs));
	for (size_t i = 0; i < cfg->naccounts; i++) {
		struct account *a = &cfg->accounts[i];
		struct cmd_run *q = &b.runs[b.n];

		if (a->password != NULL || a->password_command == NULL)
			continue;
		b.n++;
		q->b = &b;
		q->a = a;
		q->sp = spawn_shell(&loop, a->password_command,
		    (uint64_t)cfg->command_timeout * 1000, batch_done_cb, q);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) < 0)
		fatal("password_command loop still busy");
	free(b.runs);
	return b.failed ? -EINVAL : 0;
}

int
config_read_secrets(struct config *cfg, char *err, size_t errlen)
{
	int r = config_read_secret_files(cfg, err, errlen);

	return r < 0 ? r : run_secret_commands(cfg, err, errlen);
}

/* Parses, then reads the secrets; on error nothing is left allocated. */
static int
with_secrets(int r, struct config **out, char *err, size_t errlen)
{
	if (r < 0)
		return r;
	r = config_read_secrets(*out, err, errlen);
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
