//! The `procsync` binary: everything lives in the library; see `cli::main`.

/// mimalloc instead of the C library's allocator: measured with
/// `procsync bench write`, glibc's malloc/free took a fifth of the CPU of a
/// busy instance (request buffers, payload strings).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    procsync::cli::main()
}
