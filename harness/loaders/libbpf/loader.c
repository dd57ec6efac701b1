// SPDX-License-Identifier: GPL-2.0
/*
 * loader-libbpf: the harness's loader protocol (harness/loaders/protocol.py,
 * spoken by ../common/protocol.c) on the distribution's libbpf, for objects
 * whose maps are BTF-defined (struct { ... } name SEC(".maps"), built with
 * clang -g -O2 -target bpf).
 *
 *   loader-libbpf --object FILE
 *                 [--program PROGRAM:TYPE]...
 *                 [--attach PROGRAM:socket:IFACE]...
 *                 [--prog-array MAP:INDEX:PROGRAM]...
 *                 [--dump MAP]...
 *
 * It opens the object with bpf_object__open_file(), sets the type of every
 * requested program (a PROGRAM is SECTION, or SECTION#FUNCTION in a section
 * holding several) and turns autoload off for the others, and loads it.
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

/* "SECTION#FUNCTION, ..." of every program of the object, into list (of size). */
static void list_programs(struct bpf_object *obj, char *list, size_t size)
{
	struct bpf_program *prog;
	size_t used = 0;

	list[0] = '\0';
	bpf_object__for_each_program(prog, obj) {
		if (used >= size)
			break;
		used += snprintf(list + used, size - used, "%s%s%c%s", used ? ", " : "",
				 bpf_program__section_name(prog), PROTOCOL_FUNCTION_SEPARATOR,
				 bpf_program__name(prog));
	}
}

/*
 * The program a PROGRAM of the protocol names: "SECTION#FUNCTION", the program of
 * that function (bpf_object__find_program_by_name) if it is in that section, or
 * "SECTION", the one program of that section. NULL, with the error set, if there
 * is none, or the section holds several and no function was given.
 */
static struct bpf_program *find_program(struct bpf_object *obj, const char *path,
					const char *program)
{
	const char *function = strchr(program, PROTOCOL_FUNCTION_SEPARATOR);
	int section_length = function ? (int)(function - program) : (int)strlen(program);
	struct bpf_program *prog, *found = NULL;
	char programs[512];

	list_programs(obj, programs, sizeof(programs));
	if (function) {
		prog = bpf_object__find_program_by_name(obj, function + 1);
		if (prog && strlen(bpf_program__section_name(prog)) == (size_t)section_length &&
		    strncmp(bpf_program__section_name(prog), program, section_length) == 0)
			return prog;
		protocol_fail("%s: no program %s: no function %s in section %.*s (it has: %s)",
			      path, program, function + 1, section_length, program, programs);
		return NULL;
	}
	bpf_object__for_each_program(prog, obj) {
		if (strcmp(bpf_program__section_name(prog), program) != 0)
			continue;
		if (found) {
			protocol_fail("%s: section %s holds more than one program (%s, %s, ...); "
				      "name one by its function, as %s%c%s",
				      path, program, bpf_program__name(found),
				      bpf_program__name(prog), program,
				      PROTOCOL_FUNCTION_SEPARATOR, bpf_program__name(found));
			return NULL;
		}
		found = prog;
	}
	if (!found)
		protocol_fail("%s: no program section %s (it has: %s)", path, program, programs);
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
			return protocol_fail("%s: the kernel refused program %s%c%s (%s): the "
				    "verifier's log and libbpf's messages above say why",
				    req->object, bpf_program__section_name(prog),
				    PROTOCOL_FUNCTION_SEPARATOR, bpf_program__name(prog), reason);
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

/*
 * Open the object, set the type of every requested program, leave the others unloaded.
 * A prog array the object initialises itself (__array(values, ...) = { ... }) libbpf
 * fills once the programs are loaded; each program it names must be requested.
 */
static int open_object(void *data, const struct protocol_request *req)
{
	struct bpf_program *requested[PROTOCOL_MAX_ITEMS];
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
	for (i = 0; i < req->program_count; i++) {
		requested[i] = find_program(object->obj, req->object, req->programs[i].name);
		if (!requested[i])
			return -1;
	}
	bpf_object__for_each_program(prog, object->obj) {
		const struct protocol_program *program = NULL;

		for (i = 0; i < req->program_count; i++)
			if (requested[i] == prog)
				program = &req->programs[i];
		if (!program) {
			bpf_program__set_autoload(prog, false);
			continue;
		}
		if (bpf_program__set_type(prog, program->type))
			return protocol_fail("%s: cannot set the type of program %s", req->object,
					     program->name);
	}
	return 0;
}

static int load_programs(void *data, const struct protocol_request *req)
{
	return load(((struct object *)data)->obj, req);
}

static int program_fd(void *data, const char *program)
{
	struct object *object = data;
	struct bpf_program *prog = find_program(object->obj, object->path, program);

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
