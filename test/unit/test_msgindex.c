/*
 * Unit tests for msgindex: lines appended, a lost tail read back from the
 * Maildir's files, one line per file, and matching by count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/header.h"
#include "idlefetch/maildir.h"
#include "idlefetch/msgindex.h"

static char root[] = "/tmp/idlefetch-msgindex-test-XXXXXX";
static char dir[512], path[600];

/* Delivers text (LF line ends) as UID uid of tag 0x77; returns its key. */
static uint64_t
deliver(const char *text, uint32_t uid, struct msgindex_ent *e)
{
	struct maildir_file f;
	struct header_info h;

	assert_int_equal(maildir_create(dir, 0x77, &f), 0);
	assert_int_equal(maildir_append(&f, text, strlen(text)), 0);
	assert_int_equal(maildir_commit(dir, &f, 5, uid), 0);
	(void)header_parse(text, strlen(text), &h);
	memset(e, 0, sizeof(*e));
	e->uidvalidity = 5;
	e->uid = uid;
	e->key = header_key(&h);
	/* The server's size: each LF was CRLF there. */
	e->size = (uint32_t)strlen(text);
	for (const char *p = text; *p; p++)
		e->size += *p == '\n';
	e->file = strdup(f.base);
	return e->key;
}

static void
test_index_completed_from_the_maildir_and_matched_by_count(void **state)
{
	static const char *a = "Message-ID: <a@x>\nSubject: a\n\nbody a\n";
	static const char *b = "Message-ID: <b@x>\nSubject: b\n\nbody b\n";
	struct msgindex_ent ea, eb, eb2;
	struct msgindex ix;
	char err[256];

	(void)state;
	deliver(a, 1, &ea);
	deliver(b, 2, &eb);
	deliver(b, 3, &eb2); /* the same message twice on the server */
	/* Only a's line made it to the index (twice); b's were lost. */
	assert_int_equal(msgindex_append(path, &ea, 1), 0);
	assert_int_equal(msgindex_append(path, &ea, 1), 0);
	assert_int_equal(msgindex_load(&ix, path, dir, 0x77, err, sizeof(err)),
	    0);
	assert_int_equal(ix.n, 3);
	assert_int_equal(ix.from_maildir, 2);
	/* Two copies of b in the Maildir match two on the server, not three. */
	assert_int_equal(msgindex_match(&ix, eb.key, eb.size), 1);
	assert_int_equal(msgindex_match(&ix, eb.key, eb.size), 1);
	assert_int_equal(msgindex_match(&ix, eb.key, eb.size), 0);
	assert_int_equal(msgindex_match(&ix, ea.key, ea.size), 1);
	/* Another size is another message. */
	assert_int_equal(msgindex_match(&ix, ea.key, ea.size + 1), 0);
	/* Nothing to go by matches nothing. */
	assert_int_equal(msgindex_match(&ix, 0, 10), 0);
	msgindex_free(&ix);
	/* The lines read from the files were added: nothing is missing now. */
	assert_int_equal(msgindex_load(&ix, path, dir, 0x77, err, sizeof(err)),
	    0);
	assert_int_equal(ix.n, 3);
	assert_int_equal(ix.from_maildir, 0);
	msgindex_free(&ix);
	free((char *)ea.file);
	free((char *)eb.file);
	free((char *)eb2.file);
}

static void
test_index_path(void **state)
{
	char *p = msgindex_path("/s/acct/INBOX.state");

	(void)state;
	assert_string_equal(p, "/s/acct/INBOX.index");
	free(p);
}

static int
setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/Maildir", root);
	snprintf(path, sizeof(path), "%s/INBOX.index", root);
	return maildir_prepare(dir);
}

static int
teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_index_completed_from_the_maildir_and_matched_by_count),
		cmocka_unit_test(test_index_path),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
