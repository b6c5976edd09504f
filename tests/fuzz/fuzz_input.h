/* fuzz_input.h: reading a fuzzer's input as a stream of operands, shared
 * by the fuzz targets that decode a script from their input. Past the end
 * every read gives 0, so any input is a complete script. */
#ifndef DOTPROXY_FUZZ_INPUT_H
#define DOTPROXY_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct input {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t
take8(struct input *in)
{
	uint8_t b;

	if (in->n == 0)
		return 0;
	b = *in->p++;
	in->n--;
	return b;
}

static inline uint16_t
take16(struct input *in)
{
	uint16_t hi = take8(in);

	return (uint16_t)(hi << 8 | take8(in));
}

#endif
