// SPDX-License-Identifier: GPL-2.0
/*
 * Legacy BPF object loader on libelf (see bpf_load.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <libelf.h>
#include <gelf.h>

#include "bpf_load.h"

#ifndef EM_BPF
#define EM_BPF 247
#endif
/* The relocation types of BPF objects (the ELF headers of old libcs lack them). */
#define RELOC_BPF_64_64 1	/* a 64-bit immediate load of a symbol's address */
#define RELOC_BPF_64_32 10	/* a call to a BPF function */

/* The section legacy objects declare their maps in, and the size of one definition. */
#define MAPS_SECTION "maps"
#define MAP_DEF_SIZE 20

/* The verifier log buffer starts at LOG_START bytes and doubles up to LOG_MAX on ENOSPC. */
#define LOG_START (64 * 1024)
#define LOG_MAX (64 * 1024 * 1024)

/* Map types whose values the kernel holds once per possible CPU. */
static const uint32_t percpu_map_types[] = {
	5,	/* BPF_MAP_TYPE_PERCPU_HASH */
	6,	/* BPF_MAP_TYPE_PERCPU_ARRAY */
	10,	/* BPF_MAP_TYPE_LRU_PERCPU_HASH */
	21,	/* BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE */
};

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

int bpf_load_fail(struct bpf_load_object *obj, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(obj->error, sizeof(obj->error), "%s: ", obj->path);
	if (n < 0 || (size_t)n >= sizeof(obj->error))
		return -1;
	va_start(ap, fmt);
	vsnprintf(obj->error + n, sizeof(obj->error) - n, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *privilege_hint(int err)
{
	return err == EPERM ? " (run as root or with CAP_BPF)" : "";
}

int bpf_lookup_elem(int fd, const void *key, void *value)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uint64_t)(unsigned long)key;
	attr.value = (uint64_t)(unsigned long)value;
	return sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr) < 0 ? -1 : 0;
}

int bpf_update_elem(int fd, const void *key, const void *value, __u64 flags)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uint64_t)(unsigned long)key;
	attr.value = (uint64_t)(unsigned long)value;
	attr.flags = flags;
	return sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0 ? -1 : 0;
}

int bpf_get_next_key(int fd, const void *key, void *next_key)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uint64_t)(unsigned long)key;
	attr.next_key = (uint64_t)(unsigned long)next_key;
	return sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) < 0 ? -1 : 0;
}

/* The number of possible CPUs, from a list such as "0-3,8-11"; 0 if unreadable. */
static unsigned int possible_cpus(void)
{
	char list[256];
	unsigned int count = 0, first, last;
	const char *p = list;
	FILE *file;
	int used;

	file = fopen("/sys/devices/system/cpu/possible", "r");
	if (!file)
		return 0;
	if (!fgets(list, sizeof(list), file))
		list[0] = '\0';
	fclose(file);
	while (*p && *p != '\n') {
		if (sscanf(p, "%u-%u%n", &first, &last, &used) == 2)
			count += last - first + 1;
		else if (sscanf(p, "%u%n", &first, &used) == 1)
			count += 1;
		else
			return 0;
		p += used;
		if (*p == ',')
			p++;
	}
	return count;
}

size_t bpf_load_value_bytes(const struct bpf_load_map *map)
{
	size_t i;

	for (i = 0; i < sizeof(percpu_map_types) / sizeof(percpu_map_types[0]); i++)
		if (map->type == percpu_map_types[i])
			return ((map->value_size + 7) & ~(size_t)7) * possible_cpus();
	return map->value_size;
}

/* The kernel's map name: at most 15 characters, letters, digits, '_' and '.'. */
static void kernel_object_name(char *dst, size_t dst_size, const char *name)
{
	size_t i;

	for (i = 0; i + 1 < dst_size && name[i]; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.'))
			break;
		dst[i] = c;
	}
	dst[i] = '\0';
}

/* The name of the symbol that defines the map at offset of section maps. */
static int map_symbol(struct bpf_load_object *obj, Elf *elf, Elf_Data *symbols,
		      size_t strtab, size_t maps_index, size_t offset, char *name)
{
	size_t i, count = symbols->d_size / sizeof(Elf64_Sym);
	GElf_Sym sym;

	for (i = 0; i < count; i++) {
		const char *found;

		if (!gelf_getsym(symbols, i, &sym) || sym.st_shndx != maps_index ||
		    sym.st_value != offset || GELF_ST_TYPE(sym.st_info) == STT_SECTION)
			continue;
		found = elf_strptr(elf, strtab, sym.st_name);
		if (!found || !found[0] || strlen(found) >= BPF_LOAD_NAME_MAX)
			break;
		strcpy(name, found);
		return 0;
	}
	return bpf_load_fail(obj, "the map defined at offset %zu of section " MAPS_SECTION " has no "
		    "usable symbol; do not strip the object", offset);
}

static int create_maps(struct bpf_load_object *obj, Elf *elf, Elf_Data *maps,
		       Elf_Data *symbols, size_t strtab, size_t maps_index)
{
	union bpf_attr attr;
	uint32_t def[5];
	int i, count;

	if (maps->d_size % MAP_DEF_SIZE)
		return bpf_load_fail(obj, "section " MAPS_SECTION " holds %zu bytes, not a whole number of "
			    "%d-byte struct bpf_map_def; declare every map as struct bpf_map_def "
			    "of five unsigned ints", maps->d_size, MAP_DEF_SIZE);
	if (maps->d_size / MAP_DEF_SIZE > BPF_LOAD_MAX_MAPS)
		return bpf_load_fail(obj, "section " MAPS_SECTION " defines %zu maps, more than the %d "
			    "this loader takes", maps->d_size / MAP_DEF_SIZE, BPF_LOAD_MAX_MAPS);
	count = maps->d_size / MAP_DEF_SIZE;
	for (i = 0; i < count; i++) {
		struct bpf_load_map *map = &obj->maps[i];

		map->offset = (size_t)i * MAP_DEF_SIZE;
		if (map_symbol(obj, elf, symbols, strtab, maps_index, map->offset, map->name))
			return -1;
		memcpy(def, (const char *)maps->d_buf + map->offset, sizeof(def));
		map->type = def[0];
		map->key_size = def[1];
		map->value_size = def[2];
		map->max_entries = def[3];
		map->map_flags = def[4];

		memset(&attr, 0, sizeof(attr));
		attr.map_type = map->type;
		attr.key_size = map->key_size;
		attr.value_size = map->value_size;
		attr.max_entries = map->max_entries;
		attr.map_flags = map->map_flags;
		kernel_object_name(attr.map_name, sizeof(attr.map_name), map->name);
		map->fd = sys_bpf(BPF_MAP_CREATE, &attr);
		if (map->fd < 0)
			return bpf_load_fail(obj, "cannot create map %s (type %u, key %u B, value %u B, "
				    "%u entries, flags %#x): %s%s", map->name, map->type,
				    map->key_size, map->value_size, map->max_entries,
				    map->map_flags, strerror(errno), errno == EPERM ?
				    privilege_hint(errno) :
				    "; check the definition against what this kernel supports");
		obj->map_count = i + 1;
	}
	return 0;
}

static struct bpf_load_prog *program_of_section(struct bpf_load_object *obj,
						const size_t *prog_sections, size_t index)
{
	int i;

	for (i = 0; i < obj->prog_count; i++)
		if (prog_sections[i] == index)
			return &obj->progs[i];
	return NULL;
}

/* Point every 64-bit immediate load of a map in prog at the map's fd. */
static int relocate(struct bpf_load_object *obj, struct bpf_load_prog *prog, Elf *elf,
		    Elf_Data *rels, size_t rel_count, Elf_Data *symbols, size_t strtab,
		    size_t maps_index)
{
	size_t i;

	for (i = 0; i < rel_count; i++) {
		struct bpf_insn *insn;
		const char *symbol;
		GElf_Rel rel;
		GElf_Sym sym;
		size_t at, offset;
		int m;

		if (!gelf_getrel(rels, i, &rel))
			return bpf_load_fail(obj, "program %s: relocation %zu is unreadable: %s",
				    prog->section, i, elf_errmsg(-1));
		if (!gelf_getsym(symbols, GELF_R_SYM(rel.r_info), &sym))
			return bpf_load_fail(obj, "program %s: relocation %zu names symbol %lu, which is "
				    "not in the symbol table", prog->section, i,
				    (unsigned long)GELF_R_SYM(rel.r_info));
		symbol = elf_strptr(elf, strtab, sym.st_name);
		if (!symbol || !symbol[0])
			symbol = "(a section)";
		if (GELF_R_TYPE(rel.r_info) == RELOC_BPF_64_32)
			return bpf_load_fail(obj, "program %s calls the BPF function %s; the classic loader "
				    "takes no BPF-to-BPF calls: make it static __always_inline",
				    prog->section, symbol);
		if (GELF_R_TYPE(rel.r_info) != RELOC_BPF_64_64)
			return bpf_load_fail(obj, "program %s: relocation against %s has type %lu; the "
				    "classic loader applies only R_BPF_64_64 (a map reference)",
				    prog->section, symbol, (unsigned long)GELF_R_TYPE(rel.r_info));
		at = rel.r_offset / sizeof(struct bpf_insn);
		if (rel.r_offset % sizeof(struct bpf_insn) || at + 1 >= prog->insn_count ||
		    prog->insns[at].code != (BPF_LD | BPF_IMM | BPF_DW))
			return bpf_load_fail(obj, "program %s: the relocation against %s at offset %lu is "
				    "not on a 64-bit immediate load", prog->section, symbol,
				    (unsigned long)rel.r_offset);
		insn = &prog->insns[at];
		if (sym.st_shndx != maps_index)
			return bpf_load_fail(obj, "program %s references %s, which is not a map of section "
				    MAPS_SECTION "; the classic loader knows no global data: use "
				    "the libbpf loader for it", prog->section, symbol);
		/* REL relocations keep their addend in the instruction. */
		offset = sym.st_value + (size_t)(uint32_t)insn->imm;
		for (m = 0; m < obj->map_count; m++)
			if (obj->maps[m].offset == offset)
				break;
		if (m == obj->map_count)
			return bpf_load_fail(obj, "program %s references offset %zu of section " MAPS_SECTION
				    ", where no map definition starts", prog->section, offset);
		insn[0].src_reg = BPF_PSEUDO_MAP_FD;
		insn[0].imm = obj->maps[m].fd;
		insn[1].imm = 0;
	}
	return 0;
}

/* Copy every program section's instructions into obj->progs. */
static int read_programs(struct bpf_load_object *obj, Elf *elf, size_t section_count,
			 size_t strtab, size_t *prog_sections)
{
	size_t i;

	for (i = 1; i < section_count; i++) {
		Elf_Scn *scn = elf_getscn(elf, i);
		struct bpf_load_prog *prog;
		const char *name;
		Elf_Data *data;
		GElf_Shdr shdr;

		if (!scn || !gelf_getshdr(scn, &shdr))
			return bpf_load_fail(obj, "section %zu is unreadable: %s", i, elf_errmsg(-1));
		if (shdr.sh_type != SHT_PROGBITS || !(shdr.sh_flags & SHF_EXECINSTR) ||
		    shdr.sh_size == 0)
			continue;
		name = elf_strptr(elf, strtab, shdr.sh_name);
		data = elf_getdata(scn, NULL);
		if (!name || !data || data->d_size != shdr.sh_size)
			return bpf_load_fail(obj, "program section %zu is unreadable or cut short; rebuild "
				    "the object", i);
		if (strlen(name) >= BPF_LOAD_NAME_MAX)
			return bpf_load_fail(obj, "program section %.40s... has a name longer than %d "
				    "characters", name, BPF_LOAD_NAME_MAX - 1);
		if (data->d_size % sizeof(struct bpf_insn))
			return bpf_load_fail(obj, "program %s is not a whole number of instructions", name);
		if (obj->prog_count == BPF_LOAD_MAX_PROGS)
			return bpf_load_fail(obj, "more than %d program sections", BPF_LOAD_MAX_PROGS);
		prog = &obj->progs[obj->prog_count];
		prog->insns = malloc(data->d_size);
		if (!prog->insns)
			return bpf_load_fail(obj, "out of memory for program %s", name);
		memcpy(prog->insns, data->d_buf, data->d_size);
		prog->insn_count = data->d_size / sizeof(struct bpf_insn);
		strcpy(prog->section, name);
		prog_sections[obj->prog_count++] = i;
	}
	if (obj->prog_count == 0)
		return bpf_load_fail(obj, "no program: no executable section holds instructions");
	return 0;
}

/* Apply the relocation sections of every program section. */
static int relocate_programs(struct bpf_load_object *obj, Elf *elf, size_t section_count,
			     const size_t *prog_sections, Elf_Data *symbols, size_t sym_strtab,
			     size_t maps_index)
{
	struct bpf_load_prog *prog;
	size_t i;

	for (i = 1; i < section_count; i++) {
		Elf_Scn *scn = elf_getscn(elf, i);
		Elf_Data *rels;
		GElf_Shdr shdr;

		if (!scn || !gelf_getshdr(scn, &shdr))
			return bpf_load_fail(obj, "section %zu is unreadable: %s", i, elf_errmsg(-1));
		if (shdr.sh_type != SHT_REL && shdr.sh_type != SHT_RELA)
			continue;
		prog = program_of_section(obj, prog_sections, shdr.sh_info);
		if (!prog)
			continue;	/* e.g. .rel.BTF: not a program's */
		if (shdr.sh_type == SHT_RELA)
			return bpf_load_fail(obj, "program %s has RELA relocations; BPF objects use REL: "
				    "compile it with clang -target bpf", prog->section);
		rels = elf_getdata(scn, NULL);
		if (!rels || shdr.sh_entsize != sizeof(Elf64_Rel) || rels->d_size != shdr.sh_size)
			return bpf_load_fail(obj, "the relocations of program %s are unreadable or cut short",
				    prog->section);
		if (!symbols)
			return bpf_load_fail(obj, "program %s has relocations but the object has no symbol "
				    "table", prog->section);
		if (relocate(obj, prog, elf, rels, shdr.sh_size / shdr.sh_entsize, symbols,
			     sym_strtab, maps_index))
			return -1;
	}
	return 0;
}

static int read_object(struct bpf_load_object *obj, Elf *elf, off_t file_size)
{
	size_t section_count, strtab, sym_strtab = 0, maps_index = 0, i;
	size_t prog_sections[BPF_LOAD_MAX_PROGS];
	Elf_Data *symbols = NULL, *maps = NULL;
	GElf_Ehdr ehdr;

	if (elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &ehdr))
		return bpf_load_fail(obj, "not an ELF object (%s); give a BPF object built with "
			    "clang -target bpf", elf_errmsg(-1));
	if (ehdr.e_machine != EM_BPF || ehdr.e_ident[EI_CLASS] != ELFCLASS64)
		return bpf_load_fail(obj, "not a 64-bit BPF object; compile it with clang -target bpf");
	/* libelf reads a section table beyond the end of the file as no sections at all. */
	if (ehdr.e_shoff + (uint64_t)ehdr.e_shnum * ehdr.e_shentsize > (uint64_t)file_size)
		return bpf_load_fail(obj, "the file is cut short: it holds %lld bytes, its section "
				     "table ends at byte %llu; rebuild the object",
				     (long long)file_size, (unsigned long long)(ehdr.e_shoff +
				     (uint64_t)ehdr.e_shnum * ehdr.e_shentsize));
	if (elf_getshdrstrndx(elf, &strtab) || elf_getshdrnum(elf, &section_count))
		return bpf_load_fail(obj, "the section table is unreadable (%s); the file may be cut "
			    "short, rebuild it", elf_errmsg(-1));

	for (i = 1; i < section_count; i++) {
		Elf_Scn *scn = elf_getscn(elf, i);
		const char *name;
		Elf_Data *data;
		GElf_Shdr shdr;

		if (!scn || !gelf_getshdr(scn, &shdr) ||
		    !(name = elf_strptr(elf, strtab, shdr.sh_name)))
			return bpf_load_fail(obj, "section header %zu is unreadable (%s); rebuild the "
				    "object", i, elf_errmsg(-1));
		if (shdr.sh_type == SHT_NOBITS)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data || data->d_size != shdr.sh_size)
			return bpf_load_fail(obj, "section %s is cut short; rebuild the object", name);
		if (strcmp(name, "license") == 0) {
			size_t n = data->d_size < sizeof(obj->license) - 1 ?
				   data->d_size : sizeof(obj->license) - 1;

			memcpy(obj->license, data->d_buf, n);
			obj->license[n] = '\0';
		} else if (strcmp(name, MAPS_SECTION) == 0) {
			maps = data;
			maps_index = i;
		} else if (shdr.sh_type == SHT_SYMTAB) {
			if (shdr.sh_entsize != sizeof(Elf64_Sym))
				return bpf_load_fail(obj, "the symbol table is unreadable");
			symbols = data;
			sym_strtab = shdr.sh_link;
		}
	}
	if (!obj->license[0])
		return bpf_load_fail(obj, "no license section; add char _license[] SEC(\"license\") = "
			    "\"GPL\";");
	if (maps) {
		if (!symbols)
			return bpf_load_fail(obj, "section " MAPS_SECTION " but no symbol table to name "
				    "its maps; do not strip the object");
		if (create_maps(obj, elf, maps, symbols, sym_strtab, maps_index))
			return -1;
	}
	if (read_programs(obj, elf, section_count, strtab, prog_sections))
		return -1;
	/* Without section maps no symbol's section is maps_index: every reference fails. */
	return relocate_programs(obj, elf, section_count, prog_sections, symbols, sym_strtab,
				 maps ? maps_index : SIZE_MAX);
}

int bpf_load_open(struct bpf_load_object *obj, const char *path)
{
	struct stat st;
	Elf *elf;
	int i, file_fd, ret;

	memset(obj, 0, sizeof(*obj));
	for (i = 0; i < BPF_LOAD_MAX_MAPS; i++)
		obj->maps[i].fd = -1;
	for (i = 0; i < BPF_LOAD_MAX_PROGS; i++)
		obj->progs[i].fd = -1;
	snprintf(obj->path, sizeof(obj->path), "%s", path);

	if (elf_version(EV_CURRENT) == EV_NONE)
		return bpf_load_fail(obj, "libelf is too old: %s", elf_errmsg(-1));
	file_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (file_fd < 0)
		return bpf_load_fail(obj, "cannot open the object: %s", strerror(errno));
	elf = fstat(file_fd, &st) ? NULL : elf_begin(file_fd, ELF_C_READ, NULL);
	if (!elf)
		ret = bpf_load_fail(obj, "not an ELF object (%s); give a BPF object built with "
				    "clang -target bpf", elf_errmsg(-1));
	else
		ret = read_object(obj, elf, st.st_size);
	if (elf)
		elf_end(elf);
	close(file_fd);
	if (ret) {
		char error[BPF_LOAD_ERROR_MAX];

		/* A failed open leaves nothing open; keep its message across the close. */
		memcpy(error, obj->error, sizeof(error));
		bpf_load_close(obj);
		memcpy(obj->error, error, sizeof(error));
	}
	return ret;
}

/* The line of the verifier log that says why it stopped: the last before its summary. */
static void verifier_reason(const char *log, const char **reason, int *length)
{
	const char *line = log, *end;

	*reason = "see its log";
	*length = (int)strlen(*reason);
	while (*line) {
		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if (end > line && strncmp(line, "processed ", 10) &&
		    strncmp(line, "verification time", 17) && strncmp(line, "stack depth", 11)) {
			*reason = line;
			*length = (int)(end - line);
		}
		line = *end ? end + 1 : end;
	}
}

static int prog_load(struct bpf_load_object *obj, struct bpf_load_prog *prog,
		     enum bpf_prog_type type, char *log, size_t log_size)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = type;
	attr.insns = (uint64_t)(unsigned long)prog->insns;
	attr.insn_cnt = prog->insn_count;
	attr.license = (uint64_t)(unsigned long)obj->license;
	if (log) {
		log[0] = '\0';
		attr.log_buf = (uint64_t)(unsigned long)log;
		attr.log_size = log_size;
		attr.log_level = 1;
	}
	return sys_bpf(BPF_PROG_LOAD, &attr);
}

int bpf_load_program(struct bpf_load_object *obj, const char *section, enum bpf_prog_type type)
{
	struct bpf_load_prog *prog = bpf_load_find_program(obj, section);
	size_t log_size;
	int err;

	if (!prog)
		return -1;
	if (prog->fd >= 0)
		return bpf_load_fail(obj, "program %s is loaded twice; name it once", section);
	/* Without a log first: a log costs time, and a full one fails the load (ENOSPC). */
	prog->fd = prog_load(obj, prog, type, NULL, 0);
	if (prog->fd >= 0)
		return prog->fd;
	err = errno;
	if (err == EPERM)
		return bpf_load_fail(obj, "cannot load program %s: %s%s", section, strerror(err),
			    privilege_hint(err));
	for (log_size = LOG_START; log_size <= LOG_MAX; log_size *= 2) {
		free(obj->log);
		obj->log = malloc(log_size);
		if (!obj->log)
			return bpf_load_fail(obj, "out of memory for the verifier log of program %s",
				    section);
		prog->fd = prog_load(obj, prog, type, obj->log, log_size);
		if (prog->fd >= 0)
			return prog->fd;	/* it passed this time: keep it */
		err = errno;
		if (err != ENOSPC)
			break;
	}
	if (obj->log[0]) {
		const char *reason;
		int length;

		verifier_reason(obj->log, &reason, &length);
		/* errno is EACCES or EINVAL here: the log, not errno, says why. */
		return bpf_load_fail(obj, "the kernel's verifier rejected program %s: %.*s (%s%s; its log "
			    "follows)", section, length, reason, strerror(err),
			    err == ENOSPC ? ", the log was cut short" : "");
	}
	free(obj->log);
	obj->log = NULL;
	return bpf_load_fail(obj, "cannot load program %s as program type %d: %s; check that this "
		    "kernel has that program type", section, (int)type, strerror(err));
}

struct bpf_load_map *bpf_load_find_map(struct bpf_load_object *obj, const char *name)
{
	char names[512] = "";
	size_t used = 0;
	int i;

	for (i = 0; i < obj->map_count; i++) {
		if (strcmp(obj->maps[i].name, name) == 0)
			return &obj->maps[i];
		if (used < sizeof(names))
			used += snprintf(names + used, sizeof(names) - used, "%s%s",
					 i ? ", " : "", obj->maps[i].name);
	}
	bpf_load_fail(obj, "no map %s in section " MAPS_SECTION " (it has: %s)", name,
	     obj->map_count ? names : "no maps");
	return NULL;
}

struct bpf_load_prog *bpf_load_find_program(struct bpf_load_object *obj, const char *section)
{
	char names[512] = "";
	size_t used = 0;
	int i;

	for (i = 0; i < obj->prog_count; i++) {
		if (strcmp(obj->progs[i].section, section) == 0)
			return &obj->progs[i];
		if (used < sizeof(names))
			used += snprintf(names + used, sizeof(names) - used, "%s%s",
					 i ? ", " : "", obj->progs[i].section);
	}
	bpf_load_fail(obj, "no program section %s (it has: %s)", section, names);
	return NULL;
}

void bpf_load_close(struct bpf_load_object *obj)
{
	int i;

	for (i = 0; i < obj->prog_count; i++) {
		if (obj->progs[i].fd >= 0)
			close(obj->progs[i].fd);
		obj->progs[i].fd = -1;
		free(obj->progs[i].insns);
		obj->progs[i].insns = NULL;
	}
	for (i = 0; i < obj->map_count; i++) {
		if (obj->maps[i].fd >= 0)
			close(obj->maps[i].fd);
		obj->maps[i].fd = -1;
	}
	free(obj->log);
	obj->log = NULL;
	obj->prog_count = obj->map_count = 0;
}
