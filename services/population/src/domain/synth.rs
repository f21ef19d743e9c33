//! Synthetic residents for demos, load tests and seeds: families with valid,
//! unique NIKs and KKs in real kelurahan, reproducible from a seed. Nobody in
//! this data exists; names are drawn from common Indonesian given names.

use std::collections::HashMap;

use chrono::{Datelike as _, Days, NaiveDate};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};

use super::kk::Kk;
use super::nik::{Nik, Sex};
use super::region::Regions;
use super::resident::{Address, MaritalStatus, NewResident, RecordingStatus, Relationship};

const MALE_NAMES: &[&str] = &[
    "Agus",
    "Ahmad",
    "Andi",
    "Arif",
    "Bambang",
    "Budi",
    "Dedi",
    "Dimas",
    "Eko",
    "Fajar",
    "Hendra",
    "Irfan",
    "Joko",
    "Kurniawan",
    "Muhammad",
    "Rizky",
    "Rudi",
    "Slamet",
    "Teguh",
    "Wahyu",
    "Yusuf",
    "Bayu",
    "Gilang",
];
const FEMALE_NAMES: &[&str] = &[
    "Ani", "Ayu", "Dewi", "Fitri", "Indah", "Kartika", "Lestari", "Maya", "Nur", "Putri", "Rina", "Sari",
    "Siti", "Sri", "Tuti", "Wati", "Yuni", "Dian", "Nabila", "Aisyah", "Rahma", "Intan", "Wulan",
];
const SECOND_NAMES: &[&str] = &[
    "Pratama",
    "Saputra",
    "Wijaya",
    "Hidayat",
    "Santoso",
    "Setiawan",
    "Nugroho",
    "Permana",
    "Kusuma",
    "Purnama",
    "Siregar",
    "Nasution",
    "Simanjuntak",
    "Ramadhan",
    "Maulana",
    "Firmansyah",
    "Gunawan",
    "Sulistyo",
];
const BIRTH_PLACES: &[&str] = &[
    "Bekasi",
    "Jakarta",
    "Bogor",
    "Bandung",
    "Karawang",
    "Tegal",
    "Brebes",
    "Cirebon",
    "Semarang",
    "Surabaya",
    "Padang",
    "Medan",
    "Palembang",
    "Garut",
    "Tasikmalaya",
];

/// Makes synthetic families in one regency, deterministically from a seed.
#[derive(Debug)]
pub struct Generator {
    rng: SmallRng,
    today: NaiveDate,
    villages: Vec<(String, String)>,
    nik_serials: HashMap<(String, NaiveDate, bool), u16>,
    kk_serials: HashMap<(String, NaiveDate), u16>,
}

impl Generator {
    /// A generator over the kelurahan of `regency_code` (e.g. "3275", Kota Bekasi);
    /// `None` when the regency is unknown or has no villages.
    pub fn new(regency_code: &str, seed: u64, today: NaiveDate) -> Option<Self> {
        let regions = Regions::global();
        let villages: Vec<(String, String)> = regions
            .districts_of(regency_code)
            .into_iter()
            .flat_map(|(district, _)| regions.villages_of(district))
            .map(|(code, _)| (code[..6].to_owned(), code.to_owned()))
            .collect();
        (!villages.is_empty()).then(|| Self {
            rng: SmallRng::seed_from_u64(seed),
            today,
            villages,
            nik_serials: HashMap::new(),
            kk_serials: HashMap::new(),
        })
    }

    fn date_between(&mut self, from: NaiveDate, to: NaiveDate) -> NaiveDate {
        let span = (to - from).num_days().max(0);
        let offset = u64::try_from(self.rng.random_range(0..=span)).unwrap_or(0);
        from.checked_add_days(Days::new(offset)).unwrap_or(from)
    }

    fn birth_date(&mut self, min_age: i32, max_age: i32) -> NaiveDate {
        let year = self.today.year();
        let from = NaiveDate::from_ymd_opt(year - max_age - 1, self.today.month(), 1).unwrap_or(self.today);
        let to = NaiveDate::from_ymd_opt(year - min_age, self.today.month(), 1).unwrap_or(self.today);
        self.date_between(from, to.min(self.today))
    }

    fn nik(&mut self, district: &str, birth: NaiveDate, sex: Sex) -> Option<Nik> {
        let key = (district.to_owned(), birth, sex == Sex::Female);
        let serial = self.nik_serials.entry(key).or_insert(0);
        *serial += 1;
        Nik::from_parts(district, birth, sex, *serial).ok()
    }

    fn name(&mut self, sex: Sex) -> String {
        let first = match sex {
            Sex::Male => MALE_NAMES.choose(&mut self.rng),
            Sex::Female => FEMALE_NAMES.choose(&mut self.rng),
        };
        let second = SECOND_NAMES.choose(&mut self.rng);
        format!("{} {}", first.unwrap_or(&"Budi"), second.unwrap_or(&"Santoso")).to_uppercase()
    }

    fn recording(&mut self, birth: NaiveDate, married: bool) -> RecordingStatus {
        let adult = birth.years_since(self.today).is_none()
            && self.today.years_since(birth).is_some_and(|age| age >= 17);
        if !(adult || married) {
            return RecordingStatus::NotRecorded;
        }
        match self.rng.random_range(0..100) {
            0..4 => RecordingStatus::NotRecorded,
            4..6 => RecordingStatus::DuplicateRecord,
            6..20 => RecordingStatus::Recorded,
            _ => RecordingStatus::PrintReady,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn person(
        &mut self,
        kk: Kk,
        address: &Address,
        sex: Sex,
        birth: NaiveDate,
        marital_status: MaritalStatus,
        relationship: Relationship,
    ) -> Option<NewResident> {
        let nik = self.nik(address.district_code(), birth, sex)?;
        let recording_status = self.recording(birth, marital_status != MaritalStatus::Single);
        Some(NewResident {
            nik,
            kk,
            full_name: self.name(sex),
            sex,
            birth_place: BIRTH_PLACES
                .choose(&mut self.rng)
                .unwrap_or(&"Bekasi")
                .to_uppercase(),
            birth_date: birth,
            address: address.clone(),
            marital_status,
            relationship,
            recording_status,
        })
    }

    /// One family: a head, often a spouse, and 0 to 4 children; the head first.
    pub fn family(&mut self) -> Vec<NewResident> {
        let (district, village) = self.villages.choose(&mut self.rng).cloned().unwrap_or_default();
        let address = Address {
            street: format!("Jl. Melati No. {}", self.rng.random_range(1..200)),
            rt: format!("{:03}", self.rng.random_range(1..15)),
            rw: format!("{:03}", self.rng.random_range(1..12)),
            village_code: village,
        };
        let head_birth = self.birth_date(22, 75);
        let married = self.rng.random_bool(0.8);
        let issue_from = head_birth
            .checked_add_days(Days::new(18 * 366))
            .unwrap_or(head_birth)
            .max(NaiveDate::from_ymd_opt(2006, 1, 1).unwrap_or(head_birth));
        let issue = self.date_between(issue_from, self.today);
        let kk_serial = self.kk_serials.entry((district.clone(), issue)).or_insert(0);
        *kk_serial += 1;
        let Ok(kk) = Kk::from_parts(&district, issue, *kk_serial) else {
            return Vec::new();
        };
        let head_sex = if married || self.rng.random_bool(0.6) {
            Sex::Male
        } else {
            Sex::Female
        };
        let status = if married {
            MaritalStatus::Married
        } else {
            MaritalStatus::Single
        };
        let mut members = Vec::new();
        members.extend(self.person(kk, &address, head_sex, head_birth, status, Relationship::Head));
        if married {
            // A wife up to about eight years younger than her husband, and an adult.
            let gap = Days::new(self.rng.random_range(0..=3_000));
            let adult = self
                .today
                .checked_sub_days(Days::new(18 * 366))
                .unwrap_or(self.today);
            let spouse_birth = head_birth.checked_add_days(gap).unwrap_or(head_birth).min(adult);
            members.extend(self.person(
                kk,
                &address,
                Sex::Female,
                spouse_birth,
                status,
                Relationship::Wife,
            ));
            let eldest_possible = head_birth
                .checked_add_days(Days::new(19 * 366))
                .unwrap_or(head_birth);
            for _ in 0..self.rng.random_range(0..=4) {
                let sex = if self.rng.random_bool(0.5) {
                    Sex::Male
                } else {
                    Sex::Female
                };
                let birth = self.date_between(eldest_possible.min(self.today), self.today);
                members.extend(self.person(
                    kk,
                    &address,
                    sex,
                    birth,
                    MaritalStatus::Single,
                    Relationship::Child,
                ));
            }
        }
        members
    }

    /// At least `count` residents in whole families.
    pub fn residents(&mut self, count: usize) -> Vec<NewResident> {
        let mut out = Vec::with_capacity(count + 6);
        while out.len() < count {
            out.extend(self.family());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn residents_are_valid_unique_and_reproducible() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let mut generator = Generator::new("3275", 7, today).expect("Kota Bekasi has villages");
        let residents = generator.residents(2_000);
        assert!(residents.len() >= 2_000);
        let niks: HashSet<_> = residents.iter().map(|r| r.nik.as_str().to_owned()).collect();
        assert_eq!(niks.len(), residents.len(), "NIKs are unique");
        for r in &residents {
            r.check(today)
                .expect("every generated resident passes the registration rules");
            assert_eq!(r.nik.regency_code(), "3275");
            assert_eq!(Nik::parse(r.nik.as_str(), today).expect("parses"), r.nik);
        }
        let mut heads: HashMap<String, usize> = HashMap::new();
        for r in residents.iter().filter(|r| r.relationship == Relationship::Head) {
            *heads.entry(r.kk.as_str().to_owned()).or_default() += 1;
        }
        assert!(heads.values().all(|n| *n == 1), "one head per KK");
        let adult = NaiveDate::from_ymd_opt(2008, 11, 22).expect("date");
        for r in &residents {
            assert!(r.birth_date <= today, "nobody is born in the future");
            if r.relationship != Relationship::Child {
                assert!(
                    r.birth_date <= adult,
                    "heads and wives are adults: {:?}",
                    r.birth_date
                );
            }
        }
        let kks: HashSet<_> = residents.iter().map(|r| r.kk.as_str().to_owned()).collect();
        assert_eq!(kks.len(), heads.len(), "every KK has its head");

        let again = Generator::new("3275", 7, today).expect("same").residents(2_000);
        assert_eq!(
            again.iter().map(|r| r.nik).collect::<Vec<_>>(),
            residents.iter().map(|r| r.nik).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_regencies_have_no_generator() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        assert!(Generator::new("9999", 1, today).is_none());
    }
}
