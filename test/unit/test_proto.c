/* Unit tests for proto: libetpan parsing into proto_resp, and encoding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/proto.h"
#include "idlefetch/util.h"

static int
parse(const char *s, bool greeting, struct proto_resp *r)
{
	return proto_parse(s, strlen(s), greeting, r);
}

static void
test_greeting_with_capabilities(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ "
			       "STARTTLS AUTH=PLAIN AUTH=LOGIN IDLE] Dovecot ready.\r\n",
			     true, &r),
	    0);
	assert_int_equal(r.kind, PROTO_GREETING);
	assert_int_equal(r.status, PROTO_OK);
	assert_true(r.has & HAS_CAPS);
	assert_int_equal(r.caps,
	    CAP_IMAP4REV1 | CAP_SASL_IR | CAP_LITERALPLUS | CAP_STARTTLS |
		CAP_AUTH_PLAIN | CAP_IDLE);
	assert_string_equal(r.text, "Dovecot ready.");
	assert_int_equal(parse("* BYE too many connections\r\n", true, &r), 0);
	assert_int_equal(r.status, PROTO_BYE);
	assert_int_equal(parse("* PREAUTH welcome\r\n", true, &r), 0);
	assert_int_equal(r.status, PROTO_PREAUTH);
	assert_int_equal(parse("HTTP/1.1 400 Bad\r\n", true, &r),
	    IDLEFETCH_EPROTO);
}

static void
test_select_responses(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* 172 EXISTS\r\n", false, &r), 0);
	assert_true(r.has & HAS_EXISTS);
	assert_int_equal(r.exists, 172);
	assert_int_equal(parse("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_UIDVALIDITY);
	assert_int_equal(r.uidvalidity, 3857529045u);
	assert_int_equal(parse("* OK [UIDNEXT 4392] Predicted next UID\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.uidnext, 4392);
	assert_int_equal(parse("a3 OK [READ-ONLY] EXAMINE completed\r\n", false,
			     &r),
	    0);
	assert_int_equal(r.kind, PROTO_TAGGED);
	assert_string_equal(r.tag, "a3");
	assert_true(r.has & HAS_READONLY);
	assert_int_equal(parse("* 3 EXPUNGE\r\n", false, &r), 0);
	assert_true(r.has & HAS_EXPUNGE);
	assert_int_equal(r.seq, 3);
}

static void
test_fetch_with_streamed_body(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* 12 FETCH (UID 4827 RFC822.SIZE 2048 BODY[] "
			       "{0}\r\n)\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_FETCH);
	assert_true(r.has & HAS_BODY);
	assert_int_equal(r.uid, 4827);
	assert_int_equal(r.size, 2048);
	assert_int_equal(r.seq, 12);
	assert_int_equal(parse("* 1 FETCH (BODY[] {0}\r\n UID 9)\r\n", false,
			     &r),
	    0);
	assert_int_equal(r.uid, 9);
	assert_true(r.has & HAS_BODY);
	assert_int_equal(parse("* 2 FETCH (FLAGS (\\Seen) UID 10)\r\n", false,
			     &r),
	    0);
	assert_false(r.has & HAS_BODY);
	assert_int_equal(r.uid, 10);
}

static void
test_tagged_results(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("a7 NO [AUTHENTICATIONFAILED] Authentication "
			       "failed.\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.status, PROTO_NO);
	assert_string_equal(r.tag, "a7");
	assert_int_equal(parse("a8 BAD Error in IMAP command\r\n", false, &r),
	    0);
	assert_int_equal(r.status, PROTO_BAD);
	assert_int_equal(parse("a2 OK [CAPABILITY IMAP4rev1 IDLE MOVE UIDPLUS] "
			       "Logged in\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.caps,
	    CAP_IMAP4REV1 | CAP_IDLE | CAP_MOVE | CAP_UIDPLUS);
	assert_false(r.has & HAS_BUSY);
}

/* A busy server is told from a refusing one, and its wait is read. */
static void
test_busy_servers(void **state)
{
	struct proto_resp r;

	(void)state;
	assert_int_equal(parse("a3 NO Request is throttled. Suggested Backoff "
			       "Time: 1500 milliseconds\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_BUSY);
	assert_int_equal(r.retry_ms, 1500);
	assert_int_equal(parse("a4 NO [THROTTLED] slow down\r\n", false, &r),
	    0);
	assert_true(r.has & HAS_BUSY);
	assert_int_equal(r.retry_ms, 0);
	assert_int_equal(parse("a5 NO [UNAVAILABLE] try later\r\n", false, &r),
	    0);
	assert_true(r.has & HAS_BUSY);
	assert_int_equal(parse("* BYE [INUSE] mailbox locked\r\n", false, &r),
	    0);
	assert_true(r.has & HAS_BUSY);
	assert_int_equal(parse("* BYE throttled, backoff time: 9999999999 "
			       "seconds\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.retry_ms, 600000);
	assert_int_equal(parse("a6 NO [AUTHENTICATIONFAILED] no\r\n", false,
			     &r),
	    0);
	assert_false(r.has & HAS_BUSY);
	assert_int_equal(parse("* LIST (\\HasNoChildren \\All) \"/\" "
			       "\"[Gmail]/All Mail\"\r\n",
			     false, &r),
	    0);
	assert_true(r.list_flags & LISTF_VIRTUAL);
	assert_string_equal(r.name, "[Gmail]/All Mail");
	assert_int_equal(parse("* LIST (\\HasNoChildren \\Sent) \"/\" "
			       "\"[Gmail]/Sent Mail\"\r\n",
			     false, &r),
	    0);
	assert_false(r.list_flags & LISTF_VIRTUAL);
}

static void
test_malformed_status_lines_keep_tag_and_status(void **state)
{
	struct proto_resp r;

	/* A number past 2^32 is an error, but the command still completes. */
	assert_int_equal(parse("a9 OK [UIDVALIDITY 99999999999999] done\r\n",
			     false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(r.kind, PROTO_TAGGED);
	assert_string_equal(r.tag, "a9");
	assert_int_equal(r.status, PROTO_OK);
	assert_int_equal(parse("a9 OK [unterminated\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(r.status, PROTO_OK);
	assert_int_equal(parse("a9 MAYBE\r\n", false, &r), IDLEFETCH_EPROTO);
	assert_int_equal(r.status, PROTO_NONE);
	assert_int_equal(parse("* BYE [WEIRD-CODE (] shutting down\r\n", false,
			     &r),
	    0);
	assert_int_equal(r.status, PROTO_BYE);
	assert_string_equal(r.text, "shutting down");
	assert_int_equal(parse("* 4294967296 EXISTS\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* OK [UIDVALIDITY 0] zero\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("a1 OK no crlf", false, &r), IDLEFETCH_EPROTO);
}

static void
test_response_codes_that_crash_libetpan_are_read_safely(void **state)
{
	struct proto_resp r;

	/* libetpan 1.9.4 dereferences a bad list on these. */
	assert_int_equal(parse("a9 OK [PERMANENTFLAGS (\\]\r\n", false, &r), 0);
	assert_int_equal(r.status, PROTO_OK);
	/* Debian 12's libetpan 1.9.4-3.1 segfaults on this one (NULL list). */
	assert_int_equal(parse("a1 OK [PERMANENTFLAGS ((]\r\n", false, &r), 0);
	assert_int_equal(r.status, PROTO_OK);
	assert_int_equal(parse("* OK [PERMANENTFLAGS (\\]\r\n", false, &r), 0);
	assert_int_equal(parse("* OK [BADCHARSET (]\r\n", false, &r), 0);
}

static void
test_garbage_fetch_is_an_error_not_a_crash(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* 1 FETCH (UID)\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH (BODY[] {0}\r\n\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH ((((((((\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH (UID 5\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH (UID 0)\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH (BODY[1 {3}\r\nabc)\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* 1 FETCH (X {99}\r\nab)\r\n", false, &r),
	    IDLEFETCH_EPROTO);
}

static void
test_unknown_fetch_items_are_skipped(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* 1 FETCH (X-GM-LABELS (\\Inbox \"a b\") UID 4 "
			       "MODSEQ (12) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
			       "BODY[HEADER.FIELDS (FROM)]<0> {5}\r\nabcde FLAGS (\\Seen $X) "
			       "RFC822.SIZE 77 BODY[] {0}\r\n)\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.uid, 4);
	assert_int_equal(r.size, 77);
	assert_true(r.has & HAS_BODY);
	assert_int_equal(parse("* 1 FETCH (BODY[] NIL UID 3)\r\n", false, &r),
	    0);
	assert_false(r.has & HAS_BODY);
}

static void
test_capability_and_continuation(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("* CAPABILITY IMAP4rev1 LOGINDISABLED STARTTLS\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.caps,
	    CAP_IMAP4REV1 | CAP_LOGINDISABLED | CAP_STARTTLS);
	assert_int_equal(parse("+ idling\r\n", false, &r), 0);
	assert_int_equal(r.kind, PROTO_CONTINUE);
	assert_string_equal(r.text, " idling");
}

static void
test_server_text_is_made_safe_for_logs(void **state)
{
	struct proto_resp r;

	assert_int_equal(parse("a1 NO bad \x1b[31mred\r\n", false, &r), 0);
	assert_null(strchr(r.text, '\x1b'));
}

static void
test_quote(void **state)
{
	char buf[64];

	assert_int_equal(proto_quote(buf, sizeof(buf), "Lists/dev"), 0);
	assert_string_equal(buf, "\"Lists/dev\"");
	assert_int_equal(proto_quote(buf, sizeof(buf), "a\"b\\c"), 0);
	assert_string_equal(buf, "\"a\\\"b\\\\c\"");
	assert_int_equal(proto_quote(buf, sizeof(buf), "a\r\nb"), -EINVAL);
	assert_int_equal(proto_quote(buf, sizeof(buf), "caf\xc3\xa9"), -EINVAL);
	assert_int_equal(proto_quote(buf, 4, "abcdef"), -ENOSPC);
}

static void
test_uid_set(void **state)
{
	static const uint32_t uids[] = { 1, 2, 3, 5, 7, 8, 4294967295u };
	char buf[128];

	assert_int_equal(proto_uid_set(buf, sizeof(buf), uids, 7),
	    (int)strlen("1:3,5,7:8,4294967295"));
	assert_string_equal(buf, "1:3,5,7:8,4294967295");
	assert_int_equal(proto_uid_set(buf, sizeof(buf), uids, 1), 1);
	assert_string_equal(buf, "1");
	assert_int_equal(proto_uid_set(buf, 5, uids, 7), -ENOSPC);
}

static void
test_list_flags(void **state)
{
	struct proto_resp r;

	(void)state;
	assert_int_equal(parse("* LIST (\\Subscribed \\NonExistent) \"/\" "
			       "Work\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_LIST);
	assert_string_equal(r.name, "Work");
	assert_int_equal(r.list_delim, '/');
	assert_int_equal(r.list_flags, LISTF_SUBSCRIBED | LISTF_NONEXISTENT);
	assert_int_equal(parse("* LSUB (\\noselect) \".\" \"INBOX.a b\"\r\n",
			     false, &r),
	    0);
	assert_int_equal(r.list_flags, LISTF_LSUB | LISTF_NOSELECT);
	assert_string_equal(r.name, "INBOX.a b");
	/* No flags, a flag that is a prefix of one we know, a literal name. */
	assert_int_equal(parse("* LIST () NIL {3}\r\nabc\r\n", false, &r),
	    0);
	assert_int_equal(r.list_flags, 0);
	assert_string_equal(r.name, "abc");
	assert_int_equal(parse("* LIST (\\Subscribe) \"/\" x\r\n", false,
			     &r),
	    0);
	assert_int_equal(r.list_flags, 0);
	assert_int_equal(parse("* LIST (\\Subscribed \"/\" x\r\n", false,
			     &r),
	    IDLEFETCH_EPROTO);
}

static void
test_status_responses(void **state)
{
	struct proto_resp r;

	(void)state;
	/* As Dovecot sends it under NOTIFY, for a folder not selected. */
	assert_int_equal(parse("* STATUS Lists (MESSAGES 1 UIDNEXT 2 "
			       "UIDVALIDITY 1795641455 UNSEEN 1)\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_STATUS);
	assert_true(r.has & HAS_STATUS_UIDNEXT);
	assert_false(r.has & HAS_UIDVALIDITY); /* not the selected folder's */
	assert_string_equal(r.name, "Lists");
	assert_int_equal(r.status_uidnext, 2);
	assert_int_equal(r.status_uidvalidity, 1795641455u);
	assert_int_equal(r.status_messages, 1);
	/* Quoted names with escapes, and a reply without UIDNEXT. */
	assert_int_equal(
	    parse("* STATUS \"a \\\"b\\\"\" (MESSAGES 0)\r\n", false, &r), 0);
	assert_string_equal(r.name, "a \"b\"");
	assert_true(r.has & HAS_STATUS);
	assert_false(r.has & HAS_STATUS_UIDNEXT);
	/* Cut off, over-long numbers, junk after the list: errors. */
	assert_int_equal(parse("* STATUS Lists (UIDNEXT 2\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(
	    parse("* STATUS Lists (UIDNEXT 99999999999)\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* STATUS Lists (UIDNEXT 2) x\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* STATUS Lists UIDNEXT 2\r\n", false, &r),
	    IDLEFETCH_EPROTO);
	assert_int_equal(parse("* OK [NOTIFICATIONOVERFLOW] too many\r\n",
			     false, &r),
	    0);
	assert_true(r.has & HAS_OVERFLOW);
	assert_int_equal(parse("* CAPABILITY IMAP4rev1 IDLE NOTIFY\r\n", false,
			     &r),
	    0);
	assert_int_equal(r.caps, CAP_IMAP4REV1 | CAP_IDLE | CAP_NOTIFY);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_with_capabilities),
		cmocka_unit_test(test_select_responses),
		cmocka_unit_test(test_fetch_with_streamed_body),
		cmocka_unit_test(test_tagged_results),
		cmocka_unit_test(test_busy_servers),
		cmocka_unit_test(
		    test_malformed_status_lines_keep_tag_and_status),
		cmocka_unit_test(
		    test_response_codes_that_crash_libetpan_are_read_safely),
		cmocka_unit_test(test_garbage_fetch_is_an_error_not_a_crash),
		cmocka_unit_test(test_unknown_fetch_items_are_skipped),
		cmocka_unit_test(test_capability_and_continuation),
		cmocka_unit_test(test_server_text_is_made_safe_for_logs),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_uid_set),
		cmocka_unit_test(test_status_responses),
		cmocka_unit_test(test_list_flags),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
