/* ares_client.c: one DNS query with c-ares, for the integration tests.
 *
 * Usage: ares_client SERVER_IP PORT NAME [A|AAAA|TXT] [--tcp]
 *
 * Asks one server once (tries 1, timeout 3 s) so that a test sees exactly
 * what dotproxy answered, as a real c-ares application would. Output:
 *	rcode=<NOERROR|NXDOMAIN|SERVFAIL|...>   when any answer arrived
 *	A <addr> ttl=<ttl>                      per A record (AAAA likewise)
 *	TXT <text>                              per TXT string
 *	error=<ares_strerror>                   when no answer arrived
 * Exit status: 0 if an answer (any rcode) arrived, 1 otherwise, 2 on usage.
 *
 * ARES_FLAG_NOCHECKRESP makes c-ares hand over SERVFAIL and REFUSED answers
 * instead of retrying, and ares_query (not ares_search) keeps resolv.conf's
 * search list out of the way. Only the c-ares 1.18 API is used.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include <ares.h>

#define MAX_ADDRS 64
#define T_A 1
#define T_TXT 16
#define T_AAAA 28
#define C_IN 1

struct result {
	int done;
	int answered;
};

static const char *const rcode_name[16] = {
	"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
	"YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11",
	"RCODE12", "RCODE13", "RCODE14", "RCODE15",
};

static void
print_records(int type, const unsigned char *abuf, int alen)
{
	char text[INET6_ADDRSTRLEN];
	int i, n = MAX_ADDRS;

	if (type == T_A) {
		struct ares_addrttl a[MAX_ADDRS];

		if (ares_parse_a_reply(abuf, alen, NULL, a, &n) != ARES_SUCCESS)
			return;
		for (i = 0; i < n; i++) {
			inet_ntop(AF_INET, &a[i].ipaddr, text, sizeof(text));
			printf("A %s ttl=%d\n", text, a[i].ttl);
		}
	} else if (type == T_AAAA) {
		struct ares_addr6ttl a[MAX_ADDRS];

		if (ares_parse_aaaa_reply(abuf, alen, NULL, a, &n) !=
		    ARES_SUCCESS)
			return;
		for (i = 0; i < n; i++) {
			inet_ntop(AF_INET6, &a[i].ip6addr, text, sizeof(text));
			printf("AAAA %s ttl=%d\n", text, a[i].ttl);
		}
	} else if (type == T_TXT) {
		struct ares_txt_ext *txt = NULL, *t;

		if (ares_parse_txt_reply_ext(abuf, alen, &txt) != ARES_SUCCESS)
			return;
		for (t = txt; t != NULL; t = t->next)
			printf("TXT %.*s\n", (int)t->length, t->txt);
		ares_free_data(txt);
	}
}

static void
query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct result *res = arg;
	int type = T_A;

	(void)timeouts;
	res->done = 1;
	if (abuf == NULL || alen < 12) {
		printf("error=%s\n", ares_strerror(status));
		return;
	}
	res->answered = 1;
	printf("rcode=%s\n", rcode_name[abuf[3] & 0xf]);
	/* The question tells which parser applies. */
	{
		char *name = NULL;
		long len;

		if (ares_expand_name(abuf + 12, abuf, alen, &name, &len) ==
		    ARES_SUCCESS && 12 + len + 4 <= alen)
			type = (abuf[12 + len] << 8) | abuf[12 + len + 1];
		ares_free_string(name);
	}
	print_records(type, abuf, alen);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: ares_client SERVER_IP PORT NAME [A|AAAA|TXT] [--tcp]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct ares_options o;
	struct ares_addr_port_node server;
	struct result res = { 0, 0 };
	ares_channel ch;
	const char *name;
	char *end;
	long port;
	int type = T_A, tcp = 0, i, r, rounds;

	if (argc < 4)
		usage();
	for (i = 4; i < argc; i++) {
		if (strcmp(argv[i], "--tcp") == 0)
			tcp = 1;
		else if (strcmp(argv[i], "A") == 0)
			type = T_A;
		else if (strcmp(argv[i], "AAAA") == 0)
			type = T_AAAA;
		else if (strcmp(argv[i], "TXT") == 0)
			type = T_TXT;
		else
			usage();
	}
	name = argv[3];
	port = strtol(argv[2], &end, 10);
	if (*argv[2] == '\0' || *end != '\0' || port <= 0 || port > 65535)
		usage();
	memset(&server, 0, sizeof(server));
	if (inet_pton(AF_INET, argv[1], &server.addr.addr4) == 1)
		server.family = AF_INET;
	else if (inet_pton(AF_INET6, argv[1], &server.addr.addr6) == 1)
		server.family = AF_INET6;
	else
		usage();
	server.udp_port = port;
	server.tcp_port = port;

	r = ares_library_init(ARES_LIB_INIT_ALL);
	if (r != ARES_SUCCESS) {
		printf("error=%s\n", ares_strerror(r));
		return 1;
	}
	memset(&o, 0, sizeof(o));
	o.flags = ARES_FLAG_NOCHECKRESP | (tcp ? ARES_FLAG_USEVC : 0);
	o.timeout = 3000;
	o.tries = 1;
	r = ares_init_options(&ch, &o,
	    ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (r == ARES_SUCCESS)
		r = ares_set_servers_ports(ch, &server);
	if (r != ARES_SUCCESS) {
		printf("error=%s\n", ares_strerror(r));
		return 1;
	}
	ares_query(ch, name, C_IN, type, query_cb, &res);

	/* c-ares times the query out after 3 s; the bound is a backstop. */
	for (rounds = 0; !res.done && rounds < 1000; rounds++) {
		struct timeval tv, *tvp;
		fd_set rfds, wfds;
		int nfds;

		FD_ZERO(&rfds);
		FD_ZERO(&wfds);
		nfds = ares_fds(ch, &rfds, &wfds);
		if (nfds == 0)
			break;
		tvp = ares_timeout(ch, NULL, &tv);
		select(nfds, &rfds, &wfds, NULL, tvp);
		ares_process(ch, &rfds, &wfds);
	}
	if (!res.done)
		printf("error=no answer\n");
	fflush(stdout);
	ares_destroy(ch);
	ares_library_cleanup();
	return res.answered ? 0 : 1;
}
