//! Policy documents (key and identity) on arbitrary text: a typed document or a
//! MalformedPolicyDocument error, never a panic; a parsed document evaluates.
#![no_main]
use ebsim::policy::{ConditionContext, PolicyKind, Request, RequestPrincipal, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ctx = ConditionContext::new();
    ctx.set("kms:CallerAccount", "111122223333")
        .set_many("kms:EncryptionContextKeys", ["a".to_string()]);
    for kind in [PolicyKind::Key, PolicyKind::Identity] {
        if let Ok(doc) = parse(text, kind) {
            let who = RequestPrincipal {
                arn: "arn:aws:iam::111122223333:user/alice",
                account_id: "111122223333",
                role_arn: None,
                is_root: false,
                is_service: false,
            };
            let _ = doc.evaluate(&Request {
                principal: who,
                action: "kms:Decrypt",
                resource: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                context: &ctx,
            });
            let _ = doc.named_principals().count();
        }
    }
});
