//! Residents and families: the record, its enumerations, and the rules a new
//! or changed record must satisfy.

use chrono::{DateTime, NaiveDate, Utc};

use super::kk::Kk;
use super::nik::{Nik, Sex};
use super::region::Regions;

/// Marital status (status perkawinan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaritalStatus {
    /// Belum kawin.
    Single,
    /// Kawin.
    Married,
    /// Cerai hidup.
    Divorced,
    /// Cerai mati.
    Widowed,
}

/// Relationship in the family (SHDK, status hubungan dalam keluarga), codes 1 to 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    /// 1, kepala keluarga: exactly one per KK.
    Head,
    /// 2, suami.
    Husband,
    /// 3, istri.
    Wife,
    /// 4, anak.
    Child,
    /// 5, menantu.
    ChildInLaw,
    /// 6, cucu.
    Grandchild,
    /// 7, orangtua.
    Parent,
    /// 8, mertua.
    ParentInLaw,
    /// 9, famili lain.
    OtherRelative,
    /// 10, pembantu.
    HouseholdHelper,
    /// 11, lainnya.
    Other,
}

impl Relationship {
    const ALL: [Self; 11] = [
        Self::Head,
        Self::Husband,
        Self::Wife,
        Self::Child,
        Self::ChildInLaw,
        Self::Grandchild,
        Self::Parent,
        Self::ParentInLaw,
        Self::OtherRelative,
        Self::HouseholdHelper,
        Self::Other,
    ];

    /// The SHDK code, 1 to 11.
    pub fn code(self) -> i64 {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .map_or(11, |i| i as i64 + 1)
    }

    /// The relationship for an SHDK code; `None` outside 1 to 11.
    pub fn from_code(code: i64) -> Option<Self> {
        usize::try_from(code - 1)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// Alive, deceased, or moved out of the area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifeStatus {
    /// Alive and registered here.
    Alive,
    /// Deceased.
    Deceased,
    /// Moved out of the area.
    MovedOut,
}

/// KTP-el biometric recording status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingStatus {
    /// Not recorded yet.
    NotRecorded,
    /// Recorded, not yet print-ready.
    Recorded,
    /// PRR, print-ready record: a card may be printed.
    PrintReady,
    /// A duplicate record: printing is blocked.
    DuplicateRecord,
}

/// Something about a record an officer should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// The recorded sex or birth date disagrees with the NIK.
    NikMismatch,
    /// A head of family who died or moved out: the KK needs a new head.
    FamilyNeedsHead,
}

adminduk_kit::text_codes!(MaritalStatus { Single => "SINGLE", Married => "MARRIED", Divorced => "DIVORCED", Widowed => "WIDOWED" });
adminduk_kit::text_codes!(LifeStatus { Alive => "ALIVE", Deceased => "DECEASED", MovedOut => "MOVED_OUT" });
adminduk_kit::text_codes!(RecordingStatus {
    NotRecorded => "NOT_RECORDED",
    Recorded => "RECORDED",
    PrintReady => "PRINT_READY",
    DuplicateRecord => "DUPLICATE_RECORD",
});

/// An address down to the kelurahan/desa.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Street, number, block.
    pub street: String,
    /// Rukun tetangga.
    pub rt: String,
    /// Rukun warga.
    pub rw: String,
    /// Kelurahan/desa code, 10 digits.
    pub village_code: String,
}

impl Address {
    /// The kecamatan code: the village code's first six digits.
    pub fn district_code(&self) -> &str {
        self.village_code.get(..6).unwrap_or("")
    }
}

/// A resident's record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    /// The store's row id; orders search results with equal names.
    pub id: i64,
    /// NIK.
    pub nik: Nik,
    /// The KK the resident is active on.
    pub kk: Kk,
    /// Full name.
    pub full_name: String,
    /// Sex as recorded.
    pub sex: Sex,
    /// Place of birth.
    pub birth_place: String,
    /// Date of birth as recorded.
    pub birth_date: NaiveDate,
    /// Current address.
    pub address: Address,
    /// Marital status.
    pub marital_status: MaritalStatus,
    /// Relationship in the KK.
    pub relationship: Relationship,
    /// Alive, deceased, moved out.
    pub life_status: LifeStatus,
    /// KTP-el recording status.
    pub recording_status: RecordingStatus,
    /// Date of death, when deceased.
    pub death_date: Option<NaiveDate>,
    /// Optimistic-concurrency version, 1 on creation.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

impl Resident {
    /// Flags computed from the record: never stored, so they cannot go stale.
    pub fn flags(&self) -> Vec<Flag> {
        let mut flags = Vec::new();
        if self.nik.sex() != self.sex || !nik_date_agrees(&self.nik, self.birth_date) {
            flags.push(Flag::NikMismatch);
        }
        if self.relationship == Relationship::Head && self.life_status != LifeStatus::Alive {
            flags.push(Flag::FamilyNeedsHead);
        }
        flags
    }

    /// Whether the resident counts as a member of their KK now.
    pub fn is_active(&self) -> bool {
        self.life_status == LifeStatus::Alive
    }
}

/// A rule a request broke, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, e.g. `address.village_code`.
    pub field: String,
    /// What is wrong, lowercase, without the value when it is personal data.
    pub description: String,
}

impl Violation {
    /// A violation of one field.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Whether a birth date agrees with the NIK's DDMMYY. The NIK does not say the
/// century, so a person born in 1925 and a baby born in 2025 on the same day
/// share those digits: only day, month and the year's last two digits count.
pub fn nik_date_agrees(nik: &Nik, date: NaiveDate) -> bool {
    use chrono::Datelike as _;
    let encoded = nik.birth_date();
    encoded.day() == date.day()
        && encoded.month() == date.month()
        && encoded.year() % 100 == date.year() % 100
}

/// Longest name accepted; KTP-el prints up to about 60 characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Checks a name-like text field: present, not too long, printable.
pub fn check_text(field: &str, value: &str, max_chars: usize, out: &mut Vec<Violation>) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        out.push(Violation::new(field, "is required"));
    } else if let Some(fault) = adminduk_kit::text::fault(trimmed, max_chars) {
        out.push(Violation::new(field, fault));
    } else if normalize_name(trimmed).is_empty() {
        out.push(Violation::new(field, "must contain letters"));
    }
}

/// Checks a kelurahan/desa code: 10 digits, on the official list.
pub fn check_village_code(field: &str, code: &str, out: &mut Vec<Violation>) {
    if !adminduk_kit::is_digits(code, 10) {
        out.push(Violation::new(field, "must be 10 digits"));
    } else if Regions::global().village(code).is_none() {
        out.push(Violation::new(field, "unknown kelurahan/desa code"));
    }
}

/// Checks an address: a known 10-digit village code and short RT/RW numbers.
pub fn check_address(field: &str, address: &Address, out: &mut Vec<Violation>) {
    check_village_code(&format!("{field}.village_code"), &address.village_code, out);
    for (name, value) in [("rt", &address.rt), ("rw", &address.rw)] {
        if !value.is_empty() && (value.len() > 3 || !value.bytes().all(|b| b.is_ascii_digit())) {
            out.push(Violation::new(
                format!("{field}.{name}"),
                "must be up to 3 digits",
            ));
        }
    }
    if let Some(fault) = adminduk_kit::text::fault(&address.street, MAX_STREET_CHARS) {
        out.push(Violation::new(format!("{field}.street"), fault));
    }
}

/// Longest street line accepted.
pub const MAX_STREET_CHARS: usize = 200;

/// Normalises a name for comparison and search: lowercase letters and digits
/// only, so "Muh. Rizky  Ananda" and "MUH RIZKY ANANDA" compare equal.
pub fn normalize_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A new resident as asked for, before it is stored.
#[derive(Debug, Clone)]
pub struct NewResident {
    /// NIK, already parsed.
    pub nik: Nik,
    /// KK, already parsed.
    pub kk: Kk,
    /// Full name.
    pub full_name: String,
    /// Sex.
    pub sex: Sex,
    /// Place of birth.
    pub birth_place: String,
    /// Date of birth.
    pub birth_date: NaiveDate,
    /// Address.
    pub address: Address,
    /// Marital status.
    pub marital_status: MaritalStatus,
    /// Relationship in the KK.
    pub relationship: Relationship,
    /// KTP-el recording status.
    pub recording_status: RecordingStatus,
}

impl NewResident {
    /// Checks the rules a new record must satisfy on its own; family rules are the store's,
    /// as they depend on what is stored.
    pub fn check(&self, today: NaiveDate) -> Result<(), Vec<Violation>> {
        let mut out = Vec::new();
        check_text("full_name", &self.full_name, MAX_NAME_CHARS, &mut out);
        check_text("birth_place", &self.birth_place, MAX_NAME_CHARS, &mut out);
        check_address("address", &self.address, &mut out);
        Registration {
            nik: Some(&self.nik),
            kk: Some(&self.kk),
            sex: Some(self.sex),
            birth_date: Some(self.birth_date),
            marital_status: Some(self.marital_status),
            relationship: Some(self.relationship),
            recording_status: Some(self.recording_status),
        }
        .check(today, &mut out);
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

/// A registration's parts as far as they parsed (`None` where a part did
/// not): the rules between parts are checked on every pair that parsed, so a
/// client sees each violation at once, not one more after each fix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registration<'a> {
    /// NIK.
    pub nik: Option<&'a Nik>,
    /// KK.
    pub kk: Option<&'a Kk>,
    /// Sex as declared.
    pub sex: Option<Sex>,
    /// Date of birth as declared.
    pub birth_date: Option<NaiveDate>,
    /// Marital status.
    pub marital_status: Option<MaritalStatus>,
    /// Relationship in the KK.
    pub relationship: Option<Relationship>,
    /// KTP-el recording status.
    pub recording_status: Option<RecordingStatus>,
}

impl Registration<'_> {
    /// Adds to `out` every rule between the parsed parts that is broken.
    pub fn check(&self, today: NaiveDate, out: &mut Vec<Violation>) {
        // A new NIK must agree with what the person declares; a later disagreement is only flagged.
        if let (Some(nik), Some(sex)) = (self.nik, self.sex)
            && nik.sex() != sex
        {
            out.push(Violation::new(
                "sex",
                "does not agree with the NIK (40 is added to the birth day for women)",
            ));
        }
        let Some(birth_date) = self.birth_date else {
            return;
        };
        if let Some(nik) = self.nik
            && !nik_date_agrees(nik, birth_date)
        {
            out.push(Violation::new("birth_date", "does not agree with the NIK"));
        }
        if birth_date > today {
            // Every age rule would only repeat this.
            out.push(Violation::new("birth_date", "is in the future"));
            return;
        }
        if let Some(kk) = self.kk
            && self.relationship == Some(Relationship::Head)
            && kk.issue_date() < birth_date
        {
            out.push(Violation::new("kk", "was issued before its head was born"));
        }
        for rule in age_rules(
            birth_date,
            self.marital_status,
            self.relationship,
            self.recording_status,
            today,
        ) {
            out.push(Violation::new(rule.field(), rule.description()));
        }
    }
}

/// The youngest age at which a marriage is recorded.
///
/// UU 16/2019 (amending UU 1/1974, Pasal 7) sets the marriage age at 19 for
/// both sexes, but a court may dispense (Pasal 7(2)), and those marriages are
/// lawful and must be recorded; DOMAIN.md's KTP-el rule ("17 or older, or
/// married") exists for them. A request cannot show a dispensation, so the
/// registry refuses only what no court practice explains: a marriage below
/// 16, the age UU 1/1974 itself set for women before 2019.
pub const MIN_MARRIAGE_AGE: i32 = 16;

/// The age from which a resident must hold a KTP-el and counts as an adult in
/// adminduk: 17, or younger once married (UU 24/2013; DOMAIN.md, "KTP-el
/// eligibility").
pub const KTP_AGE: i32 = 17;

/// A rule of age a record can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgeRule {
    /// Married, divorced or widowed below [`MIN_MARRIAGE_AGE`].
    Marriage,
    /// Head of a family while neither [`KTP_AGE`] nor ever married.
    Head,
    /// Print-ready (a card may be printed) while not eligible for a KTP-el.
    PrintReady,
}

impl AgeRule {
    /// The request field the rule is about.
    pub fn field(self) -> &'static str {
        match self {
            Self::Marriage => "marital_status",
            Self::Head => "relationship",
            Self::PrintReady => "recording_status",
        }
    }

    /// What is wrong, for the client.
    pub fn description(self) -> String {
        match self {
            Self::Marriage => format!(
                "must be SINGLE under {MIN_MARRIAGE_AGE}: no marriage is recorded that young \
                 (the marriage age is 19, younger only by court dispensation, UU 16/2019)"
            ),
            Self::Head => format!("a head of family must be {KTP_AGE} or older, or married"),
            Self::PrintReady => {
                format!("a KTP-el is printed only from {KTP_AGE} or once married, so not PRINT_READY")
            }
        }
    }
}

/// The age rules a record with these parts breaks on `today`; a part not
/// known (`None`) breaks none of the rules about it.
pub fn age_rules(
    birth_date: NaiveDate,
    marital_status: Option<MaritalStatus>,
    relationship: Option<Relationship>,
    recording_status: Option<RecordingStatus>,
    today: NaiveDate,
) -> Vec<AgeRule> {
    let age = adminduk_kit::time::age(birth_date, today);
    let mut broken = Vec::new();
    let Some(marital_status) = marital_status else {
        // Both other rules turn on whether the person was ever married.
        return broken;
    };
    let ever_married = marital_status != MaritalStatus::Single;
    if ever_married && age < MIN_MARRIAGE_AGE {
        broken.push(AgeRule::Marriage);
    }
    // A marriage refused above makes nobody an adult: an 8-year-old sent as
    // married, head and print-ready hears all three at once.
    let adult = age >= KTP_AGE || (ever_married && age >= MIN_MARRIAGE_AGE);
    if relationship == Some(Relationship::Head) && !adult {
        broken.push(AgeRule::Head);
    }
    // Biometrics may be recorded ahead of the 17th birthday; the card waits for it.
    if recording_status == Some(RecordingStatus::PrintReady) && !adult {
        broken.push(AgeRule::PrintReady);
    }
    broken
}

impl Resident {
    /// The age rules the record breaks on `today`.
    pub fn age_rules(&self, today: NaiveDate) -> Vec<AgeRule> {
        age_rules(
            self.birth_date,
            Some(self.marital_status),
            Some(self.relationship),
            Some(self.recording_status),
            today,
        )
    }
}

/// A family: its KK and its members.
#[derive(Debug, Clone)]
pub struct Family {
    /// The KK.
    pub kk: Kk,
    /// Members, active or not, the head first.
    pub members: Vec<Resident>,
}

impl Family {
    /// The active head, if any.
    pub fn head(&self) -> Option<&Resident> {
        self.members
            .iter()
            .find(|m| m.relationship == Relationship::Head && m.is_active())
    }
}

/// The answer for one field of an identity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldMatch {
    /// Not sent.
    NotProvided,
    /// Sesuai.
    Match,
    /// Tidak sesuai.
    NoMatch,
}

impl FieldMatch {
    fn of(provided: bool, equal: bool) -> Self {
        match (provided, equal) {
            (false, _) => Self::NotProvided,
            (true, true) => Self::Match,
            (true, false) => Self::NoMatch,
        }
    }
}

/// What an agency holds about a person, to be checked field by field.
#[derive(Debug, Clone, Default)]
pub struct IdentityClaim {
    /// Full name.
    pub full_name: Option<String>,
    /// Date of birth.
    pub birth_date: Option<NaiveDate>,
    /// Place of birth.
    pub birth_place: Option<String>,
    /// Sex.
    pub sex: Option<Sex>,
    /// Kelurahan/desa code.
    pub village_code: Option<String>,
}

/// Per-field answers; carries no stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityVerdict {
    /// Full name.
    pub full_name: FieldMatch,
    /// Date of birth.
    pub birth_date: FieldMatch,
    /// Place of birth.
    pub birth_place: FieldMatch,
    /// Sex.
    pub sex: FieldMatch,
    /// Kelurahan/desa.
    pub village_code: FieldMatch,
}

impl IdentityClaim {
    /// Compares the claim with a record: names and places after normalising.
    pub fn verify(&self, record: &Resident) -> IdentityVerdict {
        let same_text = |claimed: &Option<String>, stored: &str| {
            FieldMatch::of(
                claimed.is_some(),
                claimed
                    .as_deref()
                    .is_some_and(|c| normalize_name(c) == normalize_name(stored)),
            )
        };
        IdentityVerdict {
            full_name: same_text(&self.full_name, &record.full_name),
            birth_date: FieldMatch::of(
                self.birth_date.is_some(),
                self.birth_date == Some(record.birth_date),
            ),
            birth_place: same_text(&self.birth_place, &record.birth_place),
            sex: FieldMatch::of(self.sex.is_some(), self.sex == Some(record.sex)),
            village_code: FieldMatch::of(
                self.village_code.is_some(),
                self.village_code.as_deref() == Some(record.address.village_code.as_str()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_after_normalising_case_spaces_and_punctuation() {
        assert_eq!(
            normalize_name("Muh. Rizky  Ananda"),
            normalize_name("MUH RIZKY ANANDA")
        );
        assert_eq!(normalize_name("Siti Nur'aini"), "sitinuraini");
        assert_ne!(normalize_name("Siti Aminah"), normalize_name("Siti Amina"));
    }

    #[test]
    fn nik_dates_agree_modulo_the_century() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let nik = Nik::parse("3275010101250001", today).expect("valid nik");
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert!(nik_date_agrees(&nik, d(2025, 1, 1)));
        assert!(nik_date_agrees(&nik, d(1925, 1, 1)));
        assert!(!nik_date_agrees(&nik, d(1926, 1, 1)));
        assert!(!nik_date_agrees(&nik, d(2025, 1, 2)));
    }

    #[test]
    fn shdk_codes_round_trip_and_reject_unknown_codes() {
        for code in 1..=11 {
            let rel = Relationship::from_code(code).expect("codes 1 to 11 exist");
            assert_eq!(rel.code(), code);
        }
        assert_eq!(Relationship::from_code(0), None);
        assert_eq!(Relationship::from_code(12), None);
        assert_eq!(Relationship::from_code(-1), None);
    }

    #[test]
    fn the_young_are_not_married_heads_or_print_ready() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let born = |years: i32| NaiveDate::from_ymd_opt(2026 - years, 11, 22).expect("date");
        let rules = |age: i32, marital, relationship, recording| {
            age_rules(
                born(age),
                Some(marital),
                Some(relationship),
                Some(recording),
                today,
            )
        };
        use MaritalStatus::*;
        use RecordingStatus::*;
        assert_eq!(
            rules(8, Married, Relationship::Head, PrintReady),
            [AgeRule::Marriage, AgeRule::Head, AgeRule::PrintReady],
            "married makes an adult, but not at 8"
        );
        assert_eq!(
            rules(8, Single, Relationship::Head, PrintReady),
            [AgeRule::Head, AgeRule::PrintReady]
        );
        assert!(rules(8, Single, Relationship::Child, NotRecorded).is_empty());
        assert!(
            rules(16, Single, Relationship::Child, Recorded).is_empty(),
            "recorded ahead"
        );
        assert_eq!(
            rules(16, Single, Relationship::Child, PrintReady),
            [AgeRule::PrintReady]
        );
        assert!(rules(16, Married, Relationship::Head, PrintReady).is_empty());
        assert_eq!(
            rules(15, Widowed, Relationship::Wife, NotRecorded),
            [AgeRule::Marriage]
        );
        assert!(rules(17, Single, Relationship::Head, PrintReady).is_empty());
        // The day before the 17th birthday.
        let almost = age_rules(
            born(17).succ_opt().expect("date"),
            Some(Single),
            Some(Relationship::Head),
            Some(PrintReady),
            today,
        );
        assert_eq!(almost, [AgeRule::Head, AgeRule::PrintReady]);
        // Without the marital status nothing can be said.
        assert!(age_rules(born(8), None, Some(Relationship::Head), Some(PrintReady), today).is_empty());
    }

    #[test]
    fn text_checks_name_their_field() {
        let mut out = Vec::new();
        check_text("full_name", "   ", MAX_NAME_CHARS, &mut out);
        check_text("birth_place", &"a".repeat(101), MAX_NAME_CHARS, &mut out);
        check_text("full_name", "...", MAX_NAME_CHARS, &mut out);
        let fields: Vec<_> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["full_name", "birth_place", "full_name"]);
    }
}
