//go:build cgo

package store

/*
#include <malloc.h>

// oneArena keeps glibc's malloc to its main arena. SQLite, through
// go-sqlite3, is the only C code here and the only user of malloc. glibc
// gives a thread that finds the arena busy an arena of its own, up to
// eight per core, and keeps what each one freed; Go makes cgo calls on
// whichever thread is free, so after 200 IRC users had joined (their
// registrations and state written in a burst), five arenas held 1.2 MB
// resident against 0.67 MB for the one arena (smaps, end of the
// JoinedUsers benchmark). SQLite serialises its work on its own mutexes
// anyway, so one arena's lock costs little. A no-op for a C library
// without M_ARENA_MAX (musl has a single heap already).
//
// A constructor, run as the program is loaded: by the time Go runs this
// package's init, threads of the runtime and of go-sqlite3's init have
// made three or four arenas already.
__attribute__((constructor)) static void oneArena(void) {
#ifdef M_ARENA_MAX
	mallopt(M_ARENA_MAX, 1);
#endif
}

static void trimMalloc(void) {
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

// Nested: "defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)" in one #if does
// not preprocess where the macro is missing (musl), whatever the &&.
static size_t freeMalloc(void) {
#ifdef __GLIBC__
#if __GLIBC_PREREQ(2, 33)
	return mallinfo2().fordblks;
#endif
#endif
	return 0;
}
*/
import "C"

// TrimMalloc gives the free memory inside C's heap back to the system
// (glibc's malloc_trim; a no-op with another C library). SQLite's memory
// comes and goes with the database's work (statements, page cache, a
// burst of registrations), and glibc returns what is freed only from the
// top of its heap: after 200 IRC users had joined, 186 KB sat free but
// resident inside it (mallinfo2 at the end of the JoinedUsers benchmark).
// cmd/transportd calls it when the process has gone quiet (package
// memtrim): with each trim of the Go heap, and when C's heap alone grew
// free (MallocFree) by some tens of KB, as when the database pool closes
// an idle connection. It walks the C heap once under malloc's lock.
func TrimMalloc() { C.trimMalloc() }

// MallocFree returns the bytes free inside C's heap, resident or not
// (glibc's mallinfo2; 0 with another C library, or a glibc before 2.33).
func MallocFree() uint64 { return uint64(C.freeMalloc()) }
