/* closesocket: a carried socket is forgotten first (carry.c), so that a later socket
 * given the same handle value starts clean. */
#include "shim.h"

int (WSAAPI *real_closesocket)(SOCKET);

int WSAAPI socksify_hook_closesocket(SOCKET s)
{
    socksify_carry_forget(s);
    return real_closesocket(s);
}
