/*
 * lookup: looks for a folder by name with LIST, to tell a missing folder
 * from one the server names otherwise (INBOX.Archive for Archive on
 * Courier and Cyrus). It LISTs the name, and if it is not there (or
 * straight away, when asked to look wide) "*NAME" with each '/' or '.'
 * widened to '*', and names what matched through its completion.
 */
#ifndef IDLEFETCH_LOOKUP_H
#define IDLEFETCH_LOOKUP_H

#include <stdbool.h>

#include "idlefetch/conn.h"

struct lookup;

/*
 * r: LIST's tagged reply (not OK: it failed); found: the server listed
 * the name exactly; guess: a name it has that ends in it, or NULL
 * (borrowed until the next lookup_start).
 */
typedef void lookup_done_cb(void *ud, const struct proto_resp *r,
    bool found, const char *guess);

struct lookup *lookup_new(void);
void lookup_free(struct lookup *lk);
/* name (wire form) is borrowed until done runs; c must be ready. */
void lookup_start(struct lookup *lk, struct conn *c, const char *name,
    bool wide, lookup_done_cb *done, void *ud);

#endif
