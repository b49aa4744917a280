/* Once-only initialisation: the settings (the logging level first), then the real
 * symbols, then what children and exec checks need. */
#include <errno.h>
#include <pthread.h>

#include "config.h"
#include "exec/exec.h"
#include "init.h"
#include "real.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_once_body(void)
{
    int saved_errno = errno;

    socksify_config_read();
    socksify_real_resolve();
    socksify_children_capture();
    socksify_targets_capture();
    errno = saved_errno;
}

void socksify_init(void)
{
    pthread_once(&init_once, init_once_body);
}

__attribute__((constructor)) static void socksify_constructor(void)
{
    socksify_init();
}
