//! The `procsync` binary: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    procsync::cli::main()
}
