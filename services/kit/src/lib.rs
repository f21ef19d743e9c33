//! What every adminduk server shares, written once.
