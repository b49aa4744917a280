/* Lazy, once-only initialisation of the shim: the settings (config.h), the real
 * symbols (real.h) and what the exec hooks capture (exec.h). Every hook calls
 * socksify_init() first. */
#ifndef SOCKSIFY_INIT_H
#define SOCKSIFY_INIT_H

/* Run the initialisation once (pthread_once); cheap after the first call. */
void socksify_init(void);

#endif
