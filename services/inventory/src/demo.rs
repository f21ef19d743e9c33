//! Kota Bekasi as the seeds describe it: 12 kecamatan offices at 30 blanks a
//! day each, and the MPP, the GPP and the Disdukcapil office sharing 150 —
//! 510 a day, about 15,000 a month.

use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PoolSpec};

/// Kota Bekasi's regency code.
pub const KOTA_BEKASI: &str = "3275";

/// Kota Bekasi's twelve kecamatan, in code order (327501 to 327512).
pub const KECAMATAN: [&str; 12] = [
    "Bekasi Timur",
    "Bekasi Barat",
    "Bekasi Utara",
    "Bekasi Selatan",
    "Rawalumbu",
    "Medan Satria",
    "Bantargebang",
    "Pondokgede",
    "Jatiasih",
    "Jatisampurna",
    "Mustikajaya",
    "Pondokmelati",
];

/// The shared pool of the MPP, the GPP and the Disdukcapil office.
pub const SHARED_POOL: &str = "3275-SHARED";

/// The service point code of kecamatan `n` (1 to 12), e.g. `3275-KEC-01`.
pub fn kecamatan_point(n: usize) -> String {
    format!("{KOTA_BEKASI}-KEC-{n:02}")
}

/// Kota Bekasi's quota policy.
pub fn kota_bekasi_policy() -> Policy {
    let mut points: Vec<PointSpec> = KECAMATAN
        .iter()
        .enumerate()
        .map(|(i, name)| PointSpec {
            code: kecamatan_point(i + 1),
            name: format!("Kecamatan {name}"),
            kind: PointKind::Kecamatan,
            district_code: format!("{KOTA_BEKASI}{:02}", i + 1),
            pool_code: kecamatan_point(i + 1),
        })
        .collect();
    // The MPP and the Disdukcapil office are in Bekasi Selatan, the GPP in Bekasi Utara.
    for (code, name, kind, district) in [
        (
            "3275-MPP",
            "Mal Pelayanan Publik Kota Bekasi",
            PointKind::Mpp,
            "327504",
        ),
        ("3275-GPP", "Gerai Pelayanan Publik", PointKind::Gpp, "327503"),
        (
            "3275-DISDUK",
            "Kantor Disdukcapil Kota Bekasi",
            PointKind::Disdukcapil,
            "327504",
        ),
    ] {
        points.push(PointSpec {
            code: code.to_owned(),
            name: name.to_owned(),
            kind,
            district_code: district.to_owned(),
            pool_code: SHARED_POOL.to_owned(),
        });
    }
    let mut pools: Vec<PoolSpec> = (1..=12)
        .map(|n| PoolSpec {
            code: kecamatan_point(n),
            daily_quota: 30,
        })
        .collect();
    pools.push(PoolSpec {
        code: SHARED_POOL.to_owned(),
        daily_quota: 150,
    });
    Policy {
        region_code: KOTA_BEKASI.to_owned(),
        points,
        pools,
        monthly_cap: 15_000,
        next_shipment: None,
        version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_matches_the_seeds() {
        let policy = kota_bekasi_policy();
        assert!(policy.check().is_ok());
        assert_eq!(policy.daily_total(), 510);
        assert_eq!(policy.points.len(), 15);
        assert_eq!(policy.monthly_cap, 15_000);
    }
}
