/*
 * The map-declaring macros of BTF-defined maps, written here so the tests do not
 * depend on libbpf's headers. A number travels in the type as the length of an
 * array a pointer points at; a type as the pointee of a pointer.
 */
#ifndef BTF_MAPS_H
#define BTF_MAPS_H

#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_tail_call)(void *ctx, void *map, __u32 index) =
	(void *)BPF_FUNC_tail_call;

#endif
