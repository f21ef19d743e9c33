//! KK numbers.
