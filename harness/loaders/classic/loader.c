// SPDX-License-Identifier: GPL-2.0
/*
 * loader-classic: the harness's loader protocol (harness/loaders/protocol.py,
 * spoken by ../common/protocol.c) for legacy objects, whose maps are
 * struct bpf_map_def in section "maps".
 *
 *   loader-classic --object FILE
 *                  [--program PROGRAM:TYPE]...
 *                  [--attach PROGRAM:socket:IFACE]...
 *                  [--prog-array MAP:INDEX:PROGRAM]...
 *                  [--dump MAP]...
 *
 * A program the verifier rejected adds its log to the failure's line on stderr.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "bpf_load.h"
#include "protocol.h"

/* bpf_load.c's last failure, as the protocol's. */
static int failed(struct bpf_load_object *obj)
{
	return protocol_fail("%s", obj->error);
}

static int open_object(void *data, const struct protocol_request *req)
{
	struct bpf_load_object *obj = data;
	/* Before Linux 5.11 maps are charged to RLIMIT_MEMLOCK, whose default a hash map of
	 * a thousand entries exceeds (EPERM); a loader lifts it, as libbpf does itself. */
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	int i;

	/* Said before the object is read: what else it finds there is beside the point. */
	for (i = 0; i < req->program_count; i++)
		if (strchr(req->programs[i].name, PROTOCOL_FUNCTION_SEPARATOR))
			return protocol_fail("%s: cannot load %s: this loader loads a whole section as "
					     "one program (as the kernel's old bpf_load.c did), not one "
					     "function of a section holding several; use the python or "
					     "libbpf loader", req->object, req->programs[i].name);
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	return bpf_load_open(obj, req->object) ? failed(obj) : 0;
}

static int load_programs(void *data, const struct protocol_request *req)
{
	struct bpf_load_object *obj = data;
	int i;

	for (i = 0; i < req->program_count; i++)
		if (bpf_load_program(obj, req->programs[i].name, req->programs[i].type) < 0)
			return failed(obj);
	return 0;
}

static int program_fd(void *data, const char *section)
{
	struct bpf_load_object *obj = data;
	struct bpf_load_prog *prog = bpf_load_find_program(obj, section);

	return prog ? prog->fd : failed(obj);
}

static int find_map(void *data, const char *name, struct protocol_map *map)
{
	struct bpf_load_object *obj = data;
	struct bpf_load_map *found = bpf_load_find_map(obj, name);

	if (!found)
		return failed(obj);
	map->name = found->name;
	map->fd = found->fd;
	map->type = found->type;
	map->key_size = found->key_size;
	map->value_size = found->value_size;
	map->max_entries = found->max_entries;
	map->value_bytes = bpf_load_value_bytes(found);
	return 0;
}

static void print_log(void *data)
{
	struct bpf_load_object *obj = data;

	if (obj->log && obj->log[0])
		fprintf(stderr, "verifier log:\n%s\n", obj->log);
}

static const struct protocol_loader classic = {
	.name = "loader-classic",
	.open = open_object,
	.load = load_programs,
	.program_fd = program_fd,
	.find_map = find_map,
	.lookup = bpf_lookup_elem,
	.update = bpf_update_elem,
	.next_key = bpf_get_next_key,
	.explain = print_log,
};

int main(int argc, char **argv)
{
	static struct bpf_load_object obj;
	int ret = protocol_main(argc, argv, &classic, &obj);

	bpf_load_close(&obj);
	return ret;
}
