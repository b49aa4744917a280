/* GetProcAddress: a program that looks a hooked function up by name (or ordinal) gets
 * the hook, as a program that imports it does. */
#include "shim.h"

FARPROC WINAPI socksify_hook_GetProcAddress(HMODULE mod, LPCSTR name)
{
    FARPROC real = real_GetProcAddress(mod, name);
    void *hook = socksify_hooks_lookup((void *)real);

    return hook != NULL ? (FARPROC)hook : real;
}
