/*
 * uidlist: one listing of a folder: the UIDs to fetch with their sizes,
 * cut into batches in UID order, and the UIDs delivered before but still
 * on the server (their after-action is due). Bounded: at most
 * UIDLIST_MAX of each; a longer listing is fetched in passes.
 */
#ifndef IDLEFETCH_UIDLIST_H
#define IDLEFETCH_UIDLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One listing holds at most this many UIDs (400 KB with their sizes). It
 * bounds what a server that repeats listing lines can make us allocate,
 * and the sort of one listing to a few milliseconds.
 */
#define UIDLIST_MAX 50000

struct uidlist;

struct uidlist *uidlist_new(void);
void uidlist_free(struct uidlist *l);
/* A new listing starts: nothing to fetch, nothing stale. */
void uidlist_clear(struct uidlist *l);
/* One UID to fetch; a repeated line is dropped, the full list cut. */
void uidlist_add(struct uidlist *l, uint32_t uid, uint32_t size);
/* One delivered UID still on the server. */
void uidlist_add_stale(struct uidlist *l, uint32_t uid);
/* The listing went over UIDLIST_MAX. */
bool uidlist_cut(const struct uidlist *l);
/*
 * The listing is complete: sorts it by UID, drops duplicates and, after a
 * cut, every UID above the lowest one left out (*more: the rest comes in
 * the next pass). Returns -1 when a cut listing leaves nothing to fetch:
 * a server repeating itself.
 */
int uidlist_finish(struct uidlist *l, bool *more);
/* UIDs listed to fetch, and those not yet in a batch. */
size_t uidlist_count(const struct uidlist *l);
size_t uidlist_left(const struct uidlist *l);
/*
 * The next batch: at most max_msgs UIDs whose sizes add up to at most
 * max_bytes (one at least). Returns how many were copied to out.
 */
size_t uidlist_take(struct uidlist *l, size_t max_msgs, uint64_t max_bytes,
    uint32_t *out);
/* The stale UIDs, ascending after uidlist_finish; then forgotten. */
const uint32_t *uidlist_stale(const struct uidlist *l, size_t *n);
void uidlist_stale_done(struct uidlist *l);
/* Frees what a finished listing holds (an idle folder keeps nothing). */
void uidlist_release(struct uidlist *l);

#endif
