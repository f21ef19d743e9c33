//! The population contract and the domain, converted in one place: each
//! request checked into a domain value (every violation reported at once),
//! each record turned into its message with every field named.

use chrono::NaiveDate;

use adminduk_kit::{ApiError, ErrorCode, Violations, text};
use adminduk_proto::common::v1 as common;
use adminduk_proto::convert;
use adminduk_proto::population::v1 as pb;

use crate::domain::kk::{Kk, kk_field};
use crate::domain::nik::{Nik, Sex, nik_field};
use crate::domain::region::Regions;
use crate::domain::resident::{
    Address, Family, FieldMatch, Flag, IdentityClaim, IdentityVerdict, LifeStatus, MAX_NAME_CHARS,
    MaritalStatus, NewResident, RecordingStatus, Registration, Relationship, Resident, Violation,
    check_address, check_village_code, normalize_name,
};
use crate::store::{Move, ResidentChanges, SearchCursor};

/// Today's date on the office's calendar (WIB).
pub fn today() -> NaiveDate {
    adminduk_kit::time::today_wib()
}

/// Results per search page when the client asks for none.
const DEFAULT_PAGE_SIZE: usize = 20;
/// The most results one search page returns.
const MAX_PAGE_SIZE: usize = 100;

/// Moves violations found by a domain check into the request's; true when there were none.
pub(crate) fn absorb(out: &mut Violations, found: Vec<Violation>) -> bool {
    let clean = found.is_empty();
    for v in found {
        out.add(v.field, v.description);
    }
    clean
}

/// The NIK that is the whole request, checked as every service checks it.
pub(crate) fn require_nik(input: &str) -> Result<Nik, ApiError> {
    adminduk_kit::nik::require_nik("nik", input)
}

/// A name or place: trimmed, at most [`MAX_NAME_CHARS`], no control characters
/// (the kit's rules for free text), and with a letter or digit in it.
fn name_field(field: &str, value: &str, out: &mut Violations) -> String {
    let before = out.len();
    let name = text::required(field, value, MAX_NAME_CHARS, out);
    if out.len() == before && normalize_name(&name).is_empty() {
        out.add(field, "must contain letters");
    }
    name
}

/// A number registered must be of a regency on the official list: no NIK or
/// KK of regency 9999 was ever issued. (Reading one, such as `ParseNik`,
/// only reports that its region is unknown.)
fn known_regency(field: &str, regency: Option<&str>, out: &mut Violations) {
    if let Some(code) = regency
        && Regions::global().regency(code).is_none()
    {
        out.add(
            field,
            "its regency (the first four digits) is not on the official list",
        );
    }
}

fn date_field(
    field: &str,
    date: Option<&common::Date>,
    required: bool,
    out: &mut Violations,
) -> Option<NaiveDate> {
    match date {
        None if required => {
            out.add(field, "is required");
            None
        }
        None => None,
        Some(d) => {
            let parsed = convert::to_naive(d);
            if parsed.is_none() {
                out.add(field, "is not a real calendar date");
            }
            parsed
        }
    }
}

fn sex_field(field: &str, value: i32, required: bool, out: &mut Violations) -> Option<Sex> {
    match common::Sex::try_from(value) {
        Ok(common::Sex::Male) => Some(Sex::Male),
        Ok(common::Sex::Female) => Some(Sex::Female),
        Ok(common::Sex::Unspecified) if !required => None,
        _ => {
            out.add(field, "must be SEX_MALE or SEX_FEMALE");
            None
        }
    }
}

fn marital_field(value: i32, out: &mut Violations) -> Option<MaritalStatus> {
    match pb::MaritalStatus::try_from(value) {
        Ok(pb::MaritalStatus::Single) => Some(MaritalStatus::Single),
        Ok(pb::MaritalStatus::Married) => Some(MaritalStatus::Married),
        Ok(pb::MaritalStatus::Divorced) => Some(MaritalStatus::Divorced),
        Ok(pb::MaritalStatus::Widowed) => Some(MaritalStatus::Widowed),
        _ => {
            out.add(
                "marital_status",
                "must be one of SINGLE, MARRIED, DIVORCED, WIDOWED",
            );
            None
        }
    }
}

fn relationship_field(field: &str, value: i32, out: &mut Violations) -> Option<Relationship> {
    // The proto numbers are the SHDK codes, so an unknown number is an unknown SHDK code.
    let relationship = Relationship::from_code(i64::from(value));
    if relationship.is_none() {
        out.add(field, "must be an SHDK code from 1 (head) to 11 (other)");
    }
    relationship
}

fn recording_field(
    value: i32,
    default: Option<RecordingStatus>,
    out: &mut Violations,
) -> Option<RecordingStatus> {
    match pb::RecordingStatus::try_from(value) {
        Ok(pb::RecordingStatus::Unspecified) if default.is_some() => default,
        Ok(pb::RecordingStatus::NotRecorded) => Some(RecordingStatus::NotRecorded),
        Ok(pb::RecordingStatus::Recorded) => Some(RecordingStatus::Recorded),
        Ok(pb::RecordingStatus::PrintReady) => Some(RecordingStatus::PrintReady),
        Ok(pb::RecordingStatus::DuplicateRecord) => Some(RecordingStatus::DuplicateRecord),
        _ => {
            out.add("recording_status", "must be a known recording status");
            None
        }
    }
}

fn address_field(field: &str, address: Option<&pb::Address>, out: &mut Violations) -> Option<Address> {
    let Some(a) = address else {
        out.add(field, "is required");
        return None;
    };
    let address = Address {
        street: a.street.trim().to_owned(),
        rt: a.rt.trim().to_owned(),
        rw: a.rw.trim().to_owned(),
        village_code: a.village_code.trim().to_owned(),
    };
    let mut found = Vec::new();
    check_address(field, &address, &mut found);
    absorb(out, found).then_some(address)
}

fn sex_msg(sex: Sex) -> common::Sex {
    match sex {
        Sex::Male => common::Sex::Male,
        Sex::Female => common::Sex::Female,
    }
}

/// An address as the contract gives it, with the names of its kelurahan and
/// kecamatan where the codes are known.
fn address_msg(address: &Address) -> pb::Address {
    let regions = Regions::global();
    let district_code = address.district_code().to_owned();
    pb::Address {
        street: address.street.clone(),
        rt: address.rt.clone(),
        rw: address.rw.clone(),
        village_code: address.village_code.clone(),
        village_name: regions
            .village(&address.village_code)
            .unwrap_or_default()
            .to_owned(),
        district_name: regions.district(&district_code).unwrap_or_default().to_owned(),
        district_code,
    }
}

fn marital_msg(status: MaritalStatus) -> pb::MaritalStatus {
    match status {
        MaritalStatus::Single => pb::MaritalStatus::Single,
        MaritalStatus::Married => pb::MaritalStatus::Married,
        MaritalStatus::Divorced => pb::MaritalStatus::Divorced,
        MaritalStatus::Widowed => pb::MaritalStatus::Widowed,
    }
}

fn life_msg(status: LifeStatus) -> pb::LifeStatus {
    match status {
        LifeStatus::Alive => pb::LifeStatus::Alive,
        LifeStatus::Deceased => pb::LifeStatus::Deceased,
        LifeStatus::MovedOut => pb::LifeStatus::MovedOut,
    }
}

fn recording_msg(status: RecordingStatus) -> pb::RecordingStatus {
    match status {
        RecordingStatus::NotRecorded => pb::RecordingStatus::NotRecorded,
        RecordingStatus::Recorded => pb::RecordingStatus::Recorded,
        RecordingStatus::PrintReady => pb::RecordingStatus::PrintReady,
        RecordingStatus::DuplicateRecord => pb::RecordingStatus::DuplicateRecord,
    }
}

impl From<&Resident> for pb::Resident {
    fn from(r: &Resident) -> Self {
        let Resident {
            id: _,
            nik,
            kk,
            full_name,
            sex,
            birth_place,
            birth_date,
            address,
            marital_status,
            relationship,
            life_status,
            recording_status,
            death_date,
            version,
            created_at,
            updated_at,
        } = r;
        pb::Resident {
            nik: nik.as_str().to_owned(),
            kk: kk.as_str().to_owned(),
            full_name: full_name.clone(),
            sex: sex_msg(*sex).into(),
            birth_place: birth_place.clone(),
            birth_date: Some(convert::date(*birth_date)),
            address: Some(address_msg(address)),
            marital_status: marital_msg(*marital_status).into(),
            relationship: i32::try_from(relationship.code()).unwrap_or_default(),
            life_status: life_msg(*life_status).into(),
            recording_status: recording_msg(*recording_status).into(),
            version: *version,
            flags: r
                .flags()
                .into_iter()
                .map(|f| match f {
                    Flag::NikMismatch => pb::ResidentFlag::NikMismatch.into(),
                    Flag::FamilyNeedsHead => pb::ResidentFlag::FamilyNeedsHead.into(),
                })
                .collect(),
            death_date: death_date.map(convert::date),
            create_time: Some(convert::timestamp(*created_at)),
            update_time: Some(convert::timestamp(*updated_at)),
        }
    }
}

impl From<&Family> for pb::Family {
    fn from(family: &Family) -> Self {
        let Family { kk, members } = family;
        pb::Family {
            kk: kk.as_str().to_owned(),
            head_nik: family
                .head()
                .map(|h| h.nik.as_str().to_owned())
                .unwrap_or_default(),
            issue_date: Some(convert::date(kk.issue_date())),
            members: members.iter().map(pb::Resident::from).collect(),
        }
    }
}

/// What a NIK's digits say, with the names of its regions when they are known.
pub fn parsed_nik(nik: &Nik) -> pb::ParseNikResponse {
    let regions = Regions::global();
    let district_name = regions.district(nik.district_code());
    pb::ParseNikResponse {
        province_code: nik.province_code().to_owned(),
        regency_code: nik.regency_code().to_owned(),
        district_code: nik.district_code().to_owned(),
        birth_date: Some(convert::date(nik.birth_date())),
        sex: sex_msg(nik.sex()).into(),
        serial: i32::from(nik.serial()),
        region_known: district_name.is_some(),
        province_name: regions
            .province(nik.province_code())
            .unwrap_or_default()
            .to_owned(),
        regency_name: regions.regency(nik.regency_code()).unwrap_or_default().to_owned(),
        district_name: district_name.unwrap_or_default().to_owned(),
    }
}

/// Identity checks' verdicts, field by field.
impl From<IdentityVerdict> for pb::VerifyIdentityResponse {
    fn from(verdict: IdentityVerdict) -> Self {
        let IdentityVerdict {
            full_name,
            birth_date,
            birth_place,
            sex,
            village_code,
        } = verdict;
        pb::VerifyIdentityResponse {
            full_name: match_msg(full_name),
            birth_date: match_msg(birth_date),
            birth_place: match_msg(birth_place),
            sex: match_msg(sex),
            village_code: match_msg(village_code),
        }
    }
}

fn match_msg(m: FieldMatch) -> i32 {
    match m {
        FieldMatch::NotProvided => pb::FieldMatch::NotProvided,
        FieldMatch::Match => pb::FieldMatch::Match,
        FieldMatch::NoMatch => pb::FieldMatch::NoMatch,
    }
    .into()
}

const TOKEN_SEPARATOR: char = '\u{1f}';

/// A page token binds the search it continues, so it cannot be replayed against another query.
fn encode_page_token(district: &str, query: &str, cursor: &SearchCursor) -> String {
    let text = format!(
        "v1{TOKEN_SEPARATOR}{district}{TOKEN_SEPARATOR}{query}{TOKEN_SEPARATOR}{}{TOKEN_SEPARATOR}{}",
        cursor.name_norm, cursor.id
    );
    adminduk_kit::hex::encode(text.as_bytes())
}

fn decode_page_token(token: &str, district: &str, query: &str) -> Option<SearchCursor> {
    let text = String::from_utf8(adminduk_kit::hex::decode(token)?).ok()?;
    let parts: Vec<&str> = text.split(TOKEN_SEPARATOR).collect();
    match parts.as_slice() {
        ["v1", d, q, name_norm, id] if *d == district && *q == query => Some(SearchCursor {
            name_norm: (*name_norm).to_owned(),
            id: id.parse().ok()?,
        }),
        _ => None,
    }
}

fn update_changes(
    resident: Option<&pb::Resident>,
    paths: &[String],
    out: &mut Violations,
) -> ResidentChanges {
    let mut changes = ResidentChanges::default();
    let Some(r) = resident else {
        out.add("resident", "is required");
        return changes;
    };
    if paths.is_empty() {
        out.add("update_mask", "must name at least one field");
    }
    for path in paths {
        match path.as_str() {
            "full_name" => changes.full_name = Some(name_field("resident.full_name", &r.full_name, out)),
            "birth_place" => changes.birth_place = Some(name_field("resident.birth_place", &r.birth_place, out)),
            "sex" => changes.sex = sex_field("resident.sex", r.sex, true, out),
            "birth_date" => {
                changes.birth_date = date_field("resident.birth_date", r.birth_date.as_ref(), true, out);
                if changes.birth_date.is_some_and(|d| d > today()) {
                    out.add("resident.birth_date", "is in the future");
                }
            }
            "address" => changes.address = address_field("resident.address", r.address.as_ref(), out),
            "marital_status" => changes.marital_status = marital_field(r.marital_status, out),
            "relationship" => changes.relationship = relationship_field("resident.relationship", r.relationship, out),
            "recording_status" => changes.recording_status = recording_field(r.recording_status, None, out),
            other => out.add(
                "update_mask",
                format!("cannot update {other:?}; updatable: full_name, sex, birth_place, birth_date, address, marital_status, relationship, recording_status"),
            ),
        }
    }
    changes
}

fn version_field(version: i64, out: &mut Violations) {
    if version <= 0 {
        out.add(
            "expected_version",
            "must be the version read before the change (1 or more)",
        );
    }
}

/// A search for residents by name in one kecamatan, checked.
#[derive(Debug, Clone)]
pub struct Search {
    /// The kecamatan.
    pub district_code: String,
    /// The name, normalised as stored.
    pub query: String,
    /// Results on this page.
    pub size: usize,
    /// Where this page starts (none for the first).
    pub cursor: Option<SearchCursor>,
}

impl TryFrom<pb::SearchResidentsRequest> for Search {
    type Error = ApiError;

    fn try_from(request: pb::SearchResidentsRequest) -> Result<Self, ApiError> {
        let pb::SearchResidentsRequest {
            district_code,
            name_query,
            page_size,
            page_token,
        } = request;
        let mut violations = Violations::default();
        if !adminduk_kit::is_digits(&district_code, 6) {
            violations.add("district_code", "must be 6 digits (e.g. 327501)");
        } else if Regions::global().district(&district_code).is_none() {
            violations.add("district_code", "unknown kecamatan code");
        }
        let query = normalize_name(&name_query);
        if query.chars().count() < 2 {
            violations.add("name_query", "must contain at least 2 letters or digits");
        } else if query.chars().count() > MAX_NAME_CHARS {
            violations.add(
                "name_query",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        }
        let size = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= MAX_PAGE_SIZE => n,
            _ => {
                violations.add("page_size", format!("must be between 0 and {MAX_PAGE_SIZE}"));
                DEFAULT_PAGE_SIZE
            }
        };
        let cursor = if page_token.is_empty() {
            None
        } else {
            let cursor = decode_page_token(&page_token, &district_code, &query);
            if cursor.is_none() {
                violations.add("page_token", "is not a token from this search");
            }
            cursor
        };
        violations.into_result()?;
        Ok(Self {
            district_code,
            query,
            size,
            cursor,
        })
    }
}

impl Search {
    /// How many rows to read: one more than the page, to tell whether another follows.
    pub fn rows_to_read(&self) -> usize {
        self.size + 1
    }

    /// The page from the rows read, with a token for the next page when there is one.
    pub fn page(&self, mut rows: Vec<Resident>) -> pb::SearchResidentsResponse {
        let next_page_token = if rows.len() > self.size {
            rows.truncate(self.size);
            rows.last()
                .map(|last| {
                    let cursor = SearchCursor {
                        name_norm: normalize_name(&last.full_name),
                        id: last.id,
                    };
                    encode_page_token(&self.district_code, &self.query, &cursor)
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        pb::SearchResidentsResponse {
            residents: rows.iter().map(pb::Resident::from).collect(),
            next_page_token,
        }
    }
}

/// The KK that is the whole request.
pub fn require_kk(input: &str) -> Result<Kk, ApiError> {
    let mut violations = Violations::default();
    let kk = kk_field("kk", input, &mut violations);
    violations.into_result()?;
    kk.ok_or_else(|| ApiError::invalid_field("kk", "invalid"))
}

impl TryFrom<pb::RegisterResidentRequest> for NewResident {
    type Error = ApiError;

    fn try_from(request: pb::RegisterResidentRequest) -> Result<Self, ApiError> {
        let pb::RegisterResidentRequest {
            nik,
            kk,
            full_name,
            sex,
            birth_place,
            birth_date,
            address,
            marital_status,
            relationship,
            recording_status,
        } = request;
        let mut v = Violations::default();
        let nik = nik_field("nik", &nik, &mut v);
        let kk = kk_field("kk", &kk, &mut v);
        known_regency("nik", nik.as_ref().map(Nik::regency_code), &mut v);
        known_regency("kk", kk.as_ref().map(Kk::regency_code), &mut v);
        let full_name = name_field("full_name", &full_name, &mut v);
        let sex = sex_field("sex", sex, true, &mut v);
        let birth_place = name_field("birth_place", &birth_place, &mut v);
        let birth_date = date_field("birth_date", birth_date.as_ref(), true, &mut v);
        let marital_status = marital_field(marital_status, &mut v);
        let relationship = relationship_field("relationship", relationship, &mut v);
        let recording_status = recording_field(recording_status, Some(RecordingStatus::NotRecorded), &mut v);
        let address = address_field("address", address.as_ref(), &mut v);
        // The rules between fields run on every part that parsed, so a sex
        // contradicting the NIK is reported with a bad address, not after it.
        let mut rules = Vec::new();
        Registration {
            nik: nik.as_ref(),
            kk: kk.as_ref(),
            sex,
            birth_date,
            marital_status,
            relationship,
            recording_status,
        }
        .check(today(), &mut rules);
        absorb(&mut v, rules);
        v.into_result()?;
        // With no violation every part parsed.
        let parsed = move || {
            Some(NewResident {
                nik: nik?,
                kk: kk?,
                full_name,
                sex: sex?,
                birth_place,
                birth_date: birth_date?,
                address: address?,
                marital_status: marital_status?,
                relationship: relationship?,
                recording_status: recording_status?,
            })
        };
        parsed().ok_or_else(|| ApiError::new(ErrorCode::InvalidArgument, "invalid resident"))
    }
}

/// A change to named fields of one resident, checked.
#[derive(Debug, Clone)]
pub struct Update {
    /// The resident.
    pub nik: Nik,
    /// The fields named in the mask, as given (for the log).
    pub paths: Vec<String>,
    /// Their new values.
    pub changes: ResidentChanges,
    /// The version read before the change.
    pub expected_version: i64,
}

impl TryFrom<pb::UpdateResidentRequest> for Update {
    type Error = ApiError;

    fn try_from(request: pb::UpdateResidentRequest) -> Result<Self, ApiError> {
        let pb::UpdateResidentRequest {
            resident,
            update_mask,
            expected_version,
        } = request;
        let mut v = Violations::default();
        let nik = match &resident {
            Some(r) => nik_field("resident.nik", &r.nik, &mut v),
            None => None,
        };
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let changes = update_changes(resident.as_ref(), &paths, &mut v);
        version_field(expected_version, &mut v);
        v.into_result()?;
        let nik = nik.ok_or_else(|| ApiError::invalid_field("resident.nik", "is required"))?;
        Ok(Self {
            nik,
            paths,
            changes,
            expected_version,
        })
    }
}

/// A death to record, checked.
#[derive(Debug, Clone)]
pub struct Death {
    /// The resident.
    pub nik: Nik,
    /// The date of death (not in the future).
    pub date: NaiveDate,
    /// The version read before the change.
    pub expected_version: i64,
}

impl TryFrom<pb::RecordDeathRequest> for Death {
    type Error = ApiError;

    fn try_from(request: pb::RecordDeathRequest) -> Result<Self, ApiError> {
        let pb::RecordDeathRequest {
            nik,
            death_date,
            expected_version,
        } = request;
        let mut v = Violations::default();
        let nik = nik_field("nik", &nik, &mut v);
        let date = date_field("death_date", death_date.as_ref(), true, &mut v);
        if date.is_some_and(|d| d > today()) {
            v.add("death_date", "is in the future");
        }
        version_field(expected_version, &mut v);
        v.into_result()?;
        let (Some(nik), Some(date)) = (nik, date) else {
            return Err(ApiError::new(ErrorCode::InvalidArgument, "invalid request"));
        };
        Ok(Self {
            nik,
            date,
            expected_version,
        })
    }
}

/// A move to record, checked.
#[derive(Debug, Clone)]
pub struct Relocation {
    /// The resident.
    pub nik: Nik,
    /// Where to, and into which family.
    pub change: Move,
    /// The version read before the change.
    pub expected_version: i64,
}

impl Relocation {
    /// The KK the resident joins, when the move names one.
    pub fn new_kk(&self) -> Option<&Kk> {
        match &self.change {
            Move::WithinArea {
                family: Some((kk, _)),
                ..
            } => Some(kk),
            _ => None,
        }
    }
}

impl TryFrom<pb::RecordMoveRequest> for Relocation {
    type Error = ApiError;

    fn try_from(request: pb::RecordMoveRequest) -> Result<Self, ApiError> {
        let pb::RecordMoveRequest {
            nik,
            kind,
            new_address,
            new_kk,
            new_relationship,
            expected_version,
        } = request;
        let mut v = Violations::default();
        let nik = nik_field("nik", &nik, &mut v);
        version_field(expected_version, &mut v);
        let change = match pb::MoveKind::try_from(kind) {
            Ok(pb::MoveKind::OutOfArea) => {
                if new_address.is_some() || !new_kk.is_empty() {
                    v.add("kind", "a move out of the area takes no new address or KK");
                }
                Some(Move::OutOfArea)
            }
            Ok(pb::MoveKind::WithinArea) => {
                let address = address_field("new_address", new_address.as_ref(), &mut v);
                let family = if new_kk.is_empty() {
                    if new_relationship != 0 {
                        v.add("new_relationship", "is only given with new_kk");
                    }
                    None
                } else {
                    kk_field("new_kk", &new_kk, &mut v).zip(relationship_field(
                        "new_relationship",
                        new_relationship,
                        &mut v,
                    ))
                };
                address.map(|address| Move::WithinArea { address, family })
            }
            _ => {
                v.add("kind", "must be MOVE_KIND_WITHIN_AREA or MOVE_KIND_OUT_OF_AREA");
                None
            }
        };
        v.into_result()?;
        let (Some(nik), Some(change)) = (nik, change) else {
            return Err(ApiError::new(ErrorCode::InvalidArgument, "invalid request"));
        };
        Ok(Self {
            nik,
            change,
            expected_version,
        })
    }
}

/// An agency's question about a person, checked.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Whose record to compare with.
    pub nik: Nik,
    /// What the agency holds.
    pub claim: IdentityClaim,
}

impl TryFrom<pb::VerifyIdentityRequest> for Verification {
    type Error = ApiError;

    fn try_from(request: pb::VerifyIdentityRequest) -> Result<Self, ApiError> {
        let pb::VerifyIdentityRequest {
            nik,
            full_name,
            birth_date,
            birth_place,
            sex,
            village_code,
        } = request;
        let mut v = Violations::default();
        let nik = nik_field("nik", &nik, &mut v);
        // What was sent, not what parsed: a field sent wrong is reported as
        // wrong, not as missing.
        let sent_any = full_name.is_some()
            || birth_date.is_some()
            || birth_place.is_some()
            || sex != common::Sex::Unspecified as i32
            || village_code.is_some();
        let claim = IdentityClaim {
            full_name: full_name.map(|name| text::required("full_name", &name, MAX_NAME_CHARS, &mut v)),
            birth_date: date_field("birth_date", birth_date.as_ref(), false, &mut v),
            birth_place: birth_place
                .map(|place| text::required("birth_place", &place, MAX_NAME_CHARS, &mut v)),
            sex: sex_field("sex", sex, false, &mut v),
            // A code that cannot be a kelurahan is a wrong question, not a "no match".
            village_code: village_code.map(|code| {
                let code = code.trim().to_owned();
                let mut found = Vec::new();
                check_village_code("village_code", &code, &mut found);
                absorb(&mut v, found);
                code
            }),
        };
        if !sent_any {
            v.add("full_name", "send at least one field to verify besides the NIK");
        }
        v.into_result()?;
        let nik = nik.ok_or_else(|| ApiError::invalid_field("nik", "invalid"))?;
        Ok(Self { nik, claim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bind_their_search() {
        let cursor = SearchCursor {
            name_norm: "sitiaminah".to_owned(),
            id: 42,
        };
        let token = encode_page_token("327501", "siti", &cursor);
        assert_eq!(decode_page_token(&token, "327501", "siti"), Some(cursor));
        assert_eq!(decode_page_token(&token, "327502", "siti"), None);
        assert_eq!(decode_page_token(&token, "327501", "budi"), None);
        assert_eq!(decode_page_token("zz", "327501", "siti"), None);
        assert_eq!(decode_page_token("abc", "327501", "siti"), None);
    }
}
