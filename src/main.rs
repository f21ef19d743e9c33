//! The `adminduk` binary.
fn main() {}
