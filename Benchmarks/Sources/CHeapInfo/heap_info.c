#include "heap_info.h"
#if defined(__linux__)
#include <malloc.h>

// mallinfo2 counts the main arena only: keep every thread's allocations there. Runs before main.
__attribute__((constructor)) static void rtd_single_arena(void) { mallopt(M_ARENA_MAX, 1); }

size_t rtd_heap_in_use(void) {
    malloc_trim(0);
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;  // small chunks in use + mmapped large blocks
}
#else
size_t rtd_heap_in_use(void) { return 0; }
#endif
