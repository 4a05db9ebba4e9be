//go:build !cgo

package store

// TrimMalloc: without cgo there is no C heap (and no SQLite driver).
func TrimMalloc() {}

// MallocFree: without cgo there is no C heap.
func MallocFree() uint64 { return 0 }
