/*
 * config: the INI configuration (or the IDLEFETCH_* environment), fully
 * validated. Every error names the file (or variable), the line and the key.
 */
#ifndef IDLEFETCH_CONFIG_H
#define IDLEFETCH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "idlefetch/log.h"
#include "idlefetch/shard.h"
#include "idlefetch/target.h"

enum tls_mode { TLS_MODE_IMPLICIT, TLS_MODE_STARTTLS, TLS_MODE_NONE };
enum after_mode { AFTER_KEEP, AFTER_DELETE, AFTER_MOVE };

#define CONFIG_DEFAULT_PATH "/etc/idlefetch/idlefetch.conf"
#define CONFIG_DEFAULT_STATE "/var/lib/idlefetch"

/* How an account logs in. */
enum auth_mode {
	AUTH_PASSWORD, /* AUTHENTICATE PLAIN, else LOGIN */
	AUTH_XOAUTH2, /* Google's and Microsoft's SASL XOAUTH2 */
	AUTH_OAUTHBEARER /* RFC 7628 */
};

struct account {
	char *name;
	char *host;
	unsigned port;
	enum tls_mode tls;
	char *username;
	char *password; /* secret: wiped on free, never printed */
	char *password_file; /* where the password comes from, or NULL */
	char *password_command; /* the command printing it, or NULL */
	char *secret_src; /* file (or variable) and line of the two above */
	unsigned secret_line;
	char *ca_file; /* NULL: the system trust store */
	char **folders; /* named ones, INBOX first when it is implied */
	size_t nfolders;
	/* folders = *: every subscribed folder too, but those matching exclude */
	bool subscribed;
	char **exclude;
	size_t nexclude;
	char *maildir; /* NULL unless target.kind is TARGET_MAILDIR */
	struct target target; /* deliver =, lmtp_recipient = */
	enum after_mode after;
	char *move_to; /* AFTER_MOVE only */
	int idle; /* 1: IDLE when offered, 0: always poll */
	unsigned poll_interval; /* seconds */
	/* seconds: STATUS rounds of an IDLE connection without NOTIFY */
	unsigned status_interval;
	unsigned idle_refresh; /* seconds */
	/*
	 * Without NOTIFY: connections per account at most; the first folders
	 * IDLE on one each, the last polls the rest with STATUS.
	 */
	unsigned max_connections;
	unsigned timeout; /* seconds to wait for any answer */
	bool read_only; /* EXAMINE instead of SELECT (after = keep only) */
	enum auth_mode auth;
	char *oauth_token_command; /* AUTH_XOAUTH2, AUTH_OAUTHBEARER */
	/* Run after deliveries (hook.h); [global]'s unless given; "": none */
	char *on_delivery;
	/* tls_fingerprint: the SHA-256 of the certificate or its public key */
	bool pinned;
	unsigned char pin[32];
};

struct config {
	char *source; /* file path, or "environment" */
	char *state_dir;
	char *user; /* drop to this user when started as root; NULL: none */
	char *group; /* with this primary group; NULL: the user's */
	unsigned command_timeout; /* seconds a password_command may take */
	bool debug_stall_signal; /* SIGUSR2 blocks the loop (watchdog tests) */
	char *on_delivery; /* the accounts' default on_delivery, or NULL */
	struct shard shard; /* which accounts this replica fetches */
	char *metrics; /* ADDRESS:PORT of /metrics; NULL: off (metrics.h) */
	bool metrics_folders; /* per-folder series too */
	enum log_target log;
	struct account *accounts;
	size_t naccounts;
};

/*
 * Loads and validates path, then reads the secrets of the accounts its
 * shard takes, as the calling user (config_read_secrets). On error returns
 * a negative errno and writes "FILE:LINE: key 'K': problem" into err. On
 * success *out is owned by the caller (config_free).
 */
int config_load_file(const char *path, struct config **out, char *err,
    size_t errlen);
/* Builds a one-account config from IDLEFETCH_* variables (see README). */
int config_load_env(struct config **out, char *err, size_t errlen);
/*
 * The same two without reading password_file or running
 * password_command: a daemon started as root parses, drops its
 * privileges, then reads the secrets as the user it became; so does
 * --check-config.
 */
int config_parse_file(const char *path, struct config **out, char *err,
    size_t errlen);
int config_parse_env(struct config **out, char *err, size_t errlen);
/*
 * Whether this process fetches a: only is --account (NULL: every
 * account), and cfg's shard must take it. The daemon, --check-config and
 * privdrop ask this one question: an account another replica fetches has
 * its secrets and its Maildir where that replica runs, maybe nowhere here.
 */
bool config_wanted(const struct config *cfg, const struct account *a,
    const char *only);
/*
 * Reads the password_file and runs the password_command of every wanted
 * account (config_wanted) that has no password yet, and waits for them:
 * the commands as the daemon runs them (config_secrets_new), on an event
 * loop of their own; a SIGINT, SIGTERM or SIGHUP meanwhile kills them. Run
 * it as the user the daemon runs as (privdrop.h). The error names the
 * file, line and key, and what a failed command wrote on stderr first.
 */
int config_read_secrets(struct config *cfg, const char *only, char *err,
    size_t errlen);
/* Only the password_file ones of those, at once (the first step of both). */
int config_read_secret_files(struct config *cfg, const char *only, char *err,
    size_t errlen);
/*
 * What the end of a's password_command means (spawn.h's status and out):
 * 0 with a->password set from out, or -EIO with the reason (the time
 * limit, the exit status...) in err, naming the file, the line and the
 * key.
 */
int config_secret_result(const struct config *cfg, struct account *a,
    int status, const char *out, char *err, size_t errlen);

/*
 * The secrets of a configuration read on the caller's loop: the one way
 * the daemon (at start and on SIGHUP) and config_read_secrets() read
 * them. The password_files first, at once; then the password_commands
 * through spawn.h (stdin on /dev/null, a process group of their own,
 * killed after command_timeout), at most CONFIG_SECRETS_AT_ONCE at a time,
 * so that hundreds of accounts never need hundreds of pipes. The first
 * failure is the one reported, and no further command starts after it.
 */
#define CONFIG_SECRETS_AT_ONCE 16
struct config_secrets;
struct uv_loop_s;
struct config_secrets_ops {
	/* A command wrote line (its first on stderr); may be NULL. */
	void (*said)(void *ud, const struct account *a, int status,
	    const char *line);
	/*
	 * The end, exactly once: 0, or a negative errno with the error in
	 * err (file, line, key; what the command said). The batch frees
	 * itself when this returns.
	 */
	void (*done)(void *ud, int r, const char *err);
};
/*
 * A batch for cfg's wanted accounts (config_wanted with only); nothing
 * runs before config_secrets_run. The caller keeps cfg, only and ops, and
 * keeps them until done.
 */
struct config_secrets *config_secrets_new(struct uv_loop_s *loop,
    struct config *cfg, const char *only,
    const struct config_secrets_ops *ops, void *ud);
/* Starts it; done may run from within this call (nothing to wait for). */
void config_secrets_run(struct config_secrets *b);
/*
 * Kills the commands running and starts no other; done still runs, from
 * the loop, with the first of them ("command stopped").
 */
void config_secrets_cancel(struct config_secrets *b);
void config_free(struct config *cfg);
/*
 * Whether two accounts fetch the same way: every setting equal, the
 * password included (a reload re-reads password_file / password_command).
 */
int config_account_equal(const struct account *a, const struct account *b);
/* Prints the effective configuration with the password masked. */
void config_print(const struct config *cfg, FILE *fp);

/*
 * Whether two of a's named folders other than INBOX would be delivered to
 * one Maildir++ folder (a.b and a/b are both ".a.b"): -EINVAL with both
 * names and the folder in why, else 0. Only a Maildir target can clash.
 */
int config_folders_clash(const struct account *a, char *why, size_t len);

#endif
