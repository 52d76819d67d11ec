/*
 * Unit tests for shard: rendezvous hashing of account names over
 * replicas, and reading "I/N" and "auto".
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idlefetch/shard.h"

#define NAMES 10000

static const char *
name(unsigned i)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "user%u@example.org", i);
	return buf;
}

/*
 * Fixed owners: every replica, on any architecture (the suite runs on
 * armhf too) and in any later version, must agree on them, or two
 * replicas would fetch one account or none would.
 */
static void
test_owners_are_fixed(void **state)
{
	static const struct {
		const char *name;
		unsigned count, owner;
	} golden[] = {
		{ "alice", 2, 1 },
		{ "alice", 3, 2 },
		{ "alice", 5, 3 },
		{ "alice", 16, 10 },
		{ "alice", 100, 10 },
		{ "bob", 2, 0 },
		{ "bob", 3, 0 },
		{ "bob", 5, 4 },
		{ "bob", 16, 11 },
		{ "bob", 100, 75 },
		{ "carol", 2, 1 },
		{ "carol", 3, 1 },
		{ "carol", 5, 1 },
		{ "carol", 16, 1 },
		{ "carol", 100, 26 },
		{ "work", 2, 1 },
		{ "work", 3, 1 },
		{ "work", 5, 3 },
		{ "work", 16, 3 },
		{ "work", 100, 3 },
		{ "user1@example.org", 2, 1 },
		{ "user1@example.org", 3, 2 },
		{ "user1@example.org", 5, 2 },
		{ "user1@example.org", 16, 2 },
		{ "user1@example.org", 100, 93 },
		{ "shop-support", 2, 1 },
		{ "shop-support", 3, 2 },
		{ "shop-support", 5, 2 },
		{ "shop-support", 16, 9 },
		{ "shop-support", 100, 98 },
		{ "\xc3\x9cn\xc3\xaf" "code", 2, 1 },
		{ "\xc3\x9cn\xc3\xaf" "code", 3, 1 },
		{ "\xc3\x9cn\xc3\xaf" "code", 5, 1 },
		{ "\xc3\x9cn\xc3\xaf" "code", 16, 1 },
		{ "\xc3\x9cn\xc3\xaf" "code", 100, 89 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(golden) / sizeof(*golden); i++)
		assert_int_equal(shard_of(golden[i].name, golden[i].count),
		    golden[i].owner);
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(shard_of(name(i), 1), 0);
}

static void
test_accounts_spread_evenly(void **state)
{
	unsigned per[7] = { 0 };

	(void)state;
	for (unsigned i = 0; i < NAMES; i++)
		per[shard_of(name(i), 7)]++;
	/* 1,428 each on average; within 10 %. */
	for (unsigned j = 0; j < 7; j++) {
		if (per[j] < NAMES / 7 * 9 / 10 || per[j] > NAMES / 7 * 11 / 10)
			fail_msg("replica %u of 7 has %u of %u", j, per[j],
			    NAMES);
	}
}

static void
test_adding_a_replica_moves_only_its_share(void **state)
{
	(void)state;
	for (unsigned n = 1; n < 8; n++) {
		unsigned moved = 0;

		for (unsigned i = 0; i < NAMES; i++) {
			unsigned was = shard_of(name(i), n),
				 now = shard_of(name(i), n + 1);

			if (was == now)
				continue;
			/* Only to the new replica, never between old ones. */
			assert_int_equal(now, n);
			moved++;
		}
		/* About 1/(n+1) of them. */
		if (moved < NAMES / (n + 1) * 9 / 10 ||
		    moved > NAMES / (n + 1) * 11 / 10)
			fail_msg("%u -> %u replicas moved %u of %u", n, n + 1,
			    moved, NAMES);
	}
}

static void
test_specs(void **state)
{
	struct shard s;
	char err[300];

	(void)state;
	assert_int_equal(shard_parse("2/5", &s, err, sizeof(err)), 0);
	assert_int_equal(s.index, 2);
	assert_int_equal(s.count, 5);
	assert_int_equal(shard_parse("0/1", &s, err, sizeof(err)), 0);
	assert_true(shard_has(&s, "anyone"));
	static const char *bad[] = { "5/5", "1/0", "-1/3", "1/", "/3", "1",
		"a/b", "1/3x", "1/99999", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		if (shard_parse(bad[i], &s, err, sizeof(err)) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_non_null(strstr(err, "is not auto or I/N"));
	}
	unsetenv("IDLEFETCH_SHARDS");
	assert_int_equal(shard_parse("auto", &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "needs IDLEFETCH_SHARDS"));
	setenv("IDLEFETCH_SHARDS", "zero", 1);
	assert_int_equal(shard_parse("auto", &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "it is 'zero'"));
	unsetenv("IDLEFETCH_SHARDS");
	/* Without sharding every account is taken. */
	s = (struct shard){ 0 };
	assert_true(shard_has(&s, "anyone"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owners_are_fixed),
		cmocka_unit_test(test_accounts_spread_evenly),
		cmocka_unit_test(test_adding_a_replica_moves_only_its_share),
		cmocka_unit_test(test_specs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
