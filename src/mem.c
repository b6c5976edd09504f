/* mem.c: allocation wrapper with a failure-injection hook for tests.
 *
 * The countdown (and the count of failures it caused) is the only mutable
 * state here; it is off (-1) unless a test sets it, so the production path
 * is one compare per allocation.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static long fail_countdown = -1;
static unsigned long failures;

static int
should_fail(void)
{
	if (fail_countdown < 0)
		return 0;
	if (fail_countdown == 0) {
		fail_countdown = -1;
		failures++;
		return 1;
	}
	fail_countdown--;
	return 0;
}

void *
mem_alloc(size_t n)
{
	if (should_fail())
		return NULL;
	return malloc(n ? n : 1);
}

void *
mem_calloc(size_t n, size_t size)
{
	if (should_fail())
		return NULL;
	return calloc(n ? n : 1, size ? size : 1);
}

void *
mem_realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return realloc(p, n ? n : 1);
}

char *
mem_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = mem_alloc(n);

	if (d != NULL)
		memcpy(d, s, n);
	return d;
}

void
mem_free(void *p)
{
	free(p);
}

void
mem_fail_after(long n)
{
	fail_countdown = n;
}

unsigned long
mem_failures(void)
{
	return failures;
}
