//! Development PKI: a CA and leaf certificates for every tongban party,
//! written as PEM files plus a `pki.toml` manifest.
//!
//! All organisations and credit codes here are invented. Their codes are
//! checksum-valid GB 32100-2015 codes whose embedded organisation code
//! (characters 9-17, GB 11714, with its own check character) starts with
//! `TB`, a prefix no real Chinese agency code uses, so they are easy to spot.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tongban_core::{CreditCode, CreditCodeError};

use tongban_trust::{
    IdentityError, PeerIdentity, TlsClientConfig, TlsServerConfig, validate_trust_domain,
};

/// The default SPIFFE trust domain of the dev PKI (`.test` is reserved, RFC 2606).
pub const DEFAULT_TRUST_DOMAIN: &str = "panzhihua.tongban.test";
/// File name of the manifest inside the PKI directory.
pub const MANIFEST_FILE: &str = "pki.toml";
/// File names of the CA inside the PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaves are backdated a little so small clock differences do not reject them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Errors of the dev PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} already exists; refusing to overwrite an existing PKI (use force)")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid validity time: {0}")]
    InvalidTime(String),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("organisation code {code:?}: {source}")]
    CreditCode {
        code: String,
        #[source]
        source: CreditCodeError,
    },
    #[error("invalid host name {0:?} for a server certificate")]
    BadHost(String),
    #[error("{path}: invalid manifest: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error("no identity named {0:?} in the PKI")]
    UnknownIdentity(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Key type for generated certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Ed25519,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, PkiError> {
        let alg = match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        };
        Ok(KeyPair::generate_for(alg)?)
    }
}

/// What a party is in tongban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Exchange,
    Department,
    Administrator,
    ServicePoint,
    /// A citizen portal: asks for every audit entry about a person.
    Portal,
}

/// An invented organisation of the dev PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevOrganisation {
    pub credit_code: &'static str,
    pub name: &'static str,
    pub name_zh: &'static str,
}

pub const ORG_EXCHANGE_CENTRE: DevOrganisation = DevOrganisation {
    credit_code: "12510400TB000001XU",
    name: "Panzhihua Government Data Exchange Centre",
    name_zh: "攀枝花市政务数据交换中心",
};
pub const ORG_CITY_POLICE: DevOrganisation = DevOrganisation {
    credit_code: "11510400TB0000028Y",
    name: "Panzhihua Municipal Public Security Bureau",
    name_zh: "攀枝花市公安局",
};
pub const ORG_CITY_CIVIL_AFFAIRS: DevOrganisation = DevOrganisation {
    credit_code: "11510400TB0000036R",
    name: "Panzhihua Municipal Civil Affairs Bureau",
    name_zh: "攀枝花市民政局",
};
pub const ORG_CITY_HRSS: DevOrganisation = DevOrganisation {
    credit_code: "11510400TB0000044L",
    name: "Panzhihua Municipal Human Resources and Social Security Bureau",
    name_zh: "攀枝花市人力资源和社会保障局",
};
pub const ORG_CITY_MEDINS: DevOrganisation = DevOrganisation {
    credit_code: "11510400TB0000116D",
    name: "Panzhihua Healthcare Security Administration",
    name_zh: "攀枝花市医疗保障局",
};
pub const ORG_MIYI_POLICE: DevOrganisation = DevOrganisation {
    credit_code: "11510421TB0000052W",
    name: "Miyi County Public Security Bureau",
    name_zh: "米易县公安局",
};
pub const ORG_DONGLI_COMMUNITY: DevOrganisation = DevOrganisation {
    credit_code: "12510403TB0000060J",
    name: "Dongli-station Community Service Centre, West District",
    name_zh: "西区动力站社区服务中心",
};
pub const ORG_SALIAN_TOWN: DevOrganisation = DevOrganisation {
    credit_code: "11510421TB0000079L",
    name: "Salian Town People's Government, Miyi County",
    name_zh: "米易县撒莲镇人民政府",
};
pub const ORG_HOTLINE_96196: DevOrganisation = DevOrganisation {
    credit_code: "12510400TB0000087Y",
    name: "Panzhihua 96196 Service Hotline Centre",
    name_zh: "攀枝花市96196服务热线中心",
};
/// A provincial public institution (region 510000), as the operator of
/// Sichuan's citizen app would be.
pub const ORG_TIANFU_TONGBAN: DevOrganisation = DevOrganisation {
    credit_code: "12510000TB00000955",
    name: "Sichuan Tianfu Tongban Government Service Platform",
    name_zh: "四川天府通办政务服务平台",
};

pub const ORG_CITY_MARKET: DevOrganisation = DevOrganisation {
    credit_code: "11510400TB0000108J",
    name: "Panzhihua Administration for Market Regulation",
    name_zh: "攀枝花市市场监督管理局",
};

/// Every invented organisation.
pub const DEV_ORGANISATIONS: &[DevOrganisation] = &[
    ORG_EXCHANGE_CENTRE,
    ORG_CITY_POLICE,
    ORG_CITY_CIVIL_AFFAIRS,
    ORG_CITY_HRSS,
    ORG_CITY_MEDINS,
    ORG_MIYI_POLICE,
    ORG_DONGLI_COMMUNITY,
    ORG_SALIAN_TOWN,
    ORG_HOTLINE_96196,
    ORG_TIANFU_TONGBAN,
    ORG_CITY_MARKET,
];

/// The dev PKI's citizen portal: its party name, which is also its unit.
pub const PORTAL_PARTY: &str = "tianfu-tongban";

/// A party the dev PKI issues a certificate to; `name` is also its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevParty {
    pub name: &'static str,
    pub role: Role,
    pub organisation: DevOrganisation,
    pub server_auth: bool,
    pub client_auth: bool,
    pub description: &'static str,
}

/// Everyone in the dev PKI, in manifest order.
pub const DEV_PARTIES: &[DevParty] = &[
    DevParty {
        name: "exchange",
        role: Role::Exchange,
        organisation: ORG_EXCHANGE_CENTRE,
        server_auth: true,
        client_auth: true,
        description: "the central exchange (serves service points, calls adapters)",
    },
    DevParty {
        name: "police",
        role: Role::Department,
        organisation: ORG_CITY_POLICE,
        server_auth: true,
        client_auth: false,
        description: "police department adapter",
    },
    DevParty {
        name: "civil",
        role: Role::Department,
        organisation: ORG_CITY_CIVIL_AFFAIRS,
        server_auth: true,
        client_auth: false,
        description: "civil affairs department adapter",
    },
    DevParty {
        name: "hrss",
        role: Role::Department,
        organisation: ORG_CITY_HRSS,
        server_auth: true,
        client_auth: false,
        description: "human resources and social security department adapter",
    },
    DevParty {
        name: "market",
        role: Role::Department,
        organisation: ORG_CITY_MARKET,
        server_auth: true,
        client_auth: false,
        description: "market regulation department adapter",
    },
    DevParty {
        name: "medins",
        role: Role::Department,
        organisation: ORG_CITY_MEDINS,
        server_auth: true,
        client_auth: false,
        description: "healthcare security (medical insurance) department adapter",
    },
    DevParty {
        name: "admin",
        role: Role::Administrator,
        organisation: ORG_EXCHANGE_CENTRE,
        server_auth: false,
        client_auth: true,
        description: "exchange administrator",
    },
    DevParty {
        name: "salian-police-station",
        role: Role::ServicePoint,
        organisation: ORG_MIYI_POLICE,
        server_auth: false,
        client_auth: true,
        description: "police station, Salian town, Miyi county",
    },
    DevParty {
        name: "dongli-community",
        role: Role::ServicePoint,
        organisation: ORG_DONGLI_COMMUNITY,
        server_auth: false,
        client_auth: true,
        description: "community centre, Dongli-station community, West District",
    },
    DevParty {
        name: "salian-township",
        role: Role::ServicePoint,
        organisation: ORG_SALIAN_TOWN,
        server_auth: false,
        client_auth: true,
        description: "township service hall, Salian town, Miyi county",
    },
    DevParty {
        name: "hotline-96196",
        role: Role::ServicePoint,
        organisation: ORG_HOTLINE_96196,
        server_auth: false,
        client_auth: true,
        description: "96196 service hotline",
    },
    DevParty {
        name: PORTAL_PARTY,
        role: Role::Portal,
        organisation: ORG_TIANFU_TONGBAN,
        server_auth: false,
        client_auth: true,
        description: "citizen portal (Tianfu Tongban app), asks what was looked up about a person",
    },
];

/// Options of [`init_dev_pki`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiOptions {
    pub trust_domain: String,
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of the CA certificate.
    pub ca_validity: Duration,
    /// Lifetime of each leaf certificate.
    pub leaf_validity: Duration,
    /// DNS names and IP addresses put in server certificates.
    pub server_hosts: Vec<String>,
    /// Replace an existing PKI in the directory.
    pub force: bool,
}

impl Default for DevPkiOptions {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ca_validity: 10 * 365 * DAY,
            leaf_validity: 365 * DAY,
            server_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            force: false,
        }
    }
}

/// A certificate authority that can sign leaves.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, negative before it.
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// rcgen takes `time::OffsetDateTime`; x509-parser converts to it, which
/// spares a direct dependency on `time`.
fn asn1_time(t: SystemTime) -> Result<x509_parser::time::ASN1Time, PkiError> {
    x509_parser::time::ASN1Time::from_timestamp(unix_secs(t))
        .map_err(|e| PkiError::InvalidTime(e.to_string()))
}

impl DevCa {
    /// A new self-signed CA that may sign leaves only (path length 0).
    pub fn generate(
        common_name: &str,
        key_algorithm: KeyAlgorithm,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, PkiError> {
        let key = key_algorithm.generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, "tongban development PKI");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = asn1_time(not_before)?.to_datetime();
        params.not_after = asn1_time(not_after)?.to_datetime();
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let cert_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(Self {
            issuer,
            cert_der,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// A CA from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert = fs::read_to_string(cert_path).map_err(io_error(cert_path))?;
        let key = fs::read_to_string(key_path).map_err(io_error(key_path))?;
        Self::from_pem(&cert, &key)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key in PEM (secret).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Writes the certificate (0644) and the key (0600) atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
        write_atomic(key_path, self.key_pem().as_bytes(), 0o600)?;
        write_atomic(cert_path, self.cert_pem.as_bytes(), 0o644)
    }

    /// Signs a new leaf certificate with a fresh key. Nothing about validity
    /// is checked, so tests can mint expired or not-yet-valid certificates.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        let key = spec.key_algorithm.generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        for uri in &spec.uri_sans {
            params
                .subject_alt_names
                .push(SanType::URI(Ia5String::try_from(uri.as_str())?));
        }
        for host in &spec.hosts {
            params.subject_alt_names.push(host_san(host)?);
        }
        params.not_before = asn1_time(spec.not_before)?.to_datetime();
        params.not_after = asn1_time(spec.not_after)?.to_datetime();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn host_san(host: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(PkiError::BadHost(host.to_owned()));
    }
    Ok(SanType::DnsName(Ia5String::try_from(host)?))
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    /// URI SANs; a tongban identity is exactly one `spiffe://` URI.
    pub uri_sans: Vec<String>,
    /// DNS names or IP addresses (server certificates).
    pub hosts: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub key_algorithm: KeyAlgorithm,
}

impl LeafSpec {
    /// A client certificate for `identity`, valid for a year from now.
    pub fn for_identity(identity: &PeerIdentity) -> Self {
        let now = SystemTime::now();
        Self {
            common_name: identity.unit().to_owned(),
            uri_sans: vec![identity.to_string()],
            hosts: Vec::new(),
            server_auth: false,
            client_auth: true,
            not_before: now - CLOCK_SKEW_ALLOWANCE,
            not_after: now + 365 * DAY,
            key_algorithm: KeyAlgorithm::EcdsaP256,
        }
    }

    /// Also usable as a server certificate for these DNS names / IP addresses.
    pub fn serving<S: AsRef<str>>(mut self, hosts: &[S]) -> Self {
        self.server_auth = true;
        self.hosts
            .extend(hosts.iter().map(|h| h.as_ref().to_owned()));
        self
    }

    /// Not a client certificate (server only).
    pub fn server_only(mut self) -> Self {
        self.client_auth = false;
        self
    }

    pub fn valid_between(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Valid from a few minutes ago for `lifetime`.
    pub fn valid_for(self, lifetime: Duration) -> Self {
        let now = SystemTime::now();
        self.valid_between(now - CLOCK_SKEW_ALLOWANCE, now + lifetime)
    }

    pub fn with_key_algorithm(mut self, key_algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = key_algorithm;
        self
    }
}

/// A signed leaf certificate and its private key.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_der_len", &self.cert_der.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl IssuedCert {
    /// The private key in PEM (secret).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes the certificate (0644) and the key (0600), each atomically
    /// (temporary file + rename). The key goes first so a watcher that sees
    /// the new certificate finds its key already in place.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
        write_atomic(key_path, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(cert_path, self.cert_pem.as_bytes(), 0o644)
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only on creation; a leftover temporary may differ.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PkiError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// One party of a dev PKI, with absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiIdentity {
    pub name: String,
    pub role: Role,
    pub organisation: String,
    pub identity: PeerIdentity,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_auth: bool,
    pub client_auth: bool,
    pub server_names: Vec<String>,
    pub description: String,
}

/// A dev PKI on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    pub dir: PathBuf,
    pub trust_domain: String,
    pub key_algorithm: KeyAlgorithm,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub identities: Vec<DevPkiIdentity>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    trust_domain: String,
    key_algorithm: KeyAlgorithm,
    ca: ManifestCa,
    #[serde(rename = "identity")]
    identities: Vec<ManifestIdentity>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestCa {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestIdentity {
    name: String,
    role: Role,
    organisation: String,
    spiffe_id: PeerIdentity,
    cert: PathBuf,
    key: PathBuf,
    server_auth: bool,
    client_auth: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    server_names: Vec<String>,
    #[serde(default)]
    description: String,
}

const MANIFEST_HEADER: &str = "# tongban development PKI. Synthetic organisations and keys: never use in production.\n\
# Paths are relative to this file's directory.\n\n";

/// Creates a CA and certificates for every party in [`DEV_PARTIES`] under
/// `dir`: `ca.pem`, `ca.key`, `<name>.pem`, `<name>.key` and `pki.toml`.
/// Keys are written 0600. Refuses to touch an existing PKI unless `force`.
pub fn init_dev_pki(dir: &Path, options: &DevPkiOptions) -> Result<DevPki, PkiError> {
    validate_trust_domain(&options.trust_domain)?;
    for host in &options.server_hosts {
        host_san(host)?;
    }
    let mut targets = vec![
        dir.join(MANIFEST_FILE),
        dir.join(CA_CERT_FILE),
        dir.join(CA_KEY_FILE),
    ];
    for party in DEV_PARTIES {
        targets.push(dir.join(format!("{}.pem", party.name)));
        targets.push(dir.join(format!("{}.key", party.name)));
    }
    if !options.force
        && let Some(existing) = targets.iter().find(|p| p.exists())
    {
        return Err(PkiError::AlreadyExists {
            path: existing.clone(),
        });
    }
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
    }

    let now = SystemTime::now();
    let ca = DevCa::generate(
        &format!("tongban dev CA ({})", options.trust_domain),
        options.key_algorithm,
        now - CLOCK_SKEW_ALLOWANCE,
        now + options.ca_validity,
    )?;
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
    ca.write(&ca_cert, &ca_key)?;

    let mut manifest = Manifest {
        trust_domain: options.trust_domain.clone(),
        key_algorithm: options.key_algorithm,
        ca: ManifestCa {
            cert: CA_CERT_FILE.into(),
            key: CA_KEY_FILE.into(),
        },
        identities: Vec::with_capacity(DEV_PARTIES.len()),
    };
    for party in DEV_PARTIES {
        let org = CreditCode::parse(party.organisation.credit_code).map_err(|source| {
            PkiError::CreditCode {
                code: party.organisation.credit_code.to_owned(),
                source,
            }
        })?;
        let identity = PeerIdentity::new(&options.trust_domain, org, party.name)?;
        let entry = ManifestIdentity {
            name: party.name.to_owned(),
            role: party.role,
            organisation: party.organisation.name.to_owned(),
            spiffe_id: identity,
            cert: format!("{}.pem", party.name).into(),
            key: format!("{}.key", party.name).into(),
            server_auth: party.server_auth,
            client_auth: party.client_auth,
            server_names: if party.server_auth {
                options.server_hosts.clone()
            } else {
                Vec::new()
            },
            description: party.description.to_owned(),
        };
        let spec = leaf_spec(&entry, options.key_algorithm).valid_for(options.leaf_validity);
        ca.issue(&spec)?
            .write(&dir.join(&entry.cert), &dir.join(&entry.key))?;
        manifest.identities.push(entry);
    }

    let manifest_path = dir.join(MANIFEST_FILE);
    let text = toml::to_string_pretty(&manifest).map_err(|e| PkiError::Manifest {
        path: manifest_path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(
        &manifest_path,
        format!("{MANIFEST_HEADER}{text}").as_bytes(),
        0o644,
    )?;
    tracing::info!(dir = %dir.display(), trust_domain = %options.trust_domain, "dev PKI created");
    Ok(DevPki::from_manifest(dir, manifest))
}

fn leaf_spec(entry: &ManifestIdentity, key_algorithm: KeyAlgorithm) -> LeafSpec {
    let mut spec = LeafSpec::for_identity(&entry.spiffe_id).with_key_algorithm(key_algorithm);
    if entry.server_auth {
        spec = spec.serving(&entry.server_names);
    }
    spec.client_auth = entry.client_auth;
    spec
}

impl DevPki {
    /// Reads `dir/pki.toml`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| PkiError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        validate_trust_domain(&manifest.trust_domain)?;
        Ok(Self::from_manifest(dir, manifest))
    }

    fn from_manifest(dir: &Path, manifest: Manifest) -> Self {
        Self {
            dir: dir.to_owned(),
            trust_domain: manifest.trust_domain,
            key_algorithm: manifest.key_algorithm,
            ca_cert: dir.join(manifest.ca.cert),
            ca_key: dir.join(manifest.ca.key),
            identities: manifest
                .identities
                .into_iter()
                .map(|m| DevPkiIdentity {
                    cert: dir.join(&m.cert),
                    key: dir.join(&m.key),
                    name: m.name,
                    role: m.role,
                    organisation: m.organisation,
                    identity: m.spiffe_id,
                    server_auth: m.server_auth,
                    client_auth: m.client_auth,
                    server_names: m.server_names,
                    description: m.description,
                })
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Result<&DevPkiIdentity, PkiError> {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| PkiError::UnknownIdentity(name.to_owned()))
    }

    /// Server TLS settings for `name`, trusting this PKI's CA for clients.
    pub fn server_config(&self, name: &str) -> Result<TlsServerConfig, PkiError> {
        let id = self.get(name)?;
        Ok(TlsServerConfig::new(&id.cert, &id.key, &self.ca_cert)
            .require_trust_domain(&self.trust_domain))
    }

    /// Client TLS settings for `name`, trusting this PKI's CA for servers.
    pub fn client_config(&self, name: &str) -> Result<TlsClientConfig, PkiError> {
        let id = self.get(name)?;
        Ok(TlsClientConfig::new(&id.cert, &id.key, &self.ca_cert))
    }

    /// The CA, to issue further certificates.
    pub fn ca(&self) -> Result<DevCa, PkiError> {
        DevCa::load(&self.ca_cert, &self.ca_key)
    }

    /// Re-issues `name`'s certificate and key with the same identity and
    /// names, valid from now for `lifetime`, replacing the files atomically
    /// (running servers pick them up via [`tongban_trust::CertReloader`]).
    pub fn renew(&self, name: &str, lifetime: Duration) -> Result<(), PkiError> {
        let id = self.get(name)?;
        let entry = ManifestIdentity {
            name: id.name.clone(),
            role: id.role,
            organisation: id.organisation.clone(),
            spiffe_id: id.identity.clone(),
            cert: id.cert.clone(),
            key: id.key.clone(),
            server_auth: id.server_auth,
            client_auth: id.client_auth,
            server_names: id.server_names.clone(),
            description: id.description.clone(),
        };
        let spec = leaf_spec(&entry, self.key_algorithm).valid_for(lifetime);
        self.ca()?.issue(&spec)?.write(&id.cert, &id.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB 11714 organisation code check (characters 9-17 of a credit code).
    fn organisation_code_is_valid(code: &str) -> bool {
        const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
        let chars: Vec<char> = code.chars().collect();
        let value = |c: char| c.to_digit(36);
        let Some(sum) = chars[..8]
            .iter()
            .zip(WEIGHTS)
            .map(|(c, w)| value(*c).map(|v| v * w))
            .sum::<Option<u32>>()
        else {
            return false;
        };
        let expected = match 11 - sum % 11 {
            10 => 'X',
            11 => '0',
            d => char::from_digit(d, 10).unwrap_or('?'),
        };
        chars[8] == expected
    }

    #[test]
    fn invented_organisations_have_valid_codes() {
        for org in DEV_ORGANISATIONS {
            let code =
                CreditCode::parse(org.credit_code).unwrap_or_else(|e| panic!("{}: {e}", org.name));
            assert!(
                organisation_code_is_valid(&code.as_str()[8..17]),
                "{}: bad GB 11714 part",
                org.name
            );
            assert_eq!(&code.as_str()[8..10], "TB", "synthetic marker");
        }
        // Region codes: Miyi county parties sit in 510421, West District in 510403.
        assert_eq!(&ORG_MIYI_POLICE.credit_code[2..8], "510421");
        assert_eq!(&ORG_SALIAN_TOWN.credit_code[2..8], "510421");
        assert_eq!(&ORG_DONGLI_COMMUNITY.credit_code[2..8], "510403");
        // The portal is provincial: Sichuan, 510000.
        assert_eq!(&ORG_TIANFU_TONGBAN.credit_code[2..8], "510000");
    }

    #[test]
    fn the_portal_is_a_client_of_its_own_organisation() {
        let portals: Vec<&DevParty> = DEV_PARTIES
            .iter()
            .filter(|p| p.role == Role::Portal)
            .collect();
        assert_eq!(portals.len(), 1);
        let portal = portals[0];
        assert_eq!(portal.name, PORTAL_PARTY);
        assert_eq!(portal.organisation, ORG_TIANFU_TONGBAN);
        assert!(portal.client_auth && !portal.server_auth);
    }

    #[test]
    fn parties_are_unique_valid_units() {
        let mut names: Vec<&str> = DEV_PARTIES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DEV_PARTIES.len());
        for party in DEV_PARTIES {
            tongban_trust::validate_unit(party.name).unwrap();
        }
    }

    #[test]
    fn init_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let pki = init_dev_pki(&dir, &DevPkiOptions::default()).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(pki, DevPki::load(&dir).unwrap());
        assert_eq!(pki.identities.len(), DEV_PARTIES.len());
        for path in [&pki.ca_cert, &pki.ca_key] {
            assert!(path.is_file(), "{}", path.display());
        }
        assert_eq!(
            fs::metadata(&pki.ca_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for id in &pki.identities {
            assert_eq!(
                fs::metadata(&id.key).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                id.key.display()
            );
            let der = tongban_trust::load_certs(&id.cert).unwrap();
            let parsed = PeerIdentity::from_der(&der[0]).unwrap();
            assert_eq!(parsed, id.identity);
            assert_eq!(parsed.unit(), id.name);
            assert_eq!(parsed.trust_domain(), DEFAULT_TRUST_DOMAIN);
            CreditCode::parse(parsed.org().as_str()).unwrap();
        }
        let exchange = pki.get("exchange").unwrap();
        assert!(exchange.server_auth && exchange.client_auth);
        assert_eq!(exchange.server_names, ["localhost", "127.0.0.1", "::1"]);
        let station = pki.get("salian-police-station").unwrap();
        assert_eq!(station.identity.org().as_str(), ORG_MIYI_POLICE.credit_code);
        assert!(!station.server_auth);
        let portal = pki.get(PORTAL_PARTY).unwrap();
        assert_eq!(portal.role, Role::Portal);
        assert_eq!(
            portal.identity.org().as_str(),
            ORG_TIANFU_TONGBAN.credit_code
        );
        // Each department has its own organisation.
        let orgs: Vec<_> = ["police", "civil", "hrss"]
            .iter()
            .map(|n| pki.get(n).unwrap().identity.org().clone())
            .collect();
        assert!(orgs[0] != orgs[1] && orgs[1] != orgs[2] && orgs[0] != orgs[2]);

        // Both sides of TLS load from it.
        pki.server_config("exchange").unwrap().build().unwrap();
        pki.server_config("police").unwrap().build().unwrap();
        pki.client_config("dongli-community")
            .unwrap()
            .build(None)
            .unwrap();
        let manifest = fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
        assert!(manifest.contains("role = \"portal\""), "{manifest}");
        assert!(manifest.contains(
            "spiffe_id = \"spiffe://panzhihua.tongban.test/org/11510421TB0000052W/unit/salian-police-station\""
        ));

        // Refuses to overwrite; force replaces.
        let before = fs::read(&pki.ca_cert).unwrap();
        assert!(matches!(
            init_dev_pki(&dir, &DevPkiOptions::default()),
            Err(PkiError::AlreadyExists { .. })
        ));
        assert_eq!(fs::read(&pki.ca_cert).unwrap(), before);
        let forced = DevPkiOptions {
            force: true,
            key_algorithm: KeyAlgorithm::Ed25519,
            ..DevPkiOptions::default()
        };
        init_dev_pki(&dir, &forced).unwrap();
        assert_ne!(fs::read(&pki.ca_cert).unwrap(), before);
        DevPki::load(&dir)
            .unwrap()
            .server_config("exchange")
            .unwrap()
            .build()
            .unwrap();
    }

    #[test]
    fn renew_replaces_the_leaf_with_the_same_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = init_dev_pki(tmp.path(), &DevPkiOptions::default()).unwrap();
        let police = pki.get("police").unwrap();
        let before = fs::read(&police.cert).unwrap();
        pki.renew("police", 30 * DAY).unwrap();
        assert_ne!(fs::read(&police.cert).unwrap(), before);
        let after = tongban_trust::load_certs(&police.cert).unwrap();
        assert_eq!(PeerIdentity::from_der(&after[0]).unwrap(), police.identity);
        pki.server_config("police").unwrap().build().unwrap();
        assert!(matches!(
            pki.renew("nobody", DAY),
            Err(PkiError::UnknownIdentity(_))
        ));
    }

    #[test]
    fn rejects_bad_options() {
        let tmp = tempfile::tempdir().unwrap();
        let bad_domain = DevPkiOptions {
            trust_domain: "Not Valid".into(),
            ..DevPkiOptions::default()
        };
        assert!(matches!(
            init_dev_pki(tmp.path(), &bad_domain),
            Err(PkiError::Identity(_))
        ));
        let bad_host = DevPkiOptions {
            server_hosts: vec!["exa mple".into()],
            ..DevPkiOptions::default()
        };
        assert!(matches!(
            init_dev_pki(tmp.path(), &bad_host),
            Err(PkiError::BadHost(_))
        ));
        assert!(!tmp.path().join(MANIFEST_FILE).exists());
    }
}
