/* The rejected object with a verifier log longer than 64 KiB. */
#define LONG_LOG
#include "rejected_btf_kern.c"
