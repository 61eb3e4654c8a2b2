//! The `archipelago` binary: command-line entry point.

fn main() {}
