//! The `procsync` binary: everything lives in the library; see `cli::main`.

/// mimalloc instead of the C library's allocator: measured with
/// `procsync bench write`, glibc's malloc/free took a fifth of the CPU of a
/// busy instance (request buffers, payload strings). Its purge delay stays
/// at the default: handing freed memory back at once
/// (`MIMALLOC_PURGE_DELAY=0`) kept an instance loading a million records
/// at about 75 instead of 110 MiB resident, but cost batch writes a
/// quarter of their speed (measured 2026-12-04); an operator short of
/// memory can still set the variable.
/// (`--features system-alloc` leaves the system's, so that heap profilers
/// such as heaptrack see every allocation.)
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    procsync::cli::main()
}
