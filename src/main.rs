//! The `procsync` binary: everything lives in the library; see `cli::main`.

/// mimalloc instead of the C library's allocator: measured with
/// `procsync bench write`, glibc's malloc/free took a fifth of the CPU of a
/// busy instance (request buffers, payload strings). Its purge delay is set
/// at start (`keep_freed_memory_briefly`). It is built without asking for
/// transparent huge pages (the crate's `no_thp`): with them, where the
/// kernel grants them on request (`madvise`, the usual default), every
/// 2 MiB region it touched stayed resident, and `bench sync --backlog`
/// (300,000 items) drained with 86-104 MiB resident on the edge and 83-91
/// on the hub instead of about 31-33, at the same rate.
/// (`--features system-alloc` leaves the system's, so that heap profilers
/// such as heaptrack see every allocation.)
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    #[cfg(not(feature = "system-alloc"))]
    keep_freed_memory_briefly();
    procsync::cli::main()
}

/// mimalloc hands freed pages back to the system 50 ms after they empty
/// (its option `purge_delay`), not after its default second. Purging is
/// done by the thread that freed them, on a later call into mimalloc, so
/// with the default a thread that then goes idle (most of a hub's, with a
/// thousand idle edges) keeps them: 318-355 KiB per idle edge against 239
/// with 10 ms when that was first measured (`bench fleet`, 1,000 edges;
/// figures of another day than those below). Shorter is not better either:
/// an attachment's chunks (1 MiB buffers on both sides, one every few
/// milliseconds) then come back as fresh pages the kernel must fault in
/// and zero, and with 10 ms a 1 GiB transfer ran at 348-383 MB/s against
/// 457-481 with 50-250 ms and 1.8-2.0 s of CPU per side instead of 2.3-2.6
/// (`bench attachment`), while a thousand idle edges took 170 KiB each at
/// 50 ms against 149 at 10 ms (2026-12-06). Handing them back at once
/// (0 ms) cost 7 % of `bench sync` and a quarter of batch writes.
/// `MIMALLOC_PURGE_DELAY` set in the environment still wins.
#[cfg(not(feature = "system-alloc"))]
#[allow(
    unsafe_code,
    reason = "mimalloc's options are set through its C API; the mimalloc crate has no wrapper for it"
)]
fn keep_freed_memory_briefly() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3).
    const PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option
        // table (linked in by the mimalloc crate); 15 is purge_delay in
        // the mimalloc this build compiles, and 50 ms is in its range.
        unsafe { mi_option_set(PURGE_DELAY, 50) };
    }
}
