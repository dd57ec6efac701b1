/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A small loader for legacy BPF objects on libelf.
 *
 * A legacy object declares its maps as struct bpf_map_def in the section
 * "maps" (five 32-bit fields, 20 bytes each) and references them from its
 * programs through R_BPF_64_64 relocations. bpf_load_open() creates every
 * map and applies every such relocation in every program section; the
 * programs are then loaded one by one, with the type the caller gives.
 *
 * The functions return 0 (or an fd) on success and -1 on failure, leaving one
 * line in obj->error that names the object and what to do; they never print.
 * A program the verifier rejected leaves its log in obj->log.
 *
 * Only fields of union bpf_attr that Linux 4.15 already had are used, so the
 * file builds against the UAPI headers of any kernel from 5.10 on.
 */
#ifndef BPF_LOAD_H
#define BPF_LOAD_H

#include <stddef.h>
#include <stdint.h>
#include <linux/bpf.h>

#include "../common/protocol.h"

#define BPF_LOAD_MAX_MAPS 64
#define BPF_LOAD_MAX_PROGS 64
#define BPF_LOAD_NAME_MAX 128
#define BPF_LOAD_ERROR_MAX 1024

struct bpf_load_map {
	char name[BPF_LOAD_NAME_MAX];	/* its symbol in the object */
	uint32_t type;			/* enum bpf_map_type */
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
	size_t offset;			/* of its definition in section maps */
	int fd;
};

struct bpf_load_prog {
	char section[BPF_LOAD_NAME_MAX];
	struct bpf_insn *insns;		/* relocated: map references hold map fds */
	size_t insn_count;
	int fd;				/* -1 until loaded */
};

struct bpf_load_object {
	char path[4096];
	char license[128];
	struct bpf_load_map maps[BPF_LOAD_MAX_MAPS];
	int map_count;
	struct bpf_load_prog progs[BPF_LOAD_MAX_PROGS];
	int prog_count;
	char *log;			/* the verifier's log of the last rejected program */
	char error[BPF_LOAD_ERROR_MAX];	/* what the last failure was, one line */
};

/*
 * Read the object at path, create its maps and relocate its programs. On
 * failure everything created is closed again; call bpf_load_close() in
 * either case.
 */
int bpf_load_open(struct bpf_load_object *obj, const char *path);

/* Load the program of section with type; its fd, also kept in the program. */
int bpf_load_program(struct bpf_load_object *obj, const char *section,
			    enum bpf_prog_type type);

/* The map named name, or NULL (with obj->error set). */
struct bpf_load_map *bpf_load_find_map(struct bpf_load_object *obj, const char *name);

/* The program of section, or NULL (with obj->error set). */
struct bpf_load_prog *bpf_load_find_program(struct bpf_load_object *obj,
					      const char *section);

/* Record one line, "OBJECT: what", as the object's error; always -1. */
int bpf_load_fail(struct bpf_load_object *obj, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Close every fd the object holds and free its memory. */
void bpf_load_close(struct bpf_load_object *obj);

/*
 * How many bytes a lookup of map writes: value_size, or for a per-CPU map one
 * 8-byte aligned value per possible CPU; 0 if the CPU count is unknown.
 */
size_t bpf_load_value_bytes(const struct bpf_load_map *map);

/* The bpf(2) map commands; 0, or -1 with errno set. */
int bpf_lookup_elem(int fd, const void *key, void *value);
int bpf_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_get_next_key(int fd, const void *key, void *next_key);

/*
 * A packet socket bound to the interface ifname with the program prog_fd
 * attached (SO_ATTACH_BPF); -1 with a message in error (of error_size) if not.
 * The loader protocol's own (../common/protocol.c, which a program that calls
 * this is linked with), under the name the samples' user programs use.
 */
static inline int bpf_attach_packet_socket(int prog_fd, const char *ifname, char *error,
					   size_t error_size)
{
	return protocol_packet_socket(prog_fd, ifname, error, error_size);
}

#endif
