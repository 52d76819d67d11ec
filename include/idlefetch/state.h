/*
 * state: what has been delivered from one account+folder, kept in a small
 * text file that is replaced atomically (write tmp, fsync, rename, fsync
 * the directory). Blocking: the session calls it from the threadpool.
 */
#ifndef IDLEFETCH_STATE_H
#define IDLEFETCH_STATE_H

#include <stdint.h>

struct state_rec {
	uint32_t uidvalidity; /* 0: never synced */
	uint32_t last_uid; /* every UID <= this is delivered */
};

/* STATE_DIR/ACCOUNT/FOLDER-KEY.state; the caller frees it. */
char *
state_path(const char *state_dir, const char *account, const char *folder);
/* Creates the directory that holds path. */
int state_prepare(const char *path);
/* Returns 0, -ENOENT (no file yet: *st zeroed) or -EINVAL (corrupt). */
int state_load(const char *path, struct state_rec *st);
int state_save(const char *path, const struct state_rec *st);

#endif
