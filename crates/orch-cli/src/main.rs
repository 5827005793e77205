//! The `orch` binary: parses the command line, runs one verb, and alone decides the
//! process's exit code.

fn main() {}
