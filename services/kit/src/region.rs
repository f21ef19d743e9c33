//! Region codes: the official list of Indonesian provinces, regencies and
//! cities (kabupaten/kota), districts (kecamatan) and villages
//! (desa/kelurahan).
//!
//! Codes are plain digits: a province has 2 (`32`), a regency 4 (`3275`), a
//! district 6 (`327501`) and a village 10 (`3275011001`); each code starts with
//! its parent's. These are the region digits of a NIK (`PP KK CC`) and a KK.
//!
//! The list is the npm package `idn-area-data` 3.1.2, converted to
//! `data/regions/*.tsv` by `data/regions/regenerate.py` and embedded in the
//! binary with `include_str!`; the data is under the Open Database License
//! (ODbL) 1.0, see `data/regions/NOTICE.md`. It is parsed once, on the first
//! call of [`Regions::global`]; every lookup after that is a hash-map probe
//! on the code read as an integer, with no allocation.
//!
//! A code missing from the list is not necessarily wrong: NIK region digits
//! are those of the place of first issue, and codes change when regions
//! split. Callers report an unknown region; they do not reject it.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

const PROVINCES: &str = include_str!("../data/regions/provinces.tsv");
const REGENCIES: &str = include_str!("../data/regions/regencies.tsv");
const DISTRICTS: &str = include_str!("../data/regions/districts.tsv");
const VILLAGES: &str = include_str!("../data/regions/villages.tsv");

/// Why parsing the embedded files cannot fail: they are generated and checked.
const EMBEDDED: &str = "the embedded region files are written by data/regions/regenerate.py, \
                        which checks every line is `code<TAB>name` with a code of the \
                        level's length, sorted, unique and under a listed parent; \
                        the tests of this module check it again";

static GLOBAL: LazyLock<Regions> = LazyLock::new(Regions::load);

/// The official region list, parsed once on first use.
pub struct Regions {
    provinces: Level,
    regencies: Level,
    districts: Level,
    villages: Level,
}

/// How many regions the list holds at each level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionCounts {
    /// Provinces (2-digit codes).
    pub provinces: usize,
    /// Regencies and cities, kabupaten/kota (4-digit codes).
    pub regencies: usize,
    /// Districts, kecamatan (6-digit codes).
    pub districts: usize,
    /// Villages, desa/kelurahan (10-digit codes).
    pub villages: usize,
}

/// One level of the list: the embedded text and where each line sits in it.
///
/// An entry is 8 bytes and a table slot 17, so the whole list costs about
/// 3 MB of heap beside the 1.9 MB of embedded text (see the tests).
struct Level {
    /// How many digits a code of this level has.
    digits: usize,
    /// The embedded `code<TAB>name` lines.
    text: &'static str,
    /// Each line as `(start, length)` in `text`, without its line ending;
    /// sorted by code like the file.
    lines: Vec<(u32, u32)>,
    /// Code read as an integer → position in `lines`.
    index: HashMap<u64, u32>,
    /// For each entry, the positions of its children in the next level's
    /// `lines` (children are contiguous there, since both are sorted).
    /// Empty until [`Level::link`] fills it.
    children: Vec<(u32, u32)>,
}

impl Regions {
    /// The list embedded in this binary, parsed on the first call.
    pub fn global() -> &'static Regions {
        &GLOBAL
    }

    /// The name of the province with this 2-digit code (`"32"`).
    pub fn province(&self, code: &str) -> Option<&str> {
        self.provinces.name(code)
    }

    /// The name of the regency or city with this 4-digit code (`"3275"`).
    pub fn regency(&self, code: &str) -> Option<&str> {
        self.regencies.name(code)
    }

    /// The name of the district with this 6-digit code (`"327501"`).
    pub fn district(&self, code: &str) -> Option<&str> {
        self.districts.name(code)
    }

    /// The name of the village with this 10-digit code (`"3275011001"`).
    pub fn village(&self, code: &str) -> Option<&str> {
        self.villages.name(code)
    }

    /// The districts of a regency as `(code, name)`, sorted by code; empty if the regency is not listed.
    pub fn districts_of(&self, regency: &str) -> Vec<(&str, &str)> {
        self.regencies.children_in(regency, &self.districts)
    }

    /// The villages of a district as `(code, name)`, sorted by code; empty if the district is not listed.
    pub fn villages_of(&self, district: &str) -> Vec<(&str, &str)> {
        self.districts.children_in(district, &self.villages)
    }

    /// How many regions the list holds at each level.
    pub fn counts(&self) -> RegionCounts {
        RegionCounts {
            provinces: self.provinces.lines.len(),
            regencies: self.regencies.lines.len(),
            districts: self.districts.lines.len(),
            villages: self.villages.lines.len(),
        }
    }

    /// Parses the embedded files.
    fn load() -> Regions {
        let provinces = Level::parse(PROVINCES, 2);
        let mut regencies = Level::parse(REGENCIES, 4);
        let mut districts = Level::parse(DISTRICTS, 6);
        let villages = Level::parse(VILLAGES, 10);
        // Provinces get no child ranges: nothing lists a province's regencies.
        regencies.link(&districts);
        districts.link(&villages);
        Regions {
            provinces,
            regencies,
            districts,
            villages,
        }
    }
}

impl fmt::Debug for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.counts();
        f.debug_struct("Regions")
            .field("provinces", &counts.provinces)
            .field("regencies", &counts.regencies)
            .field("districts", &counts.districts)
            .field("villages", &counts.villages)
            .finish()
    }
}

impl Level {
    /// Parses `code<TAB>name` lines, sorted by code, of codes of `digits` digits.
    fn parse(text: &'static str, digits: usize) -> Level {
        let count = text.bytes().filter(|&b| b == b'\n').count();
        let mut lines = Vec::with_capacity(count);
        let mut index = HashMap::with_capacity(count);
        let mut previous = None;
        // `lines` also drops a `\r` before each `\n`, should a checkout add one.
        for line in text.lines() {
            let (code, name) = line.split_once('\t').expect(EMBEDDED);
            let key = parse_code(code, digits).expect(EMBEDDED);
            assert!(!name.is_empty() && previous < Some(key), "{EMBEDDED}");
            previous = Some(key);
            // `line` is a slice of `text`: its address gives its offset.
            let start = line.as_ptr().addr() - text.as_ptr().addr();
            index.insert(key, u32::try_from(lines.len()).expect(EMBEDDED));
            lines.push((
                u32::try_from(start).expect(EMBEDDED),
                u32::try_from(line.len()).expect(EMBEDDED),
            ));
        }
        Level {
            digits,
            text,
            lines,
            index,
            children: Vec::new(),
        }
    }

    /// Records, for each entry, where its children sit in `next`.
    fn link(&mut self, next: &Level) {
        let scale = 10_u64.pow(u32::try_from(next.digits - self.digits).expect(EMBEDDED));
        self.children = vec![(0, 0); self.lines.len()];
        for position in 0..next.lines.len() {
            let (code, _) = next.entry(position);
            let key = parse_code(code, next.digits).expect(EMBEDDED) / scale;
            let parent = *self.index.get(&key).expect(EMBEDDED);
            let position = u32::try_from(position).expect(EMBEDDED);
            let range = &mut self.children[parent as usize];
            if range.0 == range.1 {
                *range = (position, position + 1);
            } else {
                // Sorted codes keep siblings together: this child follows the last one.
                assert_eq!(range.1, position, "{EMBEDDED}");
                range.1 += 1;
            }
        }
    }

    /// The `(code, name)` of the entry at this position.
    ///
    /// Positions come from `index` or `children`, and `lines` was cut by
    /// [`Level::parse`] at ASCII bytes (line starts, the tab after the code),
    /// so the slicing stays on character boundaries.
    fn entry(&self, position: usize) -> (&'static str, &'static str) {
        let (start, len) = self.lines[position];
        let line = &self.text[start as usize..(start + len) as usize];
        (&line[..self.digits], &line[self.digits + 1..])
    }

    /// Where the region with this code sits in `lines`, if it is listed.
    fn position(&self, code: &str) -> Option<usize> {
        let key = parse_code(code, self.digits)?;
        self.index.get(&key).map(|&position| position as usize)
    }

    /// The name of the region with this code, if it is listed.
    fn name(&self, code: &str) -> Option<&'static str> {
        self.position(code).map(|position| self.entry(position).1)
    }

    /// The children in `next` of the region with this code, as `(code, name)`.
    fn children_in(&self, code: &str, next: &Level) -> Vec<(&'static str, &'static str)> {
        let Some(&(first, end)) = self
            .position(code)
            .and_then(|position| self.children.get(position))
        else {
            return Vec::new();
        };
        (first as usize..end as usize)
            .map(|position| next.entry(position))
            .collect()
    }
}

/// Reads a code of exactly `digits` ASCII digits as an integer (`digits` ≤ 19).
fn parse_code(code: &str, digits: usize) -> Option<u64> {
    let bytes = code.as_bytes();
    if bytes.len() != digits {
        return None;
    }
    bytes.iter().try_fold(0_u64, |value, &byte| {
        byte.is_ascii_digit().then(|| value * 10 + u64::from(byte - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::mem::size_of;
    use std::time::Instant;

    fn regions() -> &'static Regions {
        Regions::global()
    }

    #[test]
    fn counts_match_idn_area_data_3_1_2() {
        assert_eq!(
            regions().counts(),
            RegionCounts {
                provinces: 38,
                regencies: 514,
                districts: 7_277,
                villages: 83_763,
            }
        );
        assert_eq!(
            format!("{:?}", regions()),
            "Regions { provinces: 38, regencies: 514, districts: 7277, villages: 83763 }"
        );
    }

    #[test]
    fn bekasi_province_and_regencies() {
        let r = regions();
        assert_eq!(r.province("32"), Some("JAWA BARAT"));
        assert_eq!(r.regency("3275"), Some("KOTA BEKASI"));
        assert_eq!(r.regency("3216"), Some("KABUPATEN BEKASI"));
        assert_eq!(r.province("11"), Some("ACEH"));
    }

    #[test]
    fn kota_bekasi_has_its_twelve_districts() {
        let expected = [
            ("327501", "Bekasi Timur"),
            ("327502", "Bekasi Barat"),
            ("327503", "Bekasi Utara"),
            ("327504", "Bekasi Selatan"),
            ("327505", "Rawalumbu"),
            ("327506", "Medansatria"),
            ("327507", "Bantargebang"),
            ("327508", "Pondokgede"),
            ("327509", "Jatiasih"),
            ("327510", "Jatisampurna"),
            ("327511", "Mustikajaya"),
            ("327512", "Pondokmelati"),
        ];
        assert_eq!(regions().districts_of("3275"), expected);
        for (code, name) in expected {
            assert_eq!(regions().district(code), Some(name));
        }
        assert_eq!(regions().district("327513"), None);
    }

    #[test]
    fn kabupaten_bekasi_has_twenty_three_districts() {
        let districts = regions().districts_of("3216");
        assert_eq!(districts.len(), 23);
        let codes: Vec<&str> = districts.iter().map(|&(code, _)| code).collect();
        let expected: Vec<String> = (1..=23).map(|n| format!("3216{n:02}")).collect();
        assert_eq!(codes, expected);
        assert_eq!(districts[5], ("321606", "Tambun Selatan"));
        assert_eq!(districts[22], ("321623", "Bojongmangu"));
    }

    #[test]
    fn known_villages_resolve() {
        let r = regions();
        assert_eq!(r.village("3275011001"), Some("Bekasijaya"));
        assert_eq!(
            r.villages_of("327501"),
            [
                ("3275011001", "Bekasijaya"),
                ("3275011002", "Margahayu"),
                ("3275011003", "Durenjaya"),
                ("3275011004", "Arenjaya"),
            ]
        );
        // The kelurahan cleared for the LRT project (seed 003).
        assert_eq!(r.village("3216061001"), Some("Jatimulya"));
        // Names are kept exactly as the source spells them.
        assert_eq!(r.village("3513152017"), Some("Soka\"an"));
        assert_eq!(r.village("5307012021"), Some("Regapu\u{2019}u"));
        // Desa adat codes (suffix 3xxx) are ordinary 10-digit codes.
        assert_eq!(r.village("9103013007"), Some("Desa Adat Yoboi"));
    }

    #[test]
    fn bad_inputs_give_none() {
        let r = regions();
        let bad = [
            "",
            "3",
            "32x5",
            "３２",
            "12345678901234567890",
            "0000000000",
            "00",
            "0000",
            "000000",
            " 32",
            "32 ",
            "+32",
            "-3",
            "32.75",
            "32.75.01",
            "32.75.01.1001",
            "3275\t",
            "327501100\u{0}",
            "é2",
            "\u{1F600}",
            "99",
            "9999999999",
            "18446744073709551616",
        ];
        for code in bad {
            assert_eq!(r.province(code), None, "{code:?}");
            assert_eq!(r.regency(code), None, "{code:?}");
            assert_eq!(r.district(code), None, "{code:?}");
            assert_eq!(r.village(code), None, "{code:?}");
            assert!(r.districts_of(code).is_empty(), "{code:?}");
            assert!(r.villages_of(code).is_empty(), "{code:?}");
        }
    }

    #[test]
    fn a_code_answers_only_at_its_own_level() {
        let r = regions();
        assert_eq!(r.regency("32"), None);
        assert_eq!(r.province("3275"), None);
        assert_eq!(r.district("3275"), None);
        assert_eq!(r.village("327501"), None);
        assert!(r.districts_of("327501").is_empty());
        assert!(r.villages_of("3275").is_empty());
        assert!(r.districts_of("32").is_empty());
    }

    #[test]
    fn crlf_line_endings_parse_the_same() {
        let mut provinces = Level::parse("31\tDKI JAKARTA\r\n32\tJAWA BARAT\r\n", 2);
        let regencies = Level::parse("3201\tKABUPATEN BOGOR\r\n3275\tKOTA BEKASI", 4);
        provinces.link(&regencies);
        assert_eq!(provinces.name("32"), Some("JAWA BARAT"));
        assert_eq!(regencies.name("3275"), Some("KOTA BEKASI"));
        assert_eq!(
            provinces.children_in("32", &regencies),
            [("3201", "KABUPATEN BOGOR"), ("3275", "KOTA BEKASI")]
        );
        assert!(provinces.children_in("31", &regencies).is_empty());
    }

    fn all(level: &Level) -> Vec<(&'static str, &'static str)> {
        (0..level.lines.len()).map(|i| level.entry(i)).collect()
    }

    #[test]
    fn every_entry_resolves_and_sits_under_a_listed_parent() {
        let r = regions();
        let levels = [
            (&r.provinces, 2),
            (&r.regencies, 4),
            (&r.districts, 6),
            (&r.villages, 10),
        ];
        for (level, digits) in levels {
            assert_eq!(level.digits, digits);
            assert_eq!(level.index.len(), level.lines.len(), "unique codes");
            let entries = all(level);
            for pair in entries.windows(2) {
                assert!(pair[0].0 < pair[1].0, "sorted: {}", pair[1].0);
            }
            for (code, name) in entries {
                assert_eq!(code.len(), digits);
                assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
                assert!(!name.is_empty(), "{code}");
                assert!(!name.contains(['\t', '\r', '\n']), "{code}");
                assert_eq!(level.name(code), Some(name));
            }
        }
        for (code, _) in all(&r.regencies) {
            assert!(r.province(&code[..2]).is_some(), "{code}");
        }
        for (code, _) in all(&r.districts) {
            assert!(r.regency(&code[..4]).is_some(), "{code}");
        }
        for (code, _) in all(&r.villages) {
            assert!(r.district(&code[..6]).is_some(), "{code}");
        }
        // Every child is listed under its parent exactly once.
        let mut districts = 0;
        for (regency, _) in all(&r.regencies) {
            let children = r.districts_of(regency);
            assert!(children.iter().all(|(code, _)| code.starts_with(regency)));
            districts += children.len();
        }
        assert_eq!(districts, r.counts().districts);
        let mut villages = 0;
        for (district, _) in all(&r.districts) {
            let children = r.villages_of(district);
            assert!(!children.is_empty(), "{district} has no village");
            assert!(children.iter().all(|(code, _)| code.starts_with(district)));
            villages += children.len();
        }
        assert_eq!(villages, r.counts().villages);
    }

    /// Heap bytes held by one level: line spans, child ranges and the hash
    /// table (hashbrown: a power-of-two number of buckets, at most 7/8 full,
    /// each one `(key, value)` slot and one control byte).
    fn heap_bytes(level: &Level) -> usize {
        let buckets = (level.index.capacity() * 8).div_ceil(7).next_power_of_two();
        (level.lines.capacity() + level.children.capacity()) * size_of::<(u32, u32)>()
            + buckets * (size_of::<(u64, u32)>() + 1)
    }

    #[test]
    fn load_time_and_memory() {
        let start = Instant::now();
        let loaded = Regions::load();
        let elapsed = start.elapsed();
        assert_eq!(loaded.counts(), regions().counts());
        let heap: usize = [
            &loaded.provinces,
            &loaded.regencies,
            &loaded.districts,
            &loaded.villages,
        ]
        .into_iter()
        .map(heap_bytes)
        .sum();
        let embedded = PROVINCES.len() + REGENCIES.len() + DISTRICTS.len() + VILLAGES.len();
        println!(
            "Regions::load: {elapsed:?}; heap ≈ {} KiB; embedded text {} KiB",
            heap / 1024,
            embedded / 1024
        );
    }

    proptest! {
        #[test]
        fn no_input_panics(code in any::<String>()) {
            let r = regions();
            for (name, digits) in [
                (r.province(&code), 2),
                (r.regency(&code), 4),
                (r.district(&code), 6),
                (r.village(&code), 10),
            ] {
                if name.is_some() {
                    prop_assert!(code.len() == digits && code.bytes().all(|b| b.is_ascii_digit()));
                }
            }
            let _ = r.districts_of(&code);
            let _ = r.villages_of(&code);
        }

        #[test]
        fn digit_strings_never_panic(code in "[0-9]{0,12}") {
            let r = regions();
            let _ = (r.province(&code), r.regency(&code), r.district(&code), r.village(&code));
            for (child, _) in r.districts_of(&code) {
                prop_assert!(child.starts_with(code.as_str()));
            }
            for (child, _) in r.villages_of(&code) {
                prop_assert!(child.starts_with(code.as_str()));
            }
        }
    }
}
