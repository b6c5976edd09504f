/* ratelimit.c: per-client token buckets in a fixed, set-associative table.
 *
 * Tokens are kept in thousandths so that a rate of qps a second refills
 * exactly qps thousandths a millisecond: no division, no rounding drift.
 * A bucket holds at most qps tokens (one second's worth), so a client
 * idle for a while gets a burst of qps and then qps a second.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "mem.h"
#include "ratelimit.h"

#define WAYS 4
#define MILLI 1000ULL

struct bucket {
	unsigned char key[16];
	uint64_t last_ms;       /* when it was last refilled */
	uint32_t milli;         /* tokens * 1000; qps <= 4e6 fits */
	uint32_t used;
};

struct ratelimit {
	size_t n_sets;
	uint64_t seed;
	struct bucket b[];
};

static const unsigned char v4_mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

struct ratelimit *
ratelimit_new(size_t n)
{
	struct ratelimit *rl;
	size_t sets = (n + WAYS - 1) / WAYS;

	if (sets == 0)
		sets = 1;
	rl = mem_calloc(1, sizeof(*rl) + sets * WAYS * sizeof(struct bucket));
	if (rl == NULL)
		return NULL;
	rl->n_sets = sets;
	/* A seed the flood cannot guess; without one the table still
	 * works, it only loses its resistance to aimed collisions. */
	if (getrandom(&rl->seed, sizeof(rl->seed), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(rl->seed))
		rl->seed = (uint64_t)(uintptr_t)rl * 0x9e3779b97f4a7c15ULL;
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	mem_free(rl);
}

static uint64_t
load64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* A keyed mix of the two halves (splitmix64's finaliser after each). */
static uint64_t
hash(uint64_t seed, const unsigned char key[16])
{
	uint64_t h = seed, i;

	for (i = 0; i < 2; i++) {
		h ^= load64(key + 8 * i);
		h ^= h >> 30;
		h *= 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 27;
		h *= 0x94d049bb133111ebULL;
		h ^= h >> 31;
	}
	return h;
}

int
ratelimit_allow(struct ratelimit *rl, const unsigned char addr[16],
    unsigned qps, uint64_t now_ms)
{
	unsigned char key[16];
	struct bucket *set, *b = NULL;
	uint64_t burst = (uint64_t)qps * MILLI, t;
	size_t i;

	/* The client: an IPv4 address whole, an IPv6 address's /64. */
	memcpy(key, addr, 16);
	if (memcmp(addr, v4_mapped, 12) != 0)
		memset(key + 8, 0, 8);
	set = rl->b + (hash(rl->seed, key) % rl->n_sets) * WAYS;
	for (i = 0; i < WAYS; i++) {
		if (set[i].used && memcmp(set[i].key, key, 16) == 0) {
			b = &set[i];
			break;
		}
	}
	if (b == NULL) {
		/* An empty slot, else the least recently refilled. */
		b = &set[0];
		for (i = 0; i < WAYS && b->used; i++) {
			if (!set[i].used || set[i].last_ms < b->last_ms)
				b = &set[i];
		}
		memcpy(b->key, key, 16);
		b->used = 1;
		b->last_ms = now_ms;
		b->milli = (uint32_t)(burst - MILLI);
		return 1;
	}
	if (now_ms > b->last_ms) {
		t = now_ms - b->last_ms;
		/* More than a second refills any bucket: no overflow. */
		t = t >= MILLI ? burst : b->milli + t * qps;
		b->milli = (uint32_t)(t < burst ? t : burst);
		b->last_ms = now_ms;
	} else if (b->milli > burst) {
		b->milli = (uint32_t)burst;   /* the limit was lowered */
	}
	if (b->milli < MILLI)
		return 0;
	b->milli -= (uint32_t)MILLI;
	return 1;
}
