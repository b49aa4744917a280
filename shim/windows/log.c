/* Log lines on the program's stderr: "socksify[pid] function: message". */
#include <stdarg.h>
#include <stdio.h>

#include "shim.h"

void socksify_log(int level, const char *func, const char *fmt, ...)
{
    char line[1024];
    int n, m;
    va_list ap;
    DWORD saved = GetLastError(), written;
    int wsa = WSAGetLastError();
    HANDLE err = GetStdHandle(STD_ERROR_HANDLE);

    if (level > socksify_cfg.log_level || err == NULL || err == INVALID_HANDLE_VALUE)
        return;
    n = snprintf(line, sizeof line, "socksify[%lu] %s: ", GetCurrentProcessId(), func);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    WriteFile(err, line, (DWORD)n, &written, NULL);
    SetLastError(saved);
    WSASetLastError(wsa);
}
