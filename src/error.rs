//! One error type for the whole crate: a stable [`ErrorKind`] (named after the AWS
//! error code a caller sees), a message written the way AWS writes it, structured
//! context ([`Field`]: the volume id, key ARN, offset, file the error is about) and
//! an optional source.
//!
//! What a kind becomes outside the core is decided at the edges: the CLI's exit
//! code in `cli::exit`, the HTTP status in `server::status`.

use std::fmt;

/// What went wrong, as AWS names it where AWS has a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // --- KMS service errors (names from the KMS API model) ---
    NotFound,
    Disabled,
    KmsInvalidState,
    InvalidCiphertext,
    IncorrectKey,
    InvalidKeyUsage,
    InvalidGrantToken,
    InvalidGrantId,
    LimitExceeded,
    AlreadyExists,
    InvalidAliasName,
    InvalidArn,
    MalformedPolicyDocument,
    UnsupportedOperation,
    Conflict,
    Tag,
    InvalidMarker,
    DryRunOperation,
    // --- IAM errors (IAM's codes have no "Exception" suffix) ---
    NoSuchEntity,
    EntityAlreadyExists,
    DeleteConflict,
    IamMalformedPolicyDocument,
    IamValidation,
    IamAccessDenied,
    /// IAM's quota error (`LimitExceeded`, HTTP 409): two access keys per user.
    IamLimitExceeded,
    // --- EC2 (EBS) errors ---
    InvalidVolumeNotFound,
    InvalidVolumeIdMalformed,
    InvalidSnapshotNotFound,
    VolumeInUse,
    IncorrectState,
    InvalidParameterValue,
    InvalidParameterCombination,
    MissingParameter,
    InvalidZoneNotFound,
    InvalidInstanceIdNotFound,
    InvalidInstanceIdMalformed,
    IncorrectInstanceState,
    InvalidAmiIdMalformed,
    InvalidVolumeZoneMismatch,
    /// EC2's `InvalidID`: a resource id of no kind the operation takes.
    InvalidId,
    /// EC2's `TagLimitExceeded`: more than 50 tags on one resource.
    TagLimitExceeded,
    /// EC2's dry-run answer (KMS's is `DryRunOperationException`).
    Ec2DryRun,
    /// EC2's denial (`UnauthorizedOperation`, HTTP 403): no identity policy allows
    /// the action, or one denies it (src/ec2/authz.rs).
    UnauthorizedOperation,
    // --- RDS errors (codes from botocore's rds model, 2014-10-31) ---
    /// `DBInstanceNotFound` (HTTP 404).
    DbInstanceNotFound,
    /// `DBInstanceAlreadyExists`.
    DbInstanceAlreadyExists,
    /// `InvalidDBInstanceState`: the operation does not fit the instance's status.
    InvalidDbInstanceState,
    /// `KMSKeyNotAccessibleFault`: RDS cannot use the instance's KMS key.
    KmsKeyNotAccessible,
    /// `StorageQuotaExceeded`: more storage than the account may allocate.
    StorageQuotaExceeded,
    /// `InstanceQuotaExceeded`: more DB instances than the account may have.
    InstanceQuotaExceeded,
    /// `DBSnapshotNotFound` (HTTP 404).
    DbSnapshotNotFound,
    /// `DBSnapshotAlreadyExists`.
    DbSnapshotAlreadyExists,
    /// `InvalidDBSnapshotState`.
    InvalidDbSnapshotState,
    // --- errors common to every AWS API ---
    AccessDenied,
    /// The caller's identity is not known (AWS: the credentials are invalid).
    UnrecognizedClient,
    Throttling,
    Validation,
    /// The service has no such operation (AWS JSON protocol).
    UnknownOperation,
    /// The EBS direct APIs' missing resource (with a `Field::Reason`, e.g.
    /// `SNAPSHOT_NOT_FOUND`).
    ResourceNotFound,
    /// The EBS direct APIs' throttling error (with a `Field::Reason`).
    RequestThrottled,
    /// The request body cannot be read as the operation's request.
    Serialization,
    /// Query protocol (EC2, IAM, STS): no `Action` parameter.
    MissingAction,
    /// Query protocol: an `Action` the service does not have.
    InvalidAction,
    /// Query protocol: a parameter the operation does not take.
    UnknownParameter,
    /// Query protocol: a body or query string that does not decode (bad
    /// percent-escapes, not UTF-8, too long, too many parameters).
    MalformedQueryString,
    // --- local errors that AWS has no name for ---
    /// The data root (root key, store, config) is missing, corrupt or unusable.
    Environment,
    /// The command line could not be understood.
    Usage,
    /// An operating-system error (I/O) that is not the caller's fault.
    Internal,
    /// A volume image cannot be used for a reason other than damage (a key that
    /// does not make an XTS key).
    VolumeImage,
    /// A volume image's headers are damaged, altered or another volume's
    /// (docs/FORMAT.md §6).
    ImageCorrupt,
    /// A volume image is shorter than its header says.
    ImageTruncated,
    /// A volume's image file is missing.
    ImageMissing,
    /// A volume image uses features this ebsim does not know (a newer version).
    ImageUnsupported,
    /// A snapshot block is missing or does not match its SHA-256.
    SnapshotBlockCorrupt,
    /// A block request outside the volume (offset and length past its end).
    OutOfRange,
    /// The operation was stopped (Ctrl-C, or its client went away); what it had
    /// done was undone.
    Interrupted,
}

impl ErrorKind {
    /// Every kind (for decoding a code that crossed a process boundary).
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::NotFound,
        ErrorKind::Disabled,
        ErrorKind::KmsInvalidState,
        ErrorKind::InvalidCiphertext,
        ErrorKind::IncorrectKey,
        ErrorKind::InvalidKeyUsage,
        ErrorKind::InvalidGrantToken,
        ErrorKind::InvalidGrantId,
        ErrorKind::LimitExceeded,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidAliasName,
        ErrorKind::InvalidArn,
        ErrorKind::MalformedPolicyDocument,
        ErrorKind::UnsupportedOperation,
        ErrorKind::Conflict,
        ErrorKind::Tag,
        ErrorKind::InvalidMarker,
        ErrorKind::DryRunOperation,
        ErrorKind::NoSuchEntity,
        ErrorKind::EntityAlreadyExists,
        ErrorKind::DeleteConflict,
        ErrorKind::IamMalformedPolicyDocument,
        ErrorKind::IamValidation,
        ErrorKind::IamAccessDenied,
        ErrorKind::IamLimitExceeded,
        ErrorKind::InvalidVolumeNotFound,
        ErrorKind::InvalidVolumeIdMalformed,
        ErrorKind::InvalidSnapshotNotFound,
        ErrorKind::VolumeInUse,
        ErrorKind::IncorrectState,
        ErrorKind::InvalidParameterValue,
        ErrorKind::InvalidParameterCombination,
        ErrorKind::MissingParameter,
        ErrorKind::InvalidZoneNotFound,
        ErrorKind::InvalidInstanceIdNotFound,
        ErrorKind::InvalidInstanceIdMalformed,
        ErrorKind::IncorrectInstanceState,
        ErrorKind::InvalidAmiIdMalformed,
        ErrorKind::InvalidVolumeZoneMismatch,
        ErrorKind::InvalidId,
        ErrorKind::TagLimitExceeded,
        ErrorKind::Ec2DryRun,
        ErrorKind::UnauthorizedOperation,
        ErrorKind::DbInstanceNotFound,
        ErrorKind::DbInstanceAlreadyExists,
        ErrorKind::InvalidDbInstanceState,
        ErrorKind::KmsKeyNotAccessible,
        ErrorKind::StorageQuotaExceeded,
        ErrorKind::InstanceQuotaExceeded,
        ErrorKind::DbSnapshotNotFound,
        ErrorKind::DbSnapshotAlreadyExists,
        ErrorKind::InvalidDbSnapshotState,
        ErrorKind::AccessDenied,
        ErrorKind::UnrecognizedClient,
        ErrorKind::Throttling,
        ErrorKind::Validation,
        ErrorKind::UnknownOperation,
        ErrorKind::ResourceNotFound,
        ErrorKind::RequestThrottled,
        ErrorKind::Serialization,
        ErrorKind::MissingAction,
        ErrorKind::InvalidAction,
        ErrorKind::UnknownParameter,
        ErrorKind::MalformedQueryString,
        ErrorKind::Environment,
        ErrorKind::Usage,
        ErrorKind::Internal,
        ErrorKind::VolumeImage,
        ErrorKind::ImageCorrupt,
        ErrorKind::ImageTruncated,
        ErrorKind::ImageMissing,
        ErrorKind::ImageUnsupported,
        ErrorKind::SnapshotBlockCorrupt,
        ErrorKind::OutOfRange,
        ErrorKind::Interrupted,
    ];

    /// The kind whose [`ErrorKind::code`] is `code`.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Self::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// The error code as AWS sends it (`__type`), or ebsim's own name for local errors.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NotFound => "NotFoundException",
            Disabled => "DisabledException",
            KmsInvalidState => "KMSInvalidStateException",
            InvalidCiphertext => "InvalidCiphertextException",
            IncorrectKey => "IncorrectKeyException",
            InvalidKeyUsage => "InvalidKeyUsageException",
            InvalidGrantToken => "InvalidGrantTokenException",
            InvalidGrantId => "InvalidGrantIdException",
            LimitExceeded => "LimitExceededException",
            AlreadyExists => "AlreadyExistsException",
            InvalidAliasName => "InvalidAliasNameException",
            InvalidArn => "InvalidArnException",
            MalformedPolicyDocument => "MalformedPolicyDocumentException",
            UnsupportedOperation => "UnsupportedOperationException",
            Conflict => "ConflictException",
            Tag => "TagException",
            InvalidMarker => "InvalidMarkerException",
            DryRunOperation => "DryRunOperationException",
            NoSuchEntity => "NoSuchEntity",
            EntityAlreadyExists => "EntityAlreadyExists",
            DeleteConflict => "DeleteConflict",
            IamMalformedPolicyDocument => "MalformedPolicyDocument",
            IamValidation => "ValidationError",
            IamAccessDenied => "AccessDenied",
            IamLimitExceeded => "LimitExceeded",
            InvalidVolumeNotFound => "InvalidVolume.NotFound",
            InvalidVolumeIdMalformed => "InvalidVolumeID.Malformed",
            InvalidSnapshotNotFound => "InvalidSnapshot.NotFound",
            Ec2DryRun => "DryRunOperation",
            UnauthorizedOperation => "UnauthorizedOperation",
            VolumeInUse => "VolumeInUse",
            IncorrectState => "IncorrectState",
            InvalidParameterValue => "InvalidParameterValue",
            InvalidParameterCombination => "InvalidParameterCombination",
            MissingParameter => "MissingParameter",
            InvalidZoneNotFound => "InvalidZone.NotFound",
            InvalidInstanceIdNotFound => "InvalidInstanceID.NotFound",
            InvalidInstanceIdMalformed => "InvalidInstanceID.Malformed",
            IncorrectInstanceState => "IncorrectInstanceState",
            InvalidAmiIdMalformed => "InvalidAMIID.Malformed",
            InvalidVolumeZoneMismatch => "InvalidVolume.ZoneMismatch",
            InvalidId => "InvalidID",
            TagLimitExceeded => "TagLimitExceeded",
            DbInstanceNotFound => "DBInstanceNotFound",
            DbInstanceAlreadyExists => "DBInstanceAlreadyExists",
            InvalidDbInstanceState => "InvalidDBInstanceState",
            KmsKeyNotAccessible => "KMSKeyNotAccessibleFault",
            StorageQuotaExceeded => "StorageQuotaExceeded",
            InstanceQuotaExceeded => "InstanceQuotaExceeded",
            DbSnapshotNotFound => "DBSnapshotNotFound",
            DbSnapshotAlreadyExists => "DBSnapshotAlreadyExists",
            InvalidDbSnapshotState => "InvalidDBSnapshotState",
            AccessDenied => "AccessDeniedException",
            UnrecognizedClient => "UnrecognizedClientException",
            Throttling => "ThrottlingException",
            Validation => "ValidationException",
            UnknownOperation => "UnknownOperationException",
            ResourceNotFound => "ResourceNotFoundException",
            RequestThrottled => "RequestThrottledException",
            Serialization => "SerializationException",
            MissingAction => "MissingAction",
            InvalidAction => "InvalidAction",
            UnknownParameter => "UnknownParameter",
            MalformedQueryString => "MalformedQueryString",
            Environment => "EnvironmentError",
            Usage => "UsageError",
            Internal => "InternalError",
            VolumeImage => "VolumeImageError",
            ImageCorrupt => "VolumeImageCorrupt",
            ImageTruncated => "VolumeImageTruncated",
            ImageMissing => "VolumeImageMissing",
            ImageUnsupported => "VolumeImageUnsupported",
            SnapshotBlockCorrupt => "SnapshotBlockCorrupt",
            OutOfRange => "OutOfRange",
            Interrupted => "Interrupted",
        }
    }

    /// True for errors a service returned (printed as `An error occurred (…)`).
    pub fn is_service_error(self) -> bool {
        !matches!(
            self,
            ErrorKind::Environment
                | ErrorKind::Usage
                | ErrorKind::Internal
                | ErrorKind::VolumeImage
                | ErrorKind::OutOfRange
                | ErrorKind::Interrupted
        ) && !self.is_damage()
    }

    /// Damage to what the data root holds (images, snapshot blocks): reported like
    /// a damaged store ([`ErrorKind::Environment`]), with the kind's code.
    pub fn is_damage(self) -> bool {
        matches!(
            self,
            ErrorKind::ImageCorrupt
                | ErrorKind::ImageTruncated
                | ErrorKind::ImageMissing
                | ErrorKind::ImageUnsupported
                | ErrorKind::SnapshotBlockCorrupt
        )
    }

    /// Errors worth retrying with backoff (AWS SDKs' "throttling" and "transient" classes).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttling | ErrorKind::RequestThrottled)
    }
}

/// What an error is about, as structured context beside its message (the message
/// already names it for people; the fields are for programs: logs, the server, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    VolumeId,
    SnapshotId,
    /// A KMS key's ARN (or, before it is resolved, the key id the caller gave).
    KeyArn,
    GrantId,
    /// A byte offset in a volume or image.
    Offset,
    /// A length in bytes.
    Length,
    /// A file on this machine (an image, a store, a snapshot block).
    File,
    Region,
    Principal,
    /// The EBS direct APIs' `Reason` member of an error (`INVALID_BLOCK_TOKEN`).
    Reason,
}

impl Field {
    /// The field's name in logs (`volume_id=vol-…`).
    pub fn name(self) -> &'static str {
        match self {
            Field::VolumeId => "volume_id",
            Field::SnapshotId => "snapshot_id",
            Field::KeyArn => "key_arn",
            Field::GrantId => "grant_id",
            Field::Offset => "offset",
            Field::Length => "length",
            Field::File => "file",
            Field::Region => "region",
            Field::Principal => "principal",
            Field::Reason => "reason",
        }
    }
}

/// The crate's error: kind, message, structured context, optional source. Boxed,
/// so a `Result` stays one pointer wide on the error side.
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    fields: Vec<(Field, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            fields: Vec::new(),
            source: None,
        }))
    }

    /// Records what the error is about (the first value of a field wins: the
    /// innermost layer knows it best).
    pub fn with(mut self, field: Field, value: impl fmt::Display) -> Self {
        if self.field(field).is_none() {
            self.0.fields.push((field, value.to_string()));
        }
        self
    }

    /// The value of `field`, if the error carries it.
    pub fn field(&self, field: Field) -> Option<&str> {
        self.0
            .fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    /// Every field, in the order they were added.
    pub fn fields(&self) -> &[(Field, String)] {
        &self.0.fields
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// Puts `what` (a snapshot id, a block) in front of the message.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.0.message = format!("{what}: {}", self.0.message);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn code(&self) -> &'static str {
        self.0.kind.code()
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// AWS's `1 validation error detected: …` message for one constraint.
    pub fn validation(value: impl fmt::Display, member: &str, constraint: &str) -> Self {
        Error::new(
            ErrorKind::Validation,
            format!(
                "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
            ),
        )
    }

    pub fn environment(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Environment, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage, message)
    }

    /// An I/O error with the path it happened on.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Error::new(ErrorKind::Internal, format!("{what}: {err}")).with_source(err)
    }

    /// An I/O error on file `path` (its path also kept as [`Field::File`]).
    pub fn io_file(path: &std::path::Path, err: std::io::Error) -> Self {
        Error::io(path.display(), err).with(Field::File, path.display())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.kind.is_service_error() {
            write!(f, "{}: {}", self.0.kind.code(), self.0.message)
        } else {
            f.write_str(&self.0.message)
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for Error {
    /// A SQLite error without its file; stores add it with [`Error::in_store`]. A
    /// corrupt database is a damaged data root ([`ErrorKind::Environment`]).
    fn from(e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                ErrorKind::Environment
            }
            _ => ErrorKind::Internal,
        };
        Error::new(kind, format!("SQLite store: {e}")).with_source(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
