// Heap bytes in use from glibc's allocator, for Sources/SeriesMemory.
#pragma once
#include <stddef.h>

/// Bytes allocated and not freed (glibc `mallinfo2()`: chunks in use plus mmapped blocks), after `malloc_trim(0)`. Linking
/// this target limits glibc to one arena (mallinfo2 counts only that one);
/// 0 where glibc's allocator is not in use.
size_t rtd_heap_in_use(void);
