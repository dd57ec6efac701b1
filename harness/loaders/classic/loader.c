// SPDX-License-Identifier: GPL-2.0
/*
 * loader-classic: the harness's loader protocol (harness/loaders/protocol.py)
 * for legacy objects, whose maps are struct bpf_map_def in section "maps".
 *
 *   loader-classic --object FILE
 *                  [--program SECTION:TYPE]...
 *                  [--attach SECTION:socket:IFACE]...
 *                  [--prog-array MAP:INDEX:SECTION]...
 *                  [--dump MAP]...
 *
 * It loads every --program, fills the prog arrays, attaches, prints "ready",
 * waits for the end of its input (or SIGTERM/SIGINT), then prints the entries
 * of every --dump map as one JSON document and exits 0. A failure is a line on
 * stderr (followed by the verifier's log for a rejected program) and exit
 * status 1; a usage error exits 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "bpf_load.h"

#define MAX_ITEMS 64
#define EXIT_USAGE 2
#define PROG_ARRAY_TYPE 3	/* BPF_MAP_TYPE_PROG_ARRAY */

static const char *program_name = "loader-classic";

/* The program types the protocol names, and the kernel's numbers for them. */
static const struct {
	const char *name;
	enum bpf_prog_type type;
} program_types[] = {
	{ "socket_filter", BPF_PROG_TYPE_SOCKET_FILTER },
};

struct program_arg {
	char section[BPF_LOAD_NAME_MAX];
	enum bpf_prog_type type;
};

struct attach_arg {
	char section[BPF_LOAD_NAME_MAX];
	char ifname[BPF_LOAD_NAME_MAX];
};

struct prog_array_arg {
	char map[BPF_LOAD_NAME_MAX];
	unsigned int index;
	char section[BPF_LOAD_NAME_MAX];
};

struct request {
	const char *object;
	struct program_arg programs[MAX_ITEMS];
	int program_count;
	struct attach_arg attach[MAX_ITEMS];
	int attach_count;
	struct prog_array_arg prog_arrays[MAX_ITEMS];
	int prog_array_count;
	const char *dump[MAX_ITEMS];
	int dump_count;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int usage(const char *fmt, const char *what)
{
	fprintf(stderr, "%s: ", program_name);
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\nusage: %s --object FILE [--program SECTION:TYPE]... "
		"[--attach SECTION:socket:IFACE]... [--prog-array MAP:INDEX:SECTION]... "
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

static int parse_program(struct request *req, const char *arg)
{
	struct program_arg *program = &req->programs[req->program_count];
	const char *type = take_field(arg, program->section, sizeof(program->section));
	size_t i;

	if (!type || !*type)
		return usage("--program %s is not SECTION:TYPE", arg);
	for (i = 0; i < sizeof(program_types) / sizeof(program_types[0]); i++) {
		if (strcmp(type, program_types[i].name) == 0) {
			program->type = program_types[i].type;
			req->program_count++;
			return 0;
		}
	}
	return usage("--program %s: unknown program type (known: socket_filter)", arg);
}

static int parse_attach(struct request *req, const char *arg)
{
	struct attach_arg *attach = &req->attach[req->attach_count];
	const char *target = take_field(arg, attach->section, sizeof(attach->section));

	if (!target || strncmp(target, "socket:", 7) != 0 ||
	    !take_field(target + 7, attach->ifname, sizeof(attach->ifname)) ||
	    strchr(target + 7, ':'))
		return usage("--attach %s is not SECTION:socket:IFACE", arg);
	req->attach_count++;
	return 0;
}

static int parse_prog_array(struct request *req, const char *arg)
{
	struct prog_array_arg *entry = &req->prog_arrays[req->prog_array_count];
	const char *rest = take_field(arg, entry->map, sizeof(entry->map));
	char *end;
	unsigned long index;

	if (!rest || *rest < '0' || *rest > '9')
		return usage("--prog-array %s is not MAP:INDEX:SECTION", arg);
	errno = 0;
	index = strtoul(rest, &end, 10);
	if (errno || *end != ':' || index > UINT_MAX ||
	    !take_field(end + 1, entry->section, sizeof(entry->section)) || strchr(end + 1, ':'))
		return usage("--prog-array %s is not MAP:INDEX:SECTION", arg);
	entry->index = index;
	req->prog_array_count++;
	return 0;
}

static int is_requested(const struct request *req, const char *section)
{
	int i;

	for (i = 0; i < req->program_count; i++)
		if (strcmp(req->programs[i].section, section) == 0)
			return 1;
	return 0;
}

static int parse_args(struct request *req, int argc, char **argv)
{
	int i;

	memset(req, 0, sizeof(*req));
	for (i = 1; i < argc; i += 2) {
		const char *option = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
		int full;

		if (!value)
			return usage("%s needs a value", option);
		full = req->program_count == MAX_ITEMS || req->attach_count == MAX_ITEMS ||
		       req->prog_array_count == MAX_ITEMS || req->dump_count == MAX_ITEMS;
		if (full)
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
		return usage("%s", "no --program SECTION:TYPE given");
	for (i = 0; i < req->attach_count; i++)
		if (!is_requested(req, req->attach[i].section))
			return usage("--attach names %s, which no --program loads",
				     req->attach[i].section);
	for (i = 0; i < req->prog_array_count; i++)
		if (!is_requested(req, req->prog_arrays[i].section))
			return usage("--prog-array names %s, which no --program loads",
				     req->prog_arrays[i].section);
	return 0;
}

/* Check every map the request names before anything is loaded. */
static int check_maps(struct bpf_load_object *obj, const struct request *req)
{
	int i;

	for (i = 0; i < req->dump_count; i++)
		if (!bpf_load_find_map(obj, req->dump[i]))
			return -1;
	for (i = 0; i < req->prog_array_count; i++) {
		struct bpf_load_map *map = bpf_load_find_map(obj, req->prog_arrays[i].map);

		if (!map)
			return -1;
		if (map->type != PROG_ARRAY_TYPE || map->key_size != 4 || map->value_size != 4) {
			return bpf_load_fail(obj, "map %s is not a BPF_MAP_TYPE_PROG_ARRAY with 4-byte "
					     "keys and values; declare it so to fill it with "
					     "--prog-array", map->name);
		}
	}
	return 0;
}

static int fill_prog_arrays(struct bpf_load_object *obj, const struct request *req)
{
	int i;

	for (i = 0; i < req->prog_array_count; i++) {
		const struct prog_array_arg *entry = &req->prog_arrays[i];
		struct bpf_load_map *map = bpf_load_find_map(obj, entry->map);
		struct bpf_load_prog *prog = bpf_load_find_program(obj, entry->section);
		uint32_t key = entry->index, value;

		if (!map || !prog)
			return -1;
		value = prog->fd;
		if (bpf_update_elem(map->fd, &key, &value, BPF_ANY)) {
			return bpf_load_fail(obj, "cannot store program %s at index %u of prog "
					     "array %s (%u entries): %s", entry->section,
					     entry->index, map->name, map->max_entries,
					     strerror(errno));
		}
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
static int dump_map(struct bpf_load_object *obj, struct bpf_load_map *map, FILE *out)
{
	size_t value_size = bpf_load_value_bytes(map);
	unsigned char *key, *next, *value, *swap;
	int ret = -1, first = 1, err;

	if (value_size == 0) {
		return bpf_load_fail(obj, "cannot dump per-CPU map %s: the number of possible "
				     "CPUs is unknown (is /sys mounted?)", map->name);
	}
	key = malloc(map->key_size ? map->key_size : 1);
	next = malloc(map->key_size ? map->key_size : 1);
	value = malloc(value_size);
	if (!key || !next || !value) {
		bpf_load_fail(obj, "out of memory to dump map %s", map->name);
		goto out;
	}
	fputc('[', out);
	err = bpf_get_next_key(map->fd, NULL, next) ? errno : 0;
	while (err == 0) {
		if (bpf_lookup_elem(map->fd, next, value) == 0) {
			fputs(first ? "[\"" : ", [\"", out);
			write_hex(out, next, map->key_size);
			fputs("\", \"", out);
			write_hex(out, value, value_size);
			fputs("\"]", out);
			first = 0;
		} else if (errno != ENOENT) {
			err = errno;
			break;
		}
		swap = key;
		key = next;
		next = swap;
		err = bpf_get_next_key(map->fd, key, next) ? errno : 0;
	}
	if (err != ENOENT) {
		bpf_load_fail(obj, "cannot read the entries of map %s (type %u): %s", map->name,
			      map->type, strerror(err));
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
static int print_dump(struct bpf_load_object *obj, const struct request *req)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out;
	int i;

	out = open_memstream(&text, &size);
	if (!out) {
		return bpf_load_fail(obj, "out of memory for the dump");
	}
	fputs("{\"maps\": {", out);
	for (i = 0; i < req->dump_count; i++) {
		struct bpf_load_map *map = bpf_load_find_map(obj, req->dump[i]);

		/* Map names are C identifiers: nothing in them needs escaping. */
		fprintf(out, "%s\"%s\": ", i ? ", " : "", req->dump[i]);
		if (!map || dump_map(obj, map, out)) {
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

static int run(struct bpf_load_object *obj, const struct request *req, int *sockets)
{
	struct sigaction action;
	sigset_t signals, unblocked;
	int i;

	if (bpf_load_open(obj, req->object) || check_maps(obj, req))
		return -1;
	for (i = 0; i < req->program_count; i++)
		if (bpf_load_program(obj, req->programs[i].section, req->programs[i].type) < 0)
			return -1;
	if (fill_prog_arrays(obj, req))
		return -1;
	for (i = 0; i < req->attach_count; i++) {
		struct bpf_load_prog *prog = bpf_load_find_program(obj, req->attach[i].section);
		char error[BPF_LOAD_ERROR_MAX / 2];

		sockets[i] = bpf_attach_packet_socket(prog->fd, req->attach[i].ifname, error,
						      sizeof(error));
		if (sockets[i] < 0) {
			return bpf_load_fail(obj, "program %s: %s", req->attach[i].section, error);
		}
	}

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
	return print_dump(obj, req);
}

int main(int argc, char **argv)
{
	static struct bpf_load_object obj;
	static struct request req;
	/* Before Linux 5.11 maps are charged to RLIMIT_MEMLOCK, whose default a hash map of
	 * a thousand entries exceeds (EPERM); a loader lifts it, as libbpf does itself. */
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	int sockets[MAX_ITEMS], ret, i;

	if (argc > 0)
		program_name = argv[0];
	if (parse_args(&req, argc, argv))
		return EXIT_USAGE;
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	for (i = 0; i < MAX_ITEMS; i++)
		sockets[i] = -1;
	ret = run(&obj, &req, sockets);
	if (ret) {
		fprintf(stderr, "%s\n", obj.error);
		if (obj.log && obj.log[0])
			fprintf(stderr, "verifier log:\n%s\n", obj.log);
	}
	for (i = 0; i < MAX_ITEMS; i++)
		if (sockets[i] >= 0)
			close(sockets[i]);
	bpf_load_close(&obj);
	return ret ? 1 : 0;
}
