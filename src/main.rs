//! The `ebsim` binary: parse, dispatch, map errors to exit codes (all in `ebsim::cli`).

fn main() {
    // Key material lives in this process's memory: keep it out of core dumps.
    let _ = nix::sys::prctl::set_dumpable(false);
    std::process::exit(ebsim::cli::main_with_args(std::env::args_os()));
}
