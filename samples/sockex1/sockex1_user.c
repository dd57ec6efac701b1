// SPDX-License-Identifier: GPL-2.0
/*
 * sockex1: load sockex1_kern.o, attach its socket filter to a raw packet
 * socket on lo and print how many bytes of TCP, UDP and ICMP it counted,
 * every second, five times.
 *
 *   sockex1 [OBJECT]      OBJECT defaults to <this program>_kern.o
 *
 * Built on the classic loader's bpf_load.h (harness/loaders/classic); the
 * harness drives that directory's generic loader, this is the sample's demo.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <netinet/in.h>

#include "bpf_load.h"

#define SECTION "socket1"
#define MAP "my_map"
#define INTERFACE "lo"

static int count(struct bpf_load_map *map, int protocol, long long *bytes)
{
	*bytes = 0;
	if (bpf_lookup_elem(map->fd, &protocol, bytes)) {
		fprintf(stderr, "cannot read " MAP "[%d]: %s\n", protocol, strerror(errno));
		return -1;
	}
	return 0;
}

static int report(struct bpf_load_map *map)
{
	long long tcp, udp, icmp;

	if (count(map, IPPROTO_TCP, &tcp) || count(map, IPPROTO_UDP, &udp) ||
	    count(map, IPPROTO_ICMP, &icmp))
		return -1;
	printf("TCP %lld UDP %lld ICMP %lld bytes\n", tcp, udp, icmp);
	fflush(stdout);
	return 0;
}

static int run(struct bpf_load_object *obj, const char *object)
{
	char error[BPF_LOAD_ERROR_MAX / 2];
	struct bpf_load_map *map;
	int prog_fd, sock, i, ret = 0;

	if (bpf_load_open(obj, object))
		return -1;
	prog_fd = bpf_load_program(obj, SECTION, BPF_PROG_TYPE_SOCKET_FILTER);
	if (prog_fd < 0)
		return -1;
	map = bpf_load_find_map(obj, MAP);
	if (!map)
		return -1;
	/* The counts are read with an int key into a long long: the map must match. */
	if (map->key_size != sizeof(int) || map->value_size != sizeof(long long))
		return bpf_load_fail(obj, MAP " has %u-byte keys and %u-byte values; sockex1 "
				     "needs %zu and %zu", map->key_size, map->value_size,
				     sizeof(int), sizeof(long long));
	sock = bpf_attach_packet_socket(prog_fd, INTERFACE, error, sizeof(error));
	if (sock < 0)
		return bpf_load_fail(obj, "program " SECTION ": %s", error);

	for (i = 0; i < 5 && ret == 0; i++) {
		ret = report(map);
		sleep(1);
	}
	close(sock);
	return ret;
}

int main(int argc, char **argv)
{
	static struct bpf_load_object obj;
	char default_object[4096];
	const char *object;
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	int ret;

	/* Kernels before 5.11 charge maps to RLIMIT_MEMLOCK. */
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: %s [OBJECT]\n", argv[0]);
		return 2;
	}
	if (argc == 2) {
		object = argv[1];
	} else {
		snprintf(default_object, sizeof(default_object), "%s_kern.o", argv[0]);
		object = default_object;
	}

	ret = run(&obj, object);
	if (ret && obj.error[0]) {
		fprintf(stderr, "%s\n", obj.error);
		if (obj.log && obj.log[0])
			fprintf(stderr, "verifier log:\n%s\n", obj.log);
	}
	bpf_load_close(&obj);
	return ret ? 1 : 0;
}
