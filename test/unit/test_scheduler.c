/*
 * Unit tests for the scheduler (session.h): one account's connection and
 * its folders, driven through session_new/start/stop/free against an IMAP
 * server played inside the test (srv.h) on a real Maildir and state
 * directory. They check which folder is synced when: with NOTIFY the
 * server's word, without it STATUS polling; folders = * following the
 * subscriptions; the poll's wait without IDLE; the backoff after a
 * dropped connection; LOGOUT on stop.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/log.h"
#include "idlefetch/session.h"
#include "idlefetch/status.h"
#include "idlefetch/util.h"

#include "srv.h"

#define NAMES 4

struct t {
	uv_loop_t loop;
	struct srv v;
	struct account a;
	char root[64], maildir[96], state_dir[96];
	const char *folders[NAMES];
	size_t nfolders;
	struct status_rec rec[NAMES];
	/*
	 * folders = *: the names handed to the session and their records, in
	 * two generations: the session reads the old ones while it takes the
	 * new (they are borrowed until replaced).
	 */
	char gen_names[2][NAMES][64];
	const char *gen_ptrs[2][NAMES];
	struct status_rec gen_recs[2][NAMES];
	char (*names)[64]; /* the generation handed last */
	unsigned listed_calls;
	size_t listed_n;
	struct session *s;
	unsigned done;
	bool done_ok;
	/* backoff: loop time of each hang-up and each new connection */
	uint64_t hung_at[8], accepted_at[8];
	unsigned nhung;
	unsigned hang_on_idle; /* hang up at the first IDLE of so many logins */
};

static void
on_done(struct session *s, void *ud, bool ok)
{
	struct t *t = ud;

	(void)s;
	t->done++;
	t->done_ok = ok;
}

/* folders = *: the session gets what the server lists, as the daemon does. */
static void
on_listed(struct session *s, void *ud, const char *const *names, size_t n)
{
	struct t *t = ud;
	unsigned g = t->listed_calls++ % 2;

	t->listed_n = n;
	if (n > NAMES)
		n = NAMES;
	for (size_t i = 0; i < n; i++) {
		snprintf(t->gen_names[g][i], 64, "%s", names[i]);
		t->gen_ptrs[g][i] = t->gen_names[g][i];
		status_rec_clear(&t->gen_recs[g][i]);
		memset(&t->gen_recs[g][i], 0, sizeof(t->gen_recs[g][i]));
		t->gen_recs[g][i].folder = t->gen_names[g][i];
	}
	t->names = t->gen_names[g];
	session_set_folders(s, t->gen_ptrs[g], n, t->gen_recs[g]);
}

/* Runs the loop until done(t) holds, for at most ms of loop time. */
static void
t_run(struct t *t, bool (*done)(const struct t *), unsigned ms)
{
	uint64_t end;

	uv_update_time(&t->loop);
	end = uv_now(&t->loop) + ms;
	while (!done(t) && uv_now(&t->loop) < end) {
		uv_run(&t->loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(&t->loop);
	}
	assert_true(done(t));
}

/* Files in the Maildir of a folder (INBOX, or a Maildir++ subfolder). */
static unsigned
count_new(const struct t *t, const char *folder)
{
	char path[256];
	struct dirent *e;
	unsigned n = 0;
	DIR *d;

	if (strcmp(folder, "INBOX") == 0)
		snprintf(path, sizeof(path), "%s/new", t->maildir);
	else
		snprintf(path, sizeof(path), "%s/.%s/new", t->maildir, folder);
	d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* A failed test's directory, removed by the next test. */
static char left_root[64];

static void
rm_rf(const char *path)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	assert_int_equal(system(cmd), 0);
}

static void
t_start(struct t *t, const char *caps)
{
	memset(t, 0, sizeof(*t));
	if (left_root[0] != '\0')
		rm_rf(left_root);
	log_init(getenv("TEST_DEBUG") ? LOGL_DEBUG : LOGL_ERROR,
	    LOG_TARGET_STDERR);
	snprintf(t->root, sizeof(t->root), "/tmp/schedtest.XXXXXX");
	assert_non_null(mkdtemp(t->root));
	snprintf(left_root, sizeof(left_root), "%s", t->root);
	snprintf(t->maildir, sizeof(t->maildir), "%s/Maildir", t->root);
	snprintf(t->state_dir, sizeof(t->state_dir), "%s/state", t->root);
	assert_int_equal(mkdir(t->state_dir, 0700), 0);
	uv_loop_init(&t->loop);
	srv_start(&t->v, &t->loop, caps);
	t->v.ud = t;
	srv_account(&t->a, &t->v, t->maildir);
	t->a.after = AFTER_KEEP;
	t->a.poll_interval = 1;
	t->a.idle_refresh = 600;
}

static void
t_folder(struct t *t, const char *name, unsigned nmsgs)
{
	struct srv_folder *f = srv_add_folder(&t->v, name, 7);

	for (unsigned i = 0; i < nmsgs; i++)
		srv_add_msg(f, i + 1);
}

/* The session for the folders named so far (they come first in t->v.f). */
static void
t_session(struct t *t, size_t nfolders, bool star)
{
	t->nfolders = nfolders;
	for (size_t i = 0; i < nfolders; i++) {
		t->folders[i] = t->v.f[i].name;
		t->rec[i].folder = t->folders[i];
	}
	t->a.subscribed = star;
	t->s = session_new(&t->loop,
	    &(struct session_opts){ .acct = &t->a,
		.folders = t->folders,
		.nfolders = nfolders,
		.state_dir = t->state_dir,
		.status = t->rec,
		.done = on_done,
		.listed = star ? on_listed : NULL,
		.ud = t });
	session_start(t->s);
}

static bool
until_done(const struct t *t)
{
	return t->done > 0;
}

static void
close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Stops the session (LOGOUT), frees it and everything else. */
static void
t_end(struct t *t)
{
	if (t->s != NULL) {
		session_stop(t->s);
		t_run(t, until_done, 5000);
		session_free(t->s);
	}
	for (size_t i = 0; i < NAMES; i++) {
		status_rec_clear(&t->rec[i]);
		status_rec_clear(&t->gen_recs[0][i]);
		status_rec_clear(&t->gen_recs[1][i]);
	}
	srv_hangup(&t->v);
	uv_walk(&t->loop, close_walk, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	rm_rf(t->root);
	left_root[0] = '\0';
}

static bool
until_idling(const struct t *t)
{
	return t->v.idle_tag[0] != '\0';
}

static bool
until_lists_has_two(const struct t *t)
{
	return count_new(t, "Lists") == 2;
}

static bool
until_other_has_news(const struct t *t)
{
	const struct srv_folder *f =
	    t->v.sel == &t->v.f[0] ? &t->v.f[1] : &t->v.f[0];

	return count_new(t, f->name) == f->n;
}

static bool
until_polling(const struct t *t)
{
	return t->rec[0].state != NULL &&
	    strcmp(t->rec[0].state, "POLL_WAIT") == 0 && t->rec[0].up;
}

static bool
until_inbox_three(const struct t *t)
{
	return count_new(t, "INBOX") == 3;
}

/*
 * No IDLE: the folder synced, the connection waits for the poll's timer
 * (POLL_WAIT, shown as up), lists the folder again when it fires and
 * fetches what arrived, on the same connection. A stop while waiting
 * logs out at once.
 */
static void
test_no_idle_waits_for_the_poll(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, "UIDPLUS");
	t_folder(&t, "INBOX", 2);
	t_session(&t, 1, false);
	t_run(&t, until_polling, 5000);
	assert_int_equal(count_new(&t, "INBOX"), 2);
	srv_add_msg(&t.v.f[0], 3);
	t_run(&t, until_inbox_three, 5000);
	t_run(&t, until_polling, 5000);
	assert_int_equal(t.v.idles, 0);
	assert_int_equal(t.v.logins, 1);
	session_stop(t.s);
	t_run(&t, until_done, 5000);
	assert_true(t.done_ok);
	assert_int_equal(t.v.logouts, 1);
	session_free(t.s);
	t.s = NULL;
	t_end(&t);
}

/*
 * NOTIFY accepted: both folders synced at login, then one IDLE on the last
 * selected; the server's STATUS for the other folder has that one synced,
 * with no STATUS asked. Stopping while idle ends the IDLE and logs out.
 */
static void
test_notify_news_of_another_folder_syncs_it(void **state)
{
	struct t t;
	struct srv_folder *other;

	(void)state;
	t_start(&t, "IDLE NOTIFY UIDPLUS");
	t_folder(&t, "INBOX", 2);
	t_folder(&t, "Lists", 1);
	t_session(&t, 2, false);
	t_run(&t, until_idling, 5000);
	assert_int_equal(count_new(&t, "INBOX"), 2);
	assert_int_equal(count_new(&t, "Lists"), 1);
	assert_int_equal(t.v.notifies, 1);
	assert_int_equal(srv_count(&t.v, "NOTIFY SET"), 1);
	assert_int_equal(t.v.statuses, 0);
	/* News of the folder not selected, told while idling. */
	assert_non_null(t.v.sel);
	other = t.v.sel == &t.v.f[0] ? &t.v.f[1] : &t.v.f[0];
	srv_add_msg(other, 9);
	srv_send(&t.v, "* STATUS \"%s\" (MESSAGES %zu UIDNEXT %u)\r\n",
	    other->name, other->n, other->uidnext);
	t_run(&t, until_other_has_news, 5000);
	assert_int_equal(t.v.statuses, 0); /* never polled */
	assert_int_equal(t.v.logins, 1);
	/* Back to idling, then a stop: DONE, LOGOUT, done. */
	t_run(&t, until_idling, 5000);
	session_stop(t.s);
	t_run(&t, until_done, 5000);
	assert_true(t.done_ok);
	assert_int_equal(t.v.logouts, 1);
	assert_string_equal(t.v.lines[t.v.nlines - 2], "DONE");
	session_free(t.s);
	t.s = NULL;
	t_end(&t);
}

/*
 * NOTIFY refused: IDLE on the first folder, the other asked with STATUS
 * every poll_interval, and synced when its UIDNEXT moves.
 */
static void
test_notify_refused_polls_the_other_folder(void **state)
{
	struct t t;
	struct srv_folder *lists;

	(void)state;
	t_start(&t, "IDLE NOTIFY UIDPLUS");
	t.v.notify_no = true;
	t_folder(&t, "INBOX", 1);
	t_folder(&t, "Lists", 1);
	t_session(&t, 2, false);
	t_run(&t, until_idling, 5000);
	assert_int_equal(count_new(&t, "Lists"), 1);
	assert_int_equal(t.v.notifies, 1);
	lists = srv_folder(&t.v, "Lists");
	srv_add_msg(lists, 2);
	/* Found by a STATUS round within about poll_interval (1 s). */
	t_run(&t, until_lists_has_two, 5000);
	assert_true(t.v.statuses >= 1);
	assert_true(srv_count(&t.v, "STATUS \"Lists\"") >= 1);
	assert_int_equal(srv_count(&t.v, "STATUS \"INBOX\""), 0);
	assert_int_equal(t.v.logins, 1);
	t_end(&t);
}

static bool
until_news_synced(const struct t *t)
{
	return t->listed_calls > 0 && count_new(t, "News") == 3;
}

static bool
until_work_synced(const struct t *t)
{
	return count_new(t, "Work") == 2;
}

/*
 * folders = *: the subscribed folders are listed at login and handed to
 * the session, which syncs the one it did not have; listed again a poll
 * interval later, a folder unsubscribed meanwhile is dropped and a new one
 * synced.
 */
static void
test_subscribed_folder_set_is_followed(void **state)
{
	struct t t;
	struct srv_folder *work;
	unsigned news_selects;

	(void)state;
	t_start(&t, "IDLE NOTIFY UIDPLUS");
	t_folder(&t, "INBOX", 1);
	t_folder(&t, "News", 3);
	t_session(&t, 1, true);
	t_run(&t, until_news_synced, 5000);
	assert_int_equal(t.listed_n, 2);
	assert_int_equal(t.v.lsubs, 1);
	assert_int_equal(count_new(&t, "INBOX"), 1);
	assert_int_equal(srv_count(&t.v, "SELECT \"News\""), 1);
	/* News unsubscribed, Work subscribed, with mail. */
	srv_folder(&t.v, "News")->subscribed = false;
	work = srv_add_folder(&t.v, "Work", 11);
	srv_add_msg(work, 1);
	srv_add_msg(work, 2);
	t_run(&t, until_work_synced, 5000);
	assert_true(t.v.lsubs >= 2);
	assert_int_equal(t.listed_n, 2);
	assert_string_equal(t.names[0], "INBOX");
	assert_string_equal(t.names[1], "Work");
	news_selects = srv_count(&t.v, "SELECT \"News\"");
	/* News is no longer synced, whatever comes. */
	srv_add_msg(srv_folder(&t.v, "News"), 4);
	t_run(&t, until_idling, 5000);
	assert_int_equal(srv_count(&t.v, "SELECT \"News\""), news_selects);
	assert_int_equal(count_new(&t, "News"), 3);
	assert_int_equal(t.v.logins, 1);
	t_end(&t);
}

/* Hangs up at IDLE (the first hang_on_idle logins), noting the time. */
static bool
drop_at_idle(struct srv *v, const char *tag, const char *rest)
{
	struct t *t = v->ud;

	(void)tag;
	if (!srv_is(rest, "IDLE") || t->nhung >= t->hang_on_idle)
		return false;
	srv_send(v, "* BYE going away\r\n");
	srv_hangup(v);
	t->hung_at[t->nhung++] = uv_now(&t->loop);
	return true;
}

static bool
until_fourth_login(const struct t *t)
{
	return t->v.logins == 4 && t->v.idle_tag[0] != '\0';
}

/*
 * A connection dropped soon after each login, with no mail: the session
 * reconnects after a delay that doubles (with jitter on its upper half:
 * 0.5-1 s, then 1-2 s, then 2-4 s).
 */
static void
test_dropped_connection_backs_off_doubling(void **state)
{
	struct t t;
	uint64_t logins_at[4];
	unsigned seen = 0;
	uint64_t end;

	(void)state;
	t_start(&t, "IDLE UIDPLUS");
	t_folder(&t, "INBOX", 1);
	t.hang_on_idle = 3;
	t.v.hook = drop_at_idle;
	t_session(&t, 1, false);
	/* Each login's time, as the server sees it. */
	uv_update_time(&t.loop);
	end = uv_now(&t.loop) + 12000;
	while (!until_fourth_login(&t) && uv_now(&t.loop) < end) {
		uv_run(&t.loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(&t.loop);
		while (seen < t.v.logins && seen < 4)
			logins_at[seen++] = uv_now(&t.loop);
	}
	assert_true(until_fourth_login(&t));
	assert_int_equal(t.nhung, 3);
	for (unsigned i = 0; i < 3; i++) {
		uint64_t gap = logins_at[i + 1] - t.hung_at[i];
		uint64_t lo = 500u << i, hi = 1000u << i;

		print_message("backoff %u: %llu ms\n", i + 1,
		    (unsigned long long)gap);
		assert_true(gap + 20 >= lo);
		assert_true(gap <= hi + 300);
	}
	assert_int_equal(count_new(&t, "INBOX"), 1); /* once, not four times */
	t_end(&t);
	assert_int_equal(t.done, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_idle_waits_for_the_poll),
		cmocka_unit_test(test_notify_news_of_another_folder_syncs_it),
		cmocka_unit_test(test_notify_refused_polls_the_other_folder),
		cmocka_unit_test(test_subscribed_folder_set_is_followed),
		cmocka_unit_test(test_dropped_connection_backs_off_doubling),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
