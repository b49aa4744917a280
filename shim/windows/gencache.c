/* Cached DIRECT answers in the DLL (docs/wire.md "Caching", docs/windows.md): the
 * table is shim/common/dcache.c, shared with the Linux shim; this file says whether a
 * generation still holds. The generation file is policy.gen beside the control file
 * (a Linux daemon serving Wine programs writes it beside its control socket, where
 * control.tcp is too), mapped once, read-only, when the first cacheable answer comes,
 * and read without a call into the system. Its pid is the Linux daemon's: it is alive
 * while DRIVE:\proc\PID exists on the control file's drive (Wine's Z: is /). A
 * daemon on Windows itself sends no cacheable answer, so nothing is cached there.
 * CARRY answers (carry.c) are kept under the same generation.
 * Anything missing or odd means nothing is cached: the next connect or datagram asks
 * (and fails closed without a daemon). */
#include <stdio.h>
#include <wchar.h>

#include "dcache.h"
#include "shim.h"

#define GEN_SIZE 16

static const volatile uint8_t *volatile gen_map;  /* NULL: nothing is cached */

static void map_generation(void)
{
    wchar_t path[MAX_PATH];
    wchar_t *slash;
    LARGE_INTEGER size;
    HANDLE f, m;
    void *view;

    if (wcslen(socksify_cfg.control_file) + 12 >= MAX_PATH)
        return;
    wcscpy(path, socksify_cfg.control_file);
    slash = wcsrchr(path, L'\\');
    if (slash == NULL)
        return;
    wcscpy(slash + 1, L"policy.gen");
    f = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE
                    | FILE_SHARE_DELETE, NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE)
        return;
    view = NULL;
    if (GetFileSizeEx(f, &size) && size.QuadPart >= GEN_SIZE) {
        m = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, GEN_SIZE, NULL);
        if (m != NULL) {
            view = MapViewOfFile(m, FILE_MAP_READ, 0, 0, GEN_SIZE);
            CloseHandle(m);   /* the view keeps the section */
        }
    }
    CloseHandle(f);
    if (view != NULL
        && InterlockedCompareExchangePointer((PVOID volatile *)&gen_map, view, NULL)
               != NULL)
        UnmapViewOfFile(view);  /* another thread mapped it first */
    if (view != NULL)
        LOG_DEBUG("caching DIRECT answers while %ls holds their generation", path);
}

/* The last time the daemon's pid was seen alive: pid << 32 | the low 32 bits of the
 * tick count until which that holds (one 64-bit value: never a pid with another's
 * time). */
static volatile LONG64 alive_until;

/* The Linux daemon's pid is alive: DRIVE:\proc\PID on the control file's drive. A
 * look costs about 0.3 ms under Wine, so a pid seen alive is believed for
 * ALIVE_MS: a daemon killed without writing zeros is noticed that much later. */
#define ALIVE_MS 100
static int daemon_alive(uint64_t pid)
{
    wchar_t proc[64];
    const wchar_t *cf = socksify_cfg.control_file;
    uint32_t now = (uint32_t)GetTickCount64();
    uint64_t seen = (uint64_t)alive_until;
    DWORD attrs;

    if (seen >> 32 == pid && (int32_t)((uint32_t)seen - now) > 0)
        return 1;
    if (!(cf[0] != L'\0' && cf[1] == L':' && cf[2] == L'\\'))
        return 0;
    _snwprintf(proc, sizeof proc / sizeof proc[0], L"%lc:\\proc\\%llu", cf[0],
               (unsigned long long)pid);
    proc[sizeof proc / sizeof proc[0] - 1] = L'\0';
    attrs = GetFileAttributesW(proc);
    if (attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_DIRECTORY))
        return 0;
    InterlockedExchange64(&alive_until, (LONG64)(pid << 32 | (uint32_t)(now + ALIVE_MS)));
    return 1;
}

static uint64_t current_generation(void)
{
    const volatile uint8_t *map = gen_map;
    uint64_t gen, pid;

    if (map == NULL)
        return 0;
    MemoryBarrier();
    socksify_dcache_read_file(map, &gen, &pid);
    if (gen == 0 || pid == 0 || pid > INT32_MAX || !daemon_alive(pid))
        return 0;
    return gen;
}

uint64_t socksify_cache_generation(void)
{
    DWORD saved = GetLastError();
    uint64_t gen = current_generation();

    SetLastError(saved);
    return gen;
}

void socksify_cache_carry_note(uint64_t gen)
{
    if (gen != 0 && gen_map == NULL)
        map_generation();
}

int socksify_cache_direct(const struct socksify_connect_req *req)
{
    DWORD saved = GetLastError();
    int hit = socksify_dcache_hit(req, current_generation());

    SetLastError(saved);
    return hit;
}

void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep)
{
    uint64_t gen = socksify_dcache_reply_generation(rep);

    if (gen == 0)
        return;
    if (gen_map == NULL)
        map_generation();
    socksify_dcache_put(req, gen);
}
