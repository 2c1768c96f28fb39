//! `keep_freed_memory` really changes how glibc's `malloc` serves large blocks. Its own file, so
//! its own process: the allocator's settings are process-wide.

/// After the call a 16 MiB block comes from `malloc`'s heap, not from a mapping of its own (with
/// glibc's defaults, blocks from 128 KiB up get their own `mmap` until a freed one raises the
/// threshold, and this process has freed none that large).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_blocks_come_from_the_heap_after_the_call() {
    assert!(recur::keep_freed_memory(), "glibc refused the settings");
    // SAFETY: `mallinfo2` only reads the allocator's statistics.
    let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
    let before = mapped();
    let block = std::hint::black_box(vec![1u8; 16 << 20]);
    assert_eq!(mapped(), before, "the 16 MiB block got its own mapping");
    drop(block);
}

/// Elsewhere the call does nothing and says so.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[test]
fn other_c_libraries_are_left_alone() {
    assert!(!recur::keep_freed_memory());
}
