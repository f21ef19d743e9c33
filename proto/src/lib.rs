//! adminduk's public contract: the protobuf packages `adminduk.<service>.v1`
//! and the tonic clients and servers generated from them.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

/// The encoded `FileDescriptorSet` of every adminduk proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adminduk_descriptor.bin"));

/// Messages shared by every service.
pub mod common {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.common.v1.rs"));
    }
}

/// Population records: NIK, KK, residents and families.
pub mod population {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.population.v1.rs"));
    }
}

/// The e-KTP blank inventory: ledger, quotas, reservations.
pub mod inventory {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.inventory.v1.rs"));
    }
}
