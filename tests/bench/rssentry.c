/* rssentry.c: what one cached answer costs in resident memory.
 *
 * Usage: rssentry [-n ENTRIES] [-s SHARDS]
 *
 * Fills a cache (a 4 GiB bound: nothing is evicted; SHARDS shards, default
 * 1) with ENTRIES (default 1,000,000) distinct answers to
 * "nameNNNNNNN.bench." type A, each as an upstream sends it
 * (tests/bench/benchans.h: one A record, its owner a compression pointer,
 * no OPT: 51 bytes), and reads VmRSS from /proc/self/status before and
 * after. Prints the growth per entry next to the answer's wire size and
 * the target, 1.5 * wire + 64 bytes, and where the growth goes: what
 * malloc has handed out (mallinfo2: in-use chunks, their headers and
 * rounding included, and mmapped blocks, which is where large bucket
 * arrays live), the cache's own accounting (stats.bytes, which counts a
 * fixed estimate for the table), and the rest (partly used pages, the
 * heap's top). The keys and answers are built one at a time on the stack,
 * so the growth is the cache's alone. A measurement, not a test: it exits
 * 0 whether the target is met or not.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchans.h"
#include "cache.h"
#include "dnsmsg.h"

static long
vm_rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f;

	f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static size_t
malloc_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

int
main(int argc, char **argv)
{
	struct dnsmsg_answer_info info;
	struct cache_stats st;
	struct cache_key key;
	struct cache *c;
	uint8_t ans[BENCH_ANS_MAX];
	unsigned long n = 1000000, i;
	unsigned shards = 1;
	size_t len = 0, heap0, heap1;
	long rss0, rss1;
	double per, target;
	int a;

	for (a = 1; a < argc; a++) {
		if (strcmp(argv[a], "-n") == 0 && a + 1 < argc) {
			n = strtoul(argv[++a], NULL, 10);
		} else if (strcmp(argv[a], "-s") == 0 && a + 1 < argc) {
			shards = (unsigned)strtoul(argv[++a], NULL, 10);
		} else {
			fprintf(stderr, "usage: rssentry [-n ENTRIES] "
			    "[-s SHARDS]\n");
			return 2;
		}
	}
	if (n == 0 || n > 10000000) {
		fprintf(stderr, "rssentry: 1 to 10000000 entries\n");
		return 2;
	}
	c = cache_new_shards((size_t)4 << 30, 0, shards);
	if (c == NULL)
		return 1;
	/* The first answer once, outside the measurement: it brings in
	 * what the parsers and the hash seed need. */
	bench_answer(0, &key, ans, &len, &info);
	rss0 = vm_rss_kib();
	heap0 = malloc_in_use();
	for (i = 0; i < n; i++) {
		bench_answer((unsigned)i, &key, ans, &len, &info);
		if (cache_put(c, &key, ans, len, &info, 0) != 0) {
			fprintf(stderr, "rssentry: put %lu failed\n", i);
			return 1;
		}
	}
	rss1 = vm_rss_kib();
	heap1 = malloc_in_use();
	cache_get_stats(c, &st);
	if (rss0 < 0 || rss1 < 0 || st.entries != n) {
		fprintf(stderr, "rssentry: no VmRSS, or %zu entries\n",
		    st.entries);
		return 1;
	}
	per = (double)(rss1 - rss0) * 1024 / (double)n;
	target = 1.5 * (double)len + 64;
	printf("rssentry: %lu entries, %u shard%s; answer %zu bytes on the "
	    "wire, key %zu bytes\n", n, st.shards, st.shards == 1 ? "" : "s",
	    len, key.len);
	printf("  VmRSS %ld kB -> %ld kB: %.1f bytes per entry; target 1.5 * "
	    "%zu + 64 = %.1f: %s\n", rss0, rss1, per, len, target,
	    per <= target ? "met" : "missed");
	printf("  malloc in use: %.1f bytes per entry (chunks with their "
	    "headers, and the bucket arrays)\n",
	    (double)(heap1 - heap0) / (double)n);
	printf("  accounted by the cache (stats.bytes): %.1f bytes per "
	    "entry\n", (double)st.bytes / (double)n);
	cache_free(c);
	return 0;
}
