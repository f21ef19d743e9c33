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

/// IKD: digital identity activation, device binding, session tokens.
pub mod ikd {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.ikd.v1.rs"));
    }
}

/// Printing and delivery of KTP-el cards.
pub mod printing {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.printing.v1.rs"));
    }
}

/// The gateway's own records: agencies' agreements, accounts flagged as brokers.
pub mod gateway {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/adminduk.gateway.v1.rs"));
    }
}

/// Conversions between protobuf's calendar types and chrono's.
pub mod convert {
    use chrono::{DateTime, Datelike as _, NaiveDate, Utc};

    use crate::common::v1::Date;

    /// A protobuf date from a calendar date.
    pub fn date(day: NaiveDate) -> Date {
        Date {
            year: day.year(),
            month: i32::try_from(day.month()).unwrap_or_default(),
            day: i32::try_from(day.day()).unwrap_or_default(),
        }
    }

    /// The calendar date a protobuf date names, if it is a real one.
    pub fn to_naive(date: &Date) -> Option<NaiveDate> {
        let month = u32::try_from(date.month).ok()?;
        let day = u32::try_from(date.day).ok()?;
        NaiveDate::from_ymd_opt(date.year, month, day)
    }

    /// A protobuf timestamp from an instant.
    pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
        }
    }
}
