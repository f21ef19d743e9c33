//! NIK numbers.
