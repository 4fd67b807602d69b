#ifndef CJEMALLOC_SHIM_H
#define CJEMALLOC_SHIM_H
// jemalloc (Debian libjemalloc-dev 5.3) replaces malloc/free for the whole process once the
// executable links it; only mallctl (allocator statistics) is called by name.
#include <jemalloc/jemalloc.h>
#endif
