// SPDX-License-Identifier: GPL-2.0
/*
 * Legacy BPF object loader on libelf (see bpf_load.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <libelf.h>
#include <gelf.h>
#include <linux/bpf.h>

#include "bpf_load.h"

#ifndef EM_BPF
#define EM_BPF 247
#endif
#ifndef R_BPF_64_64
#define R_BPF_64_64 1
#endif

/* struct bpf_map_def as the object declares it: five 32-bit fields. */
struct map_def {
	uint32_t type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
};

int map_fd[MAX_MAPS];
int prog_fd[MAX_PROGS];
int map_count;
unsigned int map_key_size[MAX_MAPS];
unsigned int map_value_size[MAX_MAPS];
int prog_count;
char bpf_log_buf[BPF_LOG_SIZE];

static const char *object_path;

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int fail(const char *fmt, const char *what)
{
	fprintf(stderr, "%s: ", object_path);
	fprintf(stderr, fmt, what);
	fputc('\n', stderr);
	return -1;
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

static int create_maps(Elf_Data *data)
{
	const struct map_def *defs = data->d_buf;
	union bpf_attr attr;
	int i;

	if (data->d_size % sizeof(struct map_def)) {
		fprintf(stderr, "%s: section maps holds %zu bytes, not a whole number of "
			"%zu-byte struct bpf_map_def\n",
			object_path, data->d_size, sizeof(struct map_def));
		return -1;
	}
	if (map_count)
		return fail("%s", "more than one section named maps");
	if (data->d_size / sizeof(struct map_def) > MAX_MAPS)
		return fail("%s", "too many maps");
	map_count = data->d_size / sizeof(struct map_def);

	for (i = 0; i < map_count; i++) {
		memset(&attr, 0, sizeof(attr));
		attr.map_type = defs[i].type;
		attr.key_size = defs[i].key_size;
		attr.value_size = defs[i].value_size;
		attr.max_entries = defs[i].max_entries;
		attr.map_flags = defs[i].map_flags;
		map_key_size[i] = defs[i].key_size;
		map_value_size[i] = defs[i].value_size;
		map_fd[i] = sys_bpf(BPF_MAP_CREATE, &attr);
		if (map_fd[i] < 0) {
			fprintf(stderr, "%s: cannot create map %d: %s%s\n", object_path, i,
				strerror(errno),
				errno == EPERM ? " (run as root or with CAP_BPF)" : "");
			map_count = i;	/* the maps created so far, for close_all() */
			return -1;
		}
	}
	return 0;
}

/* Point the 64-bit immediate loads that reference a map at that map's fd. */
static int relocate(struct bpf_insn *insns, size_t insn_count, Elf_Data *rels,
		    GElf_Shdr *rel_shdr, Elf_Data *symbols, int maps_index)
{
	size_t count = rel_shdr->sh_size / rel_shdr->sh_entsize;
	size_t i;

	for (i = 0; i < count; i++) {
		GElf_Rel rel;
		GElf_Sym sym;
		size_t at;

		if (!gelf_getrel(rels, i, &rel))
			return fail("%s", "unreadable relocation");
		if (GELF_R_TYPE(rel.r_info) != R_BPF_64_64) {
			fprintf(stderr, "%s: unsupported relocation type %lu; only R_BPF_64_64 "
				"(a reference to a map) is supported\n", object_path,
				(unsigned long)GELF_R_TYPE(rel.r_info));
			return -1;
		}
		if (!gelf_getsym(symbols, GELF_R_SYM(rel.r_info), &sym))
			return fail("%s", "relocation against a symbol not in the symbol table");
		if (maps_index < 0 || sym.st_shndx != maps_index ||
		    sym.st_value % sizeof(struct map_def) ||
		    sym.st_value / sizeof(struct map_def) >= (size_t)map_count)
			return fail("%s", "relocation against an unknown symbol, not a map of section maps");
		at = rel.r_offset / sizeof(struct bpf_insn);
		if (rel.r_offset % sizeof(struct bpf_insn) || at + 1 >= insn_count ||
		    insns[at].code != (BPF_LD | BPF_IMM | BPF_DW))
			return fail("%s", "relocation that does not point at a 64-bit immediate load");
		insns[at].src_reg = BPF_PSEUDO_MAP_FD;
		insns[at].imm = map_fd[sym.st_value / sizeof(struct map_def)];
	}
	return 0;
}

/* The line of the verifier log that says why it stopped: the last one before its summary. */
static void print_reason(const char *log)
{
	const char *line = log, *reason = NULL, *end;
	size_t reason_len = 0;

	while (*line) {
		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if (end > line && strncmp(line, "processed ", 10) &&
		    strncmp(line, "verification time", 17) && strncmp(line, "stack depth", 11)) {
			reason = line;
			reason_len = end - line;
		}
		line = *end ? end + 1 : end;
	}
	if (reason)
		fprintf(stderr, ": %.*s", (int)reason_len, reason);
}

/* Close every map and program created so far: a failed load leaves nothing open. */
static void close_all(void)
{
	int i;

	for (i = 0; i < prog_count; i++)
		close(prog_fd[i]);
	for (i = 0; i < map_count; i++)
		close(map_fd[i]);
	prog_count = map_count = 0;
}

static int load_program(const char *section, struct bpf_insn *insns, size_t insn_count,
			const char *license)
{
	union bpf_attr attr;
	int fd;

	if (strncmp(section, "socket", 6) != 0) {
		fprintf(stderr, "%s: no known program type for section %s\n", object_path, section);
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (uint64_t)(unsigned long)insns;
	attr.insn_cnt = insn_count;
	attr.license = (uint64_t)(unsigned long)license;
	attr.log_buf = (uint64_t)(unsigned long)bpf_log_buf;
	attr.log_size = sizeof(bpf_log_buf);
	attr.log_level = 1;
	bpf_log_buf[0] = '\0';

	fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd < 0) {
		int err = errno;

		if (bpf_log_buf[0]) {
			/* errno is EACCES or EINVAL here: the log, not errno, says why. */
			fprintf(stderr, "%s: the kernel's verifier rejected program %s",
				object_path, section);
			print_reason(bpf_log_buf);
			fprintf(stderr, "\nverifier log:\n%s\n", bpf_log_buf);
		}
		else
			fprintf(stderr, "%s: cannot load program %s: %s%s\n", object_path, section,
				strerror(err),
				err == EPERM || err == EACCES ? " (run as root or with CAP_BPF)" : "");
		return -1;
	}
	return fd;
}

int load_bpf_file(const char *path)
{
	Elf *elf = NULL;
	GElf_Ehdr ehdr;
	GElf_Shdr shdr;
	Elf_Scn *scn;
	Elf_Data *symbols = NULL;
	size_t strtab_index, count, i;
	int file_fd, fd, ret = -1, maps_index = -1;
	char license[128] = "";

	object_path = path;
	map_count = prog_count = 0;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return fail("%s", "libelf is too old");
	file_fd = open(path, O_RDONLY);
	if (file_fd < 0)
		return fail("cannot open: %s", strerror(errno));
	elf = elf_begin(file_fd, ELF_C_READ, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &ehdr)) {
		fail("not an ELF object: %s", elf_errmsg(-1));
		goto out;
	}
	if (ehdr.e_machine != EM_BPF || ehdr.e_ident[EI_CLASS] != ELFCLASS64) {
		fail("%s", "not a 64-bit BPF object; compile it with clang -target bpf");
		goto out;
	}
	if (elf_getshdrstrndx(elf, &strtab_index) || elf_getshdrnum(elf, &count)) {
		fail("unreadable section table: %s", elf_errmsg(-1));
		goto out;
	}

	/* First pass: license, maps, symbol table. */
	for (i = 1; i < count; i++) {
		const char *name;
		Elf_Data *data;

		scn = elf_getscn(elf, i);
		if (!scn || !gelf_getshdr(scn, &shdr) ||
		    !(name = elf_strptr(elf, strtab_index, shdr.sh_name))) {
			fail("unreadable section header: %s", elf_errmsg(-1));
			goto out;
		}
		if (shdr.sh_type == SHT_NOBITS)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data || data->d_size != shdr.sh_size) {
			fail("section %s is cut short", name);
			goto out;
		}
		if (strcmp(name, "license") == 0) {
			size_t n = data->d_size < sizeof(license) - 1 ? data->d_size : sizeof(license) - 1;

			memcpy(license, data->d_buf, n);
			license[n] = '\0';
		} else if (strcmp(name, "maps") == 0) {
			maps_index = i;
			if (create_maps(data))
				goto out;
		} else if (shdr.sh_type == SHT_SYMTAB) {
			symbols = data;
		}
	}
	if (!license[0]) {
		fail("%s", "no license section; add char _license[] SEC(\"license\") = \"GPL\";");
		goto out;
	}
	if (!symbols) {
		fail("%s", "no symbol table");
		goto out;
	}

	/* Second pass: each executable section with instructions is a program. */
	for (i = 1; i < count; i++) {
		Elf_Scn *rel_scn = NULL;
		GElf_Shdr rel_shdr;
		struct bpf_insn *insns;
		const char *name;
		Elf_Data *data;
		size_t j, insn_count;

		scn = elf_getscn(elf, i);
		gelf_getshdr(scn, &shdr);
		if (shdr.sh_type != SHT_PROGBITS || !(shdr.sh_flags & SHF_EXECINSTR) ||
		    shdr.sh_size == 0)
			continue;
		name = elf_strptr(elf, strtab_index, shdr.sh_name);
		data = elf_getdata(scn, NULL);
		if (data->d_size % sizeof(struct bpf_insn)) {
			fail("program section %s is not a whole number of instructions", name);
			goto out;
		}
		if (prog_count == MAX_PROGS) {
			fail("%s", "too many programs");
			goto out;
		}
		insn_count = data->d_size / sizeof(struct bpf_insn);
		insns = malloc(data->d_size);
		if (!insns) {
			fail("%s", "out of memory");
			goto out;
		}
		memcpy(insns, data->d_buf, data->d_size);

		for (j = 1; j < count; j++) {
			Elf_Scn *s = elf_getscn(elf, j);
			GElf_Shdr h;

			if (s && gelf_getshdr(s, &h) && h.sh_info == i &&
			    (h.sh_type == SHT_REL || h.sh_type == SHT_RELA)) {
				rel_scn = s;
				rel_shdr = h;
			}
		}
		if (rel_scn) {
			Elf_Data *rels = elf_getdata(rel_scn, NULL);

			if (rel_shdr.sh_type == SHT_RELA) {
				fail("unsupported relocation section for %s (RELA)", name);
				free(insns);
				goto out;
			}
			if (!rels || rel_shdr.sh_entsize == 0) {
				fail("unreadable relocations for %s", name);
				free(insns);
				goto out;
			}
			if (relocate(insns, insn_count, rels, &rel_shdr, symbols, maps_index)) {
				free(insns);
				goto out;
			}
		}
		fd = load_program(name, insns, insn_count, license);
		free(insns);
		if (fd < 0)
			goto out;
		prog_fd[prog_count++] = fd;
	}
	if (prog_count == 0) {
		fail("%s", "no program: no executable section holds instructions");
		goto out;
	}
	ret = 0;
out:
	if (ret)
		close_all();
	if (elf)
		elf_end(elf);
	close(file_fd);
	return ret;
}
