/*
 * shard: which accounts one replica of several fetches. Replica I of N
 * takes the accounts whose name rendezvous hashing gives to I, so going
 * from N to N+1 replicas moves about 1/(N+1) of the accounts, all to the
 * new replica, and no coordinator is needed: the account lock keeps two
 * replicas off one account while they move.
 */
#ifndef IDLEFETCH_SHARD_H
#define IDLEFETCH_SHARD_H

#include <stdbool.h>
#include <stddef.h>

struct shard {
	unsigned index; /* this replica, 0-based */
	unsigned count; /* replicas; 0: no sharding, every account */
};

/* The most replicas accepted: enough for any single mail service. */
#define SHARD_MAX 4096

/*
 * Reads "I/N" (0 <= I < N <= SHARD_MAX) or "auto": I from the host name's
 * trailing "-ORDINAL" (a StatefulSet's pod name, "idlefetch-2"), N from
 * $IDLEFETCH_SHARDS. 0, or -EINVAL with the reason in err.
 */
int shard_parse(const char *spec, struct shard *out, char *err,
    size_t errlen);

/* The replica, of count, that takes account. */
unsigned shard_of(const char *account, unsigned count);

/* Whether this replica takes account (always without sharding). */
bool shard_has(const struct shard *s, const char *account);

#endif
