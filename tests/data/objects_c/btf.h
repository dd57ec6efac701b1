/* The BTF map definition's encoding: each attribute is a member's type. */
#ifndef OBJECTS_C_BTF_H
#define OBJECTS_C_BTF_H

#define __uint(name, value) int (*name)[value]
#define __type(name, type) type *name

#endif
