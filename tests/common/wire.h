/* wire.h: DNS wire-format readers and writers shared by the test programs (scenario
 * tier, allocation-failure tiers, fuzzers), so that each builds its
 * messages the same way. Header-only: static inline, nothing to link. */
#ifndef DOTPROXY_TEST_WIRE_H
#define DOTPROXY_TEST_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* "Www.Example.COM" -> wire labels as spelled, at p (which must hold
 * strlen(name) + 2 bytes). Returns the length. */
static inline size_t
put_name(uint8_t *p, const char *name)
{
	size_t n = 0, lab;
	const char *dot;

	while (*name != '\0') {
		dot = strchr(name, '.');
		lab = dot ? (size_t)(dot - name) : strlen(name);
		p[n++] = (uint8_t)lab;
		memcpy(p + n, name, lab);
		n += lab;
		name += lab + (dot ? 1 : 0);
	}
	p[n++] = 0;
	return n;
}

#endif
