//! Region codes.
