/*
 * config_keys: the table of configuration keys, one row per key: its
 * section, name, environment variable, type, default, range or choices and
 * a line that says what it is. Reading a file (config.c), importing the
 * environment, filling in defaults, --check-config's output and the
 * comparison of two accounts on reload all go through it, and
 * test/integration/test_docs.py checks the man page and README against it.
 */
#ifndef IDLEFETCH_CONFIG_KEYS_H
#define IDLEFETCH_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "idlefetch/config.h"

/* Where a key is written: [global], or each [account NAME]. */
enum config_section { CONFIG_GLOBAL, CONFIG_ACCOUNT };

/* What the reader of a file must know of a key besides its value. */
enum {
	/* An empty value is a value (password =); else it is an error. */
	CONFIG_KEY_EMPTY_OK = 1 << 0,
	/* Kept as written: a shell expands its ${NAME}s, as data. */
	CONFIG_KEY_SHELL = 1 << 1,
	/* A password: a file that holds one must not be readable by others. */
	CONFIG_KEY_SECRET = 1 << 2,
	/* Where the password comes from: its errors name this key's line. */
	CONFIG_KEY_SECRET_SOURCE = 1 << 3,
	/* Each [account NAME] must have it. */
	CONFIG_KEY_REQUIRED = 1 << 4,
	/* --check-config leaves it out while it has its default. */
	CONFIG_KEY_QUIET_DEFAULT = 1 << 5,
};

/* A value the key can take, and what it stands for. */
struct config_choice {
	const char *name;
	int value;
};

struct config_key;

/* How a value of a key is read, printed, compared and freed. */
struct config_key_type {
	/* 0, or -EINVAL with the reason in why. */
	int (*set)(const struct config_key *k, void *obj, const char *v,
	    char *why, size_t len);
	/* NULL: never printed; else prints nothing when it has no value. */
	void (*print)(const struct config_key *k, const void *obj, FILE *fp);
	/* NULL: not a setting of its own (compared through another key). */
	bool (*equal)(const struct config_key *k, const void *a, const void *b);
	void (*free)(const struct config_key *k, void *obj); /* or NULL */
};

/* The types of folders, exclude and after (config_folder.c). */
extern const struct config_key_type config_type_folders;
extern const struct config_key_type config_type_exclude;
extern const struct config_key_type config_type_after;

struct config_key {
	enum config_section section;
	const char *name;
	const char *env; /* the IDLEFETCH_* variable that sets it */
	const struct config_key_type *type;
	size_t off; /* of its field in struct config or struct account */
	const char *def; /* default, as it would be written; NULL: none */
	unsigned min, max; /* a number's range */
	const struct config_choice *choices; /* ends with a NULL name */
	/* A further test of a value, the reason in why: 0 or -EINVAL. */
	int (*check)(const char *v, char *why, size_t len);
	unsigned flags; /* CONFIG_KEY_* */
	const char *doc; /* what it is, in one line */
};

/* The reader keeps one bit per key to refuse a key given twice. */
#define CONFIG_KEYS_MAX 64

extern const struct config_key config_keys[];
extern const size_t config_nkeys;

/* The key of that name in that section, or NULL. */
const struct config_key *
config_key_find(enum config_section s, const char *name);
/* Its index in config_keys[]. */
size_t config_key_index(const struct config_key *k);

/*
 * Reads v into obj, a struct config for a [global] key and a struct
 * account for an [account] key. 0, or -EINVAL with the reason in why.
 */
int config_key_set(const struct config_key *k, void *obj, const char *v,
    char *why, size_t len);
/* Gives obj (as config_key_set) every default of the section's keys. */
void config_keys_defaults(enum config_section s, void *obj);
/* Prints "key = value" lines of the section's keys that have a value. */
void config_keys_print(enum config_section s, const void *obj, FILE *fp);
/* Whether a and b hold the same values for every key of the section. */
bool config_keys_equal(enum config_section s, const void *a, const void *b);
/* Frees what the section's keys hold in obj. */
void config_keys_free(enum config_section s, void *obj);

#endif
