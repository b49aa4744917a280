/* CreateProcessW/A: children are created suspended, get this DLL injected, and are
 * resumed (unless the caller asked for a suspended child). A child the DLL cannot be
 * loaded into (a 32-bit program, access denied) is terminated and CreateProcess fails
 * with that error: it would otherwise run unprotected. An environment block the program
 * passes gets the SOCKSIFY_* values back, as on Linux (docs/data-path.md, Children). */
#include <string.h>
#include <wchar.h>

#include "shim.h"

extern void *real_CreateProcessW, *real_CreateProcessA;

static const wchar_t *const carried[] = {
    L"SOCKSIFY_SESSION", L"SOCKSIFY_CONTROL_FILE", L"SOCKSIFY_RUNTIME_DIR",
    L"SOCKSIFY_LOG", L"SOCKSIFY_TIMEOUT", L"SOCKSIFY_PROXY_LOOPBACK",
};
#define NCARRIED (sizeof carried / sizeof carried[0])
static wchar_t *captured[NCARRIED];  /* "NAME=value", or NULL if unset */

void socksify_child_env_capture(void)
{
    for (size_t i = 0; i < NCARRIED; i++) {
        wchar_t value[MAX_PATH + 64];
        DWORD n = GetEnvironmentVariableW(carried[i], value, sizeof value / sizeof *value);
        size_t name_len = wcslen(carried[i]);

        if (n == 0 || n >= sizeof value / sizeof *value)
            continue;
        captured[i] = HeapAlloc(GetProcessHeap(), 0,
                                (name_len + 1 + n + 1) * sizeof(wchar_t));
        if (captured[i] != NULL)
            _snwprintf(captured[i], name_len + 1 + n + 1, L"%ls=%ls", carried[i], value);
    }
}

/* The index in carried of entry's name if its value is empty or it is one of ours. */
static int carried_index(const wchar_t *entry, size_t *name_len)
{
    const wchar_t *eq = wcschr(entry + 1, L'=');  /* "=C:=C:\x" entries start with = */

    *name_len = eq != NULL ? (size_t)(eq - entry) : wcslen(entry);
    for (size_t i = 0; i < NCARRIED; i++)
        if (wcslen(carried[i]) == *name_len && _wcsnicmp(entry, carried[i], *name_len) == 0)
            return (int)i;
    return -1;
}

wchar_t *socksify_child_env(const void *env, int unicode)
{
    wchar_t *wide = NULL, *out, *p;
    const wchar_t *e;
    size_t chars = 1, used = 0;
    int have[NCARRIED] = {0};

    if (env == NULL)
        return NULL;
    if (!unicode) {  /* an ANSI block: widen it first */
        const char *a = env;
        size_t len = 0;
        int n;
        while (a[len] != '\0' || a[len + 1] != '\0')
            len++;
        len += 2;
        n = MultiByteToWideChar(CP_ACP, 0, a, (int)len, NULL, 0);
        wide = HeapAlloc(GetProcessHeap(), 0, (size_t)n * sizeof(wchar_t));
        if (wide == NULL)
            return NULL;
        MultiByteToWideChar(CP_ACP, 0, a, (int)len, wide, n);
        env = wide;
    }
    for (e = env; *e != L'\0'; e += wcslen(e) + 1)
        chars += wcslen(e) + 1;
    for (size_t i = 0; i < NCARRIED; i++)
        if (captured[i] != NULL)
            chars += wcslen(captured[i]) + 1;
    out = HeapAlloc(GetProcessHeap(), 0, chars * sizeof(wchar_t));
    if (out == NULL) {
        HeapFree(GetProcessHeap(), 0, wide);
        return NULL;
    }
    p = out;
    for (e = env; *e != L'\0'; e += wcslen(e) + 1) {
        size_t name_len;
        int i = carried_index(e, &name_len);
        const wchar_t *entry = e;

        if (i >= 0 && captured[i] != NULL) {
            if (e[name_len] == L'\0' || e[name_len + 1] == L'\0')
                entry = captured[i];  /* empty: the program meant nothing by it */
            have[i] = 1;
        }
        wcscpy(p, entry);
        used = wcslen(entry) + 1;
        p += used;
    }
    for (size_t i = 0; i < NCARRIED; i++)
        if (captured[i] != NULL && !have[i]) {
            wcscpy(p, captured[i]);
            p += wcslen(captured[i]) + 1;
        }
    *p = L'\0';
    HeapFree(GetProcessHeap(), 0, wide);
    return out;
}

/* After the real CreateProcess* with CREATE_SUSPENDED: inject, then resume. */
static BOOL finish(BOOL created, DWORD flags, LPPROCESS_INFORMATION pi, wchar_t *env)
{
    DWORD err;

    if (env != NULL)
        HeapFree(GetProcessHeap(), 0, env);
    if (!created)
        return FALSE;
    if ((err = socksify_inject(pi->hProcess)) != 0) {
        LOG_WARN("cannot load socksify into child pid %lu (error %lu); terminating it",
                 pi->dwProcessId, err);
        TerminateProcess(pi->hProcess, 126);
        WaitForSingleObject(pi->hProcess, 5000);
        CloseHandle(pi->hThread);
        CloseHandle(pi->hProcess);
        memset(pi, 0, sizeof *pi);
        SetLastError(err);
        return FALSE;
    }
    LOG_DEBUG("child pid %lu socksified", pi->dwProcessId);
    if (!(flags & CREATE_SUSPENDED))
        ResumeThread(pi->hThread);
    return TRUE;
}

BOOL WINAPI socksify_hook_CreateProcessW(LPCWSTR app, LPWSTR cmd, LPSECURITY_ATTRIBUTES pa,
                                         LPSECURITY_ATTRIBUTES ta, BOOL inherit,
                                         DWORD flags, LPVOID env, LPCWSTR cwd,
                                         LPSTARTUPINFOW si, LPPROCESS_INFORMATION pi)
{
    wchar_t *child_env = socksify_child_env(env, (flags & CREATE_UNICODE_ENVIRONMENT) != 0);
    BOOL ok = ((BOOL (WINAPI *)(LPCWSTR, LPWSTR, LPSECURITY_ATTRIBUTES,
                                LPSECURITY_ATTRIBUTES, BOOL, DWORD, LPVOID, LPCWSTR,
                                LPSTARTUPINFOW, LPPROCESS_INFORMATION))real_CreateProcessW)(
        app, cmd, pa, ta, inherit,
        flags | CREATE_SUSPENDED | (child_env != NULL ? CREATE_UNICODE_ENVIRONMENT : 0),
        child_env != NULL ? child_env : env, cwd, si, pi);

    return finish(ok, flags, pi, child_env);
}

BOOL WINAPI socksify_hook_CreateProcessA(LPCSTR app, LPSTR cmd, LPSECURITY_ATTRIBUTES pa,
                                         LPSECURITY_ATTRIBUTES ta, BOOL inherit,
                                         DWORD flags, LPVOID env, LPCSTR cwd,
                                         LPSTARTUPINFOA si, LPPROCESS_INFORMATION pi)
{
    wchar_t *child_env = socksify_child_env(env, (flags & CREATE_UNICODE_ENVIRONMENT) != 0);
    BOOL ok = ((BOOL (WINAPI *)(LPCSTR, LPSTR, LPSECURITY_ATTRIBUTES,
                                LPSECURITY_ATTRIBUTES, BOOL, DWORD, LPVOID, LPCSTR,
                                LPSTARTUPINFOA, LPPROCESS_INFORMATION))real_CreateProcessA)(
        app, cmd, pa, ta, inherit,
        flags | CREATE_SUSPENDED | (child_env != NULL ? CREATE_UNICODE_ENVIRONMENT : 0),
        child_env != NULL ? child_env : env, cwd, si, pi);

    return finish(ok, flags, pi, child_env);
}
