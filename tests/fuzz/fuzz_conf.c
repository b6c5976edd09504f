/* fuzz_conf.c: libFuzzer target for the config parser (src/conf.c).
 *
 * The input is a config file: it is written to a temporary file and read
 * with conf_load_file, the path every config takes. A file that loads
 * and finishes is printed with conf_print (the -n output), and that
 * printout must load and finish again and print the same text byte for
 * byte: conf.h promises that conf_print writes what conf_load_file reads
 * back to the same value. The first line of the input is also given to
 * conf_parse_addr and conf_parse_upstream, as the command line's -l and
 * -u do. Errors must be "where: message", non-empty and NUL-terminated.
 * Checks crash with __builtin_trap().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path_in[64], path_out[64];

static void
write_file(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
}

/* c printed into a malloc'd string of *len bytes. */
static char *
print_conf(const struct conf *c, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (f == NULL)
		abort();
	conf_print(c, f);
	if (fclose(f) != 0)
		abort();
	return buf;
}

static void
check_err(const char *err, size_t cap, const char *prefix)
{
	size_t n = strnlen(err, cap);

	if (n == 0 || n == cap ||
	    (prefix != NULL && strncmp(err, prefix, strlen(prefix)) != 0))
		__builtin_trap();
}

static void
init_paths(void)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	if (dir == NULL || dir[0] == '\0' || strlen(dir) > 30)
		dir = "/tmp";
	snprintf(path_in, sizeof(path_in), "%s/fuzzconfXXXXXX", dir);
	snprintf(path_out, sizeof(path_out), "%s/fuzzconfXXXXXX", dir);
	fd = mkstemp(path_in);
	if (fd < 0)
		abort();
	close(fd);
	fd = mkstemp(path_out);
	if (fd < 0)
		abort();
	close(fd);
}

static void
remove_paths(void)
{
	unlink(path_in);
	unlink(path_out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct conf *c1, *c2;
	struct conf_upstream u;
	struct conf_addr a;
	char err[CONF_ERR_MAX], line[512];
	char *out1 = NULL, *out2 = NULL;
	size_t len1 = 0, len2 = 0, n;

	if (!init) {
		log_open(LOGL_ERR, 1);
		init_paths();
		atexit(remove_paths);
		init = 1;
	}
	if (size > 65536)
		return 0;

	/* The first line, as the command line would give it. */
	for (n = 0; n < size && n < sizeof(line) - 1 && data[n] != '\n' &&
	    data[n] != '\0'; n++)
		line[n] = (char)data[n];
	line[n] = '\0';
	err[0] = '\0';
	if (conf_parse_addr(line, 53, &a, err, sizeof(err)) != 0)
		check_err(err, sizeof(err), NULL);
	err[0] = '\0';
	if (conf_parse_upstream(line, &u, err, sizeof(err)) != 0)
		check_err(err, sizeof(err), NULL);

	c1 = malloc(sizeof(*c1));
	c2 = malloc(sizeof(*c2));
	if (c1 == NULL || c2 == NULL)
		abort();
	write_file(path_in, data, size);
	conf_init(c1);
	err[0] = '\0';
	if (conf_load_file(c1, path_in, err, sizeof(err)) != 0) {
		check_err(err, sizeof(err), path_in);
		goto out;
	}
	err[0] = '\0';
	if (conf_finish(c1, err, sizeof(err)) != 0) {
		check_err(err, sizeof(err), "configuration: ");
		goto out;
	}
	out1 = print_conf(c1, &len1);

	write_file(path_out, out1, len1);
	conf_init(c2);
	if (conf_load_file(c2, path_out, err, sizeof(err)) != 0 ||
	    conf_finish(c2, err, sizeof(err)) != 0) {
		fprintf(stderr, "printout does not read back: %s\n--\n%.*s--\n",
		    err, (int)len1, out1);
		__builtin_trap();
	}
	out2 = print_conf(c2, &len2);
	if (len1 != len2 || memcmp(out1, out2, len1) != 0) {
		fprintf(stderr, "printout changed:\n--\n%.*s--\n%.*s--\n",
		    (int)len1, out1, (int)len2, out2);
		__builtin_trap();
	}
out:
	free(out1);
	free(out2);
	free(c1);
	free(c2);
	return 0;
}
