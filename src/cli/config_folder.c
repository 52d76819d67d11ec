/*
 * config_folder: the folder keys (folders, exclude, after's move:) of an
 * account. What a folder name may be, and what it becomes on disk, is
 * foldername's: a name that it refuses is refused here, before the first
 * connection.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/config.h"
#include "idlefetch/config_keys.h"
#include "idlefetch/foldername.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/util.h"

/*
 * Maildir++ writes a.b and a/b into one directory, .a.b: two named
 * folders would mix their mail there, and each one's recovery (by the UID
 * and UIDVALIDITY in the file names) would take the other's files for its
 * own. An MDA or LMTP target keeps every folder apart by its state.
 */
int
config_folders_clash(const struct account *a, char *why, size_t len)
{
	char **dirs;
	int r = 0;

	if (a->target.kind != TARGET_MAILDIR || a->nfolders < 2)
		return 0;
	dirs = xcalloc(a->nfolders, sizeof(*dirs));
	for (size_t i = 0; i < a->nfolders; i++)
		dirs[i] = folder_maildir(a->maildir, a->folders[i]);
	for (size_t i = 0; r == 0 && i < a->nfolders; i++)
		for (size_t j = i + 1; r == 0 && j < a->nfolders; j++) {
			/* INBOX is the Maildir itself, no other folder. */
			if (strcasecmp(a->folders[i], "INBOX") == 0 ||
			    strcmp(dirs[i], dirs[j]) != 0)
				continue;
			snprintf(why, len,
			    "folders '%s' and '%s' would both be delivered "
			    "to Maildir folder %s; rename one on the server",
			    a->folders[i], a->folders[j],
			    dirs[i] + strlen(a->maildir) + 1);
			r = -EINVAL;
		}
	for (size_t i = 0; i < a->nfolders; i++)
		free(dirs[i]);
	free(dirs);
	return r;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* A comma-separated list of names, trimmed; empty entries are errors. */
static int
split_list(const char *v, const char *what, char ***out, size_t *n,
    char *why, size_t len)
{
	char *copy = xstrdup(v), *save = NULL, *tok;

	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *f = trim(tok);

		if (*f == '\0') {
			snprintf(why, len, "empty entry in '%s'", v);
			free(copy);
			return -EINVAL;
		}
		*out = xrealloc(*out, (*n + 1) * sizeof(**out));
		(*out)[(*n)++] = xstrdup(f);
	}
	free(copy);
	if (*n == 0) {
		snprintf(why, len, "no %s given", what);
		return -EINVAL;
	}
	return 0;
}

static void
list_print(const char *name, char *const *v, size_t n, FILE *fp)
{
	fprintf(fp, "%s = ", name);
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "%s%s", i ? ", " : "", v[i]);
}

static void
list_free(char ***v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
	*n = 0;
}

/* Why f cannot join a's folders, or 0 when it can. */
static int
folder_addable(const struct account *a, const char *f, char *why, size_t len)
{
	if (!folder_ok(f, why, len))
		return -EINVAL;
	for (size_t i = 0; i < a->nfolders; i++) {
		if (!folder_same(a->folders[i], f))
			continue;
		if (strcmp(a->folders[i], f) == 0)
			snprintf(why, len, "folder '%s' listed twice", f);
		else
			snprintf(why, len,
			    "folder '%s' listed twice (as '%s'; %s)", f,
			    a->folders[i],
			    strcasecmp(f, "INBOX") == 0 ?
				"INBOX is case-insensitive" :
				"the server spells both the same way");
		return -EINVAL;
	}
	return 0;
}

/* folders = names, and '*' for every subscribed folder. */
static int
folders_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct account *a = obj;
	char **names = NULL;
	size_t n = 0;
	int r = split_list(v, "folder", &names, &n, why, len);

	for (size_t j = 0; r == 0 && j < n; j++) {
		const char *f = names[j];

		/* Every subscribed folder, looked up at each connection. */
		if (strcmp(f, "*") == 0) {
			if (a->subscribed) {
				snprintf(why, len, "'*' listed twice");
				r = -EINVAL;
			}
			a->subscribed = true;
			continue;
		}
		r = folder_addable(a, f, why, len);
		if (r < 0)
			break;
		a->folders = xrealloc(a->folders,
		    (a->nfolders + 1) * sizeof(*a->folders));
		a->folders[a->nfolders++] = xstrdup(f);
	}
	list_free(&names, &n);
	return r;
}

static void
folders_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct account *a = obj;

	list_print(k->name, a->folders, a->nfolders, fp);
	fprintf(fp, "%s\n", a->subscribed ? ", *" : "");
	if (a->nexclude > 0) {
		list_print("exclude", a->exclude, a->nexclude, fp);
		fprintf(fp, "\n");
	}
}

static bool
folders_equal(const struct config_key *k, const void *x, const void *y)
{
	const struct account *a = x, *b = y;

	return a->subscribed == b->subscribed &&
	    strv_equal((const char *const *)a->folders, a->nfolders,
		(const char *const *)b->folders, b->nfolders) &&
	    strv_equal((const char *const *)a->exclude, a->nexclude,
		(const char *const *)b->exclude, b->nexclude);
}

static void
folders_free(const struct config_key *k, void *obj)
{
	struct account *a = obj;

	list_free(&a->folders, &a->nfolders);
	list_free(&a->exclude, &a->nexclude);
}

const struct config_key_type config_type_folders = {
	folders_set, folders_print, folders_equal, folders_free };

/*
 * exclude = patterns of subscribed folders not to fetch: '*' stands for
 * any run of characters; no other character is special.
 */
static int
exclude_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct account *a = obj;
	int r = split_list(v, "pattern", &a->exclude, &a->nexclude, why, len);

	for (size_t i = 0; r == 0 && i < a->nexclude; i++)
		if (!utf8_valid(a->exclude[i])) {
			snprintf(why, len, "'%s' is not UTF-8", a->exclude[i]);
			r = -EINVAL;
		}
	return r;
}

/* folders prints, compares and frees the exclude list with its own. */
const struct config_key_type config_type_exclude = { exclude_set, NULL, NULL,
	NULL };

/* after = keep | delete | move:FOLDER */
static int
after_set(const struct config_key *k, void *obj, const char *v, char *why,
    size_t len)
{
	struct account *a = obj;

	if (strcmp(v, "keep") == 0) {
		a->after = AFTER_KEEP;
	} else if (strcmp(v, "delete") == 0) {
		a->after = AFTER_DELETE;
	} else if (strncmp(v, "move:", 5) == 0 && folder_valid(v + 5)) {
		a->after = AFTER_MOVE;
		free(a->move_to);
		a->move_to = xstrdup(v + 5);
	} else {
		snprintf(why, len, "'%s' is not one of keep, delete, "
		    "move:FOLDER", v);
		return -EINVAL;
	}
	return 0;
}

static void
after_print(const struct config_key *k, const void *obj, FILE *fp)
{
	const struct account *a = obj;

	if (a->after == AFTER_MOVE)
		fprintf(fp, "%s = move:%s\n", k->name, a->move_to);
	else
		fprintf(fp, "%s = %s\n", k->name,
		    a->after == AFTER_KEEP ? "keep" : "delete");
}

static bool
after_equal(const struct config_key *k, const void *x, const void *y)
{
	const struct account *a = x, *b = y;

	return a->after == b->after &&
	    (a->after != AFTER_MOVE || strcmp(a->move_to, b->move_to) == 0);
}

static void
after_free(const struct config_key *k, void *obj)
{
	struct account *a = obj;

	free(a->move_to);
	a->move_to = NULL;
}

const struct config_key_type config_type_after = {
	after_set, after_print, after_equal, after_free };
