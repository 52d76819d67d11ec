/*
 * shard: rendezvous hashing of account names over replicas (see
 * idlefetch/shard.h). The hash is defined here bit for bit, so every
 * replica, whatever its architecture or version, computes the same owner.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idlefetch/shard.h"
#include "idlefetch/util.h"

/* splitmix64's finaliser: every input bit moves every output bit. */
static uint64_t
mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* FNV-1a, 64 bits. */
static uint64_t
name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

unsigned
shard_of(const char *account, unsigned count)
{
	uint64_t h = name_hash(account), best = 0;
	unsigned owner = 0;

	for (unsigned j = 0; j < count; j++) {
		uint64_t score = mix(h ^ mix(0x9e3779b97f4a7c15ULL * (j + 1)));

		if (j == 0 || score > best) {
			best = score;
			owner = j;
		}
	}
	return owner;
}

bool
shard_has(const struct shard *s, const char *account)
{
	return s->count == 0 || shard_of(account, s->count) == s->index;
}

/* The trailing "-ORDINAL" of the host name, as a StatefulSet names pods. */
static int
host_ordinal(uint64_t *out, char *host, size_t len)
{
	const char *dash;

	if (gethostname(host, len) != 0)
		return -errno;
	host[len - 1] = '\0';
	dash = strrchr(host, '-');
	if (dash == NULL || dash[1] == '\0')
		return -EINVAL;
	return parse_u64(dash + 1, 0, SHARD_MAX - 1, out);
}

int
shard_parse(const char *spec, struct shard *out, char *err, size_t errlen)
{
	uint64_t i, n;
	char host[256] = "", buf[32];
	const char *slash, *env;

	if (strcmp(spec, "auto") == 0) {
		env = getenv("IDLEFETCH_SHARDS");
		if (env == NULL || parse_u64(env, 1, SHARD_MAX, &n) < 0) {
			snprintf(err, errlen,
			    "shard = auto needs IDLEFETCH_SHARDS, the number "
			    "of replicas (1..%d)%s%s%s",
			    SHARD_MAX, env ? "; it is '" : "", env ? env : "",
			    env ? "'" : "");
			return -EINVAL;
		}
		if (host_ordinal(&i, host, sizeof(host)) < 0) {
			snprintf(err, errlen,
			    "shard = auto takes this replica's number from "
			    "the host name, which must end in -NUMBER (as a "
			    "StatefulSet's pods do); '%s' does not",
			    host);
			return -EINVAL;
		}
		if (i >= n) {
			snprintf(err, errlen,
			    "shard = auto: host %s is replica %llu, but "
			    "IDLEFETCH_SHARDS says there are %llu",
			    host, (unsigned long long)i,
			    (unsigned long long)n);
			return -EINVAL;
		}
	} else {
		slash = strchr(spec, '/');
		if (slash == NULL || (size_t)(slash - spec) >= sizeof(buf))
			goto bad;
		memcpy(buf, spec, (size_t)(slash - spec));
		buf[slash - spec] = '\0';
		if (parse_u64(slash + 1, 1, SHARD_MAX, &n) < 0 ||
		    parse_u64(buf, 0, n - 1, &i) < 0)
			goto bad;
	}
	out->index = (unsigned)i;
	out->count = (unsigned)n;
	return 0;
bad:
	snprintf(err, errlen,
	    "'%s' is not auto or I/N (replica I of N, 0 <= I < N <= %d)", spec,
	    SHARD_MAX);
	return -EINVAL;
}
