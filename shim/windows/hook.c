/* Import-table hooking: every loaded module's import address table entries that hold
 * the address of a function we hook are rewritten to point to our hook. GetProcAddress
 * and LoadLibrary* are hooked too, so a function looked up by name and a module loaded
 * later get the hooks as well. Entries are matched by address, not by the name of the
 * DLL they were imported from, so api-ms-win-* imports and forwarders are caught. */
#include <string.h>

#include "shim.h"
#include <psapi.h>  /* after windows.h */

/* The hooks (one file each). */
int WSAAPI socksify_hook_connect(SOCKET, const struct sockaddr *, int);
int WSAAPI socksify_hook_WSAConnect(SOCKET, const struct sockaddr *, int, LPWSABUF,
                                    LPWSABUF, LPQOS, LPQOS);
BOOL WSAAPI socksify_hook_WSAConnectByNameW(SOCKET, LPWSTR, LPWSTR, LPDWORD,
                                            LPSOCKADDR, LPDWORD, LPSOCKADDR,
                                            const struct timeval *, LPWSAOVERLAPPED);
BOOL WSAAPI socksify_hook_WSAConnectByNameA(SOCKET, LPCSTR, LPCSTR, LPDWORD,
                                            LPSOCKADDR, LPDWORD, LPSOCKADDR,
                                            const struct timeval *, LPWSAOVERLAPPED);
int WSAAPI socksify_hook_WSAIoctl(SOCKET, DWORD, LPVOID, DWORD, LPVOID, DWORD, LPDWORD,
                                  LPWSAOVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE);
INT WSAAPI socksify_hook_getaddrinfo(PCSTR, PCSTR, const ADDRINFOA *, PADDRINFOA *);
INT WSAAPI socksify_hook_GetAddrInfoW(PCWSTR, PCWSTR, const ADDRINFOW *, PADDRINFOW *);
INT WSAAPI socksify_hook_GetAddrInfoExW(PCWSTR, PCWSTR, DWORD, LPGUID,
                                        const ADDRINFOEXW *, PADDRINFOEXW *,
                                        struct timeval *, LPOVERLAPPED,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE, LPHANDLE);
INT WSAAPI socksify_hook_GetAddrInfoExA(PCSTR, PCSTR, DWORD, LPGUID,
                                        const ADDRINFOEXA *, PADDRINFOEXA *,
                                        struct timeval *, LPOVERLAPPED,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE, LPHANDLE);
struct hostent *WSAAPI socksify_hook_gethostbyname(const char *);
int WSAAPI socksify_hook_getpeername(SOCKET, struct sockaddr *, int *);
int WSAAPI socksify_hook_sendto(SOCKET, const char *, int, int, const struct sockaddr *,
                                int);
int WSAAPI socksify_hook_WSASendTo(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD,
                                   const struct sockaddr *, int, LPWSAOVERLAPPED,
                                   LPWSAOVERLAPPED_COMPLETION_ROUTINE);
int WSAAPI socksify_hook_WSASendMsg(SOCKET, LPWSAMSG, DWORD, LPDWORD, LPWSAOVERLAPPED,
                                    LPWSAOVERLAPPED_COMPLETION_ROUTINE);
int WSAAPI socksify_hook_send(SOCKET, const char *, int, int);
int WSAAPI socksify_hook_WSASend(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD, LPWSAOVERLAPPED,
                                 LPWSAOVERLAPPED_COMPLETION_ROUTINE);
int WSAAPI socksify_hook_recv(SOCKET, char *, int, int);
int WSAAPI socksify_hook_recvfrom(SOCKET, char *, int, int, struct sockaddr *, int *);
int WSAAPI socksify_hook_WSARecv(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                                 LPWSAOVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE);
int WSAAPI socksify_hook_WSARecvFrom(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                                     struct sockaddr *, LPINT, LPWSAOVERLAPPED,
                                     LPWSAOVERLAPPED_COMPLETION_ROUTINE);
int WSAAPI socksify_hook_closesocket(SOCKET);
int WINAPI socksify_hook_WSARecvEx(SOCKET, char *, int, int *);
BOOL PASCAL socksify_hook_TransmitFile(SOCKET, HANDLE, DWORD, DWORD, LPOVERLAPPED,
                                       LPTRANSMIT_FILE_BUFFERS, DWORD);
BOOL WINAPI socksify_hook_ReadFile(HANDLE, LPVOID, DWORD, LPDWORD, LPOVERLAPPED);
BOOL WINAPI socksify_hook_WriteFile(HANDLE, LPCVOID, DWORD, LPDWORD, LPOVERLAPPED);
BOOL WINAPI socksify_hook_ReadFileEx(HANDLE, LPVOID, DWORD, LPOVERLAPPED,
                                     LPOVERLAPPED_COMPLETION_ROUTINE);
BOOL WINAPI socksify_hook_WriteFileEx(HANDLE, LPCVOID, DWORD, LPOVERLAPPED,
                                      LPOVERLAPPED_COMPLETION_ROUTINE);
FARPROC WINAPI socksify_hook_GetProcAddress(HMODULE, LPCSTR);
HMODULE WINAPI socksify_hook_LoadLibraryA(LPCSTR);
HMODULE WINAPI socksify_hook_LoadLibraryW(LPCWSTR);
HMODULE WINAPI socksify_hook_LoadLibraryExA(LPCSTR, HANDLE, DWORD);
HMODULE WINAPI socksify_hook_LoadLibraryExW(LPCWSTR, HANDLE, DWORD);
BOOL WINAPI socksify_hook_CreateProcessW(LPCWSTR, LPWSTR, LPSECURITY_ATTRIBUTES,
                                         LPSECURITY_ATTRIBUTES, BOOL, DWORD, LPVOID,
                                         LPCWSTR, LPSTARTUPINFOW, LPPROCESS_INFORMATION);
BOOL WINAPI socksify_hook_CreateProcessA(LPCSTR, LPSTR, LPSECURITY_ATTRIBUTES,
                                         LPSECURITY_ATTRIBUTES, BOOL, DWORD, LPVOID,
                                         LPCSTR, LPSTARTUPINFOA, LPPROCESS_INFORMATION);
HANDLE WINAPI socksify_hook_CreateIoCompletionPort(HANDLE, HANDLE, ULONG_PTR, DWORD);

/* The real functions, filled in by socksify_hooks_resolve(). */
int (WSAAPI *real_connect)(SOCKET, const struct sockaddr *, int);
int (WSAAPI *real_WSAConnect)(SOCKET, const struct sockaddr *, int, LPWSABUF, LPWSABUF,
                              LPQOS, LPQOS);
void *real_WSAConnectByNameW, *real_WSAConnectByNameA, *real_GetAddrInfoExW,
    *real_GetAddrInfoExA, *real_gethostbyname, *real_LoadLibraryA, *real_LoadLibraryW,
    *real_LoadLibraryExA, *real_LoadLibraryExW, *real_CreateProcessW,
    *real_CreateProcessA, *real_CreateIoCompletionPort, *real_ReadFile, *real_WriteFile,
    *real_ReadFileEx, *real_WriteFileEx;
extern int (WINAPI *real_WSARecvEx)(SOCKET, char *, int, int *);
extern BOOL (PASCAL *real_TransmitFile)(SOCKET, HANDLE, DWORD, DWORD, LPOVERLAPPED,
                                        LPTRANSMIT_FILE_BUFFERS, DWORD);
int (WSAAPI *real_WSAIoctl)(SOCKET, DWORD, LPVOID, DWORD, LPVOID, DWORD, LPDWORD,
                            LPWSAOVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE);
INT (WSAAPI *real_getaddrinfo)(PCSTR, PCSTR, const ADDRINFOA *, PADDRINFOA *);
INT (WSAAPI *real_GetAddrInfoW)(PCWSTR, PCWSTR, const ADDRINFOW *, PADDRINFOW *);
FARPROC (WINAPI *real_GetProcAddress)(HMODULE, LPCSTR);

#define HOOK(mod, name) {mod, #name, (void *)socksify_hook_##name, (void **)&real_##name, NULL}

static struct socksify_hook hooks[] = {
    HOOK(L"ws2_32.dll", connect),
    HOOK(L"ws2_32.dll", WSAConnect),
    HOOK(L"ws2_32.dll", WSAConnectByNameW),
    HOOK(L"ws2_32.dll", WSAConnectByNameA),
    HOOK(L"ws2_32.dll", WSAIoctl),
    HOOK(L"ws2_32.dll", getaddrinfo),
    HOOK(L"ws2_32.dll", GetAddrInfoW),
    HOOK(L"ws2_32.dll", GetAddrInfoExW),
    HOOK(L"ws2_32.dll", GetAddrInfoExA),
    HOOK(L"ws2_32.dll", gethostbyname),
    HOOK(L"ws2_32.dll", getpeername),
    HOOK(L"ws2_32.dll", sendto),
    HOOK(L"ws2_32.dll", WSASendTo),
    HOOK(L"ws2_32.dll", WSASendMsg),
    HOOK(L"ws2_32.dll", send),
    HOOK(L"ws2_32.dll", WSASend),
    HOOK(L"ws2_32.dll", recv),
    HOOK(L"ws2_32.dll", recvfrom),
    HOOK(L"ws2_32.dll", WSARecv),
    HOOK(L"ws2_32.dll", WSARecvFrom),
    HOOK(L"ws2_32.dll", closesocket),
    HOOK(L"mswsock.dll", WSARecvEx),     /* wsock32's is a forwarder to it on Windows */
    HOOK(L"mswsock.dll", TransmitFile),
    HOOK(L"kernel32.dll", ReadFile),     /* a socket is a file handle */
    HOOK(L"kernel32.dll", WriteFile),
    HOOK(L"kernel32.dll", ReadFileEx),
    HOOK(L"kernel32.dll", WriteFileEx),
    HOOK(L"kernel32.dll", GetProcAddress),
    HOOK(L"kernel32.dll", LoadLibraryA),
    HOOK(L"kernel32.dll", LoadLibraryW),
    HOOK(L"kernel32.dll", LoadLibraryExA),
    HOOK(L"kernel32.dll", LoadLibraryExW),
    HOOK(L"kernel32.dll", CreateProcessW),
    HOOK(L"kernel32.dll", CreateProcessA),
    HOOK(L"kernel32.dll", CreateIoCompletionPort),
};
#define NHOOKS (sizeof hooks / sizeof hooks[0])

static SRWLOCK patch_lock = SRWLOCK_INIT;
static HMODULE self_module;

void socksify_hooks_resolve(void)
{
    HMODULE kernelbase = GetModuleHandleW(L"kernelbase.dll");

    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS
                       | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                       (LPCWSTR)(void *)socksify_hooks_resolve, &self_module);
    for (size_t i = 0; i < NHOOKS; i++) {
        HMODULE mod = GetModuleHandleW(hooks[i].module);
        void *real = mod != NULL ? (void *)GetProcAddress(mod, hooks[i].name) : NULL;

        *hooks[i].real = real;
        if (real == NULL) {
            LOG_DEBUG("%s is not in this Windows; not hooked", hooks[i].name);
            continue;
        }
        if (kernelbase != NULL && wcscmp(hooks[i].module, L"kernel32.dll") == 0) {
            /* kernel32's function may be a stub that calls kernelbase's through
             * kernel32's own import table, which we patch too: call kernelbase's
             * (the implementation), and catch both addresses. */
            void *impl = (void *)GetProcAddress(kernelbase, hooks[i].name);
            if (impl != NULL && impl != real) {
                *hooks[i].real = impl;
                hooks[i].alt = real;
            }
        }
    }
}

void *socksify_hooks_lookup(void *real)
{
    if (real == NULL)
        return NULL;
    for (size_t i = 0; i < NHOOKS; i++)
        if (real == *hooks[i].real || (hooks[i].alt != NULL && real == hooks[i].alt))
            return hooks[i].hook;
    return NULL;
}

static void patch_entry(void **slot, void *hook)
{
    DWORD old;

    if (!VirtualProtect(slot, sizeof *slot, PAGE_READWRITE, &old))
        return;
    InterlockedExchangePointer(slot, hook);
    VirtualProtect(slot, sizeof *slot, old, &old);
}

/* Rewrite mod's import address table entries that point to a hooked function. */
static void patch_module(HMODULE mod)
{
    BYTE *base = (BYTE *)mod;
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)base;
    IMAGE_NT_HEADERS *nt;
    IMAGE_DATA_DIRECTORY *dir;
    IMAGE_IMPORT_DESCRIPTOR *imp;

    if (mod == NULL || mod == self_module || dos->e_magic != IMAGE_DOS_SIGNATURE)
        return;
    nt = (IMAGE_NT_HEADERS *)(base + dos->e_lfanew);
    if (nt->Signature != IMAGE_NT_SIGNATURE
        || nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR_MAGIC)
        return;
    dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    if (dir->VirtualAddress == 0 || dir->Size == 0)
        return;
    for (imp = (IMAGE_IMPORT_DESCRIPTOR *)(base + dir->VirtualAddress); imp->Name != 0;
         imp++) {
        void **slot = (void **)(base + imp->FirstThunk);
        if (imp->FirstThunk == 0)
            continue;
        for (; *slot != NULL; slot++) {
            void *hook = socksify_hooks_lookup(*slot);
            if (hook != NULL && hook != *slot)
                patch_entry(slot, hook);
        }
    }
}

void socksify_hooks_patch_all(void)
{
    static HMODULE mods[2048];
    DWORD needed = 0;

    AcquireSRWLockExclusive(&patch_lock);
    if (K32EnumProcessModules(GetCurrentProcess(), mods, sizeof mods, &needed)) {
        DWORD n = needed / sizeof mods[0];
        if (n > sizeof mods / sizeof mods[0])
            n = sizeof mods / sizeof mods[0];
        for (DWORD i = 0; i < n; i++)
            patch_module(mods[i]);
    } else {
        LOG_WARN("cannot list the loaded modules (error %lu); hooks may be missing",
                 GetLastError());
    }
    ReleaseSRWLockExclusive(&patch_lock);
}
