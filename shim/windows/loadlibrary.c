/* LoadLibrary*: a module loaded after us (and what it pulls in) gets its import table
 * patched before the caller can use it. */
#include "shim.h"

extern void *real_LoadLibraryA, *real_LoadLibraryW, *real_LoadLibraryExA,
    *real_LoadLibraryExW;

/* Modules mapped as data or resources have no live import table. */
#define NOT_CODE (LOAD_LIBRARY_AS_DATAFILE | LOAD_LIBRARY_AS_DATAFILE_EXCLUSIVE \
                  | LOAD_LIBRARY_AS_IMAGE_RESOURCE)

static HMODULE patched(HMODULE mod)
{
    DWORD saved = GetLastError();

    if (mod != NULL) {
        socksify_hooks_patch_all();
        SetLastError(saved);
    }
    return mod;
}

HMODULE WINAPI socksify_hook_LoadLibraryA(LPCSTR name)
{
    return patched(((HMODULE (WINAPI *)(LPCSTR))real_LoadLibraryA)(name));
}

HMODULE WINAPI socksify_hook_LoadLibraryW(LPCWSTR name)
{
    return patched(((HMODULE (WINAPI *)(LPCWSTR))real_LoadLibraryW)(name));
}

HMODULE WINAPI socksify_hook_LoadLibraryExA(LPCSTR name, HANDLE file, DWORD flags)
{
    HMODULE mod = ((HMODULE (WINAPI *)(LPCSTR, HANDLE, DWORD))real_LoadLibraryExA)(
        name, file, flags);

    return flags & NOT_CODE ? mod : patched(mod);
}

HMODULE WINAPI socksify_hook_LoadLibraryExW(LPCWSTR name, HANDLE file, DWORD flags)
{
    HMODULE mod = ((HMODULE (WINAPI *)(LPCWSTR, HANDLE, DWORD))real_LoadLibraryExW)(
        name, file, flags);

    return flags & NOT_CODE ? mod : patched(mod);
}
