//! Who may call what: one table of method × role, with what each role may
//! name in its request and which fields the gateway writes itself.
//!
//! A method not in the table is not served (UNIMPLEMENTED), so a backend's
//! internal methods (`CountResidents`, `ResolveSubject`) are unreachable from
//! outside. A role a method does not list is refused before any backend is
//! touched: without a credential UNAUTHENTICATED, with one PERMISSION_DENIED.
//!
//! Facts the gateway knows are written by it over whatever the client sent
//! (a protobuf field given twice takes its last value): an office's service
//! point and device come from its certificate, a resident's IKD status from
//! the IKD service, an administrator's name from the admin certificate.

/// Who a caller is, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No credential.
    Anonymous,
    /// A device at a service point, by its client certificate.
    Office,
    /// Another agency, by its client certificate.
    Agency,
    /// A resident, by a session token from their bound phone.
    Citizen,
    /// An administrator, by an admin client certificate.
    Admin,
}

impl Role {
    /// The role's name in refusals and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Office => "office",
            Role::Agency => "agency",
            Role::Citizen => "citizen",
            Role::Admin => "admin",
        }
    }
}

/// A value the gateway writes into a request field, from what it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The office's service point code, from its certificate.
    ServicePoint,
    /// The office's device (the officer's counter, the printer), from its certificate.
    Device,
    /// The office's device, where the request names a device at all (a
    /// spoilage names its printer only for a blank ruined in the printer).
    DeviceWhenNamed,
    /// The administrator's name, from the admin certificate.
    AdminName,
    /// Whether the resident the NIK at this field number names has an active
    /// IKD, as the IKD service says (a bool field).
    IkdActive {
        /// The field number of the NIK.
        nik: u32,
    },
}

/// What a resident may name in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// The request names no one (a public fact).
    Nothing,
    /// The NIK at this field number must be the resident's own.
    Nik(u32),
    /// The KK at this field number must be the resident's own family card.
    Kk(u32),
    /// The NIK at this field number must be the resident's or a member of
    /// their KK (a resident applies for themselves and their family).
    Family(u32),
}

/// Whom a request names, for the audit: a method that reads or changes
/// personal data appends a row naming the resident (see [`crate::audit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// Personal data, with no one named in the request (a search by name).
    Unnamed,
    /// The NIK at this field number.
    Nik(u32),
    /// The KK number at this field number.
    Kk(u32),
    /// The NIK at field `nik` of the message at field `outer`.
    NestedNik {
        /// The field number of the inner message.
        outer: u32,
        /// The NIK's field number within it.
        nik: u32,
    },
}

/// One role's permission on a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Anyone, with or without a credential (what activation needs).
    Anyone,
    /// An office device; the gateway writes these fields.
    Office(&'static [(u32, Fact)]),
    /// An agency.
    Agency,
    /// A resident, naming only what [`Own`] allows; the gateway writes these fields.
    Citizen(Own, &'static [(u32, Fact)]),
    /// An administrator; the gateway writes these fields.
    Admin(&'static [(u32, Fact)]),
}

impl Grant {
    /// Whether this grant is for `role`.
    pub fn admits(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Grant::Anyone, _)
                | (Grant::Office(_), Role::Office)
                | (Grant::Agency, Role::Agency)
                | (Grant::Citizen(..), Role::Citizen)
                | (Grant::Admin(_), Role::Admin)
        )
    }
}

/// Which backend serves a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `adminduk.population.v1.PopulationService`.
    Population,
    /// `adminduk.inventory.v1.InventoryService`.
    Inventory,
    /// `adminduk.printing.v1.PrintingService`.
    Printing,
    /// `adminduk.ikd.v1.IkdService`.
    Ikd,
    /// `adminduk.gateway.v1.AgencyService`, served by the gateway itself.
    Agencies,
    /// `adminduk.gateway.v1.BrokerWatchService`, served by the gateway itself.
    BrokerWatch,
    /// `adminduk.gateway.v1.ReportService`, served by the gateway itself.
    Reports,
}

impl Backend {
    /// Every backend, in a fixed order.
    pub const ALL: [Backend; 7] = [
        Backend::Population,
        Backend::Inventory,
        Backend::Printing,
        Backend::Ikd,
        Backend::Agencies,
        Backend::BrokerWatch,
        Backend::Reports,
    ];

    /// The gRPC service name.
    pub fn service(self) -> &'static str {
        match self {
            Backend::Population => "adminduk.population.v1.PopulationService",
            Backend::Inventory => "adminduk.inventory.v1.InventoryService",
            Backend::Printing => "adminduk.printing.v1.PrintingService",
            Backend::Ikd => "adminduk.ikd.v1.IkdService",
            Backend::Agencies => "adminduk.gateway.v1.AgencyService",
            Backend::BrokerWatch => "adminduk.gateway.v1.BrokerWatchService",
            Backend::Reports => "adminduk.gateway.v1.ReportService",
        }
    }

    /// The short name used in logs and errors.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Population => "population",
            Backend::Inventory => "inventory",
            Backend::Printing => "printing",
            Backend::Ikd => "ikd",
            Backend::Agencies | Backend::BrokerWatch | Backend::Reports => "gateway",
        }
    }
}

/// A method the gateway serves.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The backend.
    pub backend: Backend,
    /// The method's name within its service.
    pub method: &'static str,
    /// Whether the answer is a stream (its deadline is the client's, not capped).
    pub streams: bool,
    /// Whether the method changes a resident's affairs: a resident calling it
    /// sends a proof signed by the token's device key, so a collected token
    /// alone acts for no one.
    pub proof: bool,
    /// IKD first: the field number of the NIK whose IKD must be active for the
    /// call to go on (an office may override it with a written reason).
    pub ikd_first: Option<u32>,
    /// What the request names that has an allowance of its own (a NIK, a
    /// device key), whoever calls: the field numbers and their kinds.
    pub limits: &'static [(u32, crate::limits::Kind)],
    /// Whom the request names, when the method reads or changes personal
    /// data: each call appends an audit row.
    pub audit: Option<Subject>,
    /// An agency's call counts against its agreement (fields, daily quota, fee).
    pub metered: bool,
    /// An idempotent read: one the backend did not answer is tried once more
    /// (within the retry budget, see [`crate::retry`]).
    pub read: bool,
    /// Where an application names its service point and date: a date the
    /// inventory said is full is refused at the edge (see [`crate::edge`]).
    pub edge: Option<EdgeFields>,
    /// Who may call it.
    pub grants: &'static [Grant],
}

/// The field numbers an application's edge check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeFields {
    /// The service point.
    pub point: u32,
    /// The date.
    pub date: u32,
    /// What makes a request a retry of an earlier one (an idempotency key, the
    /// applicant's NIK): a retry of a request the edge forwarded goes on again,
    /// so the answer it lost is answered as the first time.
    pub retry: u32,
}

impl Rule {
    /// The grant that admits `role`, if any.
    pub fn grant_for(&self, role: Role) -> Option<Grant> {
        self.grants.iter().copied().find(|g| g.admits(role))
    }
}

use crate::limits::Kind;
use Backend::{Agencies, BrokerWatch, Ikd, Inventory, Population, Printing, Reports};
use Fact::{AdminName, Device, IkdActive, ServicePoint};
use Subject::{Kk, Nik};

const fn rule(backend: Backend, method: &'static str, grants: &'static [Grant]) -> Rule {
    Rule {
        backend,
        method,
        streams: false,
        proof: false,
        ikd_first: None,
        limits: &[],
        audit: None,
        metered: false,
        read: false,
        edge: None,
        grants,
    }
}

/// An idempotent read (see [`Rule::read`]).
const fn read(rule: Rule) -> Rule {
    Rule { read: true, ..rule }
}

/// An application for a blank at a point and date (see [`Rule::edge`]).
const fn at_the_edge(rule: Rule, point: u32, date: u32, retry: u32) -> Rule {
    Rule {
        edge: Some(EdgeFields { point, date, retry }),
        ..rule
    }
}

/// A method that reads or changes personal data (see [`Rule::audit`]).
const fn personal(rule: Rule, subject: Subject) -> Rule {
    Rule {
        audit: Some(subject),
        ..rule
    }
}

/// What a resident does instead of queueing for a blank: IKD first (see [`Rule::ikd_first`]).
const fn ikd_first(rule: Rule, nik: u32) -> Rule {
    Rule {
        ikd_first: Some(nik),
        ..rule
    }
}

/// A method whose request names something with its own allowance (see [`Rule::limits`]).
const fn limited(rule: Rule, limits: &'static [(u32, crate::limits::Kind)]) -> Rule {
    Rule { limits, ..rule }
}

/// A method that changes a resident's affairs (see [`Rule::proof`]).
const fn change(backend: Backend, method: &'static str, grants: &'static [Grant]) -> Rule {
    Rule {
        proof: true,
        ..rule(backend, method, grants)
    }
}

/// Office and administrator, nothing written.
const STAFF: &[Grant] = &[Grant::Office(&[]), Grant::Admin(&[])];
/// Administrators only.
const ADMIN: &[Grant] = &[Grant::Admin(&[])];
/// An agency (about itself) or an administrator.
const AGENCY_OR_ADMIN: &[Grant] = &[Grant::Agency, Grant::Admin(&[])];

/// Every method the gateway serves, and who may call it.
pub const TABLE: &[Rule] = &[
    // --- population ---
    // Parsing a NIK reads nothing stored: the number's own structure.
    read(rule(Population, "ParseNik", &[Grant::Anyone])),
    read(personal(
        rule(
            Population,
            "GetResident",
            &[
                Grant::Office(&[]),
                Grant::Admin(&[]),
                Grant::Citizen(Own::Nik(1), &[]),
            ],
        ),
        Nik(1),
    )),
    read(personal(
        rule(
            Population,
            "GetFamily",
            &[
                Grant::Office(&[]),
                Grant::Admin(&[]),
                Grant::Citizen(Own::Kk(1), &[]),
            ],
        ),
        Kk(1),
    )),
    read(personal(
        rule(Population, "SearchResidents", STAFF),
        Subject::Unnamed,
    )),
    personal(rule(Population, "RegisterResident", STAFF), Nik(1)),
    personal(
        rule(Population, "UpdateResident", STAFF),
        Subject::NestedNik { outer: 1, nik: 1 },
    ),
    personal(rule(Population, "RecordDeath", STAFF), Nik(1)),
    personal(rule(Population, "RecordMove", STAFF), Nik(1)),
    // Agencies verify identities (MATCH / NO_MATCH per field, never the data),
    // within their agreement: its fields, its daily quota, its fee.
    Rule {
        metered: true,
        ..personal(
            rule(Population, "VerifyIdentity", &[Grant::Agency, Grant::Admin(&[])]),
            Nik(1),
        )
    },
    // --- inventory ---
    rule(Inventory, "ReceiveShipment", &[Grant::Admin(&[(4, AdminName)])]),
    rule(Inventory, "TransferStock", &[Grant::Admin(&[(5, AdminName)])]),
    rule(Inventory, "SetQuotaPolicy", ADMIN),
    // Stock is a public fact: anyone signed in may read it.
    read(rule(
        Inventory,
        "GetStock",
        &[
            Grant::Office(&[]),
            Grant::Admin(&[]),
            Grant::Citizen(Own::Nothing, &[]),
        ],
    )),
    // A counter books, commits and releases blanks at its own service point only.
    at_the_edge(
        personal(
            ikd_first(
                rule(Inventory, "Reserve", &[Grant::Office(&[(1, ServicePoint)])]),
                3,
            ),
            Nik(3),
        ),
        1,
        2,
        4,
    ),
    personal(
        rule(
            Inventory,
            "Commit",
            &[Grant::Office(&[(2, ServicePoint)]), Grant::Admin(&[])],
        ),
        Subject::Unnamed,
    ),
    personal(
        rule(
            Inventory,
            "Release",
            &[Grant::Office(&[(2, ServicePoint)]), Grant::Admin(&[])],
        ),
        Subject::Unnamed,
    ),
    rule(Inventory, "RecordSpoilage", &[Grant::Admin(&[(5, AdminName)])]),
    Rule {
        streams: true,
        ..rule(
            Inventory,
            "WatchAvailability",
            &[
                Grant::Office(&[]),
                Grant::Admin(&[]),
                Grant::Citizen(Own::Nothing, &[]),
            ],
        )
    },
    read(rule(Inventory, "ListLedger", STAFF)),
    // --- printing ---
    // An office applies at its own point, for whoever stands at the counter; a
    // resident applies for themselves or their family, from a phone whose IKD
    // is active by construction. Either way the gateway says whether IKD is active.
    at_the_edge(
        personal(
            ikd_first(
                change(
                    Printing,
                    "SubmitPrintJob",
                    &[
                        Grant::Office(&[(3, ServicePoint), (5, IkdActive { nik: 1 })]),
                        Grant::Citizen(Own::Family(1), &[(5, IkdActive { nik: 1 })]),
                    ],
                ),
                1,
            ),
            Nik(1),
        ),
        3,
        4,
        1,
    ),
    personal(
        rule(Printing, "LeaseJobs", &[Grant::Office(&[(1, Device)])]),
        Subject::Unnamed,
    ),
    personal(
        rule(Printing, "ReportPrinted", &[Grant::Office(&[(2, Device)])]),
        Subject::Unnamed,
    ),
    personal(
        rule(
            Printing,
            "ReportSpoiled",
            &[Grant::Office(&[(5, Fact::DeviceWhenNamed)])],
        ),
        Subject::Unnamed,
    ),
    personal(
        rule(Printing, "IssueSuket", &[Grant::Office(&[(2, ServicePoint)])]),
        Nik(1),
    ),
    personal(
        rule(Printing, "Dispatch", &[Grant::Office(&[])]),
        Subject::Unnamed,
    ),
    personal(
        rule(Printing, "RecordDelivery", &[Grant::Office(&[])]),
        Subject::Unnamed,
    ),
    personal(rule(Printing, "Recall", ADMIN), Subject::Unnamed),
    read(rule(Printing, "GetFunnel", STAFF)),
    read(rule(Printing, "GetBacklog", STAFF)),
    // --- IKD ---
    // What a phone without a token needs to become one with a token.
    personal(
        limited(
            rule(Ikd, "StartActivation", &[Grant::Anyone]),
            &[(1, Kind::Nik), (4, Kind::DeviceKey)],
        ),
        Nik(1),
    ),
    // The face-to-face check: the officer and the point are the office's certificate's.
    personal(
        rule(
            Ikd,
            "VerifyAtOffice",
            &[Grant::Office(&[(3, Device), (4, ServicePoint)])],
        ),
        Subject::Unnamed,
    ),
    personal(
        rule(Ikd, "CompleteActivation", &[Grant::Anyone]),
        Subject::Unnamed,
    ),
    read(personal(
        rule(
            Ikd,
            "GetStatus",
            &[
                Grant::Office(&[]),
                Grant::Admin(&[]),
                Grant::Citizen(Own::Nik(1), &[]),
            ],
        ),
        Nik(1),
    )),
    personal(
        limited(
            rule(Ikd, "CreateTokenChallenge", &[Grant::Anyone]),
            &[(1, Kind::Nik)],
        ),
        Nik(1),
    ),
    personal(
        limited(
            rule(Ikd, "IssueSessionToken", &[Grant::Anyone]),
            &[(1, Kind::Nik)],
        ),
        Nik(1),
    ),
    read(rule(
        Ikd,
        "ListSigningKeys",
        &[
            Grant::Office(&[]),
            Grant::Agency,
            Grant::Admin(&[]),
            Grant::Citizen(Own::Nothing, &[]),
        ],
    )),
    personal(
        rule(
            Ikd,
            "Revoke",
            &[
                Grant::Office(&[(3, Device), (4, ServicePoint)]),
                Grant::Admin(&[(3, AdminName)]),
            ],
        ),
        Nik(1),
    ),
    read(rule(Ikd, "GetAdoption", STAFF)),
    // --- the gateway's own ---
    // Agreements are written by administrators; an agency reads its own.
    rule(Agencies, "SetAgreement", ADMIN),
    rule(Agencies, "GetAgreement", AGENCY_OR_ADMIN),
    rule(Agencies, "GetUsage", AGENCY_OR_ADMIN),
    rule(Agencies, "GetStatement", AGENCY_OR_ADMIN),
    // Offices see the accounts flagged as brokers and clear one with a reason.
    rule(BrokerWatch, "ListFlaggedAccounts", STAFF),
    rule(BrokerWatch, "ClearFlaggedAccount", STAFF),
    // IKD first's deflections and the activations after them.
    rule(Reports, "GetIkdFirstReport", STAFF),
];

/// The rule of a request path (`/adminduk.ikd.v1.IkdService/GetStatus`), if the gateway serves it.
pub fn rule_for(path: &str) -> Option<&'static Rule> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    TABLE
        .iter()
        .find(|rule| rule.method == method && rule.backend.service() == service)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message as _;

    use super::*;

    /// The methods each service declares, from the contract's descriptors.
    fn declared() -> Vec<(String, String)> {
        let set =
            prost_types::FileDescriptorSet::decode(adminduk_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut out = Vec::new();
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for service in file.service {
                let name = format!("{package}.{}", service.name());
                for method in service.method {
                    out.push((name.clone(), method.name().to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_public_method_is_in_the_table_once_and_internal_ones_are_not() {
        let internal = ["CountResidents", "ResolveSubject"];
        let mut seen = HashSet::new();
        for rule in TABLE {
            assert!(
                seen.insert((rule.backend.service(), rule.method)),
                "{} twice",
                rule.method
            );
            assert!(!rule.grants.is_empty(), "{} admits no one", rule.method);
        }
        for (service, method) in declared() {
            if !Backend::ALL.iter().any(|b| b.service() == service) {
                continue;
            }
            let path = format!("/{service}/{method}");
            if internal.contains(&method.as_str()) {
                assert!(rule_for(&path).is_none(), "{path} is internal");
            } else {
                assert!(rule_for(&path).is_some(), "{path} is not in the table");
            }
        }
        for rule in TABLE {
            assert!(
                declared()
                    .iter()
                    .any(|(s, m)| s == rule.backend.service() && m == rule.method),
                "{} is not a method of {}",
                rule.method,
                rule.backend.service()
            );
        }
    }

    #[test]
    fn anonymous_callers_reach_only_what_activation_needs() {
        let anonymous: Vec<&str> = TABLE
            .iter()
            .filter(|r| r.grant_for(Role::Anonymous).is_some())
            .map(|r| r.method)
            .collect();
        assert_eq!(
            anonymous,
            [
                "ParseNik",
                "StartActivation",
                "CompleteActivation",
                "CreateTokenChallenge",
                "IssueSessionToken"
            ]
        );
    }

    #[test]
    fn agencies_only_verify_identities() {
        let agency: Vec<&str> = TABLE
            .iter()
            .filter(|r| matches!(r.grant_for(Role::Agency), Some(Grant::Agency)))
            .map(|r| r.method)
            .collect();
        assert_eq!(
            agency,
            [
                "VerifyIdentity",
                "ListSigningKeys",
                "GetAgreement",
                "GetUsage",
                "GetStatement"
            ]
        );
        let metered: Vec<&str> = TABLE.iter().filter(|r| r.metered).map(|r| r.method).collect();
        assert_eq!(metered, ["VerifyIdentity"]);
    }

    /// Every request that names a resident or a family card at its top level
    /// (or a resident inside it) is audited by that field, found in the
    /// contract's descriptors so a new method cannot be forgotten.
    #[test]
    fn every_method_naming_a_resident_is_audited_by_that_field() {
        let set =
            prost_types::FileDescriptorSet::decode(adminduk_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let messages: Vec<(String, &prost_types::DescriptorProto)> = set
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package().to_owned();
                f.message_type
                    .iter()
                    .map(move |m| (format!(".{package}.{}", m.name()), m))
            })
            .collect();
        let message = |name: &str| messages.iter().find(|(n, _)| n == name).map(|(_, m)| *m);
        // Parsing a NIK reads nothing stored: the number's own structure.
        let exempt = ["ParseNik"];
        for file in &set.file {
            for service in &file.service {
                let service_name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let Some(rule) = rule_for(&format!("/{service_name}/{}", method.name())) else {
                        continue;
                    };
                    let input = message(method.input_type()).expect("input type");
                    let named = input.field.iter().find_map(|f| match f.name() {
                        "nik" | "applicant_nik" => Some(Nik(f.number() as u32)),
                        "kk" => Some(Kk(f.number() as u32)),
                        _ => None,
                    });
                    let nested = input.field.iter().find_map(|f| {
                        let inner = message(f.type_name())?;
                        inner
                            .field
                            .iter()
                            .find(|g| g.name() == "nik")
                            .map(|g| Subject::NestedNik {
                                outer: f.number() as u32,
                                nik: g.number() as u32,
                            })
                    });
                    let expected = named.or(nested);
                    if exempt.contains(&method.name()) {
                        assert_eq!(rule.audit, None, "{}", method.name());
                    } else if let Some(expected) = expected {
                        assert_eq!(rule.audit, Some(expected), "{}", method.name());
                    }
                }
            }
        }
        // Work on a resident's records named by another id (a job, a reservation,
        // an activation) is audited too, without a subject of its own.
        let unnamed: Vec<&str> = TABLE
            .iter()
            .filter(|r| r.audit == Some(Subject::Unnamed))
            .map(|r| r.method)
            .collect();
        assert_eq!(
            unnamed,
            [
                "SearchResidents",
                "Commit",
                "Release",
                "LeaseJobs",
                "ReportPrinted",
                "ReportSpoiled",
                "Dispatch",
                "RecordDelivery",
                "Recall",
                "VerifyAtOffice",
                "CompleteActivation"
            ]
        );
    }

    #[test]
    fn the_office_work_takes_the_point_and_device_from_the_certificate() {
        let facts = |method: &str| match rule_for(&format!("/adminduk.ikd.v1.IkdService/{method}"))
            .and_then(|r| r.grant_for(Role::Office))
        {
            Some(Grant::Office(facts)) => facts.to_vec(),
            other => panic!("{method}: {other:?}"),
        };
        assert_eq!(facts("VerifyAtOffice"), [(3, Device), (4, ServicePoint)]);
        assert_eq!(facts("Revoke"), [(3, Device), (4, ServicePoint)]);
        assert!(
            rule_for("/adminduk.ikd.v1.IkdService/VerifyAtOffice")
                .and_then(|r| r.grant_for(Role::Citizen))
                .is_none()
        );
    }

    #[test]
    fn who_moved_stock_is_the_administrator_the_certificate_names() {
        // received_by, requested_by, reported_by: never what the request says.
        for (method, field) in [
            ("ReceiveShipment", 4),
            ("TransferStock", 5),
            ("RecordSpoilage", 5),
        ] {
            let facts = match rule_for(&format!("/adminduk.inventory.v1.InventoryService/{method}"))
                .and_then(|r| r.grant_for(Role::Admin))
            {
                Some(Grant::Admin(facts)) => facts.to_vec(),
                other => panic!("{method}: {other:?}"),
            };
            assert_eq!(facts, [(field, AdminName)], "{method}");
        }
    }

    #[test]
    fn every_method_a_resident_changes_something_with_needs_a_proof() {
        let read_only = [
            "GetResident",
            "GetFamily",
            "GetStock",
            "WatchAvailability",
            "GetStatus",
            "ListSigningKeys",
        ];
        for rule in TABLE {
            if matches!(rule.grant_for(Role::Citizen), Some(Grant::Citizen(..))) {
                assert_eq!(rule.proof, !read_only.contains(&rule.method), "{}", rule.method);
            } else {
                assert!(!rule.proof, "{}: only a resident sends a proof", rule.method);
            }
        }
    }

    #[test]
    fn only_reads_are_retried() {
        let reads: Vec<&str> = TABLE.iter().filter(|r| r.read).map(|r| r.method).collect();
        assert_eq!(
            reads,
            [
                "ParseNik",
                "GetResident",
                "GetFamily",
                "SearchResidents",
                "GetStock",
                "ListLedger",
                "GetFunnel",
                "GetBacklog",
                "GetStatus",
                "ListSigningKeys",
                "GetAdoption"
            ]
        );
        for rule in TABLE.iter().filter(|r| r.read) {
            assert!(!rule.proof && !rule.streams && !rule.metered, "{}", rule.method);
        }
    }

    #[test]
    fn paths_are_matched_exactly() {
        assert!(rule_for("/adminduk.ikd.v1.IkdService/GetStatus").is_some());
        for path in [
            "adminduk.ikd.v1.IkdService/GetStatus",
            "/adminduk.ikd.v1.IkdService/getStatus",
            "/adminduk.ikd.v1.IkdService/GetStatus/",
            "/adminduk.ikd.v1.IkdService/ResolveSubject",
            "/adminduk.population.v1.PopulationService/GetStatus",
            "/",
            "",
        ] {
            assert!(rule_for(path).is_none(), "{path}");
        }
    }
}
