//! The `ebsim` binary's exit codes: the numbers the AWS CLI v2 returns, and 130
//! for an interrupted operation (as a shell reports SIGINT). The core's errors
//! know nothing of them; this is where an [`ErrorKind`] becomes one.
//!
//! 253 covers every kind of damage to the data root: a store, the root key, a
//! volume image or a snapshot block.

use crate::error::ErrorKind;

/// The command succeeded.
pub const OK: i32 = 0;
/// The command line could not be parsed, or a parameter was invalid before any call.
pub const USAGE: i32 = 252;
/// The data root or configuration is missing or damaged.
pub const ENVIRONMENT: i32 = 253;
/// The service returned an error (the AWS error code is printed).
pub const SERVICE: i32 = 254;
/// Anything else (an I/O failure).
pub const OTHER: i32 = 255;
/// The operation was interrupted (Ctrl-C) and undone (128 + SIGINT).
pub const INTERRUPTED: i32 = 130;

/// The exit code for an error of `kind`.
pub fn code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Usage => USAGE,
        ErrorKind::Environment => ENVIRONMENT,
        k if k.is_damage() => ENVIRONMENT,
        ErrorKind::Interrupted => INTERRUPTED,
        ErrorKind::Internal | ErrorKind::VolumeImage | ErrorKind::OutOfRange => OTHER,
        _ => SERVICE,
    }
}

/// The kind an exit code stands for, for an error reported only by its code.
pub fn kind_of(code: i32) -> Option<ErrorKind> {
    match code {
        USAGE => Some(ErrorKind::Usage),
        ENVIRONMENT => Some(ErrorKind::Environment),
        INTERRUPTED => Some(ErrorKind::Interrupted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_aws_cli_class_it_belongs_to() {
        for &k in ErrorKind::ALL {
            let c = code(k);
            if k.is_service_error() {
                assert_eq!(c, SERVICE, "{k:?}");
            } else {
                assert!(
                    [USAGE, ENVIRONMENT, OTHER, INTERRUPTED].contains(&c),
                    "{k:?}"
                );
            }
        }
        assert_eq!(code(ErrorKind::ImageCorrupt), ENVIRONMENT);
        assert_eq!(
            kind_of(code(ErrorKind::Interrupted)),
            Some(ErrorKind::Interrupted)
        );
    }
}
