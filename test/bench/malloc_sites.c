/*
 * malloc_sites.so: which call sites hold the heap of a running process.
 *
 * An LD_PRELOAD shim for benchmarks, not part of idlefetch. It wraps
 * malloc, calloc, realloc, free and the aligned allocators, remembers each
 * live block's size and the call stack that took it, and writes the live
 * bytes per stack to $MALLOC_SITES_OUT (default /tmp/malloc_sites.txt)
 * when the file named by $MALLOC_SITES_TRIGGER appears (polled once a
 * second by a thread of its own), then removes the trigger. With it,
 * /proc/self/maps is copied beside the dump so that malloc_sites.py can
 * name the frames with addr2line. Its first line is mallinfo2(): the
 * heap's size, what is in use and what is free (holes between live blocks).
 * With $MALLOC_SITES_ALL set, each stack's line counts every block it ever
 * took (bytes and blocks since start, freed or not) instead: where the
 * short-lived allocations that leave holes in the heap come from.
 *
 *     cc -O2 -shared -fPIC -o malloc_sites.so malloc_sites.c -ldl -lpthread
 *
 * The table of live blocks is a fixed open-addressing hash in its own
 * mapping (not on the heap it measures); blocks taken while the shim is
 * itself inside backtrace() are not counted, and frees of blocks it does
 * not know pass straight through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEPTH 8
#define NBLOCKS (1u << 23)
#define NSITES (1u << 16)

struct site {
	void *pc[DEPTH];
	int n;
	size_t bytes;
	size_t count;
	size_t all_bytes; /* since start, freed or not */
	size_t all_count;
	uint64_t hash;
};

struct block {
	void *p;		/* NULL empty, (void *)1 deleted */
	size_t size;
	uint32_t site;
};

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static struct block *blocks;
static struct site *sites;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy;
static int ready;

/* dlsym() may call calloc before real_calloc is known: serve it here. */
static char boot[4096];
static size_t boot_used;

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uint32_t
site_of(void)
{
	void *pc[DEPTH + 2];
	int n, i;
	uint64_t h = 0;

	busy = 1;
	n = backtrace(pc, DEPTH + 2);
	busy = 0;
	/* Frames 0 and 1 are this shim. */
	n -= 2;
	if (n < 0)
		n = 0;
	for (i = 0; i < n; i++)
		h = mix(h ^ (uintptr_t)pc[i + 2]);
	for (uint32_t k = 0; k < NSITES; k++) {
		uint32_t s = (uint32_t)((h + k) % (NSITES - 1)) + 1;
		if (sites[s].n == 0 && sites[s].hash == 0) {
			sites[s].hash = h | 1;
			sites[s].n = n ? n : -1;
			memcpy(sites[s].pc, pc + 2, sizeof(void *) * (size_t)n);
			return s;
		}
		if (sites[s].hash == (h | 1))
			return s;
	}
	return 0;
}

static void
track(void *p, size_t size)
{
	uint32_t s;
	uint64_t i;

	if (!p || !ready || busy)
		return;
	pthread_mutex_lock(&lock);
	s = site_of();
	sites[s].bytes += size;
	sites[s].count++;
	sites[s].all_bytes += size;
	sites[s].all_count++;
	for (i = mix((uintptr_t)p) % NBLOCKS;; i = (i + 1) % NBLOCKS) {
		if (blocks[i].p == NULL || blocks[i].p == (void *)1) {
			blocks[i].p = p;
			blocks[i].size = size;
			blocks[i].site = s;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

static void
untrack(void *p)
{
	uint64_t i;

	if (!p || !ready)
		return;
	pthread_mutex_lock(&lock);
	for (i = mix((uintptr_t)p) % NBLOCKS; blocks[i].p;
	    i = (i + 1) % NBLOCKS) {
		if (blocks[i].p == p) {
			sites[blocks[i].site].bytes -= blocks[i].size;
			sites[blocks[i].site].count--;
			blocks[i].p = (void *)1;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

static void
dump(const char *out)
{
	FILE *f = fopen(out, "w");
	int all = getenv("MALLOC_SITES_ALL") != NULL;
	char path[4096];
	int in, o;
	ssize_t n;

	if (!f)
		return;
	/* malloc's own view: what the heap holds, in use and free. */
	struct mallinfo2 mi = mallinfo2();
	fprintf(f, "# arena %zu inuse %zu free %zu mmapped %zu\n", mi.arena,
	    mi.uordblks, mi.fordblks, mi.hblkhd);
	pthread_mutex_lock(&lock);
	for (uint32_t s = 1; s < NSITES; s++) {
		size_t b = all ? sites[s].all_bytes : sites[s].bytes;
		size_t c = all ? sites[s].all_count : sites[s].count;

		if (!c)
			continue;
		fprintf(f, "%zu %zu", b, c);
		for (int i = 0; i < sites[s].n; i++)
			fprintf(f, " %p", sites[s].pc[i]);
		fputc('\n', f);
	}
	pthread_mutex_unlock(&lock);
	fclose(f);
	snprintf(path, sizeof(path), "%s.maps", out);
	in = open("/proc/self/maps", O_RDONLY);
	o = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	while (in >= 0 && o >= 0 && (n = read(in, path, sizeof(path))) > 0)
		if (write(o, path, (size_t)n) != n)
			break;
	if (in >= 0)
		close(in);
	if (o >= 0)
		close(o);
}

static void *
watcher(void *arg)
{
	const char *trig = getenv("MALLOC_SITES_TRIGGER");
	const char *out = getenv("MALLOC_SITES_OUT");

	(void)arg;
	if (!out)
		out = "/tmp/malloc_sites.txt";
	for (;;) {
		sleep(1);
		if (trig && access(trig, F_OK) == 0) {
			busy = 1;
			dump(out);
			unlink(trig);
			busy = 0;
		}
	}
	return NULL;
}

__attribute__((constructor)) static void
init(void)
{
	pthread_t t;
	void *warm[2];

	real_malloc = dlsym(RTLD_NEXT, "malloc");
	real_calloc = dlsym(RTLD_NEXT, "calloc");
	real_realloc = dlsym(RTLD_NEXT, "realloc");
	real_free = dlsym(RTLD_NEXT, "free");
	real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
	real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
	real_memalign = dlsym(RTLD_NEXT, "memalign");
	blocks = mmap(NULL, sizeof(*blocks) * NBLOCKS, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	sites = mmap(NULL, sizeof(*sites) * NSITES, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	busy = 1;
	backtrace(warm, 2);	/* loads the unwinder before we count */
	busy = 0;
	ready = 1;
	busy = 1;
	pthread_create(&t, NULL, watcher, NULL);
	pthread_detach(t);
	busy = 0;
}

void *
malloc(size_t n)
{
	void *p;

	if (!real_malloc)
		init();
	p = real_malloc(n);
	track(p, n);
	return p;
}

void *
calloc(size_t a, size_t b)
{
	void *p;

	if (!real_calloc) {
		/* Only dlsym() itself gets here, before init has the symbol. */
		size_t n = (a * b + 15) & ~(size_t)15;
		p = boot + boot_used;
		boot_used += n;
		return p;
	}
	p = real_calloc(a, b);
	track(p, a * b);
	return p;
}

void *
realloc(void *old, size_t n)
{
	void *p;

	if (!real_realloc)
		init();
	untrack(old);
	p = real_realloc(old, n);
	track(p, n);
	return p;
}

void
free(void *p)
{
	if ((char *)p >= boot && (char *)p < boot + sizeof(boot))
		return;
	untrack(p);
	real_free(p);
}

int
posix_memalign(void **pp, size_t al, size_t n)
{
	int r = real_posix_memalign(pp, al, n);

	if (r == 0)
		track(*pp, n);
	return r;
}

void *
aligned_alloc(size_t al, size_t n)
{
	void *p = real_aligned_alloc(al, n);

	track(p, n);
	return p;
}

void *
memalign(size_t al, size_t n)
{
	void *p = real_memalign(al, n);

	track(p, n);
	return p;
}
