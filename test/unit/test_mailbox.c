/*
 * Unit tests for mailbox: one folder's sync, driven through its public API
 * on a real Maildir and state directory (mkdtemp) over a real connection
 * (conn.h) to an IMAP server played inside the test (srv.h). The tests look
 * at what a user would: the files in new/, the last UID in the state file,
 * what the server was asked, and what the owner was told. The state
 * machine's "mailbox A -> B (why)" debug lines are read back from stderr,
 * and every state is entered by one test or another.
 */
#include <errno.h>
#include <fcntl.h>
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
#include "idlefetch/conn.h"
#include "idlefetch/log.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/selection.h"
#include "idlefetch/state.h"
#include "idlefetch/status.h"
#include "idlefetch/util.h"

#include "srv.h"

/* ---- the mailbox's owner ------------------------------------------------ */

struct t {
	uv_loop_t loop;
	struct srv v;
	struct account a;
	char root[64], maildir[96], state_dir[96];
	struct status_rec rec;
	struct mailbox *mb;
	struct conn *c;
	/* what the connection told */
	unsigned ready, conn_failed;
	unsigned grew; /* untagged responses that told of more messages */
	char conn_why[512];
	/* what the mailbox told */
	unsigned prepared, synced, refused, failed, settled, delivered;
	int prepare_err, fail_err;
	char why[512];
	enum mailbox_state at_synced, at_refused;
};

static void
c_ready(void *ud)
{
	((struct t *)ud)->ready++;
}

/* The connection closed: the folder comes off it, as the scheduler does. */
static void
c_failed(void *ud, int err, bool final, const char *why)
{
	struct t *t = ud;

	(void)err;
	(void)final;
	t->conn_failed++;
	snprintf(t->conn_why, sizeof(t->conn_why), "%s", why);
	mailbox_detach(t->mb);
	mailbox_settle(t->mb);
}

static void
c_untagged(void *ud, const struct proto_resp *r)
{
	struct t *t = ud;

	if (mailbox_untagged(t->mb, r))
		t->grew++;
}

static void
c_nothing(void *ud)
{
	(void)ud;
}

static const struct conn_ops conn_ops = {
	.ready = c_ready,
	.failed = c_failed,
	.untagged = c_untagged,
	.read = c_nothing,
	.changed = c_nothing,
};

static void
m_prepared(void *ud, struct mailbox *mb, int err, const char *why)
{
	struct t *t = ud;

	(void)mb;
	t->prepared++;
	t->prepare_err = err;
	snprintf(t->why, sizeof(t->why), "%s", why ? why : "");
}

static void
m_synced(void *ud, struct mailbox *mb)
{
	struct t *t = ud;

	t->synced++;
	t->at_synced = mailbox_state(mb);
}

static void
m_refused(void *ud, struct mailbox *mb, const char *why)
{
	struct t *t = ud;

	t->refused++;
	t->at_refused = mailbox_state(mb);
	snprintf(t->why, sizeof(t->why), "%s", why);
}

/* The folder cannot go on: the owner closes the connection. */
static void
m_failed(void *ud, struct mailbox *mb, int err, bool final, const char *why)
{
	struct t *t = ud;

	(void)final;
	t->failed++;
	t->fail_err = err;
	snprintf(t->why, sizeof(t->why), "%s", why);
	mailbox_detach(mb);
	conn_close(t->c);
	mailbox_settle(mb);
}

/* Disk work ended off the connection: what arrived whole is committed. */
static void
m_settled(void *ud, struct mailbox *mb)
{
	struct t *t = ud;

	t->settled++;
	if (t->c == NULL || !conn_alive(t->c))
		mailbox_settle(mb);
}

static void
m_delivered(void *ud, struct mailbox *mb, unsigned n)
{
	(void)mb;
	((struct t *)ud)->delivered += n;
}

static const struct mailbox_ops mb_ops = {
	.prepared = m_prepared,
	.synced = m_synced,
	.refused = m_refused,
	.failed = m_failed,
	.settled = m_settled,
	.delivered = m_delivered,
};

/* ---- the harness ------------------------------------------------------- */

/* Every state some test saw entered (from the debug lines). */
static unsigned states_seen;
/*
 * stderr goes to a file while a test runs, and comes back at its end; a
 * test that failed leaves it there, and the next one shows it.
 */
static char log_path[128];
static int real_stderr = -1;
/* A failed test's directory, removed by the next test. */
static char left_root[64];

static void rm_rf(const char *path);

static void
log_capture(void)
{
	static unsigned seq;

	snprintf(log_path, sizeof(log_path), "/tmp/test_mailbox.%d.%u.log",
	    (int)getpid(), ++seq);
	fflush(stderr);
	real_stderr = dup(2);
	assert_true(real_stderr >= 0);
	assert_non_null(freopen(log_path, "w", stderr));
	log_init(LOGL_DEBUG, LOG_TARGET_STDERR);
}

/* stderr back; the log shown when the test failed (show). */
static void
log_restore(bool show)
{
	char buf[4096];
	size_t n;
	FILE *fp;

	if (real_stderr < 0)
		return;
	fflush(stderr);
	dup2(real_stderr, 2);
	close(real_stderr);
	real_stderr = -1;
	fp = show ? fopen(log_path, "r") : NULL;
	while (fp != NULL && (n = fread(buf, 1, sizeof(buf), fp)) > 0)
		fwrite(buf, 1, n, stderr);
	if (fp != NULL)
		fclose(fp);
	unlink(log_path);
}

/* Runs the loop until done(t) holds, for at most 5 s of loop time. */
static void
t_run(struct t *t, bool (*done)(const struct t *))
{
	uint64_t end;

	uv_update_time(&t->loop);
	end = uv_now(&t->loop) + 5000;
	while (!done(t) && uv_now(&t->loop) < end) {
		uv_run(&t->loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(&t->loop);
	}
	assert_true(done(t));
}

static bool
until_prepared(const struct t *t)
{
	return t->prepared > 0;
}

static bool
until_ready(const struct t *t)
{
	return t->ready > 0 || t->conn_failed > 0;
}

static bool
until_ended(const struct t *t)
{
	return t->synced + t->refused + t->failed + t->conn_failed > 0;
}

static bool
until_quiet(const struct t *t)
{
	return mailbox_quiet(t->mb);
}

/* A server with INBOX holding n messages (ids 1..n) and a mailbox for it. */
static void
t_start(struct t *t, size_t n, enum after_mode after)
{
	struct srv_folder *f;

	memset(t, 0, sizeof(*t));
	/* The state machine's lines are read back from stderr's file. */
	log_restore(true); /* the last test failed */
	log_capture();
	if (left_root[0] != '\0')
		rm_rf(left_root);

	snprintf(t->root, sizeof(t->root), "/tmp/mbtest.XXXXXX");
	assert_non_null(mkdtemp(t->root));
	snprintf(left_root, sizeof(left_root), "%s", t->root);
	snprintf(t->maildir, sizeof(t->maildir), "%s/Maildir", t->root);
	snprintf(t->state_dir, sizeof(t->state_dir), "%s/state", t->root);
	assert_int_equal(mkdir(t->state_dir, 0700), 0);
	uv_loop_init(&t->loop);
	srv_start(&t->v, &t->loop, "IDLE UIDPLUS");
	f = srv_add_folder(&t->v, "INBOX", 1000);
	for (size_t i = 0; i < n; i++)
		srv_add_msg(f, (unsigned)i + 1);
	srv_account(&t->a, &t->v, t->maildir);
	t->a.after = after;
	t->rec.folder = "INBOX";
}

/* A new mailbox (as after a restart) on the same Maildir and state. */
static void
t_mailbox(struct t *t)
{
	t->prepared = 0;
	t->mb = mailbox_new(&t->loop,
	    &(struct mailbox_opts){ .acct = &t->a,
		.state_dir = t->state_dir,
		.name = "INBOX",
		.status = &t->rec,
		.ops = &mb_ops,
		.ud = t });
	assert_int_equal(mailbox_state(t->mb), MB_NEW);
	mailbox_prepare(t->mb);
	assert_int_equal(mailbox_state(t->mb), MB_PREPARE);
	t_run(t, until_prepared);
}

/* Logs in and SELECTs the folder; returns once the sync ended somehow. */
static void
t_sync(struct t *t)
{
	t->ready = t->conn_failed = 0;
	t->synced = t->refused = t->failed = 0;
	t->c = conn_new(&t->loop,
	    &(struct conn_opts){ .acct = &t->a, .ops = &conn_ops, .ud = t });
	assert_int_equal(conn_open(t->c), 0);
	t_run(t, until_ready);
	assert_int_equal(t->ready, 1);
	mailbox_select(t->mb, t->c);
	t_run(t, until_ended);
}

/* Off the connection, disk work finished, connection freed. */
static void
t_drop_conn(struct t *t)
{
	if (t->c == NULL)
		return;
	mailbox_detach(t->mb);
	conn_close(t->c);
	mailbox_settle(t->mb);
	t_run(t, until_quiet);
	conn_free(t->c);
	t->c = NULL;
}

static void
t_drop_mailbox(struct t *t)
{
	t_drop_conn(t);
	mailbox_release(t->mb);
	t->mb = NULL;
}

/* The debug log so far, read back (caller frees). */
static char *
t_log(struct t *t)
{
	FILE *fp;
	char *text;
	long n;

	fflush(stderr);
	(void)t;
	fp = fopen(log_path, "r");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	text = calloc(1, (size_t)n + 1);
	assert_true(fread(text, 1, (size_t)n, fp) == (size_t)n);
	fclose(fp);
	return text;
}

/* Whether the log has "mailbox FROM -> TO" (FROM or TO may be "*"). */
static bool
t_saw(struct t *t, const char *from, const char *to)
{
	char *text = t_log(t), *p;
	bool found = false;

	for (p = text; (p = strstr(p, "mailbox ")) != NULL; p += 8) {
		char a[32], b[32];

		if (sscanf(p, "mailbox %31s -> %31s", a, b) != 2)
			continue;
		if ((strcmp(from, "*") == 0 || strcmp(a, from) == 0) &&
		    (strcmp(to, "*") == 0 || strcmp(b, to) == 0))
			found = true;
	}
	free(text);
	return found;
}

/* Notes every state the log says was entered (or left). */
static void
t_note_states(struct t *t)
{
	char *text = t_log(t), *p;

	for (p = text; (p = strstr(p, "mailbox ")) != NULL; p += 8) {
		char a[32], b[32];

		if (sscanf(p, "mailbox %31s -> %31s", a, b) != 2)
			continue;
		for (int s = MB_NEW; s <= MB_DEAD; s++)
			if (strcmp(a, mailbox_state_name(s)) == 0 ||
			    strcmp(b, mailbox_state_name(s)) == 0)
				states_seen |= 1u << s;
	}
	free(text);
}

static void
close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void
rm_rf(const char *path)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	assert_int_equal(system(cmd), 0);
}

static void
t_end(struct t *t)
{
	if (t->mb != NULL)
		t_drop_mailbox(t);
	t_note_states(t);
	status_rec_clear(&t->rec);
	srv_hangup(&t->v);
	uv_walk(&t->loop, close_walk, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	log_restore(false);
	rm_rf(t->root);
	left_root[0] = '\0';
}

/* Files in the Maildir's new/. */
static unsigned
count_new(const struct t *t)
{
	char path[160];
	struct dirent *e;
	unsigned n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/new", t->maildir);
	d = opendir(path);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Whether some file in new/ holds text. */
static bool
new_has(const struct t *t, const char *text)
{
	char path[160], file[512], buf[4096];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/new", t->maildir);
	d = opendir(path);
	if (d == NULL)
		return false;
	while (!found && (e = readdir(d)) != NULL) {
		FILE *fp;
		size_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		fp = fopen(file, "r");
		assert_non_null(fp);
		n = fread(buf, 1, sizeof(buf) - 1, fp);
		buf[n] = '\0';
		fclose(fp);
		found = strstr(buf, text) != NULL;
	}
	closedir(d);
	return found;
}

/* The state file's record of INBOX. */
static struct state_rec
t_state(const struct t *t)
{
	struct state_rec st;
	char *path = state_path(t->state_dir, "acct", "INBOX");

	memset(&st, 0, sizeof(st));
	assert_int_equal(state_load(path, &st), 0);
	free(path);
	return st;
}

/* ---- tests ------------------------------------------------------------- */

static void
test_sync_delivers_three_messages(void **state)
{
	struct t t;
	struct state_rec st;

	(void)state;
	t_start(&t, 3, AFTER_KEEP);
	t_mailbox(&t);
	assert_int_equal(t.prepare_err, 0);
	assert_int_equal(mailbox_state(t.mb), MB_READY);
	assert_true(mailbox_prepared(t.mb));
	t_sync(&t);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.synced, 1);
	assert_int_equal(t.at_synced, MB_SYNCED);
	assert_int_equal(t.delivered, 3);
	assert_int_equal(count_new(&t), 3);
	assert_true(new_has(&t, "This is message 1.\n"));
	assert_true(new_has(&t, "This is message 3.\n"));
	assert_false(new_has(&t, "\r\n")); /* CRLF made LF */
	st = t_state(&t);
	assert_int_equal(st.uidvalidity, 1000);
	assert_int_equal(st.last_uid, 3);
	assert_int_equal(selection_uidvalidity(mailbox_selection(t.mb)), 1000);
	assert_int_equal(selection_uidnext(mailbox_selection(t.mb)), 4);
	assert_true(mailbox_sync_ok(t.mb));
	/* One listing, one batch; nothing deleted with after = keep. */
	assert_int_equal(t.v.listings, 1);
	assert_int_equal(t.v.batches, 1);
	assert_int_equal(srv_count(&t.v, "UID STORE"), 0);
	assert_true(t_saw(&t, "NEW", "PREPARE"));
	assert_true(t_saw(&t, "PREPARE", "READY"));
	assert_true(t_saw(&t, "READY", "SELECT"));
	assert_true(t_saw(&t, "SELECT", "RECONCILE"));
	assert_true(t_saw(&t, "LIST", "FETCH"));
	assert_true(t_saw(&t, "FETCH", "SYNCED"));
	/* The connection goes: READY again. */
	t_drop_conn(&t);
	assert_int_equal(mailbox_state(t.mb), MB_READY);
	assert_true(t_saw(&t, "SYNCED", "READY"));
	t_end(&t);
}

/*
 * A restart: the last delivered UID is checked against what the server
 * holds under it before new mail is listed from the next one.
 */
static void
test_restart_verifies_last_uid_then_fetches_only_new(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 3, AFTER_KEEP);
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.synced, 1);
	t_drop_mailbox(&t);
	srv_add_msg(&t.v.f[0], 4);
	t_mailbox(&t);
	t.delivered = 0;
	t_sync(&t);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.synced, 1);
	assert_int_equal(t.delivered, 1);
	assert_int_equal(count_new(&t), 4);
	assert_int_equal(t_state(&t).last_uid, 4);
	assert_true(t_saw(&t, "RECONCILE", "VERIFY"));
	assert_true(t_saw(&t, "VERIFY", "LIST"));
	assert_true(srv_count(&t.v, "UID FETCH 3 (UID RFC822.SIZE") == 1);
	assert_true(srv_count(&t.v, "UID FETCH 4:* (UID RFC822.SIZE)") == 1);
	t_end(&t);
}

/*
 * The server leaves UID 2 out of the batch: UID 1 alone is committed, and
 * the folder is listed again from UID 2, which then arrives.
 */
static void
test_batch_gap_commits_only_the_run_before_it(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 3, AFTER_KEEP);
	t.v.omit_uid = 2;
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.synced, 1);
	/* Listed again from the UID that was missing. */
	assert_int_equal(srv_count(&t.v, "UID FETCH 1:* (UID RFC822.SIZE)"), 1);
	assert_int_equal(srv_count(&t.v, "UID FETCH 2:* (UID RFC822.SIZE)"), 1);
	assert_int_equal(t.v.batches, 2);
	assert_int_equal(count_new(&t), 3);
	assert_int_equal(t.delivered, 3);
	assert_int_equal(t_state(&t).last_uid, 3);
	/* Each message once: UID 3 of the first batch was not kept. */
	{
		char *log = t_log(&t);

		assert_non_null(strstr(log, "server did not return UID 2"));
		assert_non_null(
		    strstr(log, "delivered 1 message(s), UIDs 1..1"));
		assert_non_null(
		    strstr(log, "delivered 2 message(s), UIDs 2..3"));
		free(log);
	}
	t_end(&t);
}

/*
 * The server hangs up inside UID 2's literal: UID 1 is committed, nothing
 * of UID 2 reaches new/, and the state says 1.
 */
static void
test_batch_cut_mid_literal_commits_nothing_partial(void **state)
{
	struct t t;
	char tmp[160];
	DIR *d;
	struct dirent *e;
	unsigned in_tmp = 0;

	(void)state;
	t_start(&t, 3, AFTER_KEEP);
	t.v.cut_uid = 2;
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.synced, 0);
	assert_int_equal(t.conn_failed, 1);
	assert_non_null(strstr(t.conn_why, "closed"));
	assert_int_equal(conn_state(t.c), CONN_CLOSED);
	t_run(&t, until_quiet);
	assert_int_equal(mailbox_state(t.mb), MB_READY);
	assert_int_equal(count_new(&t), 1);
	assert_true(new_has(&t, "This is message 1.\n"));
	assert_false(new_has(&t, "message 2"));
	assert_int_equal(t_state(&t).last_uid, 1);
	assert_int_equal(t.delivered, 1);
	/* Nor is its half left in tmp/. */
	snprintf(tmp, sizeof(tmp), "%s/tmp", t.maildir);
	d = opendir(tmp);
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			in_tmp++;
	closedir(d);
	assert_int_equal(in_tmp, 0);
	assert_true(t_saw(&t, "FETCH", "READY"));
	t_end(&t);
}

static void
test_select_refused_leaves_it_ready(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 1, AFTER_KEEP);
	t.v.f[0].refuse = true;
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.refused, 1);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.at_refused, MB_READY);
	assert_non_null(strstr(t.why, "cannot open folder INBOX"));
	assert_non_null(strstr(t.why, "Mailbox doesn't exist"));
	assert_int_equal(count_new(&t), 0);
	/* The connection stays up for the owner's other folders. */
	assert_int_equal(conn_state(t.c), CONN_READY);
	assert_true(t_saw(&t, "SELECT", "READY"));
	t_end(&t);
}

/*
 * The folder was renumbered (a new UIDVALIDITY) after three messages
 * were delivered: its messages are matched against the Maildir, and only
 * the one it lacks is fetched.
 */
static void
test_uidvalidity_change_recovers_by_matching(void **state)
{
	struct t t;
	struct srv_folder *f;
	struct state_rec st;

	(void)state;
	t_start(&t, 3, AFTER_KEEP);
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.synced, 1);
	t_drop_mailbox(&t);
	/* Renumbered: the same three, then a new one, under 2000. */
	f = &t.v.f[0];
	f->uidvalidity = 2000;
	f->uidnext = 1;
	f->n = 0;
	for (unsigned id = 1; id <= 4; id++)
		srv_add_msg(f, id);
	t_mailbox(&t);
	t.delivered = 0;
	t_sync(&t);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.synced, 1);
	assert_true(t_saw(&t, "SELECT", "RECOVER"));
	assert_true(t_saw(&t, "RECOVER", "LIST"));
	assert_true(t_saw(&t, "LIST", "MATCH"));
	assert_true(t_saw(&t, "MATCH", "FETCH"));
	assert_int_equal(t.delivered, 1);
	assert_int_equal(count_new(&t), 4);
	assert_true(new_has(&t, "This is message 4.\n"));
	st = t_state(&t);
	assert_int_equal(st.uidvalidity, 2000);
	assert_int_equal(st.last_uid, 4);
	assert_int_equal(st.recovering, 0);
	t_end(&t);
}

/* new/ is swapped for a file once the batch is asked for. */
static bool
break_new_hook(struct srv *v, const char *tag, const char *rest)
{
	struct t *t = v->ud;
	char path[160];
	int fd;

	(void)tag;
	if (strstr(rest, "BODY.PEEK[]") == NULL)
		return false;
	snprintf(path, sizeof(path), "%s/new", t->maildir);
	assert_int_equal(rmdir(path), 0);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	return false;
}

static void
test_commit_failure_fails_the_sync(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 2, AFTER_KEEP);
	t.v.hook = break_new_hook;
	t.v.ud = &t;
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.synced, 0);
	assert_int_equal(t.failed, 1);
	assert_true(t.fail_err < 0);
	assert_non_null(strstr(t.why, "fetching stops until this is fixed"));
	assert_int_equal(t.delivered, 0);
	/* Nothing recorded as delivered. */
	assert_int_equal(t_state(&t).last_uid, 0);
	t_end(&t);
}

/*
 * after = delete: the delivered UIDs are marked \Deleted and expunged,
 * only once their commit is durable; the index, now far larger than the
 * emptied folder, is compacted.
 */
static void
test_after_delete_expunges_after_commit(void **state)
{
	struct t t;
	size_t store = 0, expunge = 0, fetch = 0;

	(void)state;
	t_start(&t, 80, AFTER_DELETE);
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.synced, 1);
	assert_int_equal(count_new(&t), 80);
	assert_int_equal(t_state(&t).last_uid, 80);
	assert_int_equal(t.v.f[0].n, 0); /* gone from the server */
	for (size_t i = 0; i < t.v.nlines; i++) {
		const char *l = t.v.lines[i];

		if (strstr(l, "BODY.PEEK[]") && fetch == 0)
			fetch = i + 1;
		if (strstr(l, "UID STORE 1:80 +FLAGS.SILENT (\\Deleted)"))
			store = i + 1;
		if (strstr(l, "UID EXPUNGE 1:80"))
			expunge = i + 1;
	}
	assert_true(fetch > 0);
	assert_true(store > fetch);
	assert_true(expunge > store);
	assert_true(t_saw(&t, "FETCH", "COMPACT_LIST"));
	assert_true(t_saw(&t, "COMPACT_LIST", "COMPACT"));
	assert_true(t_saw(&t, "COMPACT", "FETCH"));
	t_end(&t);
}

/* A Maildir that cannot be made: DEAD, and the owner is told why. */
static void
test_unusable_maildir_is_dead(void **state)
{
	struct t t;
	int fd;

	(void)state;
	t_start(&t, 0, AFTER_KEEP);
	fd = open(t.maildir, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	t_mailbox(&t);
	assert_true(t.prepare_err < 0);
	assert_int_equal(mailbox_state(t.mb), MB_DEAD);
	assert_true(mailbox_dead(t.mb));
	assert_false(mailbox_prepared(t.mb));
	assert_true(t.rec.gave_up);
	assert_true(t_saw(&t, "PREPARE", "DEAD"));
	t_end(&t);
}

static bool
until_grew(const struct t *t)
{
	return t->grew > 0;
}

/* An EXISTS the server sends unasked (as in IDLE): the owner syncs again. */
static void
test_exists_then_again_fetches_the_new_message(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 2, AFTER_KEEP);
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.synced, 1);
	srv_add_msg(&t.v.f[0], 3);
	/* Told of it: the owner's untagged handler grows the count. */
	t.synced = 0;
	srv_send(&t.v, "* 3 EXISTS\r\n");
	t_run(&t, until_grew);
	assert_int_equal(t.grew, 1);
	assert_int_equal(mailbox_state(t.mb), MB_SYNCED);
	mailbox_again(t.mb);
	assert_int_equal(mailbox_state(t.mb), MB_LIST);
	t_run(&t, until_ended);
	assert_int_equal(t.synced, 1);
	assert_int_equal(count_new(&t), 3);
	assert_int_equal(t_state(&t).last_uid, 3);
	assert_int_equal(srv_count(&t.v, "UID FETCH 3:* (UID RFC822.SIZE)"), 1);
	t_end(&t);
}

/* The command at which the server says BYE and hangs up. */
static const char *bye_at;

static bool
bye_hook(struct srv *v, const char *tag, const char *rest)
{
	(void)tag;
	if (strncmp(rest, bye_at, strlen(bye_at)) != 0)
		return false;
	srv_send(v, "* BYE shutting down\r\n");
	srv_hangup(v);
	return true;
}

/*
 * BYE at SELECT, at the listing and at the batch: the connection's owner is
 * told, the folder is READY again with nothing delivered, and the next
 * connection delivers everything once.
 */
static void
test_bye_in_each_state_leaves_it_ready(void **state)
{
	static const char *at[] = { "SELECT", "UID FETCH 1:* (UID RFC822",
		"UID FETCH 1:2 (UID RFC822.SIZE BODY" };

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		struct t t;

		t_start(&t, 2, AFTER_KEEP);
		bye_at = at[i];
		t.v.hook = bye_hook;
		t_mailbox(&t);
		t_sync(&t);
		assert_int_equal(t.conn_failed, 1);
		assert_non_null(strstr(t.conn_why, "shutting down"));
		assert_int_equal(t.synced, 0);
		t_run(&t, until_quiet);
		assert_int_equal(mailbox_state(t.mb), MB_READY);
		assert_int_equal(count_new(&t), 0);
		t_drop_conn(&t);
		t.v.hook = NULL;
		t_sync(&t);
		assert_int_equal(t.synced, 1);
		assert_int_equal(count_new(&t), 2);
		t_end(&t);
	}
}

/* The server never answers the listing: the answer timeout closes it. */
static bool
silent_listing(struct srv *v, const char *tag, const char *rest)
{
	(void)v;
	(void)tag;
	return strncmp(rest, "UID FETCH 1:*", 13) == 0;
}

static void
test_unanswered_listing_times_out(void **state)
{
	struct t t;

	(void)state;
	t_start(&t, 2, AFTER_KEEP);
	t.a.timeout = 1;
	t.v.hook = silent_listing;
	t_mailbox(&t);
	t_sync(&t);
	assert_int_equal(t.conn_failed, 1);
	assert_non_null(
	    strstr(t.conn_why, "no answer from the server for 1 s"));
	assert_int_equal(mailbox_state(t.mb), MB_READY);
	assert_true(t_saw(&t, "LIST", "READY"));
	assert_int_equal(count_new(&t), 0);
	t_end(&t);
}

/* Across the tests above, every state of the machine was entered. */
static void
test_every_state_was_entered(void **state)
{
	(void)state;
	log_restore(true); /* the last test failed */
	if (left_root[0] != '\0')
		rm_rf(left_root);
	for (int s = MB_NEW; s <= MB_DEAD; s++) {
		if (!(states_seen & (1u << s)))
			fprintf(stderr, "state %s never entered\n",
			    mailbox_state_name(s));
		assert_true(states_seen & (1u << s));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_delivers_three_messages),
		cmocka_unit_test(
		    test_restart_verifies_last_uid_then_fetches_only_new),
		cmocka_unit_test(test_batch_gap_commits_only_the_run_before_it),
		cmocka_unit_test(
		    test_batch_cut_mid_literal_commits_nothing_partial),
		cmocka_unit_test(test_select_refused_leaves_it_ready),
		cmocka_unit_test(test_uidvalidity_change_recovers_by_matching),
		cmocka_unit_test(test_commit_failure_fails_the_sync),
		cmocka_unit_test(test_after_delete_expunges_after_commit),
		cmocka_unit_test(test_unusable_maildir_is_dead),
		cmocka_unit_test(
		    test_exists_then_again_fetches_the_new_message),
		cmocka_unit_test(test_bye_in_each_state_leaves_it_ready),
		cmocka_unit_test(test_unanswered_listing_times_out),
		cmocka_unit_test(test_every_state_was_entered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
