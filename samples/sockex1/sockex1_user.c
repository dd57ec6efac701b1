// SPDX-License-Identifier: GPL-2.0
/*
 * sockex1: load sockex1_kern.o, attach its socket filter to a raw packet
 * socket on lo and report how many bytes of TCP, UDP and ICMP it counted.
 *
 *   sockex1 [OBJECT]            print the counts every second, five times
 *   sockex1 --harness [OBJECT]  attach, print "ready", wait until stdin is
 *                               closed (or SIGTERM/SIGINT), print the counts
 *                               once and exit
 *
 * OBJECT defaults to <this program>_kern.o.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>

#include "bpf_load.h"

#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int open_raw_socket(const char *ifname)
{
	struct sockaddr_ll addr;
	int sock;

	sock = socket(PF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (sock < 0) {
		fprintf(stderr, "cannot open a packet socket: %s%s\n", strerror(errno),
			errno == EPERM ? " (run as root or with CAP_NET_RAW)" : "");
		return -1;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_protocol = htons(ETH_P_ALL);
	addr.sll_ifindex = if_nametoindex(ifname);
	if (addr.sll_ifindex == 0 || bind(sock, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "cannot bind a packet socket to %s: %s\n", ifname, strerror(errno));
		close(sock);
		return -1;
	}
	return sock;
}

static long long count(int proto)
{
	int key = proto;
	long long value = 0;

	if (bpf_lookup_elem(map_fd[0], &key, &value)) {
		fprintf(stderr, "cannot read my_map[%d]: %s\n", proto, strerror(errno));
		exit(1);
	}
	return value;
}

static void report(void)
{
	printf("TCP %lld UDP %lld ICMP %lld bytes\n",
	       count(IPPROTO_TCP), count(IPPROTO_UDP), count(IPPROTO_ICMP));
	fflush(stdout);
}

int main(int argc, char **argv)
{
	char default_object[4096];
	const char *object = NULL;
	int harness = 0, sock, i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--harness") == 0)
			harness = 1;
		else if (argv[i][0] == '-' || object) {
			fprintf(stderr, "usage: %s [--harness] [OBJECT]\n", argv[0]);
			return 2;
		} else
			object = argv[i];
	}
	if (!object) {
		snprintf(default_object, sizeof(default_object), "%s_kern.o", argv[0]);
		object = default_object;
	}

	if (load_bpf_file(object))
		return 1;
	if (map_count < 1) {
		fprintf(stderr, "%s: no map to read the counts from\n", object);
		return 1;
	}
	/* The counts are read into an int key and a long long value: the map must match. */
	if (map_key_size[0] != sizeof(int) || map_value_size[0] != sizeof(long long)) {
		fprintf(stderr, "%s: my_map has %u-byte keys and %u-byte values; sockex1 needs "
			"%zu and %zu\n", object, map_key_size[0], map_value_size[0],
			sizeof(int), sizeof(long long));
		return 1;
	}

	sock = open_raw_socket("lo");
	if (sock < 0)
		return 1;
	if (setsockopt(sock, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd[0], sizeof(prog_fd[0]))) {
		fprintf(stderr, "cannot attach the program with SO_ATTACH_BPF: %s\n", strerror(errno));
		close(sock);
		return 1;
	}

	if (harness) {
		char buf[256];
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		printf("ready\n");
		fflush(stdout);
		/* The traffic flows now; the driver closes stdin when it is delivered. */
		while (!stop && read(STDIN_FILENO, buf, sizeof(buf)) > 0)
			;
		report();
		return 0;
	}

	for (i = 0; i < 5; i++) {
		report();
		sleep(1);
	}
	return 0;
}
