// SPDX-License-Identifier: GPL-2.0
/*
 * loader-libbpf: the harness's loader protocol (harness/loaders/protocol.py,
 * spoken by ../common/protocol.c) on the distribution's libbpf, for objects
 * whose maps are BTF-defined (struct { ... } name SEC(".maps"), built with
 * clang -g -O2 -target bpf).
 *
 *   loader-libbpf --object FILE
 *                 [--program SECTION:TYPE]...
 *                 [--attach SECTION:socket:IFACE]...
 *                 [--prog-array MAP:INDEX:SECTION]...
 *                 [--dump MAP]...
 *
 * It opens the object with bpf_object__open_file(), sets the type of every
 * requested program and turns autoload off for the others, and loads it.
 * libbpf's own messages (the verifier's log of a rejected program among them)
 * go to stderr, before the failure's line.
 *
 * Only libbpf 1.0 API is used (Debian 12 has 1.1).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "protocol.h"

/* The object, and its path for messages. */
struct object {
	struct bpf_object *obj;
	const char *path;
};

/* The program libbpf last said it failed to load. */
static char failed_program[PROTOCOL_NAME_MAX];

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
				protocol_fail("%s: section %s holds more than one program (%s, %s); the "
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
		protocol_fail("%s: no program section %s (it has: %s)", path, section, sections);
	return found;
}

static int load(struct bpf_object *obj, const struct protocol_request *req)
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
			return protocol_fail("%s: the kernel refused program %s (%s): the verifier's log "
				    "and libbpf's messages above say why", req->object,
				    bpf_program__section_name(prog), reason);
	}
	return protocol_fail("%s: libbpf cannot load the object: %s%s; libbpf's messages above say "
		    "why", req->object, reason,
		    err == -EPERM ? " (run as root or with CAP_BPF)" : "");
}

static struct bpf_map *find_map(struct bpf_object *obj, const char *path, const char *name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		protocol_fail("%s: no map %s; a map is named by its variable in SEC(\".maps\")",
			      path, name);
	return map;
}

/* Open the object, set the type of every requested program, leave the others unloaded. */
static int open_object(void *data, const struct protocol_request *req)
{
	struct object *object = data;
	struct bpf_program *prog;
	int i;

	object->path = req->object;
	object->obj = bpf_object__open_file(req->object, NULL);
	if (!object->obj) {
		char reason[256];

		libbpf_strerror(errno, reason, sizeof(reason));
		return protocol_fail("%s: libbpf cannot open the object: %s; give an object "
				     "with BTF-defined maps built with clang -g -O2 -target bpf "
				     "(legacy SEC(\"maps\") objects need the classic loader)",
				     req->object, reason);
	}
	for (i = 0; i < req->program_count; i++)
		if (!find_program(object->obj, req->object, req->programs[i].section))
			return -1;
	bpf_object__for_each_program(prog, object->obj) {
		const struct protocol_program *program =
			protocol_requested(req, bpf_program__section_name(prog));

		if (!program) {
			bpf_program__set_autoload(prog, false);
			continue;
		}
		if (bpf_program__set_type(prog, program->type))
			return protocol_fail("%s: cannot set the type of program %s", req->object,
					     program->section);
	}
	return 0;
}

static int load_programs(void *data, const struct protocol_request *req)
{
	return load(((struct object *)data)->obj, req);
}

static int program_fd(void *data, const char *section)
{
	struct object *object = data;
	struct bpf_program *prog = find_program(object->obj, object->path, section);

	return prog ? bpf_program__fd(prog) : -1;
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

static int describe_map(void *data, const char *name, struct protocol_map *map)
{
	struct object *object = data;
	struct bpf_map *found = find_map(object->obj, object->path, name);

	if (!found)
		return -1;
	map->name = bpf_map__name(found);
	map->fd = bpf_map__fd(found);
	map->type = bpf_map__type(found);
	map->key_size = bpf_map__key_size(found);
	map->value_size = bpf_map__value_size(found);
	map->max_entries = bpf_map__max_entries(found);
	map->value_bytes = value_bytes(found);
	return 0;
}

static const struct protocol_loader libbpf = {
	.name = "loader-libbpf",
	.open = open_object,
	.load = load_programs,
	.program_fd = program_fd,
	.find_map = describe_map,
	.lookup = bpf_map_lookup_elem,
	.update = bpf_map_update_elem,
	.next_key = bpf_map_get_next_key,
};

int main(int argc, char **argv)
{
	static struct object object;
	int ret;

	libbpf_set_print(print_libbpf);
	ret = protocol_main(argc, argv, &libbpf, &object);
	bpf_object__close(object.obj);
	return ret;
}
