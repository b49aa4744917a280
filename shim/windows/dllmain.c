/* Load-time initialisation: logging first, then the settings from the environment
 * (set by the socksify launcher, passed on to children), then the real functions and
 * the hooks in every module already loaded. */
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shim.h"

#define DEFAULT_TIMEOUT_S 120
#define MAX_TIMEOUT_S     (24 * 3600)

struct socksify_win_config socksify_cfg = {.log_level = SOCKSIFY_LOG_WARN,
                                           .timeout_ms = DEFAULT_TIMEOUT_S * 1000};

/* The variable as ASCII into buf; 0, or -1 if unset, empty or too long. */
static int env_ascii(const wchar_t *name, char *buf, size_t len)
{
    wchar_t w[256];
    DWORD n = GetEnvironmentVariableW(name, w, sizeof w / sizeof w[0]);

    if (n == 0 || n >= sizeof w / sizeof w[0] || n >= len)
        return -1;
    for (DWORD i = 0; i <= n; i++)
        buf[i] = w[i] < 128 ? (char)w[i] : '?';
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void read_settings(void)
{
    char v[256];
    wchar_t dir[MAX_PATH];
    DWORD n;

    if (env_ascii(L"SOCKSIFY_LOG", v, sizeof v) == 0) {
        if (v[0] >= '0' && v[0] <= '3' && v[1] == '\0')
            socksify_cfg.log_level = v[0] - '0';
        else
            LOG_WARN("ignoring SOCKSIFY_LOG=%s (expected 0, 1, 2 or 3)", v);
    }
    if (env_ascii(L"SOCKSIFY_SESSION", v, sizeof v) == 0) {
        uint8_t s[SOCKSIFY_SESSION_SIZE];
        int ok = strlen(v) == 2 * SOCKSIFY_SESSION_SIZE;
        for (size_t i = 0; ok && i < SOCKSIFY_SESSION_SIZE; i++) {
            int hi = hex_digit(v[2 * i]), lo = hex_digit(v[2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            s[i] = (uint8_t)(hi << 4 | lo);
        }
        if (ok)
            memcpy(socksify_cfg.session, s, sizeof s);
        else
            LOG_WARN("ignoring SOCKSIFY_SESSION=%s (expected 16 hex digits)", v);
    }
    if (env_ascii(L"SOCKSIFY_TIMEOUT", v, sizeof v) == 0) {
        char *end;
        double seconds = strtod(v, &end);
        if (*end != '\0' || !(seconds > 0))
            LOG_WARN("ignoring SOCKSIFY_TIMEOUT=%s (expected seconds > 0)", v);
        else
            socksify_cfg.timeout_ms = seconds > MAX_TIMEOUT_S ? MAX_TIMEOUT_S * 1000
                                      : seconds * 1000 < 1 ? 1 : (int)(seconds * 1000);
    }
    socksify_cfg.proxy_loopback = env_ascii(L"SOCKSIFY_PROXY_LOOPBACK", v, sizeof v) == 0
                                  && strcmp(v, "1") == 0;
    /* The control file: SOCKSIFY_CONTROL_FILE, else SOCKSIFY_RUNTIME_DIR\control.tcp,
     * else %LOCALAPPDATA%\socksify\control.tcp (docs/windows.md). */
    n = GetEnvironmentVariableW(L"SOCKSIFY_CONTROL_FILE", socksify_cfg.control_file,
                                MAX_PATH);
    if (n > 0 && n < MAX_PATH)
        return;
    socksify_cfg.control_file[0] = L'\0';
    n = GetEnvironmentVariableW(L"SOCKSIFY_RUNTIME_DIR", dir, MAX_PATH);
    if (n > 0 && n < MAX_PATH - 16) {
        _snwprintf(socksify_cfg.control_file, MAX_PATH, L"%ls\\control.tcp", dir);
        return;
    }
    n = GetEnvironmentVariableW(L"LOCALAPPDATA", dir, MAX_PATH);
    if (n > 0 && n < MAX_PATH - 32)
        _snwprintf(socksify_cfg.control_file, MAX_PATH, L"%ls\\socksify\\control.tcp", dir);
    else
        LOG_WARN("no control file (SOCKSIFY_CONTROL_FILE, SOCKSIFY_RUNTIME_DIR, "
                 "LOCALAPPDATA unset); connections will fail");
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)reserved;
    if (reason != DLL_PROCESS_ATTACH)
        return TRUE;
    DisableThreadLibraryCalls(instance);
    read_settings();
    if (GetModuleFileNameW(instance, socksify_cfg.dll_path, MAX_PATH) >= MAX_PATH)
        socksify_cfg.dll_path[0] = L'\0';
    socksify_child_env_capture();
    socksify_hooks_resolve();
    socksify_hooks_patch_all();
    LOG_DEBUG("hooks installed; control file %ls", socksify_cfg.control_file);
    return TRUE;
}

/* For the launcher and tests: the versions, as the Linux library exports them
 * (wire.c), plus this marker that the DLL initialised. */
SOCKSIFY_EXPORT int socksify_windows_loaded(void)
{
    return 1;
}
