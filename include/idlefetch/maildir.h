/*
 * maildir: delivery into a Maildir. A message is written to tmp/ (CRLF
 * turned into LF), and committed by fsync + rename into new/; new/ itself
 * is fsynced once per batch by maildir_sync_new(). Delivered names carry
 * the folder's tag, UIDVALIDITY and UID so a restart can see what a crash
 * left delivered but not yet recorded in the state file.
 *
 * These calls block on the disk: the session runs the commit side on the
 * libuv threadpool.
 */
#ifndef IDLEFETCH_MAILDIR_H
#define IDLEFETCH_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct maildir_file {
	int fd;
	char base[96]; /* unique part, without host */
	uint64_t bytes; /* bytes written, after CRLF -> LF */
	uint32_t uid; /* set by the owner once known */
	unsigned msgno; /* set by the owner: order of arrival */
	bool synced; /* data durable (maildir_sync_files) */
};

/* Batches at least this big are made durable with one syncfs(). */
#define MAILDIR_SYNCFS_MIN 4

/* Buffers writes and carries a CR across chunk boundaries. */
struct maildir_writer {
	size_t len;
	bool cr;
	char buf[32768];
};

/* Tag for an account+folder pair: 8 hex digits in every file name. */
uint32_t maildir_tag(const char *account, const char *folder);
/* Creates dir/{tmp,new,cur} and missing parents (mode 0700). */
int maildir_prepare(const char *dir);
/*
 * The unique part of a delivered file's name:
 * "<sec>.M<usec>P<pid>Q<seq>X<tag>" (the caller appends V<uidvalidity>U<uid>
 * and the host). Exposed for the unit test.
 */
void maildir_base_name(char *buf, size_t len, int64_t sec, long usec,
    long pid, unsigned seq, uint32_t tag);
/* Removes tmp/ files this tag left behind (a crash mid-message). */
int maildir_clean_tmp(const char *dir, uint32_t tag, unsigned *removed);
/*
 * Finds the highest UID already delivered for tag and uidvalidity in new/
 * and cur/ (0 when none).
 */
int maildir_scan(const char *dir, uint32_t tag, uint32_t uidvalidity,
    uint32_t *max_uid);
/*
 * Calls cb with the path, UIDVALIDITY and UID of every file of tag in new/
 * and cur/; a non-zero return from cb stops and is returned.
 */
typedef int maildir_each_cb(void *ud, const char *path, uint32_t uidvalidity,
    uint32_t uid);
int maildir_each(const char *dir, uint32_t tag, maildir_each_cb *cb, void *ud);
/* Opens a new file in tmp/. */
int maildir_create(const char *dir, uint32_t tag, struct maildir_file *f);
/*
 * Converting and writing apart, for a caller that writes elsewhere (the
 * session writes on the threadpool): maildir_convert() appends message
 * bytes to w->buf, CRLF turned into LF, until the buffer is full, and
 * returns how many bytes of p it took; maildir_convert_end() keeps a lone
 * CR held back at the end; maildir_append() writes a buffer at the end of
 * the file.
 */
size_t maildir_convert(struct maildir_writer *w, const char *p, size_t n);
void maildir_convert_end(struct maildir_writer *w);
int maildir_append(struct maildir_file *f, const char *p, size_t n);
/*
 * The loop both ways of writing share: converts p into w, and each time
 * w->buf is full hands it to sink (which copies what it keeps) and starts
 * over. maildir_write() sinks into the file; the session sinks into its
 * lane, which writes on the threadpool. 0, or the sink's error.
 */
typedef int maildir_sink_cb(void *ud, const char *p, size_t n);
int maildir_feed(struct maildir_writer *w, const char *p, size_t n,
    maildir_sink_cb *sink, void *ud);
/* Both at once: appends message bytes, turning CRLF into LF. */
int maildir_write(struct maildir_file *f, struct maildir_writer *w,
    const char *p, size_t n);
/* Writes out what the writer holds; the message is complete. */
int maildir_flush(struct maildir_file *f, struct maildir_writer *w);
/*
 * Makes the data of n files on one filesystem durable at once (for
 * n >= MAILDIR_SYNCFS_MIN; smaller batches are fsynced by maildir_commit).
 */
int maildir_sync_files(struct maildir_file *files, size_t n);
/* fsync (unless synced), close and rename into new/ under the final name. */
int maildir_commit(const char *dir, struct maildir_file *f,
    uint32_t uidvalidity, uint32_t uid);
/* fsync dir/new so the renames are durable. */
int maildir_sync_new(const char *dir);
/*
 * Opens f's tmp/ file again for reading from its start (a delivery target
 * reads it); returns the descriptor or a negative errno.
 */
int maildir_open_tmp(const char *dir, const struct maildir_file *f);
/* Closes and removes an uncommitted file. */
void maildir_discard(const char *dir, struct maildir_file *f);

#endif
