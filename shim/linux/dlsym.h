/* libc's own dlsym(), found without the shim's hook of it (dlsym.c). */
#ifndef SOCKSIFY_DLSYM_H
#define SOCKSIFY_DLSYM_H

/* dlsym(handle, name) answered by libc as the shim asks it: with RTLD_NEXT, the next
 * definition after the shim. */
void *socksify_real_dlsym(void *handle, const char *name);

#endif
