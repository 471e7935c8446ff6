//! The HTTP status each kind of error is sent with, as AWS's services send it.
//!
//! Sources: botocore's service models (IAM's exceptions carry `httpStatusCode`;
//! KMS's JSON protocol and EC2's Query protocol send client errors as 400), EC2's
//! error-code reference (`UnauthorizedOperation` is 403, a successful dry run's
//! `DryRunOperation` is 412). ebsim's own local failures (a damaged data root, an
//! I/O error) are the server's fault: 500, as AWS's `InternalFailure`.

use crate::error::ErrorKind;

/// The HTTP status for an error of `kind`.
pub fn status(kind: ErrorKind) -> u16 {
    use ErrorKind::*;
    match kind {
        // IAM (Query protocol; statuses from its model).
        NoSuchEntity => 404,
        EntityAlreadyExists | DeleteConflict | IamLimitExceeded => 409,
        IamAccessDenied => 403,
        IamMalformedPolicyDocument | IamValidation => 400,
        // EC2.
        UnauthorizedOperation => 403,
        Ec2DryRun => 412,
        // RDS (statuses from its model).
        DbInstanceNotFound | DbSnapshotNotFound => 404,
        // The EBS direct APIs (REST-JSON; statuses from the ebs model).
        ResourceNotFound => 404,
        // The operation stopped because the server is going away.
        Interrupted => 503,
        // Local failures: the server's fault.
        Environment | Internal | VolumeImage => 500,
        k if k.is_damage() => 500,
        // Every other service error (KMS's exceptions, EC2's codes, the common
        // AccessDenied/Throttling/Validation/UnknownOperation/Serialization) and a
        // request that cannot be understood.
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_4xx_and_local_failures_5xx() {
        for &k in ErrorKind::ALL {
            let s = status(k);
            if k.is_service_error() || k == ErrorKind::Usage || k == ErrorKind::OutOfRange {
                assert!((400..500).contains(&s), "{k:?} → {s}");
            } else {
                assert!((500..600).contains(&s), "{k:?} → {s}");
            }
        }
        assert_eq!(status(ErrorKind::NotFound), 400);
        assert_eq!(status(ErrorKind::NoSuchEntity), 404);
        assert_eq!(status(ErrorKind::UnauthorizedOperation), 403);
        assert_eq!(status(ErrorKind::Ec2DryRun), 412);
        assert_eq!(status(ErrorKind::ImageCorrupt), 500);
    }
}
