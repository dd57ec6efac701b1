// SPDX-License-Identifier: GPL-2.0
/*
 * The loader protocol shared by the C loaders (see protocol.h): arguments,
 * prog arrays, packet sockets, waiting for the end, and the JSON dump.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

#include "protocol.h"

#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
#define ERROR_MAX 1024

/* The program types the protocol names, and the kernel's numbers for them. */
static const struct {
	const char *name;
	enum bpf_prog_type type;
} program_types[] = {
	{ "socket_filter", BPF_PROG_TYPE_SOCKET_FILTER },
};

static const char *program_name;
static char error[ERROR_MAX];
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int protocol_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error, sizeof(error), fmt, ap);
	va_end(ap);
	return -1;
}

static int usage(const char *fmt, const char *what)
{
	fprintf(stderr, "%s: ", program_name);
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\nusage: %s --object FILE [--program PROGRAM:TYPE]... "
		"[--attach PROGRAM:socket:IFACE]... [--prog-array MAP:INDEX:PROGRAM]... "
		"[--dump MAP]...\n", program_name);
	return -1;
}

/* Copy the text of arg up to the next ':' (or its end) into dst; the rest, or NULL. */
static const char *take_field(const char *arg, char *dst, size_t dst_size)
{
	const char *colon = strchr(arg, ':');
	size_t length = colon ? (size_t)(colon - arg) : strlen(arg);

	if (length == 0 || length >= dst_size)
		return NULL;
	memcpy(dst, arg, length);
	dst[length] = '\0';
	return colon ? colon + 1 : arg + length;
}

static int parse_program(struct protocol_request *req, const char *arg)
{
	struct protocol_program *program = &req->programs[req->program_count];
	const char *type = take_field(arg, program->name, sizeof(program->name));
	size_t i;

	if (!type || !*type)
		return usage("--program %s is not PROGRAM:TYPE", arg);
	for (i = 0; i < sizeof(program_types) / sizeof(program_types[0]); i++) {
		if (strcmp(type, program_types[i].name) == 0) {
			program->type = program_types[i].type;
			req->program_count++;
			return 0;
		}
	}
	return usage("--program %s: unknown program type (known: socket_filter)", arg);
}

static int parse_attach(struct protocol_request *req, const char *arg)
{
	struct protocol_attach *attach = &req->attach[req->attach_count];
	const char *target = take_field(arg, attach->program, sizeof(attach->program));

	if (!target || strncmp(target, "socket:", 7) != 0 ||
	    !take_field(target + 7, attach->ifname, sizeof(attach->ifname)) ||
	    strchr(target + 7, ':'))
		return usage("--attach %s is not PROGRAM:socket:IFACE", arg);
	req->attach_count++;
	return 0;
}

static int parse_prog_array(struct protocol_request *req, const char *arg)
{
	struct protocol_prog_array *entry = &req->prog_arrays[req->prog_array_count];
	const char *rest = take_field(arg, entry->map, sizeof(entry->map));
	char *end;
	unsigned long index;

	if (!rest || *rest < '0' || *rest > '9')
		return usage("--prog-array %s is not MAP:INDEX:PROGRAM", arg);
	errno = 0;
	index = strtoul(rest, &end, 10);
	if (errno || *end != ':' || index > UINT_MAX ||
	    !take_field(end + 1, entry->program, sizeof(entry->program)) || strchr(end + 1, ':'))
		return usage("--prog-array %s is not MAP:INDEX:PROGRAM", arg);
	entry->index = index;
	req->prog_array_count++;
	return 0;
}

const struct protocol_program *protocol_requested(const struct protocol_request *req,
						  const char *program)
{
	int i;

	for (i = 0; i < req->program_count; i++)
		if (strcmp(req->programs[i].name, program) == 0)
			return &req->programs[i];
	return NULL;
}

static int parse_args(struct protocol_request *req, int argc, char **argv)
{
	int i;

	memset(req, 0, sizeof(*req));
	for (i = 1; i < argc; i += 2) {
		const char *option = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;

		if (!value)
			return usage("%s needs a value", option);
		if (req->program_count == PROTOCOL_MAX_ITEMS ||
		    req->attach_count == PROTOCOL_MAX_ITEMS ||
		    req->prog_array_count == PROTOCOL_MAX_ITEMS ||
		    req->dump_count == PROTOCOL_MAX_ITEMS)
			return usage("%s", "too many options (at most 64 of each)");
		if (strcmp(option, "--object") == 0) {
			if (req->object)
				return usage("%s is given twice", option);
			req->object = value;
		} else if (strcmp(option, "--program") == 0) {
			if (parse_program(req, value))
				return -1;
		} else if (strcmp(option, "--attach") == 0) {
			if (parse_attach(req, value))
				return -1;
		} else if (strcmp(option, "--prog-array") == 0) {
			if (parse_prog_array(req, value))
				return -1;
		} else if (strcmp(option, "--dump") == 0) {
			req->dump[req->dump_count++] = value;
		} else {
			return usage("unknown option %s", option);
		}
	}
	if (!req->object)
		return usage("%s", "--object FILE is required");
	if (req->program_count == 0)
		return usage("%s", "no --program PROGRAM:TYPE given");
	for (i = 0; i < req->attach_count; i++)
		if (!protocol_requested(req, req->attach[i].program))
			return usage("--attach names %s, which no --program loads",
				     req->attach[i].program);
	for (i = 0; i < req->prog_array_count; i++)
		if (!protocol_requested(req, req->prog_arrays[i].program))
			return usage("--prog-array names %s, which no --program loads",
				     req->prog_arrays[i].program);
	return 0;
}

/* Check every map the request names before anything is loaded. */
static int check_maps(const struct protocol_loader *loader, void *obj,
		      const struct protocol_request *req)
{
	struct protocol_map map;
	int i;

	for (i = 0; i < req->dump_count; i++)
		if (loader->find_map(obj, req->dump[i], &map))
			return -1;
	for (i = 0; i < req->prog_array_count; i++) {
		if (loader->find_map(obj, req->prog_arrays[i].map, &map))
			return -1;
		if (map.type != BPF_MAP_TYPE_PROG_ARRAY || map.key_size != 4 ||
		    map.value_size != 4)
			return protocol_fail("%s: map %s is not a BPF_MAP_TYPE_PROG_ARRAY with "
					     "4-byte keys and values; declare it so to fill it "
					     "with --prog-array", req->object, map.name);
	}
	return 0;
}

static int fill_prog_arrays(const struct protocol_loader *loader, void *obj,
			    const struct protocol_request *req)
{
	int i;

	for (i = 0; i < req->prog_array_count; i++) {
		const struct protocol_prog_array *entry = &req->prog_arrays[i];
		struct protocol_map map;
		__u32 key = entry->index;
		int prog_fd;

		if (loader->find_map(obj, entry->map, &map))
			return -1;
		prog_fd = loader->program_fd(obj, entry->program);
		if (prog_fd < 0)
			return -1;
		if (loader->update(map.fd, &key, &prog_fd, BPF_ANY))
			return protocol_fail("%s: cannot store program %s at index %u of prog "
					     "array %s (%u entries): %s", req->object,
					     entry->program, entry->index, map.name,
					     map.max_entries, strerror(errno));
	}
	return 0;
}

int protocol_packet_socket(int prog_fd, const char *ifname, char *message, size_t message_size)
{
	struct sockaddr_ll addr;
	int sock;

	sock = socket(PF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (sock < 0) {
		snprintf(message, message_size, "cannot open a packet socket: %s; %s",
			 strerror(errno), errno == EPERM || errno == EACCES ?
			 "run as root or with CAP_NET_RAW" :
			 "check that the kernel has packet sockets (CONFIG_PACKET)");
		return -1;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_protocol = htons(ETH_P_ALL);
	addr.sll_ifindex = if_nametoindex(ifname);
	if (addr.sll_ifindex == 0) {
		snprintf(message, message_size, "no network interface %s on this host; name one "
			 "that `ip link` lists", ifname);
		close(sock);
		return -1;
	}
	if (bind(sock, (struct sockaddr *)&addr, sizeof(addr))) {
		snprintf(message, message_size, "cannot bind a packet socket to %s: %s", ifname,
			 strerror(errno));
		close(sock);
		return -1;
	}
	if (setsockopt(sock, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd, sizeof(prog_fd))) {
		snprintf(message, message_size, "cannot attach the program to a packet socket on "
			 "%s (SO_ATTACH_BPF): %s", ifname, strerror(errno));
		close(sock);
		return -1;
	}
	return sock;
}

static int attach(const struct protocol_loader *loader, void *obj,
		  const struct protocol_request *req, int *sockets)
{
	int i;

	for (i = 0; i < req->attach_count; i++) {
		char message[ERROR_MAX / 2];
		int prog_fd = loader->program_fd(obj, req->attach[i].program);

		if (prog_fd < 0)
			return -1;
		sockets[i] = protocol_packet_socket(prog_fd, req->attach[i].ifname, message,
						    sizeof(message));
		if (sockets[i] < 0)
			return protocol_fail("%s: program %s: %s", req->object,
					     req->attach[i].program, message);
	}
	return 0;
}

static void write_hex(FILE *out, const unsigned char *bytes, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++)
		fprintf(out, "%02x", bytes[i]);
}

/*
 * The entries of map as ["KEY","VALUE"] pairs. GET_NEXT_KEY from no key walks
 * every index of an array and every key of a hash; a key that is gone by the
 * time it is looked up (ENOENT: deleted, or an empty prog array slot) is left out.
 */
static int dump_map(const struct protocol_loader *loader, const struct protocol_map *map,
		    const char *path, FILE *out)
{
	unsigned char *key, *next, *value, *swap;
	int ret = -1, first = 1, err;

	if (map->value_bytes == 0)
		return protocol_fail("%s: cannot dump per-CPU map %s: the number of possible "
				     "CPUs is unknown (is /sys mounted?)", path, map->name);
	key = malloc(map->key_size ? map->key_size : 1);
	next = malloc(map->key_size ? map->key_size : 1);
	value = malloc(map->value_bytes);
	if (!key || !next || !value) {
		protocol_fail("%s: out of memory to dump map %s", path, map->name);
		goto out;
	}
	fputc('[', out);
	err = loader->next_key(map->fd, NULL, next) ? errno : 0;
	while (err == 0) {
		if (loader->lookup(map->fd, next, value) == 0) {
			fputs(first ? "[\"" : ", [\"", out);
			write_hex(out, next, map->key_size);
			fputs("\", \"", out);
			write_hex(out, value, map->value_bytes);
			fputs("\"]", out);
			first = 0;
		} else if (errno != ENOENT) {
			err = errno;
			break;
		}
		swap = key;
		key = next;
		next = swap;
		err = loader->next_key(map->fd, key, next) ? errno : 0;
	}
	if (err != ENOENT) {
		protocol_fail("%s: cannot read the entries of map %s (type %u): %s", path,
			      map->name, map->type, strerror(err));
		goto out;
	}
	fputc(']', out);
	ret = 0;
out:
	free(key);
	free(next);
	free(value);
	return ret;
}

/* The JSON document of every --dump map, printed only once all of them were read. */
static int print_dump(const struct protocol_loader *loader, void *obj,
		      const struct protocol_request *req)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out;
	int i;

	out = open_memstream(&text, &size);
	if (!out)
		return protocol_fail("%s: out of memory for the dump", req->object);
	fputs("{\"maps\": {", out);
	for (i = 0; i < req->dump_count; i++) {
		struct protocol_map map;

		/* Map names are C identifiers: nothing in them needs escaping. */
		fprintf(out, "%s\"%s\": ", i ? ", " : "", req->dump[i]);
		if (loader->find_map(obj, req->dump[i], &map) ||
		    dump_map(loader, &map, req->object, out)) {
			fclose(out);
			free(text);
			return -1;
		}
	}
	fputs("}}\n", out);
	fclose(out);
	fputs(text, stdout);
	free(text);
	return fflush(stdout) ? -1 : 0;
}

/* Until stdin ends or SIGTERM/SIGINT comes; the signals are blocked but inside ppoll(). */
static void wait_for_end(const sigset_t *unblocked)
{
	struct pollfd input = { .fd = STDIN_FILENO, .events = POLLIN };
	char buf[4096];

	while (!stop) {
		if (ppoll(&input, 1, NULL, unblocked) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (read(STDIN_FILENO, buf, sizeof(buf)) <= 0)
			return;
	}
}

static int run(const struct protocol_loader *loader, void *obj,
	       const struct protocol_request *req, int *sockets)
{
	struct sigaction action;
	sigset_t signals, unblocked;
	int i;

	if (loader->open(obj, req) || check_maps(loader, obj, req) || loader->load(obj, req) ||
	    fill_prog_arrays(loader, obj, req) || attach(loader, obj, req, sockets))
		return -1;

	memset(&action, 0, sizeof(action));
	action.sa_handler = on_signal;
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigprocmask(SIG_BLOCK, &signals, &unblocked);

	printf("ready\n");
	fflush(stdout);
	wait_for_end(&unblocked);

	/* Detach first, so the maps hold still while they are read. */
	for (i = 0; i < req->attach_count; i++) {
		close(sockets[i]);
		sockets[i] = -1;
	}
	return print_dump(loader, obj, req);
}

int protocol_main(int argc, char **argv, const struct protocol_loader *loader, void *obj)
{
	static struct protocol_request req;
	int sockets[PROTOCOL_MAX_ITEMS], ret, i;

	program_name = argc > 0 ? argv[0] : loader->name;
	if (parse_args(&req, argc, argv))
		return PROTOCOL_EXIT_USAGE;
	for (i = 0; i < PROTOCOL_MAX_ITEMS; i++)
		sockets[i] = -1;
	ret = run(loader, obj, &req, sockets);
	if (ret) {
		fprintf(stderr, "%s\n", error);
		if (loader->explain)
			loader->explain(obj);
	}
	for (i = 0; i < PROTOCOL_MAX_ITEMS; i++)
		if (sockets[i] >= 0)
			close(sockets[i]);
	return ret ? 1 : 0;
}
