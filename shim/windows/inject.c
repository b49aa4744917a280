/* Load this DLL into another (suspended) process: its path is written into the child
 * and a remote thread runs LoadLibraryW on it (kernel32 is mapped at the same address
 * in every process of a session). The launcher (daemon/socksify/winlaunch.py) does the
 * same through cffi for the first program. */
#include <wchar.h>

#include "shim.h"

#define INJECT_TIMEOUT_MS 30000

DWORD socksify_inject(HANDLE process)
{
    const wchar_t *dll = socksify_cfg.dll_path;
    SIZE_T bytes = (wcslen(dll) + 1) * sizeof(wchar_t);
    BOOL wow64 = FALSE;
    LPTHREAD_START_ROUTINE load;
    HANDLE thread;
    DWORD code = 0, err = 0;
    void *remote;

    if (dll[0] == L'\0')
        return ERROR_MOD_NOT_FOUND;
    if (IsWow64Process(process, &wow64) && wow64) {
        LOG_WARN("the child is a 32-bit program: socksify's DLL is 64-bit only");
        return ERROR_BAD_EXE_FORMAT;
    }
    load = (LPTHREAD_START_ROUTINE)(void *)real_GetProcAddress(
        GetModuleHandleW(L"kernel32.dll"), "LoadLibraryW");
    remote = VirtualAllocEx(process, NULL, bytes, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (load == NULL || remote == NULL)
        return GetLastError() != 0 ? GetLastError() : ERROR_ACCESS_DENIED;
    if (!WriteProcessMemory(process, remote, dll, bytes, NULL)) {
        err = GetLastError();
    } else if ((thread = CreateRemoteThread(process, NULL, 0, load, remote, 0, NULL))
               == NULL) {
        err = GetLastError();
    } else {
        if (WaitForSingleObject(thread, INJECT_TIMEOUT_MS) != WAIT_OBJECT_0)
            err = WAIT_TIMEOUT;
        else if (!GetExitCodeThread(thread, &code) || code == 0)
            err = ERROR_MOD_NOT_FOUND;  /* LoadLibraryW returned NULL */
        CloseHandle(thread);
    }
    if (err != WAIT_TIMEOUT)
        VirtualFreeEx(process, remote, 0, MEM_RELEASE);
    return err;
}
