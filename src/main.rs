//! The `sttpipe` command. Everything it does is in the library: see its
//! crate documentation for the layout.

fn main() -> std::process::ExitCode {
    sttpipe::run()
}
