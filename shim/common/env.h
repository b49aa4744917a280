/* Pure helpers for the exec hooks: the environment a child gets, with the shim's
 * variables put back if the program dropped them. No I/O, no libc state, no malloc:
 * the caller gives the output array and string buffer (on its stack, in the hooks). */
#ifndef SOCKSIFY_ENV_H
#define SOCKSIFY_ENV_H

#include <stddef.h>

/* 1 if the LD_PRELOAD value list (separated by spaces or colons, as the loader reads
 * it) names shim exactly, else 0. */
int socksify_env_preload_has(const char *list, const char *shim);

/* The room socksify_env_merge() needs for envp (NULL: empty), shim and vars: *entries
 * for out (the NULL terminator included) and *chars for buf. */
void socksify_env_merge_size(char *const envp[], const char *shim, char *const vars[],
                             size_t *entries, size_t *chars);

/* Write into out (out_size entries, NULL-terminated) the environment envp (NULL: empty)
 * with the shim's variables put back:
 *  - every LD_PRELOAD=VALUE entry whose list lacks shim becomes "LD_PRELOAD=shim VALUE"
 *    (or "LD_PRELOAD=shim" for an empty VALUE), built in buf; without one,
 *    "LD_PRELOAD=shim" is added at the end. A NULL or empty shim leaves LD_PRELOAD alone.
 *  - vars is a NULL-terminated list of "NAME=value" strings (NULL: none). A NAME the
 *    program's environment lacks, or has only with an empty value (which the shim reads
 *    as unset), gets vars' entry; a NAME the program set to another non-empty value
 *    keeps the program's value.
 * Every other entry is kept, in order; out points into envp, vars and buf (no copies).
 * Returns the number of entries written before the NULL, or -E2BIG if out_size or
 * buf_size is too small (then out and buf hold garbage). */
int socksify_env_merge(char *const envp[], const char *shim, char *const vars[],
                       char **out, size_t out_size, char *buf, size_t buf_size);

#endif
