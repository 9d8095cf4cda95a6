/* A stand-in for Windows 10's bcryptprimitives.dll, for Debian's Wine 8 only: Rust's std
 * takes its random bytes from ProcessPrng there, which Wine 8 lacks. tools/windows builds
 * it with MinGW-w64 into the Wine prefix; a real Windows has the DLL itself. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
    data += chunk;
    len -= chunk;
  }
  return TRUE;
}
