/*
 * hook: one account's on_delivery command and what it has not been told
 * yet. Deliveries add to a count and a set of folders (at most FOLDERS_MAX,
 * the most an account can have); a run takes them all. While a run is in
 * progress deliveries accumulate, and its end starts one more run with
 * them: however fast mail comes, the command runs at most once at a time
 * and is never more than one run behind. Nothing here waits for the
 * command, so fetching goes on whatever it does; spawn's time limit bounds
 * a run, and its end is only logged.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/cmdline.h"
#include "idlefetch/folders.h"
#include "idlefetch/hook.h"
#include "idlefetch/log.h"
#include "idlefetch/spawn.h"
#include "idlefetch/util.h"

enum hook_state {
	HOOK_IDLE, /* nothing to tell */
	HOOK_ARMED, /* something to tell: the run starts from the timer */
	HOOK_RUNNING, /* the command runs; deliveries meanwhile wait */
	HOOK_CLOSING, /* let go and done: the timer closes, then the free */
};

static const char *const state_names[] = { "IDLE", "ARMED", "RUNNING",
	"CLOSING" };

struct hook {
	uv_loop_t *loop;
	uv_timer_t timer; /* ARMED: starts the run on the next turn */
	enum hook_state state;
	char *account, *command, *maildir;
	unsigned timeout_s;
	/* Not yet told: messages, and the folders they came from. */
	unsigned count;
	char **folders;
	size_t nfolders, cap;
	bool released; /* hook_free was called */
	bool drain; /* ...and what is not told yet is still to be told */
};

static void hook_enter(struct hook *h, enum hook_state to);

static void
closed_cb(uv_handle_t *handle)
{
	struct hook *h = handle->data;

	free(h->account);
	free(h->command);
	free(h->maildir);
	free(h);
}

static void
forget(struct hook *h)
{
	for (size_t i = 0; i < h->nfolders; i++)
		free(h->folders[i]);
	free(h->folders);
	h->folders = NULL;
	h->nfolders = h->cap = 0;
	h->count = 0;
}

/* Where a hook goes when it has nothing running. */
static enum hook_state
next_state(const struct hook *h)
{
	if (h->count > 0 && (!h->released || h->drain))
		return HOOK_ARMED;
	return h->released ? HOOK_CLOSING : HOOK_IDLE;
}

static void
log_end(const struct hook *h, int status, const char *err_line)
{
	const char *sep = err_line[0] ? ": " : "";

	if (status == 0)
		log_msg(LOGL_DEBUG, h->account, NULL, "on_delivery finished");
	else if (status == -ETIMEDOUT)
		log_msg(LOGL_WARN, h->account, NULL,
		    "on_delivery took longer than %u s (command_timeout) and "
		    "was killed%s%s",
		    h->timeout_s, sep, err_line);
	else if (status == -EINTR)
		log_msg(LOGL_WARN, h->account, NULL,
		    "on_delivery was ended by a signal%s%s", sep, err_line);
	else if (status < 0)
		log_msg(LOGL_WARN, h->account, NULL,
		    "cannot run on_delivery: %s", err_str(status));
	else
		log_msg(LOGL_WARN, h->account, NULL,
		    "on_delivery exited with status %d%s%s", status, sep,
		    err_line);
}

static void
run_done(void *ud, int status, const char *out, const char *err_line)
{
	struct hook *h = ud;

	(void)out;
	log_end(h, status, err_line);
	hook_enter(h, next_state(h));
}

/* The command's environment: spawn's, and what it is told. */
static char **
run_env(const struct hook *h)
{
	char *vars[5] = { NULL };
	size_t len = 1, n = 0;
	char *list, **env;

	for (size_t i = 0; i < h->nfolders; i++)
		len += strlen(h->folders[i]) + 1;
	list = xcalloc(1, len);
	for (size_t i = 0; i < h->nfolders; i++) {
		strcat(list, h->folders[i]);
		if (i + 1 < h->nfolders)
			strcat(list, "\n");
	}
	vars[n++] = xasprintf("IDLEFETCH_ACCOUNT=%s", h->account);
	vars[n++] = xasprintf("IDLEFETCH_COUNT=%u", h->count);
	vars[n++] = xasprintf("IDLEFETCH_FOLDERS=%s", list);
	if (h->maildir != NULL)
		vars[n++] = xasprintf("IDLEFETCH_MAILDIR=%s", h->maildir);
	env = spawn_environ((const char *const *)vars);
	for (size_t i = 0; i < n; i++)
		free(vars[i]);
	free(list);
	return env;
}

/* Starts the run with everything not yet told, which it takes. */
static void
run_start(struct hook *h)
{
	char **env = run_env(h);

	log_msg(LOGL_DEBUG, h->account, NULL,
	    "on_delivery: %u message(s) in %zu folder(s)", h->count,
	    h->nfolders);
	forget(h);
	/* spawn calls back from the loop, even when it cannot start. */
	(void)spawn_env(h->loop, h->command, env,
	    (uint64_t)h->timeout_s * 1000u, run_done, h);
	cmdline_free(env);
}

static void
armed_cb(uv_timer_t *t)
{
	hook_enter(t->data, HOOK_RUNNING);
}

static void
hook_enter(struct hook *h, enum hook_state to)
{
	log_msg(LOGL_DEBUG, h->account, NULL, "on_delivery: %s -> %s",
	    state_names[h->state], state_names[to]);
	h->state = to;
	switch (to) {
	case HOOK_IDLE:
		break;
	case HOOK_ARMED:
		uv_timer_start(&h->timer, armed_cb, 0, 0);
		break;
	case HOOK_RUNNING:
		run_start(h);
		break;
	case HOOK_CLOSING:
		forget(h);
		uv_timer_stop(&h->timer);
		uv_close((uv_handle_t *)&h->timer, closed_cb);
		break;
	default:
		fatal("bad hook state");
	}
}

struct hook *
hook_new(uv_loop_t *loop, const char *account, const char *command,
    const char *maildir, unsigned timeout_s)
{
	struct hook *h;

	if (command == NULL || command[0] == '\0')
		return NULL;
	h = xcalloc(1, sizeof(*h));
	h->loop = loop;
	h->account = xstrdup(account);
	h->command = xstrdup(command);
	h->maildir = maildir ? xstrdup(maildir) : NULL;
	h->timeout_s = timeout_s;
	uv_timer_init(loop, &h->timer);
	h->timer.data = h;
	h->state = HOOK_IDLE;
	return h;
}

/* Adds folder to the set not yet told, which never outgrows an account. */
static void
add_folder(struct hook *h, const char *folder)
{
	for (size_t i = 0; i < h->nfolders; i++)
		if (strcmp(h->folders[i], folder) == 0)
			return;
	if (h->nfolders >= FOLDERS_MAX)
		return;
	if (h->nfolders == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 4;
		h->folders = xrealloc(h->folders, h->cap * sizeof(*h->folders));
	}
	h->folders[h->nfolders++] = xstrdup(folder);
}

void
hook_delivered(struct hook *h, const char *folder, unsigned n)
{
	if (h == NULL || n == 0 || h->released)
		return;
	h->count = h->count > UINT_MAX - n ? UINT_MAX : h->count + n;
	add_folder(h, folder);
	if (h->state == HOOK_IDLE)
		hook_enter(h, HOOK_ARMED);
}

void
hook_free(struct hook *h, bool drain)
{
	if (h == NULL)
		return;
	h->released = true;
	h->drain = drain;
	if (!drain)
		forget(h);
	/* A run in progress decides at its end (run_done). */
	if (h->state == HOOK_IDLE || (h->state == HOOK_ARMED && !drain))
		hook_enter(h, HOOK_CLOSING);
}
