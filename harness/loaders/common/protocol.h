/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The loader protocol (harness/loaders/protocol.py) as the C loaders speak it:
 *
 *   LOADER --object FILE
 *          [--program PROGRAM:TYPE]...
 *          [--attach PROGRAM:socket:IFACE]...
 *          [--prog-array MAP:INDEX:PROGRAM]...
 *          [--dump MAP]...
 *
 * protocol_main() parses the arguments, has the loader open the object, checks
 * the maps the request names, has the loader load the programs, fills the prog
 * arrays, attaches, prints "ready", waits for the end of its input (or
 * SIGTERM/SIGINT), detaches, then prints the entries of every --dump map as one
 * JSON document. A failure is one line on stderr, naming the object, and exit
 * status 1; a usage error exits 2.
 *
 * A loader supplies what differs between object formats: struct protocol_loader.
 */
#ifndef LOADER_PROTOCOL_H
#define LOADER_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <linux/bpf.h>

#define PROTOCOL_MAX_ITEMS 64
#define PROTOCOL_NAME_MAX 128
#define PROTOCOL_EXIT_USAGE 2

/*
 * A PROGRAM is "SECTION", the one program of a section, or "SECTION#FUNCTION", the
 * program of that function in a section holding several (PROTOCOL_FUNCTION_SEPARATOR).
 */
#define PROTOCOL_FUNCTION_SEPARATOR '#'

struct protocol_program {
	char name[PROTOCOL_NAME_MAX];	/* PROGRAM */
	enum bpf_prog_type type;
};

struct protocol_attach {
	char program[PROTOCOL_NAME_MAX];
	char ifname[PROTOCOL_NAME_MAX];
};

struct protocol_prog_array {
	char map[PROTOCOL_NAME_MAX];
	unsigned int index;
	char program[PROTOCOL_NAME_MAX];
};

/* The arguments, parsed: every PROGRAM named by --attach or --prog-array is a --program's. */
struct protocol_request {
	const char *object;
	struct protocol_program programs[PROTOCOL_MAX_ITEMS];
	int program_count;
	struct protocol_attach attach[PROTOCOL_MAX_ITEMS];
	int attach_count;
	struct protocol_prog_array prog_arrays[PROTOCOL_MAX_ITEMS];
	int prog_array_count;
	const char *dump[PROTOCOL_MAX_ITEMS];
	int dump_count;
};

/* What the protocol needs to know of a map to check it, fill it or dump it. */
struct protocol_map {
	const char *name;
	int fd;			/* -1 before the object is loaded */
	uint32_t type;		/* enum bpf_map_type */
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	size_t value_bytes;	/* what a lookup writes: one 8-byte aligned value per possible
				 * CPU for a per-CPU map; 0 if that CPU count is unknown */
};

/*
 * One object format. Each function returns 0 (or an fd) on success; on failure
 * -1, having said why with protocol_fail(). obj is protocol_main()'s.
 */
struct protocol_loader {
	/* The loader's name in usage messages, unless argv[0] gives one. */
	const char *name;
	/* Open req->object and find every requested program; nothing is loaded yet. */
	int (*open)(void *obj, const struct protocol_request *req);
	/* Load every requested program. */
	int (*load)(void *obj, const struct protocol_request *req);
	/* The fd of the (loaded) program PROGRAM. */
	int (*program_fd)(void *obj, const char *program);
	/* Describe the map called name in *map. */
	int (*find_map)(void *obj, const char *name, struct protocol_map *map);
	/* The bpf(2) map commands: 0, or -1 with errno set. */
	int (*lookup)(int fd, const void *key, void *value);
	int (*update)(int fd, const void *key, const void *value, __u64 flags);
	int (*next_key)(int fd, const void *key, void *next_key);
	/* Optional: more about a failure on stderr, after its line (a verifier's log). */
	void (*explain)(void *obj);
};

/* Run the protocol; the exit status: 0, 1 on a failure, PROTOCOL_EXIT_USAGE. */
int protocol_main(int argc, char **argv, const struct protocol_loader *loader, void *obj);

/* The --program of PROGRAM, as it was given, or NULL. */
const struct protocol_program *protocol_requested(const struct protocol_request *req,
						  const char *program);

/* Record the failure's one line, which should start "OBJECT: "; always -1. */
int protocol_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A packet socket bound to the interface ifname with the program prog_fd
 * attached (SO_ATTACH_BPF); -1 with a message in error (of error_size) if not.
 */
int protocol_packet_socket(int prog_fd, const char *ifname, char *error, size_t error_size);

#endif
