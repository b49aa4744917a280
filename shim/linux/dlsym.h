/* libc's own dlsym(), found without the shim's hook of it (dlsym.c). */
#ifndef SOCKSIFY_DLSYM_H
#define SOCKSIFY_DLSYM_H

#include <stddef.h>

/* dlsym(handle, name) answered by libc as the shim asks it: with RTLD_NEXT, the next
 * definition after the shim. */
void *socksify_real_dlsym(void *handle, const char *name);

/* Write len bytes to stderr for a message before an abort (glibc's __write(): no hook
 * of the shim's sits on it, and it needs no lookup). */
void socksify_stderr(const void *buf, size_t len);

#endif
