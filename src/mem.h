/* mem.h: the one allocation wrapper every module goes through.
 *
 * All heap memory in dotproxy is taken through these functions so that a
 * test can make the Nth allocation fail (mem_fail_after) and check that the
 * caller turns it into an error or a counted drop instead of a crash. They
 * never abort: a NULL return is the caller's to handle.
 */
#ifndef DOTPROXY_MEM_H
#define DOTPROXY_MEM_H

#include <stddef.h>

/* malloc/calloc/realloc/strdup/free with the failure hook. NULL on failure. */
void *mem_alloc(size_t n);
void *mem_calloc(size_t n, size_t size);
void *mem_realloc(void *p, size_t n);
char *mem_strdup(const char *s);
void mem_free(void *p);

/* Test hook: the (n+1)th allocation from now fails (n = 0: the next one).
 * A negative n turns the hook off, which is the default. */
void mem_fail_after(long n);

/* Test hook: how many allocations the hook has failed so far, so that a
 * test can tell a run in which the failure came from one that ended
 * before reaching it. */
unsigned long mem_failures(void);

#endif
