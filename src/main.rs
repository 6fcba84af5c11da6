//! The `procsync` binary: everything lives in the library; see `cli::main`.

/// mimalloc instead of the C library's allocator: measured with
/// `procsync bench write`, glibc's malloc/free took a fifth of the CPU of a
/// busy instance (request buffers, payload strings).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own setter for its options (linked with the allocator).
#[allow(
    unsafe_code,
    reason = "the allocator's option setter has no safe wrapper; the one unsafe block of the crate"
)]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay`: the 16th of mimalloc's options, in its 2.x and
/// 3.x headers alike.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() -> std::process::ExitCode {
    // Memory freed is handed back to the system at once rather than kept
    // for a while: measured with `procsync bench load`, an instance's
    // resident memory while loading fell from about 110 to 75 MiB at the
    // same speed (an edge server counts resident memory).
    // SAFETY: a plain setter of an integer option, called before any
    // thread starts.
    #[allow(unsafe_code, reason = "see the declaration above")]
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
    procsync::cli::main()
}
