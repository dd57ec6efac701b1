/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A small loader for legacy BPF objects on libelf: it creates the maps of the
 * "maps" section, points every R_BPF_64_64 relocation at its map's fd and
 * loads each program section, keeping the verifier's log.
 */
#ifndef SOCKEX1_BPF_LOAD_H
#define SOCKEX1_BPF_LOAD_H

#define MAX_MAPS 32
#define MAX_PROGS 32
#define BPF_LOG_SIZE (1024 * 1024)

/* Filled by load_bpf_file(), in the order of the object's sections. */
extern int map_fd[MAX_MAPS];
extern int prog_fd[MAX_PROGS];
extern int map_count;
/* Key and value sizes of each map, as its definition gave them. */
extern unsigned int map_key_size[MAX_MAPS];
extern unsigned int map_value_size[MAX_MAPS];
extern int prog_count;
/* The verifier's log of the last program loaded (empty if it said nothing). */
extern char bpf_log_buf[BPF_LOG_SIZE];

/*
 * Load every map and program of the object at path. Returns 0, or -1 after
 * printing on stderr what went wrong (and the verifier log, if the kernel
 * rejected a program).
 */
int load_bpf_file(const char *path);

/* bpf(BPF_MAP_LOOKUP_ELEM); 0 or -1 with errno set. */
int bpf_lookup_elem(int fd, const void *key, void *value);

#endif
