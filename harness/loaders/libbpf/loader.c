// SPDX-License-Identifier: GPL-2.0
/*
 * loader-libbpf: the harness's loader protocol (harness/loaders/protocol.py)
 * on the distribution's libbpf, for objects whose maps are BTF-defined
 * (struct { ... } name SEC(".maps"), built with clang -g -O2 -target bpf).
 *
 *   loader-libbpf --object FILE
 *                 [--program SECTION:TYPE]...
 *                 [--attach SECTION:socket:IFACE]...
 *                 [--prog-array MAP:INDEX:SECTION]...
 *                 [--dump MAP]...
 *
 * It opens the object with bpf_object__open_file(), sets the type of every
 * requested program and turns autoload off for the others, loads it, fills
 * the prog arrays, attaches, prints "ready", waits for the end of its input
 * (or SIGTERM/SIGINT), then prints the entries of every --dump map as one JSON
 * document and exits 0. libbpf's own messages (the verifier's log of a
 * rejected program among them) go to stderr; a failure ends with one line
 * naming the object and exit status 1; a usage error exits 2.
 *
 * Only libbpf 1.0 API is used (Debian 12 has 1.1).
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
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define MAX_ITEMS 64
#define NAME_MAX_LEN 128
#define ERROR_MAX 1024
#define EXIT_USAGE 2
#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif

static const char *program_name = "loader-libbpf";

/* The program types the protocol names, and the kernel's numbers for them. */
static const struct {
	const char *name;
	enum bpf_prog_type type;
} program_types[] = {
	{ "socket_filter", BPF_PROG_TYPE_SOCKET_FILTER },
};

struct program_arg {
	char section[NAME_MAX_LEN];
	enum bpf_prog_type type;
};

struct attach_arg {
	char section[NAME_MAX_LEN];
	char ifname[NAME_MAX_LEN];
};

struct prog_array_arg {
	char map[NAME_MAX_LEN];
	unsigned int index;
	char section[NAME_MAX_LEN];
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

/* What went wrong, one line, and the program libbpf last said it failed to load. */
static char error[ERROR_MAX];
static char failed_program[NAME_MAX_LEN];

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error, sizeof(error), fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * libbpf's messages, warnings and information, on stderr. A load failure
 * names the program as "prog 'NAME': ... failed"; remember NAME to say which
 * section was rejected.
 */
static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char line[1024];
	const char *name, *end;
	va_list copy;

	if (level == LIBBPF_DEBUG)
		return 0;
	va_copy(copy, args);
	vsnprintf(line, sizeof(line), fmt, copy);
	va_end(copy);
	name = strstr(line, "prog '");
	if (name && strstr(line, "failed")) {
		name += strlen("prog '");
		end = strchr(name, '\'');
		if (end && (size_t)(end - name) < sizeof(failed_program))
			snprintf(failed_program, sizeof(failed_program), "%.*s", (int)(end - name),
				 name);
	}
	return vfprintf(stderr, fmt, args);
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

static const struct program_arg *requested(const struct request *req, const char *section)
{
	int i;

	for (i = 0; i < req->program_count; i++)
		if (strcmp(req->programs[i].section, section) == 0)
			return &req->programs[i];
	return NULL;
}

static int parse_args(struct request *req, int argc, char **argv)
{
	int i;

	memset(req, 0, sizeof(*req));
	for (i = 1; i < argc; i += 2) {
		const char *option = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;

		if (!value)
			return usage("%s needs a value", option);
		if (req->program_count == MAX_ITEMS || req->attach_count == MAX_ITEMS ||
		    req->prog_array_count == MAX_ITEMS || req->dump_count == MAX_ITEMS)
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
		if (!requested(req, req->attach[i].section))
			return usage("--attach names %s, which no --program loads",
				     req->attach[i].section);
	for (i = 0; i < req->prog_array_count; i++)
		if (!requested(req, req->prog_arrays[i].section))
			return usage("--prog-array names %s, which no --program loads",
				     req->prog_arrays[i].section);
	return 0;
}

/* The one program of section; NULL, with the error set, if there is none or several. */
static struct bpf_program *find_program(struct bpf_object *obj, const char *path,
					const char *section)
{
	struct bpf_program *prog, *found = NULL;
	char sections[512] = "";
	size_t used = 0;

	bpf_object__for_each_program(prog, obj) {
		const char *name = bpf_program__section_name(prog);

		if (strcmp(name, section) == 0) {
			if (found) {
				fail("%s: section %s holds more than one program (%s, %s); the "
				     "protocol names programs by section: give each its own",
				     path, section, bpf_program__name(found),
				     bpf_program__name(prog));
				return NULL;
			}
			found = prog;
		} else if (used < sizeof(sections)) {
			used += snprintf(sections + used, sizeof(sections) - used, "%s%s",
					 used ? ", " : "", name);
		}
	}
	if (!found)
		fail("%s: no program section %s (it has: %s)", path, section, sections);
	return found;
}

static struct bpf_map *find_map(struct bpf_object *obj, const char *path, const char *name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		fail("%s: no map %s; a map is named by its variable in SEC(\".maps\")", path,
		     name);
	return map;
}

/* Set the type of every requested program, leave the others unloaded, check the maps. */
static int prepare(struct bpf_object *obj, const struct request *req)
{
	struct bpf_program *prog;
	int i;

	for (i = 0; i < req->program_count; i++)
		if (!find_program(obj, req->object, req->programs[i].section))
			return -1;
	bpf_object__for_each_program(prog, obj) {
		const struct program_arg *program = requested(req, bpf_program__section_name(prog));

		if (!program) {
			bpf_program__set_autoload(prog, false);
			continue;
		}
		if (bpf_program__set_type(prog, program->type))
			return fail("%s: cannot set the type of program %s", req->object,
				    program->section);
	}
	for (i = 0; i < req->dump_count; i++)
		if (!find_map(obj, req->object, req->dump[i]))
			return -1;
	for (i = 0; i < req->prog_array_count; i++) {
		struct bpf_map *map = find_map(obj, req->object, req->prog_arrays[i].map);

		if (!map)
			return -1;
		if (bpf_map__type(map) != BPF_MAP_TYPE_PROG_ARRAY)
			return fail("%s: map %s is not a BPF_MAP_TYPE_PROG_ARRAY; declare it so "
				    "to fill it with --prog-array", req->object,
				    req->prog_arrays[i].map);
	}
	return 0;
}

static int load(struct bpf_object *obj, const struct request *req)
{
	struct bpf_program *prog;
	char reason[256];
	int err;

	failed_program[0] = '\0';
	err = bpf_object__load(obj);
	if (!err)
		return 0;
	libbpf_strerror(err, reason, sizeof(reason));
	bpf_object__for_each_program(prog, obj) {
		if (failed_program[0] && strcmp(bpf_program__name(prog), failed_program) == 0)
			return fail("%s: the kernel refused program %s (%s): the verifier's log "
				    "and libbpf's messages above say why", req->object,
				    bpf_program__section_name(prog), reason);
	}
	return fail("%s: libbpf cannot load the object: %s%s; libbpf's messages above say "
		    "why", req->object, reason,
		    err == -EPERM ? " (run as root or with CAP_BPF)" : "");
}

static int fill_prog_arrays(struct bpf_object *obj, const struct request *req)
{
	int i;

	for (i = 0; i < req->prog_array_count; i++) {
		const struct prog_array_arg *entry = &req->prog_arrays[i];
		int map_fd = bpf_object__find_map_fd_by_name(obj, entry->map);
		struct bpf_program *prog = find_program(obj, req->object, entry->section);
		__u32 key = entry->index;
		int prog_fd;

		if (!prog)
			return -1;
		prog_fd = bpf_program__fd(prog);
		if (bpf_map_update_elem(map_fd, &key, &prog_fd, BPF_ANY))
			return fail("%s: cannot store program %s at index %u of prog array %s: %s",
				    req->object, entry->section, entry->index, entry->map,
				    strerror(errno));
	}
	return 0;
}

/* A packet socket bound to ifname with prog attached (SO_ATTACH_BPF), or -1. */
static int attach_socket(struct bpf_program *prog, const char *path, const char *section,
			 const char *ifname)
{
	int prog_fd = bpf_program__fd(prog);
	struct sockaddr_ll addr;
	int sock;

	sock = socket(PF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (sock < 0)
		return fail("%s: program %s: cannot open a packet socket: %s%s", path, section,
			    strerror(errno), errno == EPERM ? " (run as root or with CAP_NET_RAW)" : "");
	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_protocol = htons(ETH_P_ALL);
	addr.sll_ifindex = if_nametoindex(ifname);
	if (addr.sll_ifindex == 0) {
		close(sock);
		return fail("%s: program %s: no network interface %s on this host", path, section,
			    ifname);
	}
	if (bind(sock, (struct sockaddr *)&addr, sizeof(addr))) {
		fail("%s: program %s: cannot bind a packet socket to %s: %s", path, section, ifname,
		     strerror(errno));
		close(sock);
		return -1;
	}
	if (setsockopt(sock, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd, sizeof(prog_fd))) {
		fail("%s: program %s: cannot attach it to a packet socket on %s (SO_ATTACH_BPF): "
		     "%s", path, section, ifname, strerror(errno));
		close(sock);
		return -1;
	}
	return sock;
}

/* How many bytes a lookup writes: one 8-byte aligned value per CPU for a per-CPU map. */
static size_t value_bytes(const struct bpf_map *map)
{
	size_t size = bpf_map__value_size(map);
	int cpus;

	switch (bpf_map__type(map)) {
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
		cpus = libbpf_num_possible_cpus();
		return cpus > 0 ? ((size + 7) & ~(size_t)7) * cpus : 0;
	default:
		return size;
	}
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
static int dump_map(const struct bpf_map *map, const char *path, FILE *out)
{
	size_t key_size = bpf_map__key_size(map), value_size = value_bytes(map);
	unsigned char *key, *next, *value, *swap;
	int fd = bpf_map__fd(map), ret = -1, first = 1, err;

	if (value_size == 0)
		return fail("%s: cannot dump per-CPU map %s: the number of possible CPUs is "
			    "unknown (is /sys mounted?)", path, bpf_map__name(map));
	key = malloc(key_size ? key_size : 1);
	next = malloc(key_size ? key_size : 1);
	value = malloc(value_size);
	if (!key || !next || !value) {
		fail("%s: out of memory to dump map %s", path, bpf_map__name(map));
		goto out;
	}
	fputc('[', out);
	err = bpf_map_get_next_key(fd, NULL, next) ? errno : 0;
	while (err == 0) {
		if (bpf_map_lookup_elem(fd, next, value) == 0) {
			fputs(first ? "[\"" : ", [\"", out);
			write_hex(out, next, key_size);
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
		err = bpf_map_get_next_key(fd, key, next) ? errno : 0;
	}
	if (err != ENOENT) {
		fail("%s: cannot read the entries of map %s: %s", path, bpf_map__name(map),
		     strerror(err));
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
static int print_dump(struct bpf_object *obj, const struct request *req)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out;
	int i;

	out = open_memstream(&text, &size);
	if (!out)
		return fail("%s: out of memory for the dump", req->object);
	fputs("{\"maps\": {", out);
	for (i = 0; i < req->dump_count; i++) {
		struct bpf_map *map = find_map(obj, req->object, req->dump[i]);

		/* Map names are C identifiers: nothing in them needs escaping. */
		fprintf(out, "%s\"%s\": ", i ? ", " : "", req->dump[i]);
		if (!map || dump_map(map, req->object, out)) {
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

static int run(struct bpf_object **objp, const struct request *req, int *sockets)
{
	struct sigaction action;
	sigset_t signals, unblocked;
	struct bpf_object *obj;
	int i;

	obj = bpf_object__open_file(req->object, NULL);
	if (!obj) {
		char reason[256];

		libbpf_strerror(errno, reason, sizeof(reason));
		return fail("%s: libbpf cannot open the object: %s; give an object with "
			    "BTF-defined maps built with clang -g -O2 -target bpf (legacy "
			    "SEC(\"maps\") objects need the classic loader)", req->object, reason);
	}
	*objp = obj;
	if (prepare(obj, req) || load(obj, req) || fill_prog_arrays(obj, req))
		return -1;
	for (i = 0; i < req->attach_count; i++) {
		struct bpf_program *prog = find_program(obj, req->object, req->attach[i].section);

		if (!prog)
			return -1;
		sockets[i] = attach_socket(prog, req->object, req->attach[i].section,
					   req->attach[i].ifname);
		if (sockets[i] < 0)
			return -1;
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
	static struct request req;
	struct bpf_object *obj = NULL;
	int sockets[MAX_ITEMS], ret, i;

	if (argc > 0)
		program_name = argv[0];
	if (parse_args(&req, argc, argv))
		return EXIT_USAGE;
	libbpf_set_print(print_libbpf);
	for (i = 0; i < MAX_ITEMS; i++)
		sockets[i] = -1;
	ret = run(&obj, &req, sockets);
	if (ret)
		fprintf(stderr, "%s\n", error);
	for (i = 0; i < MAX_ITEMS; i++)
		if (sockets[i] >= 0)
			close(sockets[i]);
	bpf_object__close(obj);
	return ret ? 1 : 0;
}
